"""The inventory kernel: the only place where inventory physics lives.

Why one module of this size (a numba reason): every function here is compiled with ``cache=True``,
and Numba invalidates a cached function only when *its own* source file changes: a caller in one
file keeps the machine code of callees it inlined or linked from another file after they change
(Numba's "Notes on caching"). `period` compiles `step`, `observe` and `levels_to_qty` into itself,
and `step` its shipping helpers; split over files, an edit to the physics could leave a stale
`period` in every cache that silently disagrees with the NumPy reference. Keeping the physics and
its entries in one file makes any edit recompile all of them together. Only small leaf predicates
(`constraints`, `rng`) live outside, and they change rarely (clear ``__pycache__/*.nb[ic]`` when they do).

Numba-jitted functions over `Params` and `State` NamedTuples, batched over E environments. The
period contract (docs/design.md#period-contract), for each period t:

1. shipments due in period t arrive (on hand += arrivals; with ``overflow: dispose`` arrivals that do
   not fit the node's storage volume are refused and destroyed, pro rata over SKUs, rounded up);
2. agents observe and decide orders (outside this module: masks, policies and shields);
3. shipping: external suppliers ship within their caps (rationed over the nodes they feed), then every
   DC, parents before children, ships to its children from on hand (proportional rationing with
   largest remainders, or by priority). Lane capacity then scales each lane's shipment down pro rata
   (rounded down). A DC with ``unmet: backlog`` owes its children what it did not ship and ships it
   first later; with ``lost`` the rest of the order is cancelled. A supplier with ``unmet: backlog``
   owes what it did not ship in the same way (``lost``: cancelled), at its ``shortage_cost`` per unit
   charged to the node it feeds. A DC with ``ship_before_arrivals`` ships from its stock at the start
   of the period: what arrived in step 1 ships from the next period on (OR-Gym's stages).
   A shipment sent in period t with lead time L (drawn per lane and period for stochastic lanes, plus
   any lead-time spike) arrives in step 1 of period t+L; with L = 0 it is put on hand at once, before
   the receiving node ships further down;
4. customer demand arrives at stores; sales = min(on hand, backlog + demand), backlog first;
5. unmet demand is lost or backlogged per node;
6. costs: holding on end on hand, pipeline holding on units in transit, stockout (per unit lost, or per
   unit backlogged at the end of the period), variable ordering cost per unit shipped, fixed cost per
   positive order line, overflow (per volume unit above capacity at the end of the period); revenue
   at the node's selling price on units sold (stores) or shipped to children (DCs). The reward of
   period t is weighted by discount^t with ``reward.discounted``; the discounted_profit KPI always is.

`step` runs steps 3-6 of period t, advances t and runs step 1 of period t+1, so a `State` always sits
at a decision point. A lead time of L means an order placed in period t is usable for demand in t+L.

Entry points: the separate functions (`check_levels`, `levels_to_qty`, `step`, `observe`, for tests,
tools and shields that act between them) and `period`, which runs all of them for one period in one
compiled call over a `Bound` (the batch's parameters and buffers bound once): what `ArrayEnv.step`
and the PettingZoo step use when no shield sits between the policy and the kernel.

Implementation notes: every batched entry point is one Python function compiled twice, serially
and with ``parallel=True`` (``prange`` is ``range`` in the serial build). Inside, arrays are unpacked
into locals once and the per-pair loops call only small helpers that take scalars or arrays: passing
the Params/State tuples to non-inlined helpers inside a loop costs hundreds of nanoseconds a call.
Even ``inline="always"`` helpers that take arrays cost reference-count traffic per call (about 50 ns:
it was 4/5 of a demand draw), so per-pair helpers take scalars only. `observe` runs one parallel row
per (environment, node), so a single big environment (`large`) uses every thread; its masks use
division-free fit tests that give the same levels as `level_quantity` (tests/envs/test_kernel_masks.py).
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit, prange, types
from numba.experimental import structref
from restock.envs.constraints import BIG, bound_values, owed_out_rows, tightest
from restock.envs.jit import variant
from restock.envs.rng import uniform_at
from restock.envs.types import (
    C_FIXED,
    C_HOLD,
    C_ORDER,
    C_OVERFLOW,
    C_PIPE,
    C_STOCKOUT,
    K_ARRIVED,
    K_BACKLOG,
    K_DEMAND,
    K_DISCOUNTED_PROFIT,
    K_DISPOSED,
    K_FILLED,
    K_LOST,
    K_ON_HAND,
    K_ON_HAND_VALUE,
    K_ORDER_LINES,
    K_ORDERED,
    K_OVERFLOW_VOL,
    K_PIPELINE,
    K_RECEIVED_SHIP,
    K_SALES_VALUE,
    K_SHIPPED_OUT,
    K_SPEND,
    K_STOCKOUT_SKUS,
    K_UNMET,
    MODE_QUANTITY,
    N_COST,
    RATION_PROPORTIONAL,
    SKU_FEATURES_FIXED,
    UB_FEATURE_CAP,
)

# ------------------------------------------------------------------------------------------------
# small helpers (scalars and arrays only)

# _BYTE_PREFIX[j]: a 64-bit word whose bytes 0..j-1 are 1 and the rest 0 (little-endian). `observe`
# writes a mask row 8 levels at a time with these: one store instead of eight byte stores.
_BYTE_PREFIX = np.array([sum(1 << (8 * i) for i in range(j)) for j in range(9)], np.uint64)
_LITTLE_ENDIAN = sys.byteorder == "little"
# below this, products of two such int64 values stay under 2^52: exact in float64 (rationing)
_FLOAT_EXACT = np.int64(1 << 26)
_NF = len(SKU_FEATURES_FIXED)  # fixed per-SKU features; pipeline slot j is feature _NF - 1 + j
assert _NF == 15, "observe writes the fixed features by position: update it with SKU_FEATURES_FIXED"


@njit(cache=True)
def _ration(avail, req_of, ship_of, frac_of, idx, lo, hi, rule):
    """Split ``avail`` units over requesters idx[lo:hi] (requests req_of[i], results into ship_of[i]).

    Proportional: floor shares, then the remaining units one each to the largest fractional
    remainders (ties to the lower position). Priority: in position order. ``req_of``/``ship_of`` (and
    the scratch ``frac_of``, the remainders, computed once: recomputing them in every pass of the
    remainder loop was most of a short DC's step in `large`) are indexed by the requester's node id.
    """
    avail = np.int64(avail)
    total = np.int64(0)
    for i in range(lo, hi):
        total += req_of[idx[i]]
    if total <= avail:
        for i in range(lo, hi):
            ship_of[idx[i]] = req_of[idx[i]]
        return
    if avail <= 0:
        for i in range(lo, hi):
            ship_of[idx[i]] = 0
        return
    if rule != RATION_PROPORTIONAL:
        left = avail
        for i in range(lo, hi):
            r = req_of[idx[i]]
            x = r if r < left else left
            ship_of[idx[i]] = x
            left -= x
        return
    given = np.int64(0)
    exact = avail < _FLOAT_EXACT and total < _FLOAT_EXACT  # then every avail*req < 2^52 too
    inv = 1.0 / total
    for i in range(lo, hi):
        num = avail * req_of[idx[i]]
        if exact:
            # floor(num / total) from a float estimate (off by at most one), corrected in integers:
            # a 64-bit integer division per requester was most of a rationing call
            x = np.int64(num * inv)
            if x * total > num:
                x -= 1
            elif (x + 1) * total <= num:
                x += 1
        else:
            x = num // total
        ship_of[idx[i]] = x
        frac_of[idx[i]] = num - x * total  # avail*req mod total (all terms >= 0)
        given += x
    rem = avail - given
    # the remainder goes by largest fractional part (avail*req mod total), ties to the lower position
    prev_f = np.int64(-1)
    prev_i = -1
    for _ in range(rem):
        best_f = np.int64(-1)
        best_i = -1
        for i in range(lo, hi):
            f = frac_of[idx[i]]
            if prev_i >= 0 and (f > prev_f or (f == prev_f and i <= prev_i)):
                continue  # already served: strictly after (prev_f, prev_i) in (f desc, i asc)
            if f > best_f:
                best_f = f
                best_i = i
        if best_i < 0:
            break
        ship_of[idx[best_i]] += 1
        prev_f = best_f
        prev_i = best_i


@njit(cache=True, inline="always")
def level_quantity(l, mode, qstep, cover_step, forecast, ip, lot, moq):
    """Order quantity of action level l (level 0 always orders nothing).

    quantity mode: l * qstep (qstep = lots_per_level * lot size). order-up-to mode: raise the
    inventory position ip to l * cover_step periods of the forecast, rounded up to the lot size, at
    least the MOQ.
    """
    if l <= 0:
        return np.int64(0)
    if mode == MODE_QUANTITY:
        return np.int64(l) * qstep
    gap = l * cover_step * forecast - ip
    if gap <= 1e-9:
        return np.int64(0)
    q = np.int64(math.ceil(gap - 1e-9))
    if lot == 1:  # most SKUs: no divisions
        return q if q >= moq else np.int64(moq)
    q = ((q + lot - 1) // lot) * lot
    if q < moq:
        q = ((moq + lot - 1) // lot) * lot
    return q


@njit(cache=True, inline="always")
def _up_fits(l, cover_step, forecast, ip, ub, ub_lot, moq_lot):
    """``level_quantity(l) <= ub`` for l >= 1 in order-up-to mode, without divisions.

    level_quantity(l) = max(lot-ceiling of q0, moq_lot) with q0 = ceil(gap - 1e-9) when gap > 1e-9,
    so it fits iff q0 <= ub_lot (the largest lot multiple <= ub) and moq_lot <= ub, and
    ceil(y) <= ub_lot iff y <= ub_lot: the same float ``gap`` decides, so the answer is the same.
    """
    gap = l * cover_step * forecast - ip
    if gap <= 1e-9:
        return ub >= 0
    return moq_lot <= ub and gap - 1e-9 <= ub_lot


@njit(cache=True, inline="always")
def allowed_levels(L, mode, qstep, cover_step, forecast, ip, lot, moq, ub):
    """(lo, hi): levels 1..L-1 allowed under the bound ub on the quantity are exactly lo..hi (empty when
    hi < lo); level 0 is always allowed. Quantities grow with the level, so the allowed set is a range
    (quantity mode skips the levels below the MOQ). The closed form is checked against
    `level_quantity` at the edges, so float rounding can never let an infeasible level through."""
    if mode == MODE_QUANTITY:
        lo = np.int64(1)
        if moq > qstep:
            lo = (moq + qstep - 1) // qstep
        if qstep > 0:
            # min(ub // qstep, L - 1), dividing only when the bound binds
            hi = np.int64(L - 1) if ub >= (L - 1) * qstep else ub // qstep
        else:
            hi = np.int64(L - 1)
        return lo, hi
    step = cover_step * forecast
    if step <= 0.0:
        # every level targets 0: they all order the same (nothing, or what clears a backlog)
        q = level_quantity(1, mode, qstep, cover_step, forecast, ip, lot, moq)
        return np.int64(1), np.int64(L - 1) if q <= ub else np.int64(0)
    if lot == 1:
        ub_lot = np.int64(ub)
        moq_lot = np.int64(moq)
    else:
        ub_lot = (ub // lot) * lot
        moq_lot = ((moq + lot - 1) // lot) * lot
    top = ub_lot + ip if ub_lot >= moq_lot and ub_lot > 0 else ip  # largest feasible target
    x = top / step
    hi = np.int64(math.floor(x)) if x < L else np.int64(L - 1)
    if hi < 0:
        hi = np.int64(0)
    while hi >= 1 and not _up_fits(hi, cover_step, forecast, ip, ub, ub_lot, moq_lot):
        hi -= 1
    while hi + 1 <= L - 1 and _up_fits(hi + 1, cover_step, forecast, ip, ub, ub_lot, moq_lot):
        hi += 1
    return np.int64(1), hi


@njit(cache=True)
def level_qty(p, n, k, l, ip, tc):
    """`level_quantity` for node n, SKU k at clamped period tc (slow path, from Python)."""
    return level_quantity(
        l, p.mode[n], p.qstep[n, k], p.cover_step[n], p.mean[n, k] * p.season[tc], ip, p.lot[k], p.moq[k]
    )


@njit(cache=True)
def _arrive(e, t, horizon, pipe, transit, on_hand, arrived, volume, dispose, storage_cap, ocost, kpi, cost):
    """Step 1 for environment e: shipments due in period t arrive (disposal when they do not fit)."""
    N, K = on_hand.shape[1], on_hand.shape[2]
    W = pipe.shape[2]
    slot = t % W
    tc = t if t < horizon else horizon
    for n in range(N):
        vol_arr = 0.0
        for k in range(K):
            a = pipe[e, n, slot, k]
            pipe[e, n, slot, k] = 0
            transit[e, n, k] -= a
            arrived[e, n, k] = a
            vol_arr += a * volume[k]
        cap = storage_cap[tc, n]
        if dispose[n] and vol_arr > 0.0 and not math.isinf(cap):
            used = 0.0
            for k in range(K):
                used += (on_hand[e, n, k] + arrived[e, n, k]) * volume[k]
            excess = used - cap
            if excess > 0.0:
                frac = excess / vol_arr
                if frac > 1.0:
                    frac = 1.0
                for k in range(K):
                    a = np.int64(arrived[e, n, k])
                    if a > 0:
                        d = np.int64(math.ceil(a * frac - 1e-9))
                        if d > a:
                            d = a
                        arrived[e, n, k] = a - d
                        kpi[e, n, K_DISPOSED] += d
                        cost[e, n, C_OVERFLOW] += ocost[n] * d * volume[k]
        units = np.int64(0)
        for k in range(K):
            on_hand[e, n, k] += arrived[e, n, k]
            units += arrived[e, n, k]
        kpi[e, n, K_ARRIVED] += units


@njit(cache=True)
def _receive(
    e, n, tc, on_hand, arrived, volume, vol_on_hand, vol_arr, dispose, storage_cap, ocost, kpi, cost
):
    """Put node n's arrivals (already taken out of transit into ``arrived``) on hand; with overflow
    ``dispose``, arrivals that do not fit the storage volume are refused pro rata (rounded up)."""
    K = on_hand.shape[2]
    cap = storage_cap[tc, n]
    if dispose[n] and vol_arr > 0.0 and not math.isinf(cap):
        excess = vol_on_hand + vol_arr - cap
        if excess > 0.0:
            frac = excess / vol_arr
            if frac > 1.0:
                frac = 1.0
            for k in range(K):
                a = np.int64(arrived[e, n, k])
                if a > 0:
                    d = np.int64(math.ceil(a * frac - 1e-9))
                    if d > a:
                        d = a
                    arrived[e, n, k] = a - d
                    kpi[e, n, K_DISPOSED] += d
                    cost[e, n, C_OVERFLOW] += ocost[n] * d * volume[k]
    units = np.int64(0)
    for k in range(K):
        on_hand[e, n, k] += arrived[e, n, k]
        units += arrived[e, n, k]
    kpi[e, n, K_ARRIVED] += units


@njit(cache=True)
def _rewards(e, cost, revenue, reward, kpi, include_revenue, net_weight, scale, disc, rdisc):
    """Rewards of period t (weighted by rdisc = discount^t with reward.discounted, else 1) and the
    discounted_profit KPI disc x (revenue - cost) per node."""
    N = cost.shape[1]
    tot = 0.0
    for n in range(N):
        c = 0.0
        for j in range(N_COST):
            c += cost[e, n, j]
        kpi[e, n, K_DISCOUNTED_PROFIT] = disc * (revenue[e, n] - c)
        if include_revenue:
            c -= revenue[e, n]
        reward[e, n] = c  # the node's net cost for now
        tot += c
    mean = tot / N
    for n in range(N):
        reward[e, n] = -((1.0 - net_weight) * reward[e, n] + net_weight * mean) / scale * rdisc


# ------------------------------------------------------------------------------------------------
# steps 3-6 and the advance to t+1


def _step_impl(p, s, w, qty, demand, out):
    """Advance every environment one period: qty[E, N, K] executed orders, demand[E, S, K]."""
    E, N, K = s.on_hand.shape
    W = s.pipe.shape[2]
    M = p.n_dcs
    U = p.sup_ptr.shape[0] - 1
    T = p.horizon
    on_hand, backlog, owed, pipe, transit = s.on_hand, s.backlog, s.owed, s.pipe, s.transit
    last_order, last_demand, shipped, arrived = s.last_order, s.last_demand, s.shipped, s.arrived
    cost, kpi, revenue, reward = out.cost, out.kpi, out.revenue, out.reward
    # every tuple member used inside the prange loop is unpacked here: numba's parallel lowering lost
    # writes made through a NamedTuple attribute inside the loop (the period counter did not advance)
    t_arr, key_arr = s.t, s.key
    w_req, w_ship, w_a, w_b, w_oo, w_frac = w.req, w.ship, w.a, w.b, w.owed_out, w.frac
    volume, unit_cost = p.volume, p.unit_cost
    for e in prange(E):
        t = np.int64(t_arr[e])
        tc = t if t < T else np.int64(T)
        req = w_req[e]
        ship = w_ship[e]
        frac = w_frac[e]
        tot = w_a[e]  # per-SKU scratch rows
        tot2 = w_b[e]
        for n in range(N):
            for j in range(cost.shape[2]):
                cost[e, n, j] = 0.0
            for j in range(kpi.shape[2]):
                kpi[e, n, j] = 0.0
            revenue[e, n] = 0.0

        # orders: bookkeeping, fixed costs, budget spend
        for n in range(N):
            units = np.int64(0)
            lines = np.int64(0)
            spend = 0.0
            fixed = 0.0
            for k in range(K):
                q = max(qty[e, n, k], 0)
                qty[e, n, k] = q
                last_order[e, n, k] = q
                pos = 1 if q > 0 else 0
                units += q
                lines += pos
                spend += unit_cost[k] * q
                fixed += p.fixed_cost[n, k] * pos
            kpi[e, n, K_ORDERED] = units
            kpi[e, n, K_ORDER_LINES] = lines
            kpi[e, n, K_SPEND] = spend
            cost[e, n, C_FIXED] = fixed

        # step 3: suppliers (src < U), then DCs in order (src >= U is DC src - U)
        for src in range(U + M):
            if src < U:
                lo, hi = p.sup_ptr[src], p.sup_ptr[src + 1]
                idx = p.sup_idx
                bl = p.sup_backlog[src]
                for i in range(lo, hi):
                    c = idx[i]
                    for k in range(K):
                        shipped[e, c, k] = qty[e, c, k] + (owed[e, c, k] if bl else 0)
                if p.sup_capped[src]:
                    for k in range(K):
                        cap = p.sup_cap[tc, src, k]
                        if math.isinf(cap):
                            continue
                        total = np.int64(0)
                        for i in range(lo, hi):
                            total += shipped[e, idx[i], k]
                        if total <= cap:
                            continue
                        for i in range(lo, hi):
                            req[idx[i]] = shipped[e, idx[i], k]
                        _ration(np.int64(cap), req, ship, frac, idx, lo, hi, RATION_PROPORTIONAL)
                        for i in range(lo, hi):
                            shipped[e, idx[i], k] = ship[idx[i]]
            else:
                d = src - U
                lo, hi = p.child_ptr[d], p.child_ptr[d + 1]
                idx = p.child_idx
                bl = p.backlog[d]
                # requests: this period's orders (+ what is owed when backlogging); per-SKU totals
                for k in range(K):
                    tot[k] = 0
                    tot2[k] = 0
                for i in range(lo, hi):
                    c = idx[i]
                    for k in range(K):
                        r = np.int64(qty[e, c, k]) + (np.int64(owed[e, c, k]) if bl else np.int64(0))
                        shipped[e, c, k] = r
                        tot[k] += r
                        tot2[k] += qty[e, c, k]
                dem_units = np.int64(0)
                for k in range(K):
                    last_demand[e, d, k] = tot2[k]
                    dem_units += tot2[k]
                    avail = np.int64(on_hand[e, d, k])
                    if p.ship_first[d]:  # this period's arrivals ship next period
                        avail -= arrived[e, d, k]
                    if tot[k] <= avail:
                        continue
                    if avail <= 0:
                        # nothing on hand: nobody gets anything (what `_ration` gives, without the
                        # call and the copies; a DC that runs dry is short on most SKUs at once)
                        for i in range(lo, hi):
                            shipped[e, idx[i], k] = 0
                    else:  # short: ration this SKU
                        for i in range(lo, hi):
                            req[idx[i]] = shipped[e, idx[i], k]
                        _ration(avail, req, ship, frac, idx, lo, hi, p.rationing[d])
                        for i in range(lo, hi):
                            shipped[e, idx[i], k] = ship[idx[i]]
                kpi[e, d, K_DEMAND] = dem_units
            # lane capacity, then into transit (or on hand at once when the lead time is 0)
            for i in range(lo, hi):
                c = idx[i]
                lcap = p.lane_cap[c]
                if not math.isinf(lcap):
                    vol = 0.0
                    for k in range(K):
                        vol += shipped[e, c, k] * volume[k]
                    if vol > lcap:
                        f = lcap / vol
                        for k in range(K):
                            shipped[e, c, k] = np.int64(math.floor(shipped[e, c, k] * f + 1e-9))
                extra = p.lt_extra[tc, c]
                units = np.int64(0)
                ocost = 0.0
                if p.lt_uniform[c]:
                    L = p.lt_value[c, 0] + extra
                    if L > W - 1:
                        L = W - 1
                    if L == 0:
                        for k in range(K):
                            q = shipped[e, c, k]
                            on_hand[e, c, k] += q
                            units += q
                            ocost += p.order_cost[c, k] * q
                    else:
                        slot = (t + L) % W
                        for k in range(K):
                            q = shipped[e, c, k]
                            pipe[e, c, slot, k] += q
                            transit[e, c, k] += q
                            units += q
                            ocost += p.order_cost[c, k] * q
                else:
                    fixed_lt = p.lt_fixed[c]
                    u = 0.0 if fixed_lt else uniform_at(key_arr[e], t, c)
                    for k in range(K):
                        q = shipped[e, c, k]
                        if q == 0:
                            continue
                        units += q
                        ocost += p.order_cost[c, k] * q
                        if fixed_lt:
                            L = p.lt_value[c, k]
                        else:
                            L = W - 1
                            for l in range(W):
                                if u < p.lt_cdf[c, k, l]:
                                    L = l
                                    break
                        L += extra
                        if L > W - 1:
                            L = W - 1
                        if L == 0:
                            on_hand[e, c, k] += q
                        else:
                            pipe[e, c, (t + L) % W, k] += q
                            transit[e, c, k] += q
                cost[e, c, C_ORDER] += ocost
                kpi[e, c, K_RECEIVED_SHIP] += units
            if src < U:
                # what the supplier did not ship is owed (backlog) or cancelled, with its penalty
                if p.sup_settle[src]:
                    for i in range(lo, hi):
                        c = idx[i]
                        short_cost = 0.0
                        for k in range(K):
                            r = np.int64(qty[e, c, k]) + (np.int64(owed[e, c, k]) if bl else np.int64(0))
                            short = r - np.int64(shipped[e, c, k])
                            if bl:
                                owed[e, c, k] = short
                            short_cost += p.sup_penalty[src, k] * short
                        cost[e, c, C_STOCKOUT] += short_cost
                continue
            # settle the DC: on hand, owed or lost. Owed units are served first, so this period's
            # orders were filled at once by what was shipped beyond the old debts.
            d = src - U
            for k in range(K):
                tot[k] = 0  # shipped per SKU
                tot2[k] = 0  # old debts per SKU
            lost = np.int64(0)
            stock_cost = 0.0
            for i in range(lo, hi):
                c = idx[i]
                for k in range(K):
                    sh = np.int64(shipped[e, c, k])
                    old = np.int64(owed[e, c, k]) if bl else np.int64(0)
                    r = qty[e, c, k] + old
                    tot[k] += sh
                    tot2[k] += old
                    if bl:
                        owed[e, c, k] = r - sh
                    else:
                        lost += r - sh
                        stock_cost += p.stockout[d, k] * (r - sh)
            ship_units = np.int64(0)
            filled = np.int64(0)
            unmet = np.int64(0)
            stockout_skus = np.int64(0)
            sales_value = 0.0
            dc_rev = 0.0
            for k in range(K):
                sk = tot[k]
                on_hand[e, d, k] -= sk
                ship_units += sk
                sales_value += unit_cost[k] * sk
                dc_rev += p.price[d, k] * sk
                new_orders = np.int64(last_demand[e, d, k])
                f = min(max(sk - tot2[k], 0), new_orders)
                filled += f
                unmet += new_orders - f
                stockout_skus += 1 if new_orders > f else 0
            kpi[e, d, K_SHIPPED_OUT] = ship_units
            kpi[e, d, K_FILLED] = filled
            kpi[e, d, K_UNMET] = unmet
            kpi[e, d, K_LOST] = lost
            kpi[e, d, K_STOCKOUT_SKUS] = stockout_skus
            kpi[e, d, K_SALES_VALUE] = sales_value
            revenue[e, d] = dc_rev
            cost[e, d, C_STOCKOUT] += stock_cost

        # steps 4-6, node by node (nodes no longer interact once shipping is done): customer demand
        # at stores (backlogged customers first), end-of-period costs and levels, then the next
        # period's arrivals. A DC's backlog is what it owes its children.
        oo = w_oo[e]
        owed_out_rows(owed, p.parent, e, oo, M)
        t1 = t + 1
        tc1 = t1 if t1 < T else np.int64(T)
        slot1 = t1 % W
        for n in range(N):
            is_dc = n < M
            bl = p.backlog[n]
            dem_units = np.int64(0)
            served = np.int64(0)
            filled = np.int64(0)
            lost = np.int64(0)
            stockout_skus = np.int64(0)
            rev = 0.0
            sales_value = 0.0
            stock_cost = 0.0
            hold = 0.0
            pipe_cost = 0.0
            oh_units = np.int64(0)
            pipe_units = np.int64(0)
            bl_units = np.int64(0)
            vol = 0.0
            value = 0.0
            arr_vol = 0.0
            for k in range(K):
                oh = np.int64(on_hand[e, n, k])
                b = np.int64(0)
                if not is_dc:
                    dmd = np.int64(demand[e, n - M, k])
                    last_demand[e, n, k] = dmd
                    b = np.int64(backlog[e, n, k]) if bl else np.int64(0)
                    f = min(dmd, max(oh - b, 0))
                    want = b + dmd
                    serve = min(oh, want)
                    oh = oh - serve
                    on_hand[e, n, k] = oh
                    short = want - serve
                    if bl:
                        backlog[e, n, k] = short
                        b = short
                    else:
                        lost += short
                        stock_cost += p.stockout[n, k] * short
                        b = np.int64(0)
                    dem_units += dmd
                    served += serve
                    filled += f
                    stockout_skus += 1 if dmd > f else 0
                    rev += p.price[n, k] * serve
                    sales_value += unit_cost[k] * serve
                else:
                    b = oo[n, k]
                pt = np.int64(transit[e, n, k])
                oh_units += oh
                pipe_units += pt
                bl_units += b
                hold += p.hold[n, k] * oh
                pipe_cost += p.pipe_hold[n, k] * pt
                stock_cost += p.stockout[n, k] * b  # backlogged units (zero at lost-sales nodes)
                vol += oh * volume[k]
                value += unit_cost[k] * oh
                # next period's arrivals (step 1 of t+1)
                a = pipe[e, n, slot1, k]
                pipe[e, n, slot1, k] = 0
                transit[e, n, k] = pt - a
                arrived[e, n, k] = a
                arr_vol += a * volume[k]
            if not is_dc:
                kpi[e, n, K_DEMAND] = dem_units
                kpi[e, n, K_SHIPPED_OUT] = served
                kpi[e, n, K_FILLED] = filled
                kpi[e, n, K_UNMET] = dem_units - filled
                kpi[e, n, K_LOST] = lost
                kpi[e, n, K_STOCKOUT_SKUS] = stockout_skus
                kpi[e, n, K_SALES_VALUE] = sales_value
                revenue[e, n] = rev
                cost[e, n, C_STOCKOUT] += stock_cost
            else:
                cost[e, n, C_STOCKOUT] += stock_cost
            cost[e, n, C_HOLD] = hold
            cost[e, n, C_PIPE] = pipe_cost
            kpi[e, n, K_ON_HAND] = oh_units
            kpi[e, n, K_PIPELINE] = pipe_units
            kpi[e, n, K_BACKLOG] = bl_units
            kpi[e, n, K_ON_HAND_VALUE] = value
            cap = p.storage_cap[tc, n]
            if not math.isinf(cap) and vol > cap:
                kpi[e, n, K_OVERFLOW_VOL] = vol - cap
                if not p.overflow_dispose[n]:
                    cost[e, n, C_OVERFLOW] += p.overflow_cost[n] * (vol - cap)
            _receive(
                e,
                n,
                tc1,
                on_hand,
                arrived,
                volume,
                vol,
                arr_vol,
                p.overflow_dispose,
                p.storage_cap,
                p.overflow_cost,
                kpi,
                cost,
            )
        t_arr[e] = t1
        _rewards(
            e,
            cost,
            revenue,
            reward,
            kpi,
            p.include_revenue,
            p.net_weight,
            p.reward_scale,
            p.disc[tc],
            p.reward_disc[tc],
        )


# No fastmath: reassociated (vectorised) float sums were 1.5x faster but their rounding depended on
# array alignment, so two identical environments could differ in the last bit of a reward.
step = njit(cache=True)(_step_impl)
step_par = njit(cache=True, parallel=True)(variant(_step_impl, "_par"))


# ------------------------------------------------------------------------------------------------
# observations, masks, actions


def _observe_impl(p, s, w, obs, mask, ub, features=True, rows=None):
    """Observations obs[E, N, D], masks mask[E, N, K, Lmax] and tightest bounds ub[E, N, K].

    With ``features=False`` only masks and bounds are computed and ``obs`` is left untouched (for
    policies that read only ``mask`` and ``ub``, such as the heuristics): `observe_bounds`. With
    ``rows`` (int64 [R, 2] of (environment, node)) only those rows are written (`observe_rows`: the
    serving shim decides one node per environment); every other row keeps what it held.
    """
    N, K = s.on_hand.shape[1], s.on_hand.shape[2]
    W = s.pipe.shape[2]
    T = p.horizon
    M = p.n_dcs
    Lmax = mask.shape[3]
    # observed per-SKU features (the scenario's observation block): all of them (dense) or a subset
    # in the same order, written from the same float64 values (envs.observation)
    feat_sel = p.feat_sel
    F = feat_sel.shape[0] if features else 0
    if features and obs.shape[2] != K * F + 4:
        raise ValueError("obs width is not K * F + 4 for the scenario's observed features")
    dense = F == _NF + W - 1
    col = np.full(_NF + W - 1, -1, np.int64)  # column of each feature in a SKU's block, -1 = not observed
    for j in range(F):
        col[feat_sel[j]] = j
    # mask rows as 64-bit words (8 levels each) when the layout allows; the same bytes either way
    words = _LITTLE_ENDIAN and Lmax % 8 == 0 and mask.flags.c_contiguous
    mask_w = mask.view(np.uint64) if words else np.zeros((1, 1, 1, 1), np.uint64)
    n_words = Lmax // 8
    on_hand, backlog, owed, pipe, transit = s.on_hand, s.backlog, s.owed, s.pipe, s.transit
    last_order, last_demand, shipped, arrived = s.last_order, s.last_demand, s.shipped, s.arrived
    t_arr, w_oo = s.t, w.owed_out  # unpacked: see _step_impl
    volume, unit_cost, lot_, moq_ = p.volume, p.unit_cost, p.lot, p.moq
    mean, qstep_, inv_scale, log_scale, crit_ratio, lt_mean = (
        p.mean,
        p.qstep,
        p.inv_scale,
        p.log_scale,
        p.crit_ratio,
        p.lt_mean,
    )
    parent, supplier, dc_backlog, is_store_, levels_, mode_ = (
        p.parent,
        p.supplier,
        p.backlog,
        p.is_store,
        p.levels,
        p.mode,
    )
    cap_ahead, storage_cap, sup_cap, lane_cap, budget_, max_increase, cover_step = (
        p.storage_cap_ahead,
        p.storage_cap,
        p.sup_cap,
        p.lane_cap,
        p.budget,
        p.max_increase,
        p.cover_step,
    )
    E = on_hand.shape[0]
    for e in prange(E):
        owed_out_rows(owed, parent, e, w_oo[e], M)
    # one row per environment and node, so that one big environment (`large`) uses every thread
    if rows is None:
        R = E * N
    else:
        R = rows.shape[0]
    for r in prange(R):
        if rows is None:
            e = r // N
            n = r % N
        else:
            e = rows[r, 0]
            n = rows[r, 1]
        t = np.int64(t_arr[e])
        tc = t if t < T else np.int64(T)
        slot0 = t % W
        oo = w_oo[e]
        season = p.season[tc]
        tfrac = t / T
        cap_a = cap_ahead[tc, n]
        headroom = np.inf
        if not math.isinf(cap_a):
            # committed volume: everything on hand, on the way and owed (no demand meanwhile)
            committed = 0.0
            for k in range(K):
                committed += (on_hand[e, n, k] + np.int64(transit[e, n, k]) + owed[e, n, k]) * volume[k]
            headroom = cap_a - committed
            if headroom < 0.0:
                headroom = 0.0
        u = supplier[n]
        d = parent[n]
        dc_bound = d >= 0 and not dc_backlog[d]  # a backlogging DC queues what it cannot ship
        lane = lane_cap[n]
        budget = budget_[n]
        maxinc = max_increase[n]
        L = levels_[n]
        mode = mode_[n]
        cs = cover_step[n]
        is_store = is_store_[n]
        for k in range(K):
            sc = sup_cap[tc, u, k] if u >= 0 else np.inf
            atp = BIG
            if dc_bound:
                atp = np.int64(on_hand[e, d, k]) - oo[d, k]
                if p.ship_first[d]:  # it ships from start-of-period stock: this period's arrivals wait
                    atp -= np.int64(arrived[e, d, k])
                if atp < 0:
                    atp = np.int64(0)
            b = bound_values(
                volume[k], unit_cost[k], headroom, sc, lane, budget, atp, last_order[e, n, k], maxinc
            )
            ubk = tightest(b)
            ub[e, n, k] = ubk
            back = np.int64(backlog[e, n, k]) if is_store else oo[n, k]
            x = np.int64(transit[e, n, k])
            ip = np.int64(on_hand[e, n, k]) + x + owed[e, n, k] - back
            fc = mean[n, k] * season
            # mask: level 0 always; higher levels while the quantity fits every per-SKU bound
            lot = lot_[k]
            lo, hi = allowed_levels(L, mode, qstep_[n, k], cs, fc, ip, lot, moq_[k], ubk)
            if words and lo <= 1 and hi >= Lmax - 1:  # every level allowed (the common case)
                for wi in range(n_words):
                    mask_w[e, n, k, wi] = _BYTE_PREFIX[8]
            elif words:
                # bytes lo..hi (clipped to each word) set, and level 0
                for wi in range(n_words):
                    a = lo - 8 * wi
                    a = 0 if a < 0 else (8 if a > 8 else a)
                    z = hi + 1 - 8 * wi
                    z = 0 if z < 0 else (8 if z > 8 else z)
                    v = _BYTE_PREFIX[z] - _BYTE_PREFIX[a] if z > a else np.uint64(0)
                    if wi == 0:
                        v |= np.uint64(1)
                    mask_w[e, n, k, wi] = v
            else:
                mask[e, n, k, 0] = 1
                for l in range(1, Lmax):
                    mask[e, n, k, l] = 1 if lo <= l <= hi else 0
            if features and not dense:
                # the observed subset: each feature written to its column, or skipped (col < 0)
                inv = inv_scale[n, k]
                o = k * F
                if col[0] >= 0:
                    obs[e, n, o + col[0]] = on_hand[e, n, k] * inv
                if col[1] >= 0:
                    obs[e, n, o + col[1]] = back * inv
                if col[2] >= 0:
                    obs[e, n, o + col[2]] = owed[e, n, k] * inv
                if col[3] >= 0:
                    obs[e, n, o + col[3]] = x * inv
                if col[4] >= 0:
                    obs[e, n, o + col[4]] = last_demand[e, n, k] * inv
                if col[5] >= 0:
                    obs[e, n, o + col[5]] = shipped[e, n, k] * inv
                if col[6] >= 0:
                    obs[e, n, o + col[6]] = arrived[e, n, k] * inv
                if col[7] >= 0:
                    obs[e, n, o + col[7]] = last_order[e, n, k] * inv
                if col[8] >= 0:
                    obs[e, n, o + col[8]] = fc * inv
                if col[9] >= 0:
                    v = ubk * inv
                    obs[e, n, o + col[9]] = v if v < UB_FEATURE_CAP else UB_FEATURE_CAP
                if col[10] >= 0:
                    obs[e, n, o + col[10]] = ip * inv
                if col[11] >= 0:
                    obs[e, n, o + col[11]] = log_scale[n, k]
                if col[12] >= 0:
                    obs[e, n, o + col[12]] = crit_ratio[n, k]
                if col[13] >= 0:
                    obs[e, n, o + col[13]] = lot * inv
                if col[14] >= 0:
                    obs[e, n, o + col[14]] = lt_mean[n, k]
                for j in range(1, W):
                    c = col[_NF - 1 + j]
                    if c >= 0:
                        sl = slot0 + j
                        if sl >= W:
                            sl -= W
                        obs[e, n, o + c] = pipe[e, n, sl, k] * inv
            elif features:
                # per-SKU features, in types.SKU_FEATURES_FIXED order, then the pipeline by arrival
                inv = inv_scale[n, k]
                o = k * F
                obs[e, n, o + 0] = on_hand[e, n, k] * inv
                obs[e, n, o + 1] = back * inv
                obs[e, n, o + 2] = owed[e, n, k] * inv
                obs[e, n, o + 3] = x * inv
                obs[e, n, o + 4] = last_demand[e, n, k] * inv
                obs[e, n, o + 5] = shipped[e, n, k] * inv
                obs[e, n, o + 6] = arrived[e, n, k] * inv
                obs[e, n, o + 7] = last_order[e, n, k] * inv
                obs[e, n, o + 8] = fc * inv
                v = ubk * inv
                obs[e, n, o + 9] = v if v < UB_FEATURE_CAP else UB_FEATURE_CAP
                obs[e, n, o + 10] = ip * inv
                obs[e, n, o + 11] = log_scale[n, k]
                obs[e, n, o + 12] = crit_ratio[n, k]
                obs[e, n, o + 13] = lot * inv
                obs[e, n, o + 14] = lt_mean[n, k]
                for j in range(1, W):
                    sl = slot0 + j
                    if sl >= W:
                        sl -= W
                    obs[e, n, o + 14 + j] = pipe[e, n, sl, k] * inv
        if features:
            # node context (types.NODE_FEATURES)
            g = K * F
            obs[e, n, g + 0] = tfrac
            obs[e, n, g + 1] = is_store
            cap = storage_cap[tc, n]
            if math.isinf(cap) or cap <= 0:
                obs[e, n, g + 2] = 0.0
            else:
                vol_oh = 0.0
                for k in range(K):
                    vol_oh += on_hand[e, n, k] * volume[k]
                obs[e, n, g + 2] = vol_oh / cap
            if math.isinf(budget):
                obs[e, n, g + 3] = 100.0
            else:
                den = 0.0
                for k in range(K):
                    den += unit_cost[k] * mean[n, k]
                v = budget / den if den > 0 else 100.0
                obs[e, n, g + 3] = v if v < 100.0 else 100.0


observe = njit(cache=True)(_observe_impl)
observe_par = njit(cache=True, parallel=True)(variant(_observe_impl, "_par"))
# the same function, always called with features=False (its own dispatcher: one signature each)
observe_bounds = njit(cache=True)(variant(_observe_impl, "_bounds"))
observe_bounds_par = njit(cache=True, parallel=True)(variant(_observe_impl, "_bounds_par"))
# the same function for chosen (environment, node) rows (features on): `_observe_impl`'s ``rows``
observe_rows = njit(cache=True)(variant(_observe_impl, "_rows"))


def _levels_to_qty_impl(p, s, w, levels, qty):
    """qty[E, N, K]: the order quantities of action levels[E, N, K] at the current state."""
    E, N, K = levels.shape
    T = p.horizon
    M = p.n_dcs
    mode_, qstep, is_store_, cover_step, mean, lot_, moq_, season_, parent = (
        p.mode,
        p.qstep,
        p.is_store,
        p.cover_step,
        p.mean,
        p.lot,
        p.moq,
        p.season,
        p.parent,
    )
    on_hand, transit, owed, backlog, t_arr, w_oo = s.on_hand, s.transit, s.owed, s.backlog, s.t, w.owed_out
    for e in prange(E):
        owed_out_rows(owed, parent, e, w_oo[e], M)
    # one row per environment and node (integer arithmetic: the same quantities in any order)
    for r in prange(E * N):
        e = r // N
        n = r % N
        t = np.int64(t_arr[e])
        tc = t if t < T else np.int64(T)
        oo = w_oo[e]
        season = season_[tc]
        mode = mode_[n]
        is_store = is_store_[n]
        cs = cover_step[n]
        for k in range(K):
            l = levels[e, n, k]
            if l <= 0:
                qty[e, n, k] = 0
            elif mode == MODE_QUANTITY:
                qty[e, n, k] = l * qstep[n, k]
            else:
                x = np.int64(transit[e, n, k])
                back = np.int64(backlog[e, n, k]) if is_store else oo[n, k]
                ip = np.int64(on_hand[e, n, k]) + x + owed[e, n, k] - back
                qty[e, n, k] = level_quantity(
                    l, mode, qstep[n, k], cs, mean[n, k] * season, ip, lot_[k], moq_[k]
                )


levels_to_qty = njit(cache=True)(_levels_to_qty_impl)
levels_to_qty_par = njit(cache=True, parallel=True)(variant(_levels_to_qty_impl, "_par"))


@njit(cache=True)
def inventory_positions(p, s, w, ip_out):
    """ip_out[E, N, K]: installation inventory positions (on hand + in transit + owed by the parent -
    own backorders, or what a DC owes its children)."""
    E, N, K = s.on_hand.shape
    for e in range(E):
        oo = w.owed_out[e]
        owed_out_rows(s.owed, p.parent, e, oo, oo.shape[0])
        for n in range(N):
            for k in range(K):
                x = np.int64(s.transit[e, n, k])
                back = np.int64(s.backlog[e, n, k]) if p.is_store[n] else oo[n, k]
                ip_out[e, n, k] = np.int64(s.on_hand[e, n, k]) + x + s.owed[e, n, k] - back


@njit(cache=True)
def check_levels(p, levels, mask, clip):
    """Count levels[E, N, K] outside the masks; with clip, replace each by the largest allowed level
    at or below it (level 0 is always allowed). Returns the count and the first offender (e, n, k)."""
    E, N, _ = levels.shape
    bad = 0
    fe, fn, fk = -1, -1, -1
    for e in range(E):
        for n in range(N):
            b, k0 = _check_row(p, levels, mask, clip, e, n)
            bad += b
            if b and fe < 0:
                fe, fn, fk = e, n, k0
    return bad, fe, fn, fk


@njit(cache=True, inline="always")
def _check_row(p, levels, mask, clip, e, n):
    """`check_levels` for one (environment, node) row: the count of its levels outside the mask (each
    clipped in place with ``clip``) and its first offending SKU (-1 when none)."""
    L = p.levels[n]
    bad, fk = 0, -1
    for k in range(levels.shape[2]):
        l = levels[e, n, k]
        if 0 <= l < L and mask[e, n, k, l]:
            continue
        bad += 1
        if fk < 0:
            fk = k
        if clip:
            j = l if l < L else L - 1
            if j < 0:
                j = 0
            while j > 0 and mask[e, n, k, j] == 0:
                j -= 1
            levels[e, n, k] = j
    return bad, fk


@njit(cache=True)
def reset_envs(p, s, which, keys, init_on_hand, init_pipe, out):
    """Reset environments with which[e] != 0 to the initial state at t = 0 and receive its arrivals.

    init_pipe[N, K, W] holds the initial shipments by arrival offset (offset 0 arrives at once).
    """
    E, N, K = s.on_hand.shape
    W = s.pipe.shape[2]
    for e in range(E):
        if which[e] == 0:
            continue
        s.t[e] = 0
        s.key[e] = keys[e]
        for n in range(N):
            for j in range(out.cost.shape[2]):
                out.cost[e, n, j] = 0.0
            for j in range(out.kpi.shape[2]):
                out.kpi[e, n, j] = 0.0
            out.revenue[e, n] = 0.0
            out.reward[e, n] = 0.0
            for k in range(K):
                s.on_hand[e, n, k] = init_on_hand[n, k]
                s.backlog[e, n, k] = 0
                s.owed[e, n, k] = 0
                s.last_order[e, n, k] = 0
                s.last_demand[e, n, k] = 0
                s.shipped[e, n, k] = 0
                s.arrived[e, n, k] = 0
                tr = np.int64(0)
                for j in range(W):
                    s.pipe[e, n, j, k] = init_pipe[n, k, j]
                    tr += init_pipe[n, k, j]
                s.transit[e, n, k] = tr
        _arrive(
            e,
            np.int64(0),
            p.horizon,
            s.pipe,
            s.transit,
            s.on_hand,
            s.arrived,
            p.volume,
            p.overflow_dispose,
            p.storage_cap,
            p.overflow_cost,
            out.kpi,
            out.cost,
        )


# ------------------------------------------------------------------------------------------------
# one compiled entry per period


@structref.register
class BoundType(types.StructRef):
    """Numba type of `Bound` (one per combination of field types: in practice one per array layout)."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(t)) for name, t in fields)


class Bound(structref.StructRefProxy):
    """A batch's parameters and buffers bound once (`bind`), handed to `period` as one object.

    Passing the ~50-field `Params` NamedTuple into a compiled function costs microseconds a call (each
    field is typed and unboxed); a `Bound` is one reference, so the cost of a `period` call no longer
    grows with the number of parameter fields (`restock bench`: ``dispatch_us``). It holds references,
    not copies: the arrays it was bound to are the ones `period` reads and writes.
    """


BOUND_FIELDS = (
    "p",  # Params
    "s",  # State
    "w",  # Work
    "out",  # StepOut
    "obs",  # [E, N, D] float32
    "mask",  # [E, N, K, Lmax] int8
    "ub",  # [E, N, K] int32
    "qty",  # [E, N, K] int32 executed quantities of the last period
    "ep_cost",  # [E, N, N_COST] float64 episode sums
    "ep_kpi",  # [E, N, N_KPI] float64
    "ep_rev",  # [E, N] float64
    "ep_clipped",  # [E, N] int64 masked-out levels clipped this episode
    "clipped",  # [E, N] int64 ... in the last period
)
structref.define_proxy(Bound, BoundType, list(BOUND_FIELDS))


@njit(cache=True)
def bind(p, s, w, out, obs, mask, ub, qty, ep_cost, ep_kpi, ep_rev, ep_clipped, clipped):
    """A `Bound` over these arrays (built once per batch; rebuild it when any of them is replaced)."""
    return Bound(p, s, w, out, obs, mask, ub, qty, ep_cost, ep_kpi, ep_rev, ep_clipped, clipped)


@njit(cache=True)
def period(b, levels, clip, features, demand):
    """One whole period for the batch bound in ``b``, in one compiled call (serial build).

    1. mask check of levels[E, N, K] (int64) against ``b.mask``: with ``clip`` each masked-out level is
       replaced in place by the largest allowed level below it (counted in ``b.clipped`` and
       ``b.ep_clipped``); without, nothing else happens when one is found (the caller raises);
    2. `levels_to_qty` into ``b.qty``; 3. `step` with demand[E, S, K]; 4. the episode sums;
    5. the next observation: `observe` (``features``) or masks and bounds only (`observe_bounds`).

    The same functions as the separate calls, in the same order, so the results are identical.
    Returns (number of masked-out levels, first offender e, n, k; -1 when none).
    """
    p = b.p
    mask = b.mask
    clipped = b.clipped
    E, N, K = levels.shape
    bad = 0
    fe, fn, fk = -1, -1, -1
    for e in range(E):
        for n in range(N):
            r, k0 = _check_row(p, levels, mask, clip, e, n)
            clipped[e, n] = r if clip else 0
            bad += r
            if r and fe < 0:
                fe, fn, fk = e, n, k0
    if bad and not clip:
        return bad, fe, fn, fk
    s, w, out, qty = b.s, b.w, b.out, b.qty
    levels_to_qty(p, s, w, levels, qty)
    step(p, s, w, qty, demand, out)
    ep_cost, ep_kpi, ep_rev, ep_clipped = b.ep_cost, b.ep_kpi, b.ep_rev, b.ep_clipped
    cost, kpi, rev = out.cost, out.kpi, out.revenue
    for e in range(E):
        for n in range(N):
            ep_clipped[e, n] += clipped[e, n]
            ep_rev[e, n] += rev[e, n]
            for j in range(cost.shape[2]):
                ep_cost[e, n, j] += cost[e, n, j]
            for j in range(kpi.shape[2]):
                ep_kpi[e, n, j] += kpi[e, n, j]
    if features:
        observe(p, s, w, b.obs, mask, b.ub)
    else:
        observe_bounds(p, s, w, b.obs, mask, b.ub, False)
    return bad, fe, fn, fk
