"""KPI definitions, per episode, with means and 95% confidence intervals across episodes.

Every KPI is computed per episode (sample path) and then summarised across episodes: mean and a
Student-t 95% interval. Comparisons between policies are paired (the same paths under common random
numbers), so differences have much tighter intervals than the KPIs themselves.

Definitions (network-wide unless stated; "stores" are the customer-facing nodes):
  total_cost          sum over nodes and periods of every cost component
  cost_<component>    the same for one component (holding, pipeline_holding, stockout, order_variable,
                      order_fixed, overflow)
  revenue             price x units sold at stores
  profit              revenue - cost of goods sold (unit_cost x units sold) - total_cost
  discounted_profit   sum over periods of discount^t x (revenue - total cost), every node's revenue
                      (per-node prices) and costs (per-node purchase costs): OR-Gym's profit
  fill_rate           units of demand filled at once from stock / units demanded (stores)
  cycle_service_level share of store-SKU-periods in which all demand was filled at once
  stockout_days       periods with unmet demand per store-SKU over the episode (mean)
  inventory_turns     cost of goods sold / average inventory value (all nodes), over the episode
  avg_on_hand         average units on hand over periods (all nodes)
  avg_on_hand_stores  the same at stores only
  lost_sales          units of customer demand lost (stores)
  bullwhip_<echelon>  variance over periods of the units ordered by an echelon / variance of customer
                      demand (echelon 0 = stores, 1 = their parents, ...)

With ``restock eval --discounted`` (`discounted_kpis`), per episode:
  discounted_cost_per_period   sum_t discount^t x total cost of period t / sum_t discount^t (t from 0):
                               the objective of ``restock tune --discounted``; with discount 1 it is
                               total_cost / horizon, the undiscounted cost per period
  discounted_cost_minus_revenue_per_period  the same of cost - store revenue (scenarios whose reward
                               includes revenue: what the tuner minimises there)
"""

from __future__ import annotations

import numpy as np
from restock.envs.compile import Compiled
from restock.envs.kpis import HEADLINE, mean_ci
from restock.envs.types import (
    COST_NAMES,
    K_DEMAND,
    K_DISCOUNTED_PROFIT,
    K_FILLED,
    K_LOST,
    K_ON_HAND,
    K_ON_HAND_VALUE,
    K_SALES_VALUE,
    K_STOCKOUT_SKUS,
)


def echelons(compiled: Compiled) -> list[np.ndarray]:
    """Node indices per echelon: 0 = stores, 1 = their parents, and so on up the tree."""
    p = compiled.params
    N, M = compiled.N, compiled.M
    level = np.full(N, -1)
    level[M:] = 0
    changed = True
    while changed:
        changed = False
        for n in range(N):
            par = p.parent[n]
            if par >= 0 and level[n] >= 0 and level[par] < level[n] + 1:
                level[par] = level[n] + 1
                changed = True
    return [np.flatnonzero(level == e) for e in range(level.max() + 1)]


def episode_kpis(res, compiled: Compiled) -> dict[str, np.ndarray]:
    """Per-episode KPI values [P] from a `RolloutResult`."""
    M, N, K, T = compiled.M, compiled.N, compiled.K, res.horizon
    S = N - M
    st = slice(M, N)
    out: dict[str, np.ndarray] = {}
    total = res.cost.sum(axis=(1, 2))
    out["total_cost"] = total
    for j, name in enumerate(COST_NAMES):
        out[f"cost_{name}"] = res.cost[:, :, j].sum(axis=1)
    rev = res.revenue.sum(axis=1)
    cogs_stores = res.kpi[:, st, K_SALES_VALUE].sum(axis=1)
    if np.any(compiled.params.price > 0):
        out["revenue"] = rev
        out["profit"] = rev - cogs_stores - total
        # sum over periods and nodes of discount^t (revenue - cost)
        out["discounted_profit"] = res.kpi[:, :, K_DISCOUNTED_PROFIT].sum(axis=1)
    dem = res.kpi[:, st, K_DEMAND].sum(axis=1)
    out["fill_rate"] = np.where(dem > 0, res.kpi[:, st, K_FILLED].sum(axis=1) / np.maximum(dem, 1e-12), 1.0)
    so = res.kpi[:, st, K_STOCKOUT_SKUS].sum(axis=1)
    out["cycle_service_level"] = 1.0 - so / (S * K * T)
    out["stockout_days"] = so / (S * K)
    avg_value = res.kpi[:, :, K_ON_HAND_VALUE].sum(axis=1) / T
    out["inventory_turns"] = np.where(avg_value > 0, cogs_stores / np.maximum(avg_value, 1e-12), np.nan)
    out["avg_on_hand"] = res.kpi[:, :, K_ON_HAND].sum(axis=1) / T
    out["avg_on_hand_stores"] = res.kpi[:, st, K_ON_HAND].sum(axis=1) / T
    out["lost_sales"] = res.kpi[:, st, K_LOST].sum(axis=1)
    cust = res.demand[:, :, st].sum(axis=2).astype(float)  # [P, T]
    var_d = cust.var(axis=1, ddof=1) if T > 1 else np.zeros(len(cust))
    for e, nodes in enumerate(echelons(compiled)):
        orders = res.ordered[:, :, nodes].sum(axis=2).astype(float)
        var_o = orders.var(axis=1, ddof=1) if T > 1 else np.zeros(len(orders))
        out[f"bullwhip_{e}"] = np.where(var_d > 0, var_o / np.where(var_d > 0, var_d, 1.0), np.nan)
    out.update(safety_kpis(res.shield))
    return out


