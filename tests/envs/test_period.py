"""The one-call period (`kernel.period` through `ArrayEnv.step` and the PettingZoo step) against the
separate calls (check, levels to quantities, step, observe): the same numbers, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from restock.envs import ArrayEnv, parallel_env
from restock.envs import kernel as kn


def _separate(env: ArrayEnv) -> ArrayEnv:
    """The same env forced onto the separate calls: a wrapped `_advance` turns the fused path off."""
    env._advance = ArrayEnv._advance.__get__(env)
    return env


@pytest.mark.parametrize(
    ("name", "E", "features"), [("tiny", 3, True), ("serial_3", 2, True), ("constrained", 2, False)]
)
def test_period__fused_step_equals_the_separate_calls(name, E, features):
    a = ArrayEnv(name, num_envs=E, seed=5, mode="clip", features=features, horizon=12)
    b = _separate(ArrayEnv(name, num_envs=E, seed=5, mode="clip", features=features, horizon=12))
    assert a._fused() and not b._fused()
    a.reset()
    b.reset()
    rng = np.random.default_rng(1)
    clipped = 0
    for _ in range(12):
        lv = rng.integers(-1, a.Lmax + 2, size=(E, a.N, a.K))  # out of range or masked: clipped
        ra = a.step(lv)
        rb = b.step(lv)
        for x, y in zip(ra[:3], rb[:3], strict=True):
            np.testing.assert_array_equal(x, y)
        assert ra[3] == rb[3]
        for f in a.state._fields:
            np.testing.assert_array_equal(getattr(a.state, f), getattr(b.state, f), err_msg=f)
        np.testing.assert_array_equal(ra[4]["executed"], rb[4]["executed"])
        np.testing.assert_array_equal(a.ub, b.ub)
        clipped += int(a._clipped.sum())
    np.testing.assert_array_equal(a.episode_cost, b.episode_cost)
    np.testing.assert_array_equal(a.episode_kpi, b.episode_kpi)
    np.testing.assert_array_equal(a.episode_revenue, b.episode_revenue)
    np.testing.assert_array_equal(a.episode_clipped, b.episode_clipped)
    assert clipped > 0 and a.episode_clipped.sum() == clipped


def test_period__strict_mode_raises_before_anything_changes():
    env = ArrayEnv("tiny", num_envs=1, mode="strict", network__stores__storage_capacity=25)
    env.reset()
    before = [x.copy() for x in env.state]
    lv = np.full((1, env.N, env.K), env.Lmax - 1, np.int64)
    assert (env.mask[0, np.arange(env.N)[:, None], np.arange(env.K), lv[0]] == 0).any()
    with pytest.raises(ValueError, match="masked out by constraint"):
        env.step(lv)
    for x, y in zip(before, env.state, strict=True):
        np.testing.assert_array_equal(x, y)
    assert env.t == 0


def test_period__bound_follows_replaced_buffers():
    env = ArrayEnv("tiny", num_envs=1)
    env.reset()
    b1 = env.bound()
    assert isinstance(b1, kn.Bound)
    env.step(np.zeros((1, env.N, env.K), np.int64))
    assert env.bound() is b1  # bound once, reused every period
    env.obs = env.obs.copy()
    env.step(np.zeros((1, env.N, env.K), np.int64))
    assert env.bound() is not b1
    assert env.obs[0, 0, -4] == pytest.approx(2 / env.horizon)  # time fraction after one period


def test_period__pettingzoo_fast_step_equals_the_general_step():
    """The thin step (views, one call) against the general one (forced by wrapping the core)."""
    e1 = parallel_env("tiny", mode="clip", seed=4)
    e2 = parallel_env("tiny", mode="clip", seed=4, copy_obs=True)
    _separate(e2.array_env)
    o1, _ = e1.reset(seed=4)
    o2, _ = e2.reset(seed=4)
    rng = np.random.default_rng(2)
    for _ in range(8):
        acts = {a: rng.integers(0, 9, size=3) for a in e1.possible_agents}
        o1, r1, t1, u1, i1 = e1.step(acts)
        o2, r2, t2, u2, i2 = e2.step(acts)
        assert r1 == r2 and t1 == t2 and u1 == u2
        for a in e1.possible_agents:
            np.testing.assert_array_equal(o1[a]["observation"], o2[a]["observation"])
            np.testing.assert_array_equal(o1[a]["action_mask"], o2[a]["action_mask"])
            np.testing.assert_array_equal(i1[a]["cost_breakdown"], i2[a]["cost_breakdown"])
            np.testing.assert_array_equal(i1[a]["kpi"], i2[a]["kpi"])
            for key in ("revenue", "clipped", "cost"):
                assert i1[a][key] == i2[a][key], key


def test_period__pettingzoo_views_copies_and_lean_infos():
    env = parallel_env("tiny", mode="clip", info_detail=False)
    obs, _ = env.reset(seed=0)
    view = obs["store_0"]["observation"]
    assert np.shares_memory(view, env.array_env.obs)  # a view: the next step overwrites it
    zero = {a: np.zeros(3, np.int64) for a in env.agents}
    obs2, _, _, _, infos = env.step(zero)
    np.testing.assert_array_equal(view, obs2["store_0"]["observation"])  # the same buffer, now t = 1
    assert infos == {a: {} for a in env.possible_agents}
    env2 = parallel_env("tiny", mode="clip", copy_obs=True)
    obs, _ = env2.reset(seed=0)
    kept = obs["store_0"]["observation"]
    assert not np.shares_memory(kept, env2.array_env.obs)
    before = kept.copy()
    env2.step(zero)
    np.testing.assert_array_equal(kept, before)  # a copy: the step did not touch it


def test_period__pettingzoo_action_errors_name_the_agent():
    env = parallel_env("tiny", mode="clip")
    env.reset(seed=0)
    acts = {a: np.zeros(3, np.int64) for a in env.agents}
    acts["store_0"] = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="agent store_0: action must have shape"):
        env.step(acts)
    with pytest.raises(ValueError, match="unknown agent"):
        env.step({"store_9": np.zeros(3, np.int64)})
    # absent agents order nothing, in any key order
    part = {"store_1": np.ones(3, np.int64), "dc_0": np.ones(3, np.int64)}
    _, _, _, _, infos = env.step(part)
    assert infos["store_0"]["kpi"][env.kpi_names.index("ordered")] == 0
