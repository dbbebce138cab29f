"""Run policies on the batched array env over common sample paths and collect what the KPIs need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from restock.agents.base import JointPolicy, Policy
from restock.envs.array_env import ArrayEnv, compile_any
from restock.envs.compile import Compiled
from restock.envs.types import K_DEMAND, K_ORDERED, N_COST, N_KPI

MAX_PAIRS_PER_BATCH = 2_000_000  # environments x nodes x SKUs stepped together


@dataclass
class RolloutResult:
    """Episode totals and per-period series of one policy over a set of sample paths."""

    policy: str
    scenario: str
    paths: np.ndarray  # [P] path ids (common random numbers: same ids = same demand and lead times)
    seed: int
    horizon: int
    cost: np.ndarray  # [P, N, N_COST] episode totals per node
    kpi: np.ndarray  # [P, N, N_KPI] episode totals per node (levels summed over periods)
    revenue: np.ndarray  # [P, N]
    ordered: np.ndarray  # [P, T, N] units ordered per period (bullwhip)
    demand: np.ndarray  # [P, T, N] demand seen per period (stores: customers; DCs: children's orders)
    # [P, T] network cost per period, every node and component (anything charged at reset counts in
    # period 0, so it sums to ``cost``'s total) and store revenue per period: the discounted KPIs
    period_cost: np.ndarray | None = None
    period_revenue: np.ndarray | None = None
    trace: dict[str, np.ndarray] = field(default_factory=dict)  # [T, N, K] of path 0 (plots)
    shield: dict[str, Any] = field(default_factory=dict)  # filled by the shield (safety issue)
    seconds: float = 0.0


def rollout(
    scenario: str | Compiled,
    policy: Policy | JointPolicy | dict,
    episodes: int = 10,
    seed: int = 0,
    paths: np.ndarray | None = None,
    shield: Callable | None = None,
    progress: Callable[[int], None] | None = None,
    trace_sku: int | None = 0,
    **overrides: Any,
) -> RolloutResult:
    """Simulate ``episodes`` sample paths (ids ``paths``, default 0..episodes-1) under a policy."""
    import time

    compiled = compile_any(scenario, **overrides)
    joint = policy if isinstance(policy, JointPolicy) else JointPolicy(policy)
    joint.bind(compiled)
    if paths is None:
        paths = np.arange(episodes, dtype=np.int64)
    paths = np.asarray(paths, np.int64)
    P = len(paths)
    N, K, T = compiled.N, compiled.K, compiled.horizon
    per_env = N * K
    B = int(max(1, min(P, MAX_PAIRS_PER_BATCH // max(per_env, 1))))
    cost = np.zeros((P, N, N_COST))
    kpi = np.zeros((P, N, N_KPI))
    revenue = np.zeros((P, N))
    ordered = np.zeros((P, T, N), np.float32)
    demand = np.zeros((P, T, N), np.float32)
    period_cost = np.zeros((P, T))
    period_revenue = np.zeros((P, T))
    trace: dict[str, np.ndarray] = {}
    shield_stats: dict[str, Any] = {}
    t0 = time.perf_counter()
    for b0 in range(0, P, B):
        bp = paths[b0 : b0 + B]
        env = ArrayEnv(compiled, num_envs=len(bp), seed=seed, shield=shield)
        env.reset(paths=bp)
        period_cost[b0 : b0 + len(bp), 0] = env.episode_cost.sum(axis=(1, 2))  # charged at reset
        if shield is not None and hasattr(shield, "set_policy"):
            shield.set_policy(joint)  # decision records name the policy
        want_trace = trace_sku is not None and b0 == 0
        if want_trace:
            trace = {k: np.zeros((T, N), np.float32) for k in ("on_hand", "ordered", "demand", "pipeline")}
        for t in range(T):
            if want_trace:
                trace["on_hand"][t] = env.state.on_hand[0, :, trace_sku]
                trace["pipeline"][t] = env.state.transit[0, :, trace_sku]
            out = joint.propose(env)
            if shield is not None and hasattr(shield, "note"):
                shield.note(confidence=out.confidence)
            _, _, _, _, info = env.step_qty(out.qty)
            ordered[b0 : b0 + len(bp), t] = info["kpi"][:, :, K_ORDERED]
            demand[b0 : b0 + len(bp), t] = info["kpi"][:, :, K_DEMAND]
            period_cost[b0 : b0 + len(bp), t] += info["cost"].sum(axis=(1, 2))
            period_revenue[b0 : b0 + len(bp), t] = info["revenue"].sum(axis=1)
            if want_trace:
                trace["ordered"][t] = info["executed"][0, :, trace_sku]
                trace["demand"][t] = env.state.last_demand[0, :, trace_sku]
            for key, val in info.items():
                if key.startswith("shield_"):
                    acc = shield_stats.setdefault(key, np.zeros((P,) + np.shape(val)[1:]))
                    acc[b0 : b0 + len(bp)] += val
            if progress is not None:
                progress(len(bp))
        cost[b0 : b0 + len(bp)] = env.episode_cost
        kpi[b0 : b0 + len(bp)] = env.episode_kpi
        revenue[b0 : b0 + len(bp)] = env.episode_revenue
    return RolloutResult(
        policy=joint.name,
        scenario=compiled.config.name,
        paths=paths,
        seed=seed,
        horizon=T,
        cost=cost,
        kpi=kpi,
        revenue=revenue,
        ordered=ordered,
        demand=demand,
        period_cost=period_cost,
        period_revenue=period_revenue,
        trace=trace,
        shield=shield_stats,
        seconds=time.perf_counter() - t0,
    )
