"""The batched array env: common random numbers, auto reset, quantities, strict/clip."""

from __future__ import annotations

import numpy as np
import pytest
from restock.envs import ArrayEnv, parallel_env


def test_array_env__same_paths_same_outcome_across_batches():
    a = ArrayEnv("tiny", num_envs=3, seed=4)
    b = ArrayEnv("tiny", num_envs=1, seed=4)
    a.reset(paths=np.array([7, 8, 9]))
    b.reset(paths=np.array([8]))
    for _ in range(10):
        a.step(np.ones((3, a.N, a.K), np.int64))
        b.step(np.ones((1, b.N, b.K), np.int64))
    np.testing.assert_array_equal(a.state.on_hand[1], b.state.on_hand[0])
    np.testing.assert_allclose(a.episode_cost[1], b.episode_cost[0])


def test_array_env__matches_the_pettingzoo_env():
    env = parallel_env("tiny", mode="clip", seed=2)
    env.reset(seed=2)
    arr = ArrayEnv("tiny", num_envs=1, seed=2)
    arr.reset(paths=np.array([0]))
    rng = np.random.default_rng(0)
    for _ in range(10):
        lv = rng.integers(0, 9, size=(1, arr.N, arr.K))
        lv_clipped, _ = arr.check_levels(lv)
        _, rew, *_ = env.step({a: lv[0, i] for i, a in enumerate(env.possible_agents)})
        _, _, r2, _, _ = arr.step(lv_clipped)
        assert [rew[a] for a in env.possible_agents] == pytest.approx(r2[0].tolist())


def test_array_env__auto_reset_starts_new_paths():
    env = ArrayEnv("tiny", num_envs=2, auto_reset=True, horizon=3)
    env.reset()
    first = env.paths.copy()
    done_seen = False
    for _ in range(4):
        _, _, _, done, info = env.step(np.zeros((2, env.N, env.K), np.int64))
        if done:
            done_seen = True
            assert "episode" in info and info["episode"]["cost"].shape == (2, env.N, len(env.cost_names))
    assert done_seen and not np.array_equal(first, env.paths)


def test_array_env__no_auto_reset_raises_after_the_end():
    env = ArrayEnv("tiny", num_envs=1, horizon=2)
    env.reset()
    env.step_qty(np.zeros((1, env.N, env.K)))
    env.step_qty(np.zeros((1, env.N, env.K)))
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step_qty(np.zeros((1, env.N, env.K)))


def test_array_env__step_qty_rejects_nan_and_bad_shapes():
    env = ArrayEnv("tiny", num_envs=1)
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step_qty(np.zeros((2, 2)))
    q = np.zeros((1, env.N, env.K))
    q[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        env.step_qty(q)


def test_array_env__strict_mode_raises_clip_mode_counts():
    tight = {"network__stores__storage_capacity": 25}  # the top store levels do not fit
    strict = ArrayEnv("tiny", num_envs=1, mode="strict", **tight)
    strict.reset()
    lv = np.full((1, strict.N, strict.K), 8, np.int64)
    with pytest.raises(ValueError, match="masked out by constraint storage"):
        strict.step(lv)
    clip = ArrayEnv("tiny", num_envs=1, mode="clip", **tight)
    clip.reset()
    clip.step(lv)
    assert clip.episode_clipped.sum() > 0


def test_array_env__masks_never_empty_and_bounds_respected():
    env = ArrayEnv("default", num_envs=2)
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(15):
        assert (env.mask[..., 0] == 1).all()
        lv = rng.integers(0, env.params.levels[None, :, None], size=(2, env.N, env.K))  # each node's grid
        lv, _ = env.check_levels(lv)
        q = env.levels_to_qty(lv).copy()
        assert (q <= env.ub).all()  # an allowed level never orders above the per-SKU bound
        env.step(lv)
