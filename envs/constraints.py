"""Hard-constraint predicates: one module that masks (in the kernel) and shields (in `agents`) both call.

Every hard constraint is an upper bound on an order, so ordering zero is always feasible and any
repair that only lowers quantities keeps feasibility. Per node n and SKU k, each constraint yields a
bound on q[n, k] taken alone (the others at zero); the joint forms (shared storage volume and budget
across a node's SKUs, DC stock across the stores it serves, supplier caps across the nodes it feeds)
are sums checked by `joint_slacks` and repaired by the shield. Lot size and MOQ restrict q to
{0} U {lot * j >= moq}.

Constraint ids (stable; they appear in errors, decision records and TensorBoard tags):
  storage          volume on hand + in transit + owed + q, at arrival, assuming zero demand meanwhile,
                   must fit the node's smallest storage capacity over the coming lead-time window
  supplier         units per SKU per period an external supplier can ship (outages set it to 0)
  lane             inbound volume per period on the node's lane
  budget           ordering spend (unit_cost x q) per node per period
  dc_availability  units a DC has on hand beyond what it already owes its children (stores' orders);
                   binds only the children of a DC that cannot backlog (`availability_dc`): a
                   backlogging DC queues what it cannot ship
  rate_limit       q_t - q_{t-1} <= max_order_increase
  lot_moq          q is a multiple of the lot size and 0 or >= MOQ
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

CONSTRAINTS = ("storage", "supplier", "lane", "budget", "dc_availability", "rate_limit", "lot_moq")
CI_STORAGE, CI_SUPPLIER, CI_LANE, CI_BUDGET, CI_DC_AVAIL, CI_RATE, CI_LOT_MOQ = range(7)
N_CONSTRAINTS = len(CONSTRAINTS)
N_BOUND_CONSTRAINTS = 6  # the upper-bound ones (all but lot_moq)
BIG = np.int64(1 << 30)  # "unbounded" as a quantity


@njit(cache=True, inline="always")
def clamp_time(p, t):
    t = np.int64(t)
    return t if t < p.horizon else np.int64(p.horizon)


@njit(cache=True, inline="always")
def pipe_total(s, e, n, k):
    return np.int64(s.transit[e, n, k])


@njit(cache=True, inline="always")
def owed_to_children(p, s, e, d, k):
    """Units DC d owes its children for SKU k (their backlogged orders)."""
    tot = 0
    for i in range(p.child_ptr[d], p.child_ptr[d + 1]):
        tot += s.owed[e, p.child_idx[i], k]
    return tot


@njit(cache=True, inline="always")
def inventory_position(p, s, e, n, k):
    """Installation inventory position: on hand + in transit + owed by the parent - own backorders."""
    ip = s.on_hand[e, n, k] + pipe_total(s, e, n, k) + s.owed[e, n, k]
    if p.is_store[n]:
        ip -= s.backlog[e, n, k]
    else:
        ip -= owed_to_children(p, s, e, n, k)
    return ip


@njit(cache=True, inline="always")
def committed_volume(p, s, e, n):
    """Volume at node n once everything on the way has arrived (zero demand meanwhile)."""
    v = 0.0
    for k in range(s.on_hand.shape[2]):
        units = s.on_hand[e, n, k] + pipe_total(s, e, n, k) + s.owed[e, n, k]
        v += units * p.volume[k]
    return v


@njit(cache=True, inline="always")
def storage_headroom(p, s, e, n):
    """Volume that new orders of node n may still take (inf when the node has no capacity)."""
    cap = p.storage_cap_ahead[clamp_time(p, s.t[e]), n]
    if math.isinf(cap):
        return np.inf
    h = cap - committed_volume(p, s, e, n)
    return h if h > 0.0 else 0.0


@njit(cache=True, inline="always")
def dc_available(p, s, e, d, k):
    """Units DC d can still promise to new orders of SKU k: on hand beyond what it owes its children,
    less this period's arrivals when it ships from its start-of-period stock (``ship_before_arrivals``)."""
    a = s.on_hand[e, d, k] - owed_to_children(p, s, e, d, k)
    if p.ship_first[d]:
        a -= s.arrived[e, d, k]
    return a if a > 0 else 0


