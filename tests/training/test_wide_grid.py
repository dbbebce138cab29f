"""`default`'s store action grid: 31 levels to 12 periods of cover since 2026-12-05 (the "wide" grid of
configs/experiments/default_wide_*.yaml), where it was 16 levels to 6 periods. The experiment files whose
documented results were made on the former grid pin it through `scenario_overrides`, and must give exactly
the scenario those runs recorded (their config hash); the wide files give exactly `default`'s. The grid
changes nothing a quantity heuristic sees: the five tuned joint heuristics order quantities, so their
costs on either grid are equal, path by path (which lets the results on both grids be judged against the
same heuristic reports)."""

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
EXPERIMENTS = ROOT / "configs" / "experiments"
WIDE = [  # on `default`'s own grid, with the wide grid's overrides (no-ops now)
    "default_wide_rllib_pairs.yaml",
    "default_wide_rllib_pairs_joint.yaml",
    "default_wide_pair_ppo.yaml",
    "default_persku_rllib_pairs.yaml",
    "default_persku_rllib_pairs_joint.yaml",
]
PINNED = [  # documented results on the former 16-level grid (docs/results/*.md, README.md)
    "default.yaml",
    "default_pair_ppo.yaml",
    "default_pair_ppo_joint.yaml",
    "default_rllib_pairs.yaml",
    "default_rllib_pairs_dc.yaml",
    "default_rllib_pairs_dc_own.yaml",
    "default_rllib_pairs_joint.yaml",
    "default_rllib_pairs_joint_dcfloor.yaml",
]
# the scenario_hash the documented runs recorded in their run.json (runs/rllib_pairs*/, runs/pair_ppo*/):
# `default` with the former store grid, and with the wide one (the wide runs, and `default` now)
NARROW_HASH = "48215d4ce53e98fd"
WIDE_HASH = "7efe3575418543e0"


def _scenario(name: str):
    exp = load_experiment(EXPERIMENTS / name)
    return compile_scenario(load_scenario("default", **exp.scenario_overrides))


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


def test_default__ships_the_wide_store_grid():
    c = compile_scenario(load_scenario("default"))
    s = c.M  # the first store (DCs are numbered first)
    assert c.config.action.store.levels == 31 and c.config.action.store.max_cover == 12.0
    assert c.params.levels[s] == 31
    assert c.params.cover_step[s] == pytest.approx(0.4)
    assert c.params.cover_step[s] * (c.params.levels[s] - 1) == pytest.approx(12.0)
    # the DC's grid is unchanged: 16 levels to 15 periods of cover
    assert c.params.levels[0] == 16 and c.config.action.dc.max_cover == 15.0
    assert c.config_hash == WIDE_HASH


def test_experiment_files__every_default_one_is_pinned_or_wide():
    """A new `default*` experiment file is listed here on purpose: pinned (its results on the former grid)
    or wide (on `default`'s own grid)."""
    found = sorted(p.name for p in EXPERIMENTS.glob("default*.yaml"))
    assert found == sorted(PINNED + WIDE)


@pytest.mark.parametrize("name", PINNED)
def test_pinned_experiment__gets_the_former_grid_and_scenario(name):
    pinned, default = _scenario(name), compile_scenario(load_scenario("default"))
    s = pinned.M
    assert pinned.params.levels[s] == 16
    assert pinned.params.cover_step[s] == pytest.approx(default.params.cover_step[s]) == pytest.approx(0.4)
    assert pinned.params.cover_step[s] * (pinned.params.levels[s] - 1) == pytest.approx(6.0)
    assert pinned.params.levels[0] == default.params.levels[0]  # the DC's grid is default's
    # everything but the store grid is default's, and the whole is the scenario the runs recorded
    a, b = pinned.config.model_dump(), default.config.model_dump()
    assert a["action"]["dc"] == b["action"]["dc"]
    a.pop("action"), b.pop("action")
    assert a == b
    assert pinned.config_hash == NARROW_HASH


@pytest.mark.parametrize("name", WIDE)
def test_wide_experiment__overrides_are_default_own_grid(name):
    exp = load_experiment(EXPERIMENTS / name)
    assert exp.scenario_overrides == {"action__store__max_cover": 12.0, "action__store__levels": 31}
    wide = _scenario(name)
    assert wide.config == compile_scenario(load_scenario("default")).config
    assert wide.config_hash == WIDE_HASH


def test_grids__heuristics_cost_the_same_path_by_path():
    narrow = _scenario("default_rllib_pairs.yaml")
    wide = compile_scenario(load_scenario("default"))
    assert narrow.params.levels[narrow.M] != wide.params.levels[wide.M]
    knobs = {"store": {"z": -1.09375, "q": 0.325}, "dc": {"z": 1.96875, "q": 0.85}}  # tuned (s,S)
    for policy, k in (
        ("s_S", knobs),
        ("base_stock", {}),
        ("echelon_base_stock", {}),
        ("capped_base_stock", {}),
        ("r_Q", {}),
    ):
        a, b = _costs(narrow, policy, k), _costs(wide, policy, k)
        assert np.all(a > 0)
        np.testing.assert_array_equal(a, b)
