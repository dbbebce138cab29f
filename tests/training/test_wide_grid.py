"""The wide store action grid (configs/experiments/default_wide_rllib_pairs*.yaml): its scenario overrides
load, reach 12 periods of cover at default's 0.4-period step, and change nothing a quantity heuristic
sees: the five tuned joint heuristics order quantities, so their costs on the wide grid equal those on
`default`, path by path (which lets docs/results/rllib_pairs.md judge wide-grid runs against them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.shield import Shield
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[2]
WIDE = ["default_wide_rllib_pairs.yaml", "default_wide_rllib_pairs_joint.yaml"]


def _costs(compiled, policy: str, knobs: dict, episodes: int = 3) -> np.ndarray:
    env = ArrayEnv(compiled, num_envs=episodes, seed=11, shield=Shield(compiled, mode="enforce"))
    env.reset()
    pol = JointPolicy(make_policy(policy, knobs))
    pol.bind(compiled)
    total = np.zeros(episodes)
    for _ in range(compiled.horizon):
        _, _, r, _, _ = env.step_qty(pol.propose(env).qty)
        total -= r.sum(1)
    return total


@pytest.mark.parametrize("name", WIDE)
def test_wide_grid__overrides_load_and_keep_the_step(name):
    exp = load_experiment(ROOT / "configs" / "experiments" / name)
    base = compile_scenario(load_scenario("default"))
    wide = compile_scenario(load_scenario("default", **exp.scenario_overrides))
    s = wide.M  # the first store (DCs are numbered first)
    assert wide.params.levels[s] == 31 and base.params.levels[s] == 16
    assert wide.params.cover_step[s] == pytest.approx(base.params.cover_step[s]) == pytest.approx(0.4)
    assert wide.params.cover_step[s] * (wide.params.levels[s] - 1) == pytest.approx(12.0)
    assert wide.params.levels[0] == base.params.levels[0]  # the DC's grid is default's
    assert wide.config_hash != base.config_hash


def test_wide_grid__heuristics_cost_the_same_path_by_path():
    exp = load_experiment(ROOT / "configs" / "experiments" / WIDE[0])
    base = compile_scenario(load_scenario("default"))
    wide = compile_scenario(load_scenario("default", **exp.scenario_overrides))
    knobs = {"store": {"z": -1.09375, "q": 0.325}, "dc": {"z": 1.96875, "q": 0.85}}  # tuned (s,S)
    for policy, k in (
        ("s_S", knobs),
        ("base_stock", {}),
        ("echelon_base_stock", {}),
        ("capped_base_stock", {}),
        ("r_Q", {}),
    ):
        a, b = _costs(base, policy, k), _costs(wide, policy, k)
        assert np.all(a > 0)
        np.testing.assert_array_equal(a, b)