def safety_kpis(shield: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-episode safety figures from the shield's step counts (empty without a shield).

    safety_intervention_rate_<c>  node-SKU decisions the shield changed because of constraint c, per
                                  node-SKU decision
    safety_raw_violations_<c>     violations of c in the policy's proposals (before the shield)
    safety_executed_violations_<c> violations of c in what executed (zero when shielded)
    safety_intervention_rate      the sum over constraints; safety_fallbacks, safety_escalations
    """
    if not shield:
        return {}
    from restock.envs.constraints import CONSTRAINTS

    out: dict[str, np.ndarray] = {}
    dec = np.asarray(shield.get("shield_sku_decisions", np.zeros(1)), float)
    dec = np.where(dec > 0, dec, np.nan)
    inter = shield.get("shield_interventions")
    raw = shield.get("shield_raw_violations")
    exe = shield.get("shield_executed_violations")
    for j, c in enumerate(CONSTRAINTS):
        if inter is not None and inter.ndim == 2 and j < inter.shape[1]:
            out[f"safety_intervention_rate_{c}"] = inter[:, j] / dec
        if raw is not None and raw.ndim == 2 and j < raw.shape[1]:
            out[f"safety_raw_violations_{c}"] = np.asarray(raw[:, j], float)
        if exe is not None and exe.ndim == 2 and j < exe.shape[1]:
            out[f"safety_executed_violations_{c}"] = np.asarray(exe[:, j], float)
    if inter is not None and inter.ndim == 2:
        out["safety_intervention_rate"] = inter.sum(axis=1) / dec
    if raw is not None and raw.ndim == 2:
        out["safety_raw_violations"] = raw.sum(axis=1).astype(float)
    if exe is not None and exe.ndim == 2:
        out["safety_executed_violations"] = exe.sum(axis=1).astype(float)
    for key in ("shield_fallbacks", "shield_escalations", "shield_verifier_failures"):
        if key in shield:
            out["safety_" + key.removeprefix("shield_")] = np.asarray(shield[key], float)
    return out


def summarise(per_episode: dict[str, np.ndarray]) -> dict[str, dict]:
    return {k: mean_ci(v) for k, v in per_episode.items()}


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], keys=HEADLINE) -> dict[str, dict]:
    """KPI differences a - b per episode (same paths), with intervals; plus relative cost difference."""
    out = {}
    for k in keys:
        if k in a and k in b:
            out[k] = mean_ci(np.asarray(a[k]) - np.asarray(b[k]))
    if "total_cost" in a and "total_cost" in b:
        base = np.asarray(b["total_cost"])
        rel = (np.asarray(a["total_cost"]) - base) / np.where(base != 0, base, np.nan)
        out["total_cost_relative"] = mean_ci(rel)
    return out


DISCOUNTED = "discounted_cost_per_period"
DISCOUNTED_NET = "discounted_cost_minus_revenue_per_period"


def discounted_kpis(res, compiled: Compiled, discount: float) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per-episode discounted cost per period [P] (and cost - revenue where the scenario's reward includes
    revenue), weighted as `agents.tuning.Objective` weights ``restock tune --discounted`` (discount >= 1:
    undiscounted); and what each one is, in words."""
    from restock.agents.tuning import Objective

    kpis, criteria = {}, {}
    series = {DISCOUNTED: (False, res.period_cost)}
    if compiled.params.include_revenue:
        series[DISCOUNTED_NET] = (True, res.period_cost - res.period_revenue)
    for key, (revenue, per_period) in series.items():
        obj = Objective(revenue=revenue, discount=None if discount >= 1.0 else float(discount))
        w = obj.weights(res.horizon)
        kpis[key] = per_period @ w / w.sum()
        criteria[key] = obj.describe() + (" (the scenario's discount is 1)" if obj.discount is None else "")
    return kpis, criteria