@njit(cache=True, inline="always")
def availability_dc(parent, backlog, n):
    """The DC whose availability bounds node n's orders, or -1. Only a DC that cannot backlog (its
    children's unmet orders are lost) limits them; a backlogging DC queues what it cannot ship and
    ships it later, as the kernel's masks treat it."""
    d = parent[n]
    if d >= 0 and not backlog[d]:
        return d
    return -1


@njit(cache=True, inline="always")
def _floor_div(x, y):
    if y <= 0.0 or math.isinf(x):
        return BIG
    v = math.floor(x / y + 1e-9)
    if v >= BIG:
        return BIG
    if v < 0:
        return np.int64(0)
    return np.int64(v)


@njit(cache=True, inline="always")
def bound_values(
    volume_k, unit_cost_k, headroom, sup_cap_k, lane_cap, budget, dc_avail, last_order, max_increase
):
    """THE per-SKU predicate: bounds (storage, supplier, lane, budget, dc_availability, rate_limit) on one
    order taken alone, from scalars; BIG means unbounded. Masks, shields and explanations all call it.

    headroom: storage volume new orders may take; sup_cap_k: supplier units (inf = none); lane_cap and
    budget: the node's per-period limits (inf = none); dc_avail: units the parent DC can still promise
    (BIG when fed by a supplier); last_order: the node's executed order last period; max_increase: the
    rate limit (inf = none).
    """
    b_storage = _floor_div(headroom, volume_k)
    b_supplier = BIG
    if not math.isinf(sup_cap_k):
        b_supplier = np.int64(sup_cap_k) if sup_cap_k > 0 else np.int64(0)
    b_lane = _floor_div(lane_cap, volume_k)
    b_budget = _floor_div(budget, unit_cost_k) if unit_cost_k > 0 else BIG
    b_dc = dc_avail if dc_avail < BIG else BIG
    b_rate = BIG
    if not math.isinf(max_increase):
        b_rate = np.int64(last_order) + np.int64(max_increase)
    return b_storage, b_supplier, b_lane, b_budget, b_dc, b_rate


@njit(cache=True, inline="always")
def tightest(b):
    """The smallest of the six bounds returned by `bound_values`."""
    m = b[0]
    if b[1] < m:
        m = b[1]
    if b[2] < m:
        m = b[2]
    if b[3] < m:
        m = b[3]
    if b[4] < m:
        m = b[4]
    if b[5] < m:
        m = b[5]
    return m


@njit(cache=True)
def sku_bounds(p, s, e, n, k, headroom, out):
    """Per-constraint bounds on q[n, k] of environment e into out[0:6] (slow path: explanations)."""
    tc = clamp_time(p, s.t[e])
    u = p.supplier[n]
    sc = p.sup_cap[tc, u, k] if u >= 0 else np.inf
    d = availability_dc(p.parent, p.backlog, n)
    atp = dc_available(p, s, e, d, k) if d >= 0 else BIG
    b = bound_values(
        p.volume[k],
        p.unit_cost[k],
        headroom,
        sc,
        p.lane_cap[n],
        p.budget[n],
        atp,
        s.last_order[e, n, k],
        p.max_increase[n],
    )
    for c in range(6):
        out[c] = b[c]


@njit(cache=True, inline="always")
def upper_bound(p, s, e, n, k, headroom, scratch):
    """The tightest per-SKU bound on q[n, k]; ``scratch`` is an int64 array of length >= 6."""
    sku_bounds(p, s, e, n, k, headroom, scratch)
    ub = BIG
    for c in range(N_BOUND_CONSTRAINTS):
        if scratch[c] < ub:
            ub = scratch[c]
    return ub


@njit(cache=True, inline="always")
def structural_ok(p, k, q):
    """Lot size and MOQ: q is 0, or a multiple of the lot size and at least the MOQ."""
    if q == 0:
        return True
    return q > 0 and q % p.lot[k] == 0 and q >= p.moq[k]


