"""Which exact method covers a scenario, and its optimum (`restock optimum`).

- ``clark_scarf``: a serial chain (one or more stages) with backorders, stationary Poisson demand and no
  ordering costs (`agents.optimal.serial_from_scenario`); echelon base-stock levels are optimal over all
  policies (Clark and Scarf 1960). With one stage and no pipeline cost this is the newsvendor, reported
  as ``newsvendor``.
- ``dp``: one store, one SKU, stationary i.i.d. demand, fixed lead time, lost sales or backlog, any
  holding / penalty / per-unit and fixed ordering cost (`agents.single_node_dp`): value iteration on the
  exact state, optimal over every policy the scenario's action levels can express.

Everything else raises `NotCovered` with the reasons each method gives.
"""

from __future__ import annotations

import time

import numpy as np
from restock.agents.optimal import serial_from_scenario
from restock.agents.single_node_dp import evaluate_table, solve, state_space
from restock.agents.single_node_scenario import NotCovered, StateTable, spec_from_scenario
from restock.envs.array_env import ArrayEnv
from restock.envs.types import NODE_FEATURES, sku_feature_names


def exact_optimum(compiled, tol: float = 1e-9) -> dict:
    """``{"method", "average_cost", "levels", "seconds", ...}`` for a covered scenario."""
    t0 = time.perf_counter()
    reasons = []
    try:
        spec = serial_from_scenario(compiled)
        sol = spec.solve()
        single = len(spec.nodes) == 1
        return {
            "scenario": compiled.config.name,
            "method": "newsvendor" if single and not any(spec.pipeline_holding) else "clark_scarf",
            "average_cost": float(sol.cost),
            "levels": {
                "echelon_base_stock": {
                    compiled.agent_ids[n]: int(s) for n, s in zip(spec.nodes, sol.echelon, strict=True)
                }
            },
            "criterion": "long-run average cost per period (optimal over all policies)",
            "seconds": time.perf_counter() - t0,
        }
    except ValueError as exc:
        reasons.append(f"clark_scarf: {exc}")
    try:
        spec = spec_from_scenario(compiled)
    except NotCovered as exc:
        reasons.append(f"dp: {exc}")
        raise NotCovered(" | ".join(reasons)) from None
    sol = solve(spec, tol=tol)
    out = {
        "scenario": compiled.config.name,
        "method": "dp",
        "average_cost": sol.average_cost,
        "average_cost_bounds": list(sol.bounds) if spec.discount >= 1 else None,
        "levels": sol.policy_levels(),
        "criterion": (
            "long-run average cost per period (optimal over the scenario's action levels)"
            if spec.discount >= 1
            else f"discounted (discount {spec.discount}); average_cost is the discount-optimal policy's long-run average"
        ),
        "unmet": spec.unmet,
        "lead_time": spec.lead_time,
        "demand_mean": spec.mean,
        "seconds": time.perf_counter() - t0,
    }
    if sol.discounted_cost is not None:
        out["discounted_cost_from_initial_state"] = sol.discounted_cost
        out["discounted_cost_bounds"] = list(sol.bounds)
    if sol.notes:
        out["notes"] = sol.notes
    top = spec.max_position
    ordering = sol.action > 0
    if ordering.any() and int((sol.coords.sum(axis=1) + sol.action)[ordering].max()) >= top:
        out.setdefault("notes", []).append(
            f"the optimal policy orders up to the top level ({top} units) in some states: more levels might lower the cost"
        )
    return out


def exact_policy_cost(compiled, joint, node: int = 0) -> tuple[float, float]:
    """Exact long-run average cost bracket (lo, hi) of a stationary policy of a one-store scenario.

    The policy is asked for its order at every exact state (`agents.single_node_dp`'s states, put into
    a kernel environment one per state), and the resulting table is evaluated by relative value
    iteration. Valid only for policies that are functions of the exact state: heuristics that read the
    inventory position and on hand, and learned networks whose other features carry no weight (the
    dcl trainer's, `training.dcl_train.STATE_FEATURES`); `ValueError` for a network that reads others.
    """
    spec = spec_from_scenario(compiled)
    for p in joint.policies.values():
        net = getattr(p, "net", None)
        if net is not None and not _reads_only_state(net, compiled.W, list(compiled.sku_features)):
            raise ValueError(
                "the learned policy reads features outside the exact state (last period's flows, time): "
                "its exact cost is not defined on the DP's states"
            )
    coords, _, _, _ = state_space(spec)
    table = StateTable(compiled)
    env = ArrayEnv(compiled, num_envs=coords.shape[0], seed=0, features=True)
    env.reset()
    table.write(env, np.arange(coords.shape[0]))
    env._observe(env.params, env.state, env.work, env.obs, env.mask, env.ub)
    joint.bind(compiled)
    q = joint.propose(env).qty[:, node, 0].astype(np.int64)
    return evaluate_table(spec, lambda _c: q)


def _reads_only_state(net, W: int, sku_features: list[str] | None = None) -> bool:
    keep = {"on_hand", "backlog", "pipeline_total", "inventory_position"} | {
        f"pipeline_{j}" for j in range(1, W)
    }
    # the scenario's observed features (a lean observation block observes a subset), then the node's
    names = (sku_feature_names(W) if sku_features is None else list(sku_features)) + list(NODE_FEATURES)
    if len(names) != net.feat_std.shape[0]:
        return False  # a network for another observation layout: not a table over the DP's states
    std = net.feat_std.detach().numpy()
    return all(std[i] >= 1e8 for i, n in enumerate(names) if n not in keep)
