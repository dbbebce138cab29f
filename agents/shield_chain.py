"""The shield's chain as compiled code: sanitise, clip, repair and snap a batch of proposed orders.

The passes are Numba functions (`chain_serial` and `chain_parallel` compile `_chain_impl`, which calls
`_repair_row`, `_repair_col` and `_group_totals`), kept here with the buffers they write;
`agents.shield.Shield` runs them and adds verification, the runtime guards (`agents.shield_guards`)
and the decision records.

Every hard constraint is an upper bound on an order (`envs.constraints`), so ordering zero is always
safe and any repair that only lowers quantities keeps everything it already satisfied. The chain,
batched over E environments and all nodes, in this order:

1. sanitise (`sanitise`): NaN, infinities and negatives become 0, values above BIG become BIG (all
   escalate the node); fractions are rounded down. A wrong shape is a caller error (ValueError),
   nothing executes.
2. clip each SKU to its per-SKU bound (`envs.constraints.bound_values`, the predicate the masks use);
   the change is attributed to the tightest constraint (the first in CONSTRAINTS order on ties).
3. repair the joint constraints, each by the same rule (below): per node storage volume, then lane
   volume, then budget (across its SKUs); then per supplier and SKU the cap shared by the nodes it
   feeds; then per DC and SKU its availability shared by its children (DCs that cannot backlog).
4. snap down to the lot size, and to 0 below the MOQ.

Steps 2-4 are `repair`. Step 5, the independent verification, is `agents.shield.Shield.decide`'s.

Repair rule (one linear constraint sum_i w_i q_i <= cap over items i, all w_i >= 0): when the sum
does not fit, scale every item with w_i > 0 by f = cap / sum and round each down to its lot (0 below
the MOQ); then visit the items in order of their largest fractional remainder (in lots), ties to the
lower index, and give each one more order step (a lot, or the MOQ from zero) when that still fits
and stays <= the item's input. It only lowers quantities, is deterministic, and leaves a sum that
already fits untouched, so a feasible proposal passes unchanged and the shield is idempotent.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange
from restock.agents.records import CHANGED_SANITISED, ESC_SANITISED
from restock.envs.constraints import (
    BIG,
    CI_BUDGET,
    CI_DC_AVAIL,
    CI_LANE,
    CI_LOT_MOQ,
    CI_RATE,
    CI_STORAGE,
    CI_SUPPLIER,
    N_CONSTRAINTS,
    availability_dc,
    bound_values,
    dc_available_values,
    headroom_values,
    joint_fits,
    next_order_step,
    owed_out_into,
    snap_down_values,
    structural_ok_values,
)
from restock.envs.jit import variant

BIGF = float(BIG)
NEAR = 1.0 - 1e-12  # orders within this factor of a room get their exact per-SKU bounds computed

# ------------------------------------------------------------------------------------------------
# buffers


class ShieldWork(NamedTuple):
    """Buffers of one batch shape, allocated once (the chain allocates only when it repairs)."""

    q0: np.ndarray  # [E, N, K] int64 sanitised proposal
    q: np.ndarray  # [E, N, K] int64 shielded orders
    changed: np.ndarray  # [E, N, K] uint8 change flags (bit c: constraint c; bit 7: sanitised)
    interv: np.ndarray  # [E, C] int64 node-SKUs changed per constraint
    raw: np.ndarray  # [E, C] int64 violations of the proposal per constraint
    cost: np.ndarray  # [E, N] int64 SKUs changed per node
    esc: np.ndarray  # [E, N] uint8 escalation flags
    san: np.ndarray  # [E] int64 node-SKUs sanitised
    head: np.ndarray  # [E, N] float64 storage headroom
    oo: np.ndarray  # [E, N, K] int64 units each DC owes its children
    fs: np.ndarray  # [E, max(N, K)] float64 scratch
    xs: np.ndarray  # [E, max(N, K)] int64 scratch
    gt: np.ndarray  # [E, 2, K] int64 per-SKU totals over a group of nodes
    live: np.ndarray  # [E, N] uint8 1 where the node may order (`Shield.decide`'s ``rows``); 0: safe action


def new_shield_work(E: int, N: int, K: int) -> ShieldWork:
    L = max(N, K)
    return ShieldWork(
        q0=np.zeros((E, N, K), np.int64),
        q=np.zeros((E, N, K), np.int64),
        changed=np.zeros((E, N, K), np.uint8),
        interv=np.zeros((E, N_CONSTRAINTS), np.int64),
        raw=np.zeros((E, N_CONSTRAINTS), np.int64),
        cost=np.zeros((E, N), np.int64),
        esc=np.zeros((E, N), np.uint8),
        san=np.zeros(E, np.int64),
        head=np.zeros((E, N)),
        oo=np.zeros((E, N, K), np.int64),
        fs=np.zeros((E, L)),
        xs=np.zeros((E, L), np.int64),
        gt=np.zeros((E, 2, K), np.int64),
        live=np.ones((E, N), np.uint8),
    )


# ------------------------------------------------------------------------------------------------
# step 1: sanitise


@njit(cache=True)
def _sanitise_float(x, q0, changed, esc, san):
    """q0 = whole units from float proposals x; garbage (NaN, inf, < 0, > BIG) flags the node."""
    E, N, K = x.shape
    for e in range(E):
        cnt = 0
        for n in range(N):
            bad = False
            for k in range(K):
                v = x[e, n, k]
                flag = np.uint8(0)
                if v != v or math.isinf(v) or v < 0.0:
                    r = np.int64(0)
                    bad = True
                    flag = CHANGED_SANITISED
                elif v > BIGF:
                    r = BIG
                    bad = True
                    flag = CHANGED_SANITISED
                else:
                    f = math.floor(v)
                    r = np.int64(f)
                    if f != v:
                        flag = CHANGED_SANITISED
                q0[e, n, k] = r
                changed[e, n, k] = flag
                if flag:
                    cnt += 1
            esc[e, n] = ESC_SANITISED if bad else 0
        san[e] = cnt


@njit(cache=True)
def _sanitise_int(x, q0, changed, esc, san):
    """q0 = integer proposals x; negatives become 0 and values above BIG become BIG (flagging the node)."""
    E, N, K = x.shape
    for e in range(E):
        cnt = 0
        for n in range(N):
            bad = False
            for k in range(K):
                v = np.int64(x[e, n, k])
                if v < 0:
                    q0[e, n, k] = 0
                    changed[e, n, k] = CHANGED_SANITISED
                    bad = True
                    cnt += 1
                elif v > BIG:
                    q0[e, n, k] = BIG
                    changed[e, n, k] = CHANGED_SANITISED
                    bad = True
                    cnt += 1
                else:
                    q0[e, n, k] = v
                    changed[e, n, k] = 0
            esc[e, n] = ESC_SANITISED if bad else 0
        san[e] = cnt


# ------------------------------------------------------------------------------------------------
# step 3: the repair rule (arrays and scalars only)


@njit(cache=True)
def _repair_row(q, changed, e, n, w, lot, moq, cap, bit, rem, xs):
    """Make sum_k w[k] q[e, n, k] fit ``cap`` by the documented rule; returns the SKUs changed."""
    K = q.shape[2]
    if math.isinf(cap):
        return 0
    used = 0.0
    for k in range(K):
        used += q[e, n, k] * w[k]
    if joint_fits(used, cap):
        return 0
    f = cap / used if cap > 0.0 else 0.0
    used2 = 0.0
    for k in range(K):
        x = q[e, n, k]
        if w[k] <= 0.0 or x <= 0:
            xs[k] = x
            rem[k] = -1.0
            continue
        y = x * f / lot[k]
        j = np.int64(math.floor(y))
        v = j * lot[k]
        if v > x:
            v = (x // lot[k]) * lot[k]
        if v < moq[k]:
            v = np.int64(0)
        xs[k] = v
        rem[k] = y - j
        used2 += v * w[k]
    order = np.argsort(-rem[:K], kind="mergesort")  # largest remainder first, ties by index
    for i in range(K):
        k = order[i]
        if rem[k] < 0.0:
            break
        v = xs[k]
        step = next_order_step(v, lot[k], moq[k])
        if v + step <= q[e, n, k] and used2 + step * w[k] <= cap:
            xs[k] = v + step
            used2 += step * w[k]
    while not joint_fits(used2, cap):  # float guard: drop a step from the largest contribution
        best = -1
        bv = -1.0
        for k in range(K):
            if w[k] > 0.0 and xs[k] > 0 and xs[k] * w[k] > bv:
                best = k
                bv = xs[k] * w[k]
        if best < 0:
            break
        nv = snap_down_values(xs[best] - lot[best], lot[best], moq[best])
        used2 -= (xs[best] - nv) * w[best]
        xs[best] = nv
    cnt = 0
    for k in range(K):
        if w[k] > 0.0 and xs[k] != q[e, n, k]:
            q[e, n, k] = xs[k]
            changed[e, n, k] |= bit
            cnt += 1
    return cnt


@njit(cache=True)
def _group_totals(q0, q, e, idx, lo, hi, t0, t1, live):
    """t0[k], t1[k] = sums of q0[e, ., k] and q[e, ., k] over the nodes idx[lo:hi] (row by row; nodes
    that are not live order nothing and are skipped)."""
    K = q.shape[2]
    for k in range(K):
        t0[k] = 0
        t1[k] = 0
    for i in range(lo, hi):
        n = idx[i]
        if live[e, n] == 0:
            continue
        for k in range(K):
            t0[k] += q0[e, n, k]
            t1[k] += q[e, n, k]


@njit(cache=True)
def _repair_col(q, changed, e, k, idx, lo, hi, lot, moq, cap, bit, rem, xs):
    """Make sum_i q[e, idx[i], k] over i in [lo, hi) fit the integer ``cap``; returns the nodes changed."""
    tot = np.int64(0)
    for i in range(lo, hi):
        tot += q[e, idx[i], k]
    if tot <= cap:
        return 0
    m = hi - lo
    f = cap / tot if cap > 0 else 0.0
    used = np.int64(0)
    for j in range(m):
        x = q[e, idx[lo + j], k]
        if x <= 0:
            xs[j] = x
            rem[j] = -1.0
            continue
        y = x * f / lot
        a = np.int64(math.floor(y))
        v = a * lot
        if v > x:
            v = (x // lot) * lot
        if v < moq:
            v = np.int64(0)
        xs[j] = v
        rem[j] = y - a
        used += v
    order = np.argsort(-rem[:m], kind="mergesort")
    for i in range(m):
        j = order[i]
        if rem[j] < 0.0:
            break
        v = xs[j]
        step = next_order_step(v, lot, moq)
        if v + step <= q[e, idx[lo + j], k] and used + step <= cap:
            xs[j] = v + step
            used += step
    while used > cap:  # guard against float rounding in the scaling
        best = -1
        bv = np.int64(0)
        for j in range(m):
            if xs[j] > bv:
                best = j
                bv = xs[j]
        if best < 0:
            break
        nv = snap_down_values(xs[best] - lot, lot, moq)
        used -= xs[best] - nv
        xs[best] = nv
    cnt = 0
    for j in range(m):
        n = idx[lo + j]
        if xs[j] != q[e, n, k]:
            q[e, n, k] = xs[j]
            changed[e, n, k] |= bit
            cnt += 1
    return cnt


# ------------------------------------------------------------------------------------------------
# steps 2-4 for every environment: one jitted pass over the tuples


def _chain_impl(p, s, w):
    """Clip, repair and snap w.q0 into w.q (see the module docstring); counts into w.interv/raw/cost."""
    q0, q, changed, interv, raw, head, live = w.q0, w.q, w.changed, w.interv, w.raw, w.head, w.live
    E, N, K = q0.shape
    M = p.n_dcs
    U = p.sup_ptr.shape[0] - 1
    T = p.horizon
    on_hand, transit, owed, last_order = s.on_hand, s.transit, s.owed, s.last_order
    arrived, ship_first = s.arrived, p.ship_first  # a DC that ships first ships start-of-period stock
    volume, unit_cost, lot, moq = p.volume, p.unit_cost, p.lot, p.moq
    parent, supplier, dc_backlog = p.parent, p.supplier, p.backlog
    cap_ahead, sup_cap, lane_cap, budget, max_inc = (
        p.storage_cap_ahead,
        p.sup_cap,
        p.lane_cap,
        p.budget,
        p.max_increase,
    )
    child_ptr, child_idx, sup_ptr, sup_idx = p.child_ptr, p.child_idx, p.sup_ptr, p.sup_idx
    b_storage = np.uint8(1 << CI_STORAGE)
    b_lane = np.uint8(1 << CI_LANE)
    b_budget = np.uint8(1 << CI_BUDGET)
    b_supplier = np.uint8(1 << CI_SUPPLIER)
    b_dc = np.uint8(1 << CI_DC_AVAIL)
    b_lot = np.uint8(1 << CI_LOT_MOQ)
    for e in prange(E):
        t = np.int64(s.t[e])
        tc = t if t < T else np.int64(T)
        for c in range(N_CONSTRAINTS):
            interv[e, c] = 0
            raw[e, c] = 0
        oo = w.oo[e]
        owed_out_into(owed, parent, e, oo)
        fs = w.fs[e]
        xs = w.xs[e]
        # per node: headroom, per-SKU bounds, violations of the proposal, clip
        for n in range(N):
            if live[e, n] == 0:  # not asked about: orders nothing (the safe action), checks skipped
                head[e, n] = 0.0
                for k in range(K):
                    q[e, n, k] = 0
                continue
            h = headroom_values(cap_ahead[tc, n], on_hand, transit, owed, volume, e, n)
            head[e, n] = h
            u = supplier[n]
            d = availability_dc(parent, dc_backlog, n)
            lane = lane_cap[n]
            bud = budget[n]
            inc = max_inc[n]
            used_v = 0.0
            used_c = 0.0
            over_s = False
            over_l = False
            over_b = False
            for k in range(K):
                x0 = q0[e, n, k]
                x = x0
                if x0 > 0:
                    vk = volume[k]
                    ck = unit_cost[k]
                    xv = x0 * vk
                    xc = x0 * ck
                    used_v += xv
                    used_c += xc
                    if lot[k] > 1 or moq[k] > 1:
                        if not structural_ok_values(x0, lot[k], moq[k]):
                            raw[e, CI_LOT_MOQ] += 1
                    sc = sup_cap[tc, u, k] if u >= 0 else np.inf
                    atp = dc_available_values(on_hand, arrived, ship_first, oo, e, d, k) if d >= 0 else BIG
                    lim = last_order[e, n, k] + inc
                    # q * w <= room implies q <= floor(room / w + eps): only near or over a bound do the
                    # per-SKU bounds need computing (the margin keeps float rounding on the safe side)
                    if (
                        xv > h * NEAR
                        or xv > lane * NEAR
                        or xc > bud * NEAR
                        or x0 > sc
                        or x0 > atp
                        or x0 > lim
                    ):
                        b = bound_values(vk, ck, h, sc, lane, bud, atp, last_order[e, n, k], inc)
                        if x0 > b[0]:
                            over_s = True
                        if x0 > b[2]:
                            over_l = True
                        if x0 > b[3]:
                            over_b = True
                        if x0 > b[5]:
                            raw[e, CI_RATE] += 1
                        # clip to the tightest bound, attributed to the first constraint that sets it
                        ci = 0
                        ub = b[0]
                        for c in range(1, 6):
                            if b[c] < ub:
                                ub = b[c]
                                ci = c
                        if x0 > ub:
                            x = ub
                            changed[e, n, k] |= np.uint8(1 << ci)
                q[e, n, k] = x
            if over_s or not joint_fits(used_v, h):
                raw[e, CI_STORAGE] += 1
            if over_l or not joint_fits(used_v, lane):
                raw[e, CI_LANE] += 1
            if over_b or not joint_fits(used_c, bud):
                raw[e, CI_BUDGET] += 1
        # joint repairs per node
        for n in range(N):
            if live[e, n] == 0:
                continue
            _repair_row(q, changed, e, n, volume, lot, moq, head[e, n], b_storage, fs, xs)
            _repair_row(q, changed, e, n, volume, lot, moq, lane_cap[n], b_lane, fs, xs)
            _repair_row(q, changed, e, n, unit_cost, lot, moq, budget[n], b_budget, fs, xs)
        # shared caps: per-SKU totals of the proposal (violations) and of the orders so far (repair),
        # summed row by row over the sharing nodes
        t0 = w.gt[e, 0]
        t1 = w.gt[e, 1]
        for u in range(U):
            lo, hi = sup_ptr[u], sup_ptr[u + 1]
            _group_totals(q0, q, e, sup_idx, lo, hi, t0, t1, live)
            for k in range(K):
                cap = sup_cap[tc, u, k]
                if math.isinf(cap):
                    continue
                capi = np.int64(cap) if cap > 0 else np.int64(0)
                if t0[k] > capi:
                    raw[e, CI_SUPPLIER] += 1
                if t1[k] > capi:
                    _repair_col(q, changed, e, k, sup_idx, lo, hi, lot[k], moq[k], capi, b_supplier, fs, xs)
        for dd in range(M):
            if dc_backlog[dd]:
                continue  # a backlogging DC queues what it cannot ship (availability_dc)
            lo, hi = child_ptr[dd], child_ptr[dd + 1]
            _group_totals(q0, q, e, child_idx, lo, hi, t0, t1, live)
            for k in range(K):
                a = dc_available_values(on_hand, arrived, ship_first, oo, e, dd, k)
                if t0[k] > a:
                    raw[e, CI_DC_AVAIL] += 1
                if t1[k] > a:
                    _repair_col(q, changed, e, k, child_idx, lo, hi, lot[k], moq[k], a, b_dc, fs, xs)
        # snap down to lot and MOQ; node-SKUs changed per constraint and SKUs changed per node
        for n in range(N):
            cnt = 0
            if live[e, n] == 0:
                w.cost[e, n] = 0
                continue
            for k in range(K):
                x = q[e, n, k]
                if x > 0 and (lot[k] > 1 or moq[k] > 1):
                    y = snap_down_values(x, lot[k], moq[k])
                    if y != x:
                        q[e, n, k] = y
                        changed[e, n, k] |= b_lot
                f = changed[e, n, k]
                if f != 0:
                    cnt += 1
                    for c in range(N_CONSTRAINTS):
                        if f & (1 << c):
                            interv[e, c] += 1
            w.cost[e, n] = cnt


chain_serial = njit(cache=True)(_chain_impl)
chain_parallel = njit(cache=True, parallel=True)(variant(_chain_impl, "_parallel"))


def repair(params, state, work: ShieldWork, parallel: bool = False) -> None:
    """Steps 2-4 of the chain on ``work.q0`` into ``work.q`` (tests replace `agents.shield.repair` to break it)."""
    (chain_parallel if parallel else chain_serial)(params, state, work)


def sanitise(a: np.ndarray, work: ShieldWork) -> None:
    """Step 1: the proposal ``a`` [E, N, K] (float or integer) into whole units ``work.q0``, with change
    flags, escalations and per-environment counts."""
    if a.dtype.kind == "f":
        _sanitise_float(a, work.q0, work.changed, work.esc, work.san)
    else:
        _sanitise_int(np.ascontiguousarray(a), work.q0, work.changed, work.esc, work.san)
