"""A slow, readable NumPy reference of the kernel's period (`envs.kernel.step`).

Written apart from the kernel, vectorised over environments and SKUs and looping over nodes, it
follows the period contract in the kernel's docstring line by line. Tests run both on the same seeded
rollouts of every shipped scenario and require equal integers and costs within 1e-9. It is also the
NumPy baseline of `restock bench`.
"""

from __future__ import annotations

import numpy as np
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
    N_COST,
    N_KPI,
    RATION_PROPORTIONAL,
    Params,
    State,
    copy_state,
)


def ration(avail: np.ndarray, req: np.ndarray, rule: int) -> np.ndarray:
    """Split avail[E, K] over requests req[E, C, K]; proportional with largest remainders, or priority."""
    avail = avail.astype(np.int64)
    req = req.astype(np.int64)
    total = req.sum(axis=1)
    short = total > avail
    out = req.copy()
    if not short.any():
        return out
    a = np.maximum(avail, 0)[:, None, :]
    if rule == RATION_PROPORTIONAL:
        safe_total = np.where(total > 0, total, 1)[:, None, :]
        share = (a * req) // safe_total
        frac = (a * req) % safe_total
        rem = a[:, 0, :] - share.sum(axis=1)
        # rank requesters by (fraction desc, position asc); the first `rem` get one more unit
        order = np.argsort(-frac, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(
            rank,
            order,
            np.arange(req.shape[1])[None, :, None].repeat(req.shape[0], 0).repeat(req.shape[2], 2),
            axis=1,
        )
        share = share + (rank < rem[:, None, :])
    else:
        before = np.cumsum(req, axis=1) - req
        share = np.clip(a - before, 0, req)
    return np.where(short[:, None, :], share, out)


def lead_times(p: Params, s: State, t: np.ndarray, n: int) -> np.ndarray:
    """Lead time [E, K] of shipments sent to node n in period t[e]."""
    E, K = s.on_hand.shape[0], s.on_hand.shape[2]
    W = s.pipe.shape[2]
    tc = np.minimum(t, p.horizon)
    if p.lt_fixed[n]:
        L = np.broadcast_to(p.lt_value[n][None, :], (E, K)).astype(np.int64)
    else:
        u = np.array([uniform_at(s.key[e], int(t[e]), n) for e in range(E)])
        # first l with u < cdf[l]
        L = (u[:, None, None] >= p.lt_cdf[n][None, :, :]).sum(axis=2).astype(np.int64)
        L = np.minimum(L, p.lt_cdf.shape[2] - 1)
    L = L + p.lt_extra[tc, n][:, None]
    return np.minimum(L, W - 1)


def reference_step(p: Params, s: State, qty: np.ndarray, demand: np.ndarray):
    """One period for all environments. Returns (new state, cost, revenue, kpi, reward); inputs untouched."""
    s = copy_state(s)
    qty = np.maximum(np.asarray(qty, np.int64), 0)
    E, N, K = s.on_hand.shape
    W = s.pipe.shape[2]
    M = p.n_dcs
    ee = np.arange(E)
    t = s.t.astype(np.int64)
    tc = np.minimum(t, p.horizon)
    cost = np.zeros((E, N, N_COST))
    kpi = np.zeros((E, N, N_KPI))
    revenue = np.zeros((E, N))
    on_hand = s.on_hand.astype(np.int64)
    backlog = s.backlog.astype(np.int64)
    owed = s.owed.astype(np.int64)
    pipe = s.pipe.astype(np.int64)
    shipped = np.zeros((E, N, K), np.int64)
    last_demand = s.last_demand.astype(np.int64)

    # orders placed this period
    kpi[:, :, K_ORDERED] = qty.sum(axis=2)
    kpi[:, :, K_ORDER_LINES] = (qty > 0).sum(axis=2)
    kpi[:, :, K_SPEND] = (qty * p.unit_cost).sum(axis=2)
    cost[:, :, C_FIXED] = ((qty > 0) * p.fixed_cost[None]).sum(axis=2)

    def send(c: int) -> None:
        """Lane capacity on node c's inbound shipment, then into transit (or on hand when L = 0)."""
        vol = (shipped[:, c, :] * p.volume).sum(axis=1)
        if np.isfinite(p.lane_cap[c]):
            over = vol > p.lane_cap[c]
            f = np.where(over, p.lane_cap[c] / np.where(vol > 0, vol, 1.0), 1.0)
            cut = np.floor(shipped[:, c, :] * f[:, None] + 1e-9).astype(np.int64)
            shipped[:, c, :] = np.where(over[:, None], cut, shipped[:, c, :])
        q = shipped[:, c, :]
        cost[:, c, C_ORDER] += (p.order_cost[c] * q).sum(axis=1)
        kpi[:, c, K_RECEIVED_SHIP] += q.sum(axis=1)
        L = lead_times(p, s, t, c)
        now = (L == 0) & (q > 0)
        on_hand[:, c, :] += np.where(now, q, 0)
        slot = (t[:, None] + L) % W
        for k in range(K):
            later = ~now[:, k]
            np.add.at(pipe[:, c, :, k], (ee[later], slot[later, k]), q[later, k])

    # step 3a: suppliers
    for u in range(len(p.sup_ptr) - 1):
        kids = p.sup_idx[p.sup_ptr[u] : p.sup_ptr[u + 1]]
        if len(kids) == 0:
            continue
        cap = p.sup_cap[tc, u, :]  # [E, K]
        avail = np.where(np.isinf(cap), np.iinfo(np.int64).max // 4, np.nan_to_num(cap, posinf=0)).astype(
            np.int64
        )
        # a backlogging supplier is asked for the new orders plus what it still owes
        req = qty[:, kids, :] + (owed[:, kids, :] if p.sup_backlog[u] else 0)
        shipped[:, kids, :] = ration(avail, req, RATION_PROPORTIONAL)
        for c in kids:
            send(c)
        short = req - shipped[:, kids, :]  # after lane capacities
        if p.sup_backlog[u]:
            owed[:, kids, :] = short
        cost[:, kids, C_STOCKOUT] += (short * p.sup_penalty[u][None, None, :]).sum(axis=2)

    # step 3b: DCs, parents first
    for d in range(M):
        kids = p.child_idx[p.child_ptr[d] : p.child_ptr[d + 1]]
        bl = bool(p.backlog[d])
        old_owed = owed[:, kids, :] if bl else np.zeros((E, len(kids), K), np.int64)
        req = qty[:, kids, :] + old_owed
        new_orders = qty[:, kids, :].sum(axis=1)
        last_demand[:, d, :] = new_orders
        kpi[:, d, K_DEMAND] = new_orders.sum(axis=1)
        # a DC that ships first ships from its start-of-period stock: this period's arrivals wait
        avail = on_hand[:, d, :] - (s.arrived[:, d, :] if p.ship_first[d] else 0)
        shipped[:, kids, :] = ration(avail, req, int(p.rationing[d]))
        for c in kids:
            send(c)
        sh = shipped[:, kids, :]
        if bl:
            owed[:, kids, :] = req - sh
        else:
            kpi[:, d, K_LOST] = (req - sh).sum(axis=(1, 2))
            cost[:, d, C_STOCKOUT] += ((req - sh) * p.stockout[d][None, None, :]).sum(axis=(1, 2))
        sku_ship = sh.sum(axis=1)
        on_hand[:, d, :] -= sku_ship
        filled = np.clip(sku_ship - old_owed.sum(axis=1), 0, new_orders)
        kpi[:, d, K_SHIPPED_OUT] = sku_ship.sum(axis=1)
        kpi[:, d, K_FILLED] = filled.sum(axis=1)
        kpi[:, d, K_UNMET] = (new_orders - filled).sum(axis=1)
        kpi[:, d, K_STOCKOUT_SKUS] = ((new_orders - filled) > 0).sum(axis=1)
        kpi[:, d, K_SALES_VALUE] = (sku_ship * p.unit_cost).sum(axis=1)
        revenue[:, d] = (sku_ship * p.price[d]).sum(axis=1)

    # steps 4-5: customers at stores
    for n in range(M, N):
        d = demand[:, n - M, :].astype(np.int64)
        last_demand[:, n, :] = d
        oh = on_hand[:, n, :]
        b = backlog[:, n, :] if p.backlog[n] else np.zeros_like(oh)
        filled = np.minimum(d, np.maximum(oh - b, 0))
        serve = np.minimum(oh, b + d)
        on_hand[:, n, :] = oh - serve
        if p.backlog[n]:
            backlog[:, n, :] = b + d - serve
        else:
            kpi[:, n, K_LOST] = (d - serve).sum(axis=1)
            cost[:, n, C_STOCKOUT] += ((d - serve) * p.stockout[n]).sum(axis=1)
        kpi[:, n, K_DEMAND] = d.sum(axis=1)
        kpi[:, n, K_SHIPPED_OUT] = serve.sum(axis=1)
        kpi[:, n, K_FILLED] = filled.sum(axis=1)
        kpi[:, n, K_UNMET] = (d - filled).sum(axis=1)
        kpi[:, n, K_STOCKOUT_SKUS] = ((d - filled) > 0).sum(axis=1)
        kpi[:, n, K_SALES_VALUE] = (serve * p.unit_cost).sum(axis=1)
        revenue[:, n] = (serve * p.price[n]).sum(axis=1)

    # step 6: end-of-period costs
    owed_out = np.zeros((E, N, K), np.int64)
    for c in range(N):
        if p.parent[c] >= 0:
            owed_out[:, p.parent[c], :] += owed[:, c, :]
    in_transit = pipe.sum(axis=2)
    back = np.where(p.is_store[None, :, None] == 1, backlog, owed_out)
    cost[:, :, C_HOLD] = (p.hold[None] * on_hand).sum(axis=2)
    cost[:, :, C_PIPE] = (p.pipe_hold[None] * in_transit).sum(axis=2)
    cost[:, :, C_STOCKOUT] += (p.stockout[None] * back).sum(axis=2)
    kpi[:, :, K_ON_HAND] = on_hand.sum(axis=2)
    kpi[:, :, K_PIPELINE] = in_transit.sum(axis=2)
    kpi[:, :, K_BACKLOG] = back.sum(axis=2)
    kpi[:, :, K_ON_HAND_VALUE] = (on_hand * p.unit_cost).sum(axis=2)
    vol = (on_hand * p.volume).sum(axis=2)
    cap = p.storage_cap[tc]  # [E, N]
    over = np.where(np.isfinite(cap) & (vol > cap), vol - np.where(np.isfinite(cap), cap, 0.0), 0.0)
    kpi[:, :, K_OVERFLOW_VOL] = over
    cost[:, :, C_OVERFLOW] = np.where(p.overflow_dispose[None] == 1, 0.0, p.overflow_cost[None] * over)

    # advance to t+1 and receive its arrivals
    t1 = t + 1
    tc1 = np.minimum(t1, p.horizon)
    slot = t1 % W
    arrived = pipe[ee, :, slot, :]  # [E, N, K]
    pipe[ee, :, slot, :] = 0
    for n in range(N):
        cap1 = p.storage_cap[tc1, n]
        if not p.overflow_dispose[n]:
            continue
        a = arrived[:, n, :]
        vol_arr = (a * p.volume).sum(axis=1)
        used = ((on_hand[:, n, :] + a) * p.volume).sum(axis=1)
        excess = np.where(np.isfinite(cap1), used - np.where(np.isfinite(cap1), cap1, 0.0), 0.0)
        hit = (vol_arr > 0) & (excess > 0)
        frac = np.where(hit, np.minimum(excess / np.where(vol_arr > 0, vol_arr, 1.0), 1.0), 0.0)
        disp = np.where(hit[:, None] & (a > 0), np.minimum(np.ceil(a * frac[:, None] - 1e-9), a), 0).astype(
            np.int64
        )
        arrived[:, n, :] = a - disp
        kpi[:, n, K_DISPOSED] += disp.sum(axis=1)
        cost[:, n, C_OVERFLOW] += p.overflow_cost[n] * (disp * p.volume).sum(axis=1)
    on_hand += arrived
    kpi[:, :, K_ARRIVED] += arrived.sum(axis=2)

    # rewards
    kpi[:, :, K_DISCOUNTED_PROFIT] = p.disc[tc][:, None] * (revenue - cost.sum(axis=2))
    net = cost.sum(axis=2) - (revenue if p.include_revenue else 0.0)
    reward = -((1 - p.net_weight) * net + p.net_weight * net.mean(axis=1, keepdims=True)) / p.reward_scale
    reward = reward * p.reward_disc[tc][:, None]

    new = State(
        t=t1.astype(np.int32),
        key=s.key.copy(),
        on_hand=on_hand.astype(np.int32),
        backlog=backlog.astype(np.int32),
        owed=owed.astype(np.int32),
        pipe=pipe.astype(np.int32),
        transit=pipe.sum(axis=2).astype(np.int32),
        last_order=qty.astype(np.int32),
        last_demand=last_demand.astype(np.int32),
        shipped=shipped.astype(np.int32),
        arrived=arrived.astype(np.int32),
    )
    return new, cost, revenue, kpi, reward
