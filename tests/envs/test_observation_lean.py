"""The lean observation (scenario ``observation: {features: compact | [names]}``): the observation is the
full one's selected columns bit for bit, and dynamics, rewards, masks and bounds do not change."""

from __future__ import annotations

import numpy as np
import pytest
from restock.envs import ArrayEnv, parallel_env
from restock.envs.compile import compile_scenario
from restock.envs.config import ConfigError, load_scenario
from restock.envs.observation import COMPACT_FEATURES
from restock.envs.types import NODE_FEATURES, sku_feature_names


def _columns(full: ArrayEnv, lean: ArrayEnv) -> np.ndarray:
    """Columns of the full observation that the lean one holds, in its order."""
    sel = lean.compiled.params.feat_sel
    K, F = full.K, full.F
    return np.concatenate([k * F + sel for k in range(K)] + [K * F + np.arange(len(NODE_FEATURES))])


def _pair(name: str, features, E: int, **kw) -> tuple[ArrayEnv, ArrayEnv]:
    full = ArrayEnv(name, num_envs=E, seed=4, mode="clip", **kw)
    lean = ArrayEnv(name, num_envs=E, seed=4, mode="clip", observation__features=features, **kw)
    return full, lean


def _run_equal(full: ArrayEnv, lean: ArrayEnv, periods: int) -> int:
    """Step both with the same random levels; every output but the observation's width is equal."""
    cols = _columns(full, lean)
    full.reset()
    lean.reset()
    rng = np.random.default_rng(7)
    nonzero = 0
    for _ in range(periods):
        np.testing.assert_array_equal(lean.obs, full.obs[..., cols])
        np.testing.assert_array_equal(lean.mask, full.mask)
        np.testing.assert_array_equal(lean.ub, full.ub)
        nonzero += int(np.count_nonzero(lean.obs))
        lv = rng.integers(0, full.Lmax, size=(full.E, full.N, full.K))
        a, b = full.step(lv), lean.step(lv)
        np.testing.assert_array_equal(a[2], b[2])  # rewards
        np.testing.assert_array_equal(a[4]["executed"], b[4]["executed"])
        for f in full.state._fields:
            np.testing.assert_array_equal(getattr(full.state, f), getattr(lean.state, f), err_msg=f)
    np.testing.assert_array_equal(full.episode_cost, lean.episode_cost)
    np.testing.assert_array_equal(full.episode_kpi, lean.episode_kpi)
    np.testing.assert_array_equal(full.episode_clipped, lean.episode_clipped)
    return nonzero


@pytest.mark.parametrize(
    ("name", "features", "E", "parallel"),
    [
        ("default", "compact", 3, None),  # serial: the one-call period
        ("tiny", "compact", 2, True),  # the parallel builds (separate calls)
        ("serial_3", ["pipeline_total", "pipeline_2", "on_hand", "lot"], 2, None),  # a list, pipeline slots
        ("constrained", ["upper_bound", "inventory_position"], 2, False),
    ],
)
def test_lean__observation_is_the_full_ones_columns_and_dynamics_are_equal(name, features, E, parallel):
    full, lean = _pair(name, features, E, horizon=14, parallel=parallel)
    assert lean._parallel == full._parallel
    assert _run_equal(full, lean, 14) > 0


def test_lean__sizes_follow_the_observation_block():
    full, lean = _pair("default", "compact", 1)
    assert full.compiled.sku_features == sku_feature_names(full.W) and full.F == len(
        full.compiled.sku_features
    )
    assert lean.compiled.sku_features == list(COMPACT_FEATURES)
    assert lean.F == len(COMPACT_FEATURES) and lean.obs_dim == lean.K * lean.F + len(NODE_FEATURES)
    assert lean.obs.shape == (1, lean.N, lean.obs_dim)
    # a list keeps the full set's order, whatever order it is given in
    c = compile_scenario(load_scenario("serial_3", observation__features=["pipeline_1", "on_hand"]))
    assert c.sku_features == ["on_hand", "pipeline_1"]
    # the full default is the same scenario as before (no observation block written)
    assert full.compiled.params.feat_sel.tolist() == list(range(full.F))


def test_lean__pettingzoo_spaces_follow():
    env = parallel_env("tiny", observation__features="compact")
    obs, _ = env.reset(seed=0)
    a = env.agents[0]
    K = env.array_env.K
    D = K * len(COMPACT_FEATURES) + len(NODE_FEATURES)
    assert env.observation_space(a)["observation"].shape == (D,)
    assert obs[a]["observation"].shape == (D,)


def test_lean__deterministic():
    a = ArrayEnv("default", num_envs=2, seed=9, observation__features="compact", horizon=8)
    b = ArrayEnv("default", num_envs=2, seed=9, observation__features="compact", horizon=8)
    a.reset()
    b.reset()
    lv = np.full((2, a.N, a.K), 5, np.int64)
    for _ in range(8):
        ra, rb = a.step(lv), b.step(lv)
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_array_equal(ra[2], rb[2])


@pytest.mark.parametrize(
    ("features", "match"),
    [
        (["on_hand", "stock"], r"observation\.features.*unknown feature 'stock'"),
        (["on_hand", "on_hand"], r"observation\.features.*listed twice: on_hand"),
        ([], r"observation\.features.*1 to 64"),
        ("tiny", r"observation\.features"),
    ],
)
def test_lean__bad_blocks_name_the_field(features, match):
    with pytest.raises(ConfigError, match=match):
        load_scenario("tiny", observation__features=features)


def test_lean__pipeline_slot_beyond_the_scenario_is_refused():
    W = compile_scenario(load_scenario("tiny")).W
    with pytest.raises(ConfigError, match=rf"observation\.features: pipeline_{W} beyond"):
        compile_scenario(load_scenario("tiny", observation__features=[f"pipeline_{W}"]))


def test_lean__a_full_width_buffer_is_refused_for_a_lean_scenario():
    """A consumer that sizes obs for the full set (K * 15+W-1 + 4) gets an error, not a shifted layout."""
    from restock.envs import kernel as kn

    lean = ArrayEnv("tiny", num_envs=1, observation__features="compact")
    lean.reset()
    wide = np.zeros((1, lean.N, lean.K * len(sku_feature_names(lean.W)) + 4), np.float32)
    with pytest.raises(ValueError, match="obs width"):
        kn.observe(lean.params, lean.state, lean.work, wide, lean.mask, lean.ub)