@njit(cache=True, inline="always")
def snap_down(p, k, q):
    """The largest structurally valid quantity <= q (lot multiple, 0 below MOQ)."""
    if q <= 0:
        return 0
    q = (q // p.lot[k]) * p.lot[k]
    if q < p.moq[k]:
        return 0
    return q


# ------------------------------------------------------------------------------------------------
# joint constraints: the sums that a per-SKU mask cannot see (shields and explanations)
#
# Joint forms, all upper bounds with non-negative weights, checked with `joint_fits`:
#   storage          per node:            sum_k volume[k] * q[n, k]     <= storage headroom of n
#   lane             per node:            sum_k volume[k] * q[n, k]     <= lane_cap[n]
#   budget           per node:            sum_k unit_cost[k] * q[n, k]  <= budget[n]
#   supplier         per supplier u, SKU: sum_{n fed by u} q[n, k]       <= floor(sup_cap[t, u, k])
#   dc_availability  per DC d, SKU:       sum_{children c of d} q[c, k]  <= dc_available(d, k)
#                    (only DCs that cannot backlog, `availability_dc`)
# and the per-SKU ones: rate_limit (q <= last_order + max_increase) and lot_moq. An order is feasible
# iff every per-SKU bound of `bound_values` holds and every joint sum fits. Money and volume are
# floats, so joint sums carry a relative tolerance JOINT_RTOL (far below a unit of anything) and
# per-SKU bounds the FLOOR_EPS of `_floor_div`; the verifier uses the same two constants.

JOINT_RTOL = 1e-8  # a joint sum fits when used <= cap + JOINT_RTOL * max(1, cap)
FLOOR_EPS = 1e-9  # per-SKU bounds are floor(room / weight + FLOOR_EPS), as `_floor_div` computes them
NODE_CONSTRAINTS = (CI_STORAGE, CI_LANE, CI_BUDGET)  # joint across one node's SKUs
SHARED_CONSTRAINTS = (CI_SUPPLIER, CI_DC_AVAIL)  # joint across the nodes sharing a resource, per SKU
# what one count of a violated constraint is (shield_raw_violations / shield_executed_violations)
VIOLATION_UNITS = ("node", "supplier-SKU", "node", "node", "DC-SKU", "node-SKU", "node-SKU")


@njit(cache=True, inline="always")
def joint_fits(used, cap):
    """True when a joint sum ``used`` fits under ``cap`` (inf = unbounded), within JOINT_RTOL."""
    if math.isinf(cap):
        return True
    return used <= cap + JOINT_RTOL * max(1.0, abs(cap))


@njit(cache=True, inline="always")
def structural_ok_values(q, lot, moq):
    """`structural_ok` from scalars: q is 0, or a positive multiple of ``lot`` that is >= ``moq``."""
    if q == 0:
        return True
    return q > 0 and q % lot == 0 and q >= moq


@njit(cache=True, inline="always")
def snap_down_values(q, lot, moq):
    """`snap_down` from scalars: the largest lot multiple <= q, or 0 when that is below ``moq``."""
    if q <= 0:
        return np.int64(0)
    q = (q // lot) * lot
    if q < moq:
        return np.int64(0)
    return q


@njit(cache=True, inline="always")
def next_order_step(q, lot, moq):
    """The smallest structurally valid quantity above q minus q (what one more order line step costs)."""
    if q <= 0:
        m = ((moq + lot - 1) // lot) * lot
        return m if m > lot else lot
    return lot


@njit(cache=True)
def owed_out_rows(owed, parent, e, oo, M):
    """oo[d, k] = units DC d owes its children for SKU k in environment e, for the rows d < M (the DCs:
    nodes are DCs first); rows from M on are not touched. THE owed-out sum: the kernel (steps, masks,
    inventory positions) and the shield both call it."""
    N, K = owed.shape[1], owed.shape[2]
    for d in range(M):
        for k in range(K):
            oo[d, k] = 0
    for c in range(N):
        d = parent[c]
        if d >= 0:
            for k in range(K):
                oo[d, k] += owed[e, c, k]


@njit(cache=True)
def owed_out_into(owed, parent, e, oo):
    """oo[d, k] = units DC d owes its children for SKU k in environment e (rows of non-DCs zero)."""
    owed_out_rows(owed, parent, e, oo, oo.shape[0])


@njit(cache=True, inline="always")
def headroom_values(cap_ahead, on_hand, transit, owed, volume, e, n):
    """Storage volume node n may still order in environment e: cap_ahead minus the committed volume
    (on hand + in transit + owed, zero demand until arrival), at least 0; inf without a capacity."""
    if math.isinf(cap_ahead):
        return np.inf
    committed = 0.0
    for k in range(on_hand.shape[2]):
        committed += (on_hand[e, n, k] + np.int64(transit[e, n, k]) + owed[e, n, k]) * volume[k]
    h = cap_ahead - committed
    return h if h > 0.0 else 0.0


@njit(cache=True, inline="always")
def dc_available_values(on_hand, arrived, ship_first, oo, e, d, k):
    """`dc_available` from arrays: DC d's on hand of SKU k beyond what it owes its children, less this
    period's arrivals when d ships from its start-of-period stock (``ship_first[d]``), at least 0."""
    a = np.int64(on_hand[e, d, k]) - oo[d, k]
    if ship_first[d]:
        a -= np.int64(arrived[e, d, k])
    return a if a > 0 else np.int64(0)


@njit(cache=True)
def joint_slacks(p, s, qty, oo, out):
    """Slack left by orders qty[E, N, K] per node and constraint into out[E, N, 6] (negative = violated).

    storage, lane, budget: the node's remaining volume or money; supplier and dc_availability: the
    smallest remaining shared cap over the node's SKUs after every sharer's order; rate_limit: the
    smallest last_order + max_increase - q over its SKUs. inf where a constraint does not apply.
    ``oo`` is an [N, K] int64 scratch.
    """
    E, N, K = qty.shape
    T = p.horizon
    U = p.sup_ptr.shape[0] - 1
    on_hand, transit, owed, last_order = s.on_hand, s.transit, s.owed, s.last_order
    volume, unit_cost = p.volume, p.unit_cost
    for e in range(E):
        t = np.int64(s.t[e])
        tc = t if t < T else np.int64(T)
        owed_out_into(owed, p.parent, e, oo)
        for n in range(N):
            h = headroom_values(p.storage_cap_ahead[tc, n], on_hand, transit, owed, volume, e, n)
            used_v = 0.0
            used_c = 0.0
            rate = np.inf
            inc = p.max_increase[n]
            for k in range(K):
                used_v += qty[e, n, k] * volume[k]
                used_c += qty[e, n, k] * unit_cost[k]
                if not math.isinf(inc):
                    r = last_order[e, n, k] + inc - qty[e, n, k]
                    if r < rate:
                        rate = r
            out[e, n, CI_STORAGE] = h - used_v
            out[e, n, CI_LANE] = p.lane_cap[n] - used_v
            out[e, n, CI_BUDGET] = p.budget[n] - used_c
            out[e, n, CI_RATE] = rate
            out[e, n, CI_SUPPLIER] = np.inf
            out[e, n, CI_DC_AVAIL] = np.inf
        for u in range(U):
            lo, hi = p.sup_ptr[u], p.sup_ptr[u + 1]
            for k in range(K):
                cap = p.sup_cap[tc, u, k]
                if math.isinf(cap):
                    continue
                tot = 0
                for i in range(lo, hi):
                    tot += qty[e, p.sup_idx[i], k]
                left = math.floor(cap) - tot
                for i in range(lo, hi):
                    n = p.sup_idx[i]
                    if left < out[e, n, CI_SUPPLIER]:
                        out[e, n, CI_SUPPLIER] = left
        for d in range(p.n_dcs):
            if p.backlog[d]:
                continue
            lo, hi = p.child_ptr[d], p.child_ptr[d + 1]
            for k in range(K):
                tot = 0
                for i in range(lo, hi):
                    tot += qty[e, p.child_idx[i], k]
                left = dc_available_values(on_hand, s.arrived, p.ship_first, oo, e, d, k) - tot
                for i in range(lo, hi):
                    c = p.child_idx[i]
                    if left < out[e, c, CI_DC_AVAIL]:
                        out[e, c, CI_DC_AVAIL] = left
