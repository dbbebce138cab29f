"""Per-(node, SKU) costs: the cost each pair incurred in a period, rebuilt from the kernel's state.

The kernel charges costs per node (``out.cost[E, N, component]``). Per-pair credit (``--trainer
pair_ppo``, RLlib's ``rllib.pair_credit``) and per-SKU tuning (``restock tune --per-sku``) need them per
SKU: `pair_costs` rebuilds them from the state after a step and `check_pair_costs` holds their sum to
the kernel's node cost, so a scenario feature the decomposition does not cover stops with a clear error
instead of giving a wrong signal. NumPy only (no torch).
"""

from __future__ import annotations

import numpy as np

CHECK_RTOL = 1e-6  # pairs of a node must add up to the kernel's node cost to this relative tolerance


# ------------------------------------------------------------------------------------------------
# per-pair costs


def pair_costs(p, s, on_hand_before: np.ndarray, tc: int) -> np.ndarray:
    """The cost [E, N, K] each (node, SKU) pair incurred in the period just stepped, from the state after
    the step (``on_hand_before``: on hand at the decision, [E, N, K]; ``tc``: that period).

    Terms (kernel.py, steps 3-6): fixed cost per positive order line, variable ordering cost per unit
    shipped to the node, a supplier's shortage penalty, stockout (at a store per unit lost or per unit
    backlogged at the end of the period; at a DC per unit it owes its children, or per unit of their
    orders it cancelled), holding on the end on hand, pipeline holding, and the node's overflow cost shared
    out over its SKUs in proportion to their volume on hand; revenue (store sales, DC shipments) is
    subtracted when the scenario's reward includes it. `check_pair_costs` holds the sum to the kernel's.
    """
    oh_end = (s.on_hand - s.arrived).astype(np.float64)
    q = s.last_order
    store = p.is_store.astype(bool)[None, :, None]
    cost = p.fixed_cost[None] * (q > 0) + p.order_cost[None] * s.shipped
    # a supplier that settles what it did not ship: owed (backlog) or cancelled, at its penalty
    sup = p.supplier
    fed = sup >= 0
    if np.any(fed) and np.any(p.sup_settle[sup[fed]]):
        su = np.where(fed, sup, 0)
        settle = (fed & (p.sup_settle[su] > 0))[None, :, None]
        bl = (p.sup_backlog[su] > 0)[None, :, None]
        short = np.where(bl, s.owed, q - s.shipped)
        cost += np.where(settle, p.sup_penalty[su] * short, 0.0)
    # stores: sales and unmet demand
    served = on_hand_before - oh_end
    bl_node = p.backlog.astype(bool)[None, :, None]
    store_short = np.where(bl_node, s.backlog, s.last_demand - served)
    # DCs: what they owe their children, or what they cancelled of the children's orders
    N = p.parent.shape[0]
    par = p.parent
    kids = (par >= 0) & (p.supplier < 0)
    owed_out = np.zeros_like(oh_end)
    cancelled = np.zeros_like(oh_end)
    shipped_out = np.zeros_like(oh_end)
    if np.any(kids):
        c = np.flatnonzero(kids)
        np.add.at(owed_out, (slice(None), par[c]), s.owed[:, c])
        np.add.at(cancelled, (slice(None), par[c]), q[:, c] - s.shipped[:, c])
        np.add.at(shipped_out, (slice(None), par[c]), s.shipped[:, c])
    dc_short = np.where(bl_node, owed_out, cancelled)
    cost += p.stockout[None] * np.where(store, store_short, dc_short)
    cost += p.hold[None] * oh_end
    cost += p.pipe_hold[None] * (s.transit + s.arrived)
    vol_k = oh_end * p.volume[None, None, :]
    vol = vol_k.sum(-1)  # [E, N]
    cap = p.storage_cap[tc][None]
    finite = np.isfinite(cap)
    over = np.where(finite & (vol > np.where(finite, cap, 0.0)), vol - np.where(finite, cap, 0.0), 0.0)
    over = np.where((p.overflow_dispose > 0)[None], 0.0, over)  # disposal is charged at arrival
    cost += (p.overflow_cost[None] * over)[..., None] * (vol_k / np.maximum(vol, 1e-12)[..., None])
    if p.include_revenue:
        cost -= p.price[None] * np.where(store, served, shipped_out)
    assert cost.shape[1] == N
    return cost


def subtree_costs(p, pair: np.ndarray) -> np.ndarray:
    """Per SKU, each node's pair cost plus that of every node below it [E, N, K] (a DC's credit: its
    own costs do not charge it for its stores' lost sales). Nodes are numbered parents first."""
    out = pair.copy()
    for n in range(pair.shape[1] - 1, -1, -1):
        par = int(p.parent[n])
        if par >= 0 and p.supplier[n] < 0:
            out[:, par] += out[:, n]
    return out


def check_pair_costs(
    pair: np.ndarray, out, include_revenue: bool, scenario: str, who: str = "--trainer pair_ppo"
) -> None:
    """Raise when the pairs of a node do not add up to the kernel's cost of that node."""
    node = out.cost.sum(-1)
    if include_revenue:
        node = node - out.revenue
    got = pair.sum(-1)
    err = np.abs(got - node)
    tol = CHECK_RTOL * (1.0 + np.abs(node))
    if np.any(err > tol):
        e, n = np.unravel_index(int(np.argmax(err - tol)), err.shape)
        raise ValueError(
            f"{who}: scenario {scenario!r} has a cost the per-SKU decomposition does not "
            f"cover (node {int(n)}: its pairs add up to {got[e, n]:.6f}, the kernel charged "
            f"{node[e, n]:.6f}); covered: ordering, fixed, supplier shortage, stockout, holding, pipeline "
            "holding and overflow costs (not disposal), revenue, lead times >= 1 into stores"
        )
