"""Kernel data types: `Params` (a compiled scenario) and `State` (E environments), as NamedTuples of arrays.

Numba compiles functions over NamedTuples of arrays (frozen dataclasses do not compile). Shapes use:
E environments, N nodes (DCs then stores, parents before children), M DCs, S stores (N = M + S),
K SKUs, U external suppliers, W pipeline ring length (max lead time + 1), T horizon, C children entries.

Quantities are whole units: int32 in the state (memory traffic), int64 in parameters and
arithmetic (mixed-width integer division is slow in Numba); money is float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# cost components, per node and period (out.cost[..., j])
COST_NAMES = ("holding", "pipeline_holding", "stockout", "order_variable", "order_fixed", "overflow")
C_HOLD, C_PIPE, C_STOCKOUT, C_ORDER, C_FIXED, C_OVERFLOW = range(6)
N_COST = len(COST_NAMES)

# KPI counters, per node and period (out.kpi[..., j]); units unless stated
KPI_NAMES = (
    "demand",  # stores: customer demand; DCs: units ordered by children this period
    "filled",  # units of this period's demand filled at once from stock
    "shipped_out",  # units leaving the node (sales to customers incl. backlog fills; shipments to children)
    "unmet",  # units of this period's demand not filled at once (lost or backlogged)
    "lost",  # units lost (lost-sales nodes; cancelled order units)
    "backlog",  # units backlogged at the end of the period (stores: customers; DCs: owed to children)
    "on_hand",  # units on hand at the end of the period
    "pipeline",  # units in transit to the node at the end of the period
    "ordered",  # units the node ordered (executed)
    "received_ship",  # units its parent dispatched to it this period
    "arrived",  # units that arrived (after disposal) at the start of the next period
    "stockout_skus",  # SKUs with unmet demand this period (count)
    "order_lines",  # SKUs with a positive order this period (count)
    "spend",  # ordering spend: sum of unit_cost x ordered (money)
    "overflow_volume",  # volume above storage capacity at the end of the period
    "disposed",  # units disposed at arrival for lack of space (overflow: dispose)
    "on_hand_value",  # sum of unit_cost x on hand at the end of the period (money)
    "sales_value",  # sum of unit_cost x shipped_out (money, cost of goods; turns use it)
    "discounted_profit",  # discount^t x (revenue - every cost) of the node this period (money)
)
(
    K_DEMAND,
    K_FILLED,
    K_SHIPPED_OUT,
    K_UNMET,
    K_LOST,
    K_BACKLOG,
    K_ON_HAND,
    K_PIPELINE,
    K_ORDERED,
    K_RECEIVED_SHIP,
    K_ARRIVED,
    K_STOCKOUT_SKUS,
    K_ORDER_LINES,
    K_SPEND,
    K_OVERFLOW_VOL,
    K_DISPOSED,
    K_ON_HAND_VALUE,
    K_SALES_VALUE,
    K_DISCOUNTED_PROFIT,
) = range(19)
N_KPI = len(KPI_NAMES)

MODE_QUANTITY, MODE_ORDER_UP_TO = 0, 1
RATION_PROPORTIONAL, RATION_PRIORITY = 0, 1

# per-SKU observation features, in order (obs[..., k * F + j]); quantities are divided by the
# node-SKU demand scale (mean demand per period, at least 0.1) so features are dimensionless.
SKU_FEATURES_FIXED = (
    "on_hand",
    "backlog",
    "owed_to_me",
    "pipeline_total",
    "last_demand",
    "last_received_ship",
    "last_arrived",
    "last_order",
    "forecast",
    "upper_bound",
    "inventory_position",
    "log_scale",
    "critical_ratio",
    "lot",
    "mean_lead_time",
)
NODE_FEATURES = ("time_fraction", "is_store", "storage_utilisation", "budget_per_scale")
UB_FEATURE_CAP = 1000.0  # upper bounds are clipped at this many periods of demand in observations


class Params(NamedTuple):
    """A compiled scenario. Read-only; shared by every environment in a batch."""

    # topology
    parent: np.ndarray  # [N] int64: parent node, -1 when fed by an external supplier
    supplier: np.ndarray  # [N] int64: feeding supplier, -1 when fed by a DC
    is_store: np.ndarray  # [N] int8
    child_ptr: np.ndarray  # [N+1] int64: children of node n are child_idx[child_ptr[n]:child_ptr[n+1]]
    child_idx: np.ndarray  # [N-U'] int64
    sup_ptr: np.ndarray  # [U+1] int64: nodes fed by supplier u are sup_idx[sup_ptr[u]:sup_ptr[u+1]]
    sup_idx: np.ndarray  # [.] int64
    depth: np.ndarray  # [N] int64: 0 for nodes fed by a supplier
    # node economics and limits
    backlog: np.ndarray  # [N] int8: 1 = unmet demand/orders are backlogged, 0 = lost
    rationing: np.ndarray  # [N] int8: RATION_* rule when a DC is short
    storage_cap: np.ndarray  # [T+1, N] float64: storage volume capacity in period t (inf = none)
    storage_cap_ahead: np.ndarray  # [T+1, N] float64: min capacity over periods t..t+W-1 (for masks)
    overflow_dispose: np.ndarray  # [N] int8
    overflow_cost: np.ndarray  # [N] float64 per volume unit
    lane_cap: np.ndarray  # [N] float64: inbound volume per period (inf = none)
    budget: np.ndarray  # [N] float64: ordering spend per period (inf = none)
    max_increase: np.ndarray  # [N] float64: order_t - order_{t-1} <= this (inf = none)
    # node x SKU
    hold: np.ndarray  # [N, K] float64 per unit on hand per period
    pipe_hold: np.ndarray  # [N, K] float64 per unit in transit to n per period (parent's rate)
    stockout: np.ndarray  # [N, K] float64 per unit lost, or backlogged per period
    order_cost: np.ndarray  # [N, K] float64 per unit shipped to n (the node's purchase cost)
    ship_first: np.ndarray  # [N] int8: 1 = ships from start-of-period stock (this period's arrivals wait)
    fixed_cost: np.ndarray  # [N, K] float64 per positive order line
    price: (
        np.ndarray
    )  # [N, K] float64 per unit shipped out (stores: sold; DCs: to children; default 0 at DCs)
    mean: np.ndarray  # [N, K] float64 base mean demand per period (DCs: sum over descendant stores)
    scale: np.ndarray  # [N, K] float64 observation scale: max(mean, 0.1)
    inv_scale: np.ndarray  # [N, K] float64 1 / scale
    log_scale: np.ndarray  # [N, K] float64 log(scale)
    crit_ratio: np.ndarray  # [N, K] float64 stockout / (stockout + holding), 0.5 when both are 0
    # SKU
    unit_cost: np.ndarray  # [K] float64
    volume: np.ndarray  # [K] float64
    lot: np.ndarray  # [K] int64
    moq: np.ndarray  # [K] int64
    # lead times (of the lane into node n)
    lt_fixed: np.ndarray  # [N] int8: 1 when the lane's lead time is deterministic
    lt_uniform: np.ndarray  # [N] int8: 1 when deterministic and the same for every SKU
    lt_value: np.ndarray  # [N, K] int64: the deterministic lead time (or the mode otherwise)
    lt_cdf: np.ndarray  # [N, K, W] float64: P(lead <= l) for stochastic lanes
    lt_mean: np.ndarray  # [N, K] float64
    lt_extra: np.ndarray  # [T+1, N] int64: lead-time spike added to shipments sent in period t
    # suppliers
    sup_cap: np.ndarray  # [T+1, U, K] float64 units per SKU per period (inf = none), outages applied
    sup_capped: np.ndarray  # [U] int8: 1 when any cap of the supplier is finite
    sup_backlog: np.ndarray  # [U] int8: 1 = what it did not ship is owed (s.owed of the node it feeds)
    sup_penalty: np.ndarray  # [U, K] float64 per unit of an order it did not ship (charged to the node)
    sup_settle: np.ndarray  # [U] int8: 1 when it backlogs or charges a penalty
    # demand shape over time (forecasts use mean * season[t])
    season: np.ndarray  # [T+1] float64
    # actions
    levels: np.ndarray  # [N] int64 number of levels of this node's role
    mode: np.ndarray  # [N] int8 MODE_* of this node's role
    qstep: np.ndarray  # [N, K] int64 quantity per level (quantity mode)
    cover_step: np.ndarray  # [N] float64 periods of forecast per level (order-up-to mode)
    # observation: indices into sku_feature_names(W) of the observed per-SKU features (envs.observation)
    feat_sel: np.ndarray  # [F] int64, ascending
    # reward
    net_weight: float
    reward_scale: float
    include_revenue: bool
    disc: np.ndarray  # [T+1] float64 discount^t (the discounted_profit KPI)
    reward_disc: np.ndarray  # [T+1] float64 weight of period t's reward: discount^t, or 1 (reward.discounted)
    horizon: int
    n_dcs: int  # M; stores are nodes M..N-1


class State(NamedTuple):
    """The state of E environments between decisions (after period t's arrivals)."""

    t: np.ndarray  # [E] int32 period
    key: np.ndarray  # [E] uint64 random key of each environment's episode (lead-time draws)
    on_hand: np.ndarray  # [E, N, K] int32
    backlog: np.ndarray  # [E, N, K] int32 customer backorders at stores (0 at DCs)
    owed: np.ndarray  # [E, N, K] int32 units node n's parent owes n (backlogged orders)
    pipe: np.ndarray  # [E, N, W, K] int32 in transit to n, arriving in period p at slot p % W
    transit: np.ndarray  # [E, N, K] int32 units in transit to n (the sum of pipe over slots)
    last_order: np.ndarray  # [E, N, K] int32 executed order last period
    last_demand: np.ndarray  # [E, N, K] int32 demand (stores) or children's orders (DCs) last period
    shipped: np.ndarray  # [E, N, K] int32 units the parent dispatched to n last period
    arrived: np.ndarray  # [E, N, K] int32 units that arrived at n this period


class StepOut(NamedTuple):
    """Per-period outputs of one kernel step, overwritten on every call."""

    cost: np.ndarray  # [E, N, N_COST] float64
    revenue: np.ndarray  # [E, N] float64
    kpi: np.ndarray  # [E, N, N_KPI] float64
    reward: np.ndarray  # [E, N] float64


class Work(NamedTuple):
    """Scratch buffers for the kernel, allocated once per batch (no allocation inside the period loop)."""

    req: np.ndarray  # [E, N] int64 requests of one SKU column being rationed
    ship: np.ndarray  # [E, N] int64 rationed shipments of that column
    bounds: np.ndarray  # [E, 8] int64 per-constraint bounds of one node-SKU
    owed_out: np.ndarray  # [E, N, K] int64 units each DC owes its children (rows of stores unused)
    pt: np.ndarray  # [E, K] int64 in-transit units of one node per SKU
    a: np.ndarray  # [E, K] int64 per-SKU scratch
    b: np.ndarray  # [E, K] int64 per-SKU scratch
    frac: np.ndarray  # [E, N] int64 fractional parts of a proportional rationing (by requester)


def new_work(E: int, N: int, M: int, K: int) -> Work:
    return Work(
        req=np.zeros((E, N), np.int64),
        ship=np.zeros((E, N), np.int64),
        bounds=np.zeros((E, 8), np.int64),
        owed_out=np.zeros((E, N, K), np.int64),
        pt=np.zeros((E, K), np.int64),
        a=np.zeros((E, K), np.int64),
        b=np.zeros((E, K), np.int64),
        frac=np.zeros((E, N), np.int64),
    )


def new_state(E: int, N: int, K: int, W: int) -> State:
    z = lambda *s: np.zeros(s, dtype=np.int32)  # noqa: E731
    return State(
        t=np.zeros(E, np.int32),
        key=np.zeros(E, np.uint64),
        on_hand=z(E, N, K),
        backlog=z(E, N, K),
        owed=z(E, N, K),
        pipe=z(E, N, W, K),
        transit=z(E, N, K),
        last_order=z(E, N, K),
        last_demand=z(E, N, K),
        shipped=z(E, N, K),
        arrived=z(E, N, K),
    )


def new_step_out(E: int, N: int) -> StepOut:
    return StepOut(
        cost=np.zeros((E, N, N_COST)),
        revenue=np.zeros((E, N)),
        kpi=np.zeros((E, N, N_KPI)),
        reward=np.zeros((E, N)),
    )


def copy_state(s: State) -> State:
    return State(*(a.copy() for a in s))


def n_sku_features(W: int) -> int:
    """Per-SKU feature count: the fixed ones plus one per pipeline arrival slot (W - 1 of them)."""
    return len(SKU_FEATURES_FIXED) + max(W - 1, 0)


def sku_feature_names(W: int) -> list[str]:
    return list(SKU_FEATURES_FIXED) + [f"pipeline_{j}" for j in range(1, W)]
