"""How often network_2e's DC storage and budget limits bind under the tuned heuristics.

Runs each tuned heuristic (knobs from `restock tune`) behind the shield on held-out paths and counts,
per DC, the periods in which the shield had to lower at least one of the DC's orders because of its
storage volume or its budget (the constraint binds for that period), and the share of DC-SKU decisions
it changed. Usage:

    python docs/results/network_2e_binding.py --params out/params/network_2e.json [--episodes 16]
"""

from __future__ import annotations

import argparse

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import load_params, make_policy
from restock.agents.shield import Shield
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.constraints import CI_BUDGET, CI_STORAGE


def binding(scenario: str, policy: str, knobs: dict, episodes: int, seed: int) -> dict:
    c = compile_scenario(load_scenario(scenario))
    shield = Shield(c, mode="enforce")
    env = ArrayEnv(c, num_envs=episodes, seed=seed)
    env.reset()
    joint = JointPolicy(make_policy(policy, knobs))
    joint.bind(c)
    dcs = np.flatnonzero(c.params.is_store == 0)
    periods = {"storage": np.zeros(len(dcs)), "budget": np.zeros(len(dcs))}
    skus = {"storage": 0, "budget": 0}
    for _ in range(c.horizon):
        res = shield.decide(env, joint.propose(env).qty)
        chg = res.changed[:, dcs]  # [E, D, K]
        for name, bit in (("storage", CI_STORAGE), ("budget", CI_BUDGET)):
            hit = (chg >> bit) & 1
            periods[name] += hit.any(axis=2).sum(axis=0)
            skus[name] += int(hit.sum())
        env.step_qty(res.executed.copy())
    total = episodes * c.horizon
    return {
        "cost_per_period": float(env.episode_cost.sum(axis=(1, 2)).mean() / c.horizon),
        **{f"{k}_binding_periods_per_dc": (v / total).round(3).tolist() for k, v in periods.items()},
        **{f"{k}_changed_dc_sku_share": v / (total * len(dcs) * c.K) for k, v in skus.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="network_2e")
    ap.add_argument("--params", required=True)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=9001)
    a = ap.parse_args()
    data = load_params(a.params)
    print(
        "| heuristic | cost/period | storage binds (share of periods, per DC) | budget binds | DC-SKU orders cut: storage / budget |"
    )
    print("|---|---|---|---|---|")
    for name, entry in data.get("policies", {}).items():
        r = binding(a.scenario, name, entry["knobs"], a.episodes, a.seed)
        print(
            f"| {name} | {r['cost_per_period']:,.1f} | {r['storage_binding_periods_per_dc']} | "
            f"{r['budget_binding_periods_per_dc']} | {r['storage_changed_dc_sku_share']:.1%} / "
            f"{r['budget_changed_dc_sku_share']:.1%} |"
        )


if __name__ == "__main__":
    main()
