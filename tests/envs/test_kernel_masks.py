"""The closed-form masks (`allowed_levels`) against brute force over `level_quantity`, including the
zero-forecast corner (every level targets 0, which still orders from a negative inventory position)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from restock.envs import kernel as kn
from restock.envs.types import MODE_ORDER_UP_TO, MODE_QUANTITY


@njit(cache=True)
def _mismatches(cases, ubs):
    """Rows (L, mode, qstep, cover_step, forecast, ip, lot, moq) x bounds where the closed form and
    brute force (every level's quantity against the bound) disagree."""
    bad = 0
    for r in range(cases.shape[0]):
        L = np.int64(cases[r, 0])
        mode = np.int64(cases[r, 1])
        qstep = np.int64(cases[r, 2])
        cs = cases[r, 3]
        fc = cases[r, 4]
        ip = np.int64(cases[r, 5])
        lot = np.int64(cases[r, 6])
        moq = np.int64(cases[r, 7])
        ub = np.int64(ubs[r])
        lo, hi = kn.allowed_levels(L, mode, qstep, cs, fc, ip, lot, moq, ub)
        for l in range(1, L):
            q = kn.level_quantity(l, mode, qstep, cs, fc, ip, lot, moq)
            brute = q <= ub and (mode != MODE_QUANTITY or q >= moq)
            if brute != (lo <= l <= hi):
                bad += 1
    return bad


def test_allowed_levels__equal_brute_force():
    rng = np.random.default_rng(0)
    n = 200_000
    lot = rng.choice([1, 1, 2, 3, 6, 12], n)
    cases = np.stack(
        [
            rng.integers(2, 17, n),
            rng.choice([MODE_QUANTITY, MODE_ORDER_UP_TO], n),
            lot * rng.integers(1, 4, n),
            rng.choice([0.25, 0.4, 0.5, 1.0, 1.0 / 3.0], n),
            np.where(rng.random(n) < 0.05, 0.0, rng.lognormal(1.0, 1.5, n)),
            rng.integers(-50, 200, n),
            lot,
            rng.choice([0, 0, 1, 4, 5, 13], n),
        ],
        axis=1,
    ).astype(np.float64)
    ubs = np.where(rng.random(n) < 0.1, 1 << 30, rng.integers(0, 300, n))
    ubs = np.where(rng.random(n) < 0.02, -rng.integers(1, 5, n), ubs)  # negative bounds: nothing fits
    assert _mismatches(cases, ubs) == 0


def test_array_env__bounds_only_gives_the_same_masks_and_rewards():
    from restock.envs import ArrayEnv

    full = ArrayEnv("default", num_envs=2, seed=3)
    lean = ArrayEnv("default", num_envs=2, seed=3, features=False)
    full.reset()
    lean.reset()
    rng = np.random.default_rng(0)
    for _ in range(12):
        np.testing.assert_array_equal(full.mask, lean.mask)
        np.testing.assert_array_equal(full.ub, lean.ub)
        lv = rng.integers(0, full.params.levels[None, :, None], size=(2, full.N, full.K))  # each node's grid
        _, _, r1, _, _ = full.step(lv)
        _, _, r2, _, _ = lean.step(lv)
        np.testing.assert_array_equal(r1, r2)
    assert not lean.obs.any() and full.obs.any()
    # the lean env dispatches to the bounds-only variant (numba's signature list is not checked: other
    # tests and `kernel.period` may compile further signatures, depending on test order)
    assert lean._observe.__code__.co_freevars == ("fn",)
    assert lean._observe.__closure__[0].cell_contents in (kn.observe_bounds, kn.observe_bounds_par)
    assert full._observe in (kn.observe, kn.observe_par)


@pytest.mark.parametrize("scenario", ["constrained", "edge"])
@pytest.mark.parametrize("width", [16, 24])
def test_observe__mask_words_equal_mask_bytes(scenario, width, edge_config):
    """`observe` writes C-contiguous masks whose width is a multiple of 8 eight levels at a time; the
    bytes equal the level-by-level path (taken for a non-contiguous mask), with binding bounds."""
    from restock.envs import ArrayEnv

    env = ArrayEnv(edge_config if scenario == "edge" else scenario, num_envs=3, seed=1)
    env.reset()
    E, N, K = env.E, env.N, env.K
    rng = np.random.default_rng(2)
    seen_partial = False
    for _ in range(15):
        words = np.full((E, N, K, width), 7, np.int8)
        wide = np.full((E, N, K, 2 * width), 7, np.int8)
        ub1 = np.zeros((E, N, K), np.int32)
        ub2 = np.zeros((E, N, K), np.int32)
        obs1 = np.zeros_like(env.obs)
        obs2 = np.zeros_like(env.obs)
        kn.observe(env.params, env.state, env.work, obs1, words, ub1)
        kn.observe(env.params, env.state, env.work, obs2, wide[..., ::2], ub2)
        np.testing.assert_array_equal(words, wide[..., ::2])
        par = np.full_like(words, 7)
        kn.observe_par(env.params, env.state, env.work, np.zeros_like(env.obs), par, ub2)
        np.testing.assert_array_equal(par, words)  # the parallel build writes the same words
        np.testing.assert_array_equal(ub1, ub2)
        np.testing.assert_array_equal(obs1, obs2)
        np.testing.assert_array_equal(words[..., : env.Lmax], env.mask)
        lv_allowed = words[..., 1 : env.Lmax]
        seen_partial |= bool(((lv_allowed.min(axis=-1) == 0) & (lv_allowed.max(axis=-1) == 1)).any())
        lv = np.zeros((E, N, K), np.int64)
        for l in range(env.Lmax):
            lv = np.where((rng.random(lv.shape) < 0.4) & (env.mask[..., l] == 1), l, lv)
        env.step(lv)
    assert seen_partial  # some rows allow only part of the levels


def test_observe_rows_writes_exactly_the_rows_asked_for():
    """`observe_rows` (the serving shim's observe) writes the asked-for (environment, node) rows as
    `observe` writes them and leaves every other row as it was."""
    from restock.envs import ArrayEnv

    env = ArrayEnv("default", num_envs=4, seed=3)
    env.reset()
    rng = np.random.default_rng(4)
    for _ in range(3):
        env.step(rng.integers(0, env.Lmax, (env.E, env.N, env.K)) * (rng.random((env.E, env.N, env.K)) < 0.3))
    E, N, K = env.E, env.N, env.K
    obs = np.zeros_like(env.obs)
    mask = np.zeros_like(env.mask)
    ub = np.zeros((E, N, K), np.int32)
    kn.observe(env.params, env.state, env.work, obs, mask, ub)
    rows = np.array([[0, 3], [2, 0], [3, N - 1], [1, 3]], np.int64)
    o2 = np.full_like(obs, -7.0)
    m2 = np.full_like(mask, 9)
    u2 = np.full_like(ub, -5)
    kn.observe_rows(env.params, env.state, env.work, o2, m2, u2, True, rows)
    asked = np.zeros((E, N), bool)
    asked[rows[:, 0], rows[:, 1]] = True
    np.testing.assert_array_equal(o2[asked], obs[asked])
    np.testing.assert_array_equal(m2[asked], mask[asked])
    np.testing.assert_array_equal(u2[asked], ub[asked])
    assert (o2[~asked] == -7.0).all() and (m2[~asked] == 9).all() and (u2[~asked] == -5).all()
