"""Helpers shared by the serving tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario


def make_run(root: Path, scenario: str = "tiny", roles=("store", "dc"), seed: int = 0) -> Path:
    """A run directory as `restock train` leaves it, with random (but decisive) networks."""
    from restock.agents.learned import save_role
    from restock.agents.networks import NetConfig, PerSkuNet
    from restock.envs.roles import role_nodes
    from restock.envs.types import NODE_FEATURES, sku_feature_names

    c = compile_scenario(load_scenario(scenario))
    run = root / f"{scenario}__test__{seed}"
    run.mkdir(parents=True)
    torch.manual_seed(seed)
    F, G = len(sku_feature_names(c.W)), len(NODE_FEATURES)
    for role in roles:
        L = int(c.params.levels[role_nodes(c, role)[0]])
        cfg = NetConfig(
            n_skus=c.K,
            sku_features=F,
            node_features=G,
            levels=L,
            feat_mean=[0.5] * (F + G),
            feat_std=[2.0] * (F + G),
        )
        net = PerSkuNet(cfg)
        torch.nn.init.orthogonal_(net.logits.weight, gain=3.0)  # spread logits: greedy actions vary
        save_role(run, role, net)
    (run / "scenario.yaml").write_text(yaml.safe_dump(c.config.model_dump(mode="json"), sort_keys=False))
    (run / "metrics.csv").write_text(
        "step,tag,value\n100,charts/episodic_cost,123.5\n200,charts/episodic_cost,120.0\n"
    )
    (run / "run.json").write_text(
        json.dumps(
            {
                "format": "restock.run/1",
                "trainer": "sb3",
                "scenario": scenario,
                "scenario_hash": c.config_hash,
                "experiment": "test",
                "seed": seed,
                "status": "done",
                "version": "1",
                "baseline": {
                    "policy": "base_stock",
                    "knobs": {"store": {"z": 0.5}, "dc": {"z": 0.0}},
                    "cost_per_period": 5.0,
                },
                "summary": {"roles": {r: {"env_steps": 200} for r in roles}},
                "roles": list(roles),
            }
        )
    )
    return run


def simulate(scenario: str, policy, periods: int, seed: int = 3, shield=True):
    """An ArrayEnv (one environment) run for ``periods`` periods under ``policy`` (a JointPolicy)."""
    from restock.agents.shield import Shield
    from restock.envs.array_env import ArrayEnv

    env = ArrayEnv(scenario, num_envs=1, seed=seed, shield=Shield() if shield else None)
    env.reset()
    policy.bind(env.compiled)
    for _ in range(periods):
        env.step_qty(policy.propose(env).qty)
    return env


def orders_array(resp: dict, sku_names: list[str]) -> np.ndarray:
    return np.asarray([resp["orders"][s] for s in sku_names], np.int64)
