"""Demand models and fast bulk samplers.

Demand at store s for SKU k in period t has mean ``base[s, k] * season[t] * effects(t, s, k)``
(weekly and yearly seasonality and trend in ``season``; promotions and shocks as effect windows) and
is drawn from Poisson, negative binomial (Poisson-gamma) or truncated normal, or replayed from a trace.

Sampling is exact and fast: Poisson(lam) = Poisson(g) + Poisson(lam - g) where g is the largest point
of a fine geometric grid below lam; Poisson(g) comes from a precomputed inverse-CDF table with a guide
table (one or two comparisons), and the small residual by sequential inversion that usually stops at
the first comparison without computing ``exp``. Every draw is a pure function of (seed, path, period,
store, SKU), so a path is the same in every batch layout and chunk size (`envs.rng`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange, uint64
from restock.envs.jit import variant
from restock.envs.rng import mix64, next_uniform, row_key

KIND_POISSON, KIND_NEGBIN, KIND_TRUNCNORM, KIND_REPLAY = 0, 1, 2, 3
KIND_NAMES = {
    "poisson": KIND_POISSON,
    "negative_binomial": KIND_NEGBIN,
    "truncated_normal": KIND_TRUNCNORM,
    "replay": KIND_REPLAY,
}

GRID_LAM0 = 0.25  # below this, Poisson draws use sequential inversion from 0
GRID_RATIO = 1.005  # grid spacing: the residual rate is at most 0.5% of the rate
GRID_MAX = 4096.0  # above this, Poisson(lam) is a sum of Poisson(GRID_MAX)-sized pieces
MAX_EFFECTS = 64  # promotion and shock windows per scenario (a bit mask each row)


class DemandModel(NamedTuple):
    kind: int
    base: np.ndarray  # [S, K] float64 mean per period before time effects
    season: np.ndarray  # [T+1] float64 common multiplier (weekly x yearly x trend)
    eff_start: np.ndarray  # [Q] int32 effect windows (promotions, shocks): start <= t < end
    eff_end: np.ndarray  # [Q] int32
    eff_mult: np.ndarray  # [Q] float64
    eff_sku: np.ndarray  # [Q, K] int8
    eff_store: np.ndarray  # [Q, S] int8
    dispersion: float  # negative binomial size r
    cv: float  # truncated normal coefficient of variation
    trace: np.ndarray  # [Tr, S, K] float64 replay trace (units), [1, S, K] zeros otherwise
    replay_start: int  # -1 = random start per path
    replay_scale: float
    grid_lam: np.ndarray  # [G] float64 grid rates
    tab_ptr: np.ndarray  # [G+1] int64 offsets into tab_cdf / tab_guide
    tab_cdf: np.ndarray  # [.] float64 CDF of Poisson(grid_lam[i]) at 0, 1, 2, ...
    tab_guide: np.ndarray  # [.] int32 guide: first x with CDF(x) >= j / n_i
    inv_log_ratio: float
    log_base: np.ndarray  # [S, K] float64 log(base / grid_lam[0]) * inv_log_ratio (-1e300 for zero rates)


# ------------------------------------------------------------------------------------------------
# tables


def _pmf_support(kind: int, m: float, dispersion: float, cv: float) -> np.ndarray:
    """CDF on 0, 1, 2, ... (to a 1e-16 tail) of the model's distribution with mean parameter m."""
    from scipy.stats import nbinom, norm, poisson

    if kind == KIND_NEGBIN:
        r = dispersion
        dist = nbinom(r, r / (r + m))
        hi = int(dist.isf(1e-16)) + 2
        cdf = dist.cdf(np.arange(hi))
    elif kind == KIND_TRUNCNORM:
        # round(X), X ~ Normal(m, cv*m) truncated to X >= 0 (the rejection sampler's law)
        sd = cv * m
        z0 = norm.cdf(-m / sd)
        hi = int(m + 40 * sd) + 3
        edges = np.concatenate([[0.0], np.arange(hi) + 0.5])
        cdf = (norm.cdf((edges[1:] - m) / sd) - z0) / (1.0 - z0)
    else:
        hi = int(poisson.isf(1e-16, m)) + 2
        cdf = poisson.cdf(np.arange(hi), m)
    cdf = np.minimum(cdf, 1.0)
    cdf[-1] = 1.0
    return cdf


def build_tables(kind: int, lam_max: float, dispersion: float = 1.0, cv: float = 0.5):
    """Inverse-CDF and guide tables on the rate grid GRID_LAM0 * GRID_RATIO**i <= lam_max.

    Poisson draws are exact (superposition with a residual); negative binomial and truncated normal
    draws mix the two tables around the mean with weights that make the mean exact.
    """
    top = min(max(lam_max, GRID_LAM0 * GRID_RATIO), GRID_MAX)
    n_grid = int(math.floor(math.log(top / GRID_LAM0) / math.log(GRID_RATIO))) + 2
    grid = GRID_LAM0 * GRID_RATIO ** np.arange(n_grid)
    ptr = np.zeros(n_grid + 1, np.int64)
    cdfs, guides = [], []
    for i, lam in enumerate(grid):
        cdf = _pmf_support(kind, float(lam), dispersion, cv)
        n = len(cdf)
        guides.append(np.searchsorted(cdf, np.arange(n) / n, side="left").astype(np.int32))
        cdfs.append(cdf)
        ptr[i + 1] = ptr[i] + n
    return grid, ptr, np.concatenate(cdfs), np.concatenate(guides)


def build_poisson_tables(lam_max: float):
    return build_tables(KIND_POISSON, lam_max)


# ------------------------------------------------------------------------------------------------
# scalar samplers (numba)


@njit(cache=True, inline="always")
def _poisson_small(lam, u):
    """Sequential inversion for a small rate; stops at once when u <= 1 - lam (then the draw is 0)."""
    if u <= 1.0 - lam:
        return 0
    p = math.exp(-lam)
    f = p
    x = 0
    while u > f and x < 100000:
        x += 1
        p *= lam / x
        f += p
        if p < 1e-300 and f >= 1.0 - 1e-16:
            break
    return x


@njit(cache=True, inline="always")
def _table_draw(tab_ptr, tab_cdf, tab_guide, i, u):
    lo = tab_ptr[i]
    n = tab_ptr[i + 1] - lo
    j = np.int64(u * n)
    if j >= n:
        j = n - 1
    x = np.int64(tab_guide[lo + j])
    while x < n - 1 and tab_cdf[lo + x] < u:
        x += 1
    return x


@njit(cache=True, inline="always")
def poisson_draw_at(grid, tab_ptr, tab_cdf, tab_guide, lam, fi, state):
    """(state, Poisson(lam) draw) given fi ~ log(lam / grid[0]) / log(ratio), the grid position.

    Poisson(lam) = Poisson(grid[i]) + Poisson(lam - grid[i]) with grid[i] the largest grid rate <= lam:
    the first from its inverse-CDF table, the (small) second by sequential inversion.
    """
    G = grid.shape[0]
    total = np.int64(0)
    g_last = grid[G - 1]
    if lam > g_last:  # very large rates: sum pieces of the largest grid rate
        while lam > g_last:
            state, u = next_uniform(state)
            total += _table_draw(tab_ptr, tab_cdf, tab_guide, G - 1, u)
            lam -= g_last
        fi = math.log(lam / grid[0]) * (G - 1) / math.log(g_last / grid[0]) if G > 1 else 0.0
    if lam < grid[0]:
        state, u = next_uniform(state)
        return state, total + _poisson_small(lam, u)
    i = np.int64(fi) if fi > 0.0 else np.int64(0)
    if i >= G:
        i = G - 1
    while i > 0 and grid[i] > lam:  # guard against rounding in the index
        i -= 1
    while i + 1 < G and grid[i + 1] <= lam:
        i += 1
    state, u1 = next_uniform(state)
    state, u2 = next_uniform(state)
    total += _table_draw(tab_ptr, tab_cdf, tab_guide, i, u1)
    total += _poisson_small(lam - grid[i], u2)
    return state, total


@njit(cache=True, inline="always")
def mixture_draw_at(grid, tab_ptr, tab_cdf, tab_guide, lam, fi, state):
    """(state, draw) with mean exactly lam from the two grid tables around lam (negative binomial,
    truncated normal). Below the grid, a mix of the point mass at 0 and the first table."""
    G = grid.shape[0]
    state, u1 = next_uniform(state)
    state, u2 = next_uniform(state)
    if lam < grid[0]:
        if u1 * grid[0] < lam:
            return state, _table_draw(tab_ptr, tab_cdf, tab_guide, 0, u2)
        return state, np.int64(0)
    i = np.int64(fi) if fi > 0.0 else np.int64(0)
    if i >= G - 1:
        i = G - 2
    while i > 0 and grid[i] > lam:
        i -= 1
    while i + 2 < G and grid[i + 1] <= lam:
        i += 1
    hi_w = (lam - grid[i]) / (grid[i + 1] - grid[i])  # weight of the upper table
    j = i + 1 if u1 < hi_w else i
    return state, _table_draw(tab_ptr, tab_cdf, tab_guide, j, u2)


@njit(cache=True)
def poisson_draw(grid, tab_ptr, tab_cdf, tab_guide, inv_log_ratio, lam, state):
    """(state, Poisson(lam) draw) using the grid tables."""
    if lam <= 0.0:
        return state, np.int64(0)
    fi = math.log(lam / grid[0]) * inv_log_ratio if lam >= grid[0] else 0.0
    return poisson_draw_at(grid, tab_ptr, tab_cdf, tab_guide, lam, fi, state)


@njit(cache=True, inline="always")
def _normal(state):
    """(state, standard normal) by the Box-Muller transform (one of the pair)."""
    state, u1 = next_uniform(state)
    state, u2 = next_uniform(state)
    return state, math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True)
def _gamma(state, shape):
    """(state, Gamma(shape, 1)) by Marsaglia and Tsang's method."""
    boost = 1.0
    if shape < 1.0:
        state, u = next_uniform(state)
        boost = (1.0 - u) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        state, z = _normal(state)
        v = 1.0 + c * z
        if v <= 0.0:
            continue
        v = v * v * v
        state, u = next_uniform(state)
        if math.log(1.0 - u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return state, d * v * boost


@njit(cache=True)
def draw_one(kind, dispersion, cv, grid, tab_ptr, tab_cdf, tab_guide, inv_log_ratio, lam, state):
    """(state, one demand draw with mean lam) for the model's distribution."""
    if kind == KIND_POISSON:
        return poisson_draw(grid, tab_ptr, tab_cdf, tab_guide, inv_log_ratio, lam, state)
    if lam <= 0.0:
        return state, np.int64(0)
    if kind == KIND_NEGBIN:
        state, g = _gamma(state, dispersion)
        return poisson_draw(grid, tab_ptr, tab_cdf, tab_guide, inv_log_ratio, lam * g / dispersion, state)
    # truncated normal, rounded to whole units
    sd = cv * lam
    for _ in range(1000):
        state, z = _normal(state)
        x = lam + sd * z
        if x >= 0.0:
            return state, np.int64(math.floor(x + 0.5))
    return state, np.int64(0)


@njit(cache=True, inline="always")
def _effect_mult(eff_sku, eff_mult, k, active):
    """Product of the multipliers of the active effect windows (bit q of ``active``) covering SKU k."""
    f = 1.0
    q = 0
    while active != 0:
        if active & uint64(1):
            if eff_sku[q, k] != 0:
                f *= eff_mult[q]
        active = active >> uint64(1)
        q += 1
    return f


@njit(cache=True, inline="always")
def mean_at(m, t, s, k):
    """Mean demand of store s, SKU k in period t (slow path for single values)."""
    tt = t if t < m.season.shape[0] else m.season.shape[0] - 1
    lam = m.base[s, k] * m.season[tt]
    for q in range(m.eff_start.shape[0]):
        if m.eff_start[q] <= t < m.eff_end[q] and m.eff_store[q, s] != 0 and m.eff_sku[q, k] != 0:
            lam *= m.eff_mult[q]
    return lam


@njit(cache=True)
def _poisson_draw_call(grid, tab_ptr, tab_cdf, tab_guide, lam, fi, state):
    """`poisson_draw_at` behind a real call (rates above the largest table: rare)."""
    return poisson_draw_at(grid, tab_ptr, tab_cdf, tab_guide, lam, fi, state)


def _sample_block_impl(m, seed, paths, t0, out):
    """Fill out[E, C, S, K] with demand for periods t0 .. t0+C-1 of the given paths.

    Deterministic: each (path, period, store) row draws from its own counter-based stream.

    The per-draw work is written out here rather than called through the array-taking helpers
    (`poisson_draw_at`, `mixture_draw_at`, `_table_draw`, `_effect_mult`): an inlined helper that
    takes arrays costs reference-count traffic on every call, which was 4/5 of the time of a draw.
    The draws are the same numbers as those helpers give.
    """
    E, C, S, K = out.shape
    Q = m.eff_start.shape[0]
    Tr = m.trace.shape[0]
    kind, dispersion, cv = m.kind, m.dispersion, m.cv
    grid, tab_ptr, tab_cdf, tab_guide, ilr = m.grid_lam, m.tab_ptr, m.tab_cdf, m.tab_guide, m.inv_log_ratio
    base, season, eff_start, eff_end, eff_store, eff_sku, eff_mult = (
        m.base,
        m.season,
        m.eff_start,
        m.eff_end,
        m.eff_store,
        m.eff_sku,
        m.eff_mult,
    )
    trace, replay_start, replay_scale = m.trace, m.replay_start, m.replay_scale
    log_base = m.log_base
    Ts = season.shape[0]
    G = grid.shape[0]
    g0 = grid[0]
    top = grid[G - 1]
    n_rows = E * C * S
    for r in prange(n_rows):
        e = r // (C * S)
        c = (r // S) % C
        s = r % S
        t = t0 + c
        if kind == KIND_REPLAY:
            start = replay_start
            if start < 0:
                start = np.int64(mix64(row_key(seed, paths[e], 0, 0xFFFF)) >> uint64(1)) % Tr
            tr = (start + t) % Tr
            for k in range(K):
                out[e, c, s, k] = np.int64(math.floor(trace[tr, s, k] * replay_scale + 0.5))
            continue
        g = season[t if t < Ts else Ts - 1]
        active = uint64(0)
        for q in range(Q):
            if eff_start[q] <= t < eff_end[q] and eff_store[q, s] != 0:
                active |= uint64(1) << uint64(q)
        state = row_key(seed, paths[e], t, s)
        if kind <= KIND_TRUNCNORM:
            # grid position from precomputed logs: no log per draw
            row_off = (math.log(g) * ilr) if g > 0.0 else -1e300
            for k in range(K):
                lam = base[s, k] * g
                fi = log_base[s, k] + row_off
                if active != uint64(0):
                    f = 1.0  # product of the active effects covering SKU k (as `_effect_mult`)
                    bits = active
                    q = 0
                    while bits != 0:
                        if bits & uint64(1):
                            if eff_sku[q, k] != 0:
                                f *= eff_mult[q]
                        bits = bits >> uint64(1)
                        q += 1
                    lam *= f
                    fi += math.log(f) * ilr if f > 0.0 else -1e300
                if lam <= 0.0:
                    out[e, c, s, k] = 0
                    continue
                # every path below ends in one table draw: table ti at uniform ut, plus `extra`
                ti = np.int64(-1)
                ut = 0.0
                extra = np.int64(0)
                if kind == KIND_POISSON:
                    if lam > top:  # beyond the largest table
                        state, x = _poisson_draw_call(grid, tab_ptr, tab_cdf, tab_guide, lam, fi, state)
                        out[e, c, s, k] = x
                        continue
                    state, u1 = next_uniform(state)
                    if lam < g0:
                        out[e, c, s, k] = _poisson_small(lam, u1)
                        continue
                    # Poisson(grid[i]) from its table + Poisson(lam - grid[i]) by inversion
                    i = np.int64(fi) if fi > 0.0 else np.int64(0)
                    if i >= G:
                        i = G - 1
                    while i > 0 and grid[i] > lam:
                        i -= 1
                    while i + 1 < G and grid[i + 1] <= lam:
                        i += 1
                    state, u2 = next_uniform(state)
                    ti = i
                    ut = u1
                    extra = _poisson_small(lam - grid[i], u2)
                elif lam <= top:
                    # the two tables around lam, mixed so that the mean is exact (`mixture_draw_at`)
                    state, u1 = next_uniform(state)
                    state, u2 = next_uniform(state)
                    ut = u2
                    if lam < g0:
                        if u1 * g0 < lam:
                            ti = np.int64(0)
                    else:
                        i = np.int64(fi) if fi > 0.0 else np.int64(0)
                        if i >= G - 1:
                            i = G - 2
                        while i > 0 and grid[i] > lam:
                            i -= 1
                        while i + 2 < G and grid[i + 1] <= lam:
                            i += 1
                        hi_w = (lam - grid[i]) / (grid[i + 1] - grid[i])  # weight of the upper table
                        ti = i + 1 if u1 < hi_w else i
                else:  # beyond the tables: the exact (slow) sampler
                    state, x = draw_one(
                        kind, dispersion, cv, grid, tab_ptr, tab_cdf, tab_guide, ilr, lam, state
                    )
                    out[e, c, s, k] = x
                    continue
                x = extra
                if ti >= 0:
                    # inverse CDF of table ti with its guide table (as `_table_draw`)
                    lo = tab_ptr[ti]
                    n = tab_ptr[ti + 1] - lo
                    j = np.int64(ut * n)
                    if j >= n:
                        j = n - 1
                    y = np.int64(tab_guide[lo + j])
                    # the last CDF entry is 1.0 > ut, so the scan needs no bound check; the first
                    # step is branch-free (the guide is usually exact or one short)
                    y += np.int64(tab_cdf[lo + y] < ut)
                    while tab_cdf[lo + y] < ut:
                        y += 1
                    x += y
                out[e, c, s, k] = x
            continue
        for k in range(K):
            lam = base[s, k] * g
            if active != uint64(0):
                lam *= _effect_mult(eff_sku, eff_mult, k, active)
            state, x = draw_one(kind, dispersion, cv, grid, tab_ptr, tab_cdf, tab_guide, ilr, lam, state)
            out[e, c, s, k] = x


sample_block = njit(cache=True, parallel=True)(variant(_sample_block_impl, "_par"))
sample_block_serial = njit(cache=True)(_sample_block_impl)


@njit(cache=True, parallel=True)
def mean_block(m, t0, out):
    """Fill out[C, S, K] with mean demand for periods t0 .. t0+C-1 (forecasts, the oracle)."""
    C, S, K = out.shape
    for r in prange(C * S):
        c = r // S
        s = r % S
        for k in range(K):
            out[c, s, k] = mean_at(m, t0 + c, s, k)


# ------------------------------------------------------------------------------------------------
# streams


class DemandStream:
    """Demand for a batch of paths, drawn in chunks of periods so memory stays bounded.

    ``get(t)`` returns the [E, S, K] int32 demand of period t for the current paths; the chunk
    holding t is drawn on first use. Assign ``paths`` (one id per environment) to switch paths.
    """

    def __init__(self, model: DemandModel, seed: int, paths: np.ndarray, chunk: int = 32):
        self.model = model
        self.seed = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        self.paths = np.asarray(paths, dtype=np.int64).copy()
        self.S, self.K = model.base.shape
        self.chunk = int(chunk)
        self._buf = np.zeros((len(self.paths), self.chunk, self.S, self.K), np.int32)
        self._cur = np.zeros((len(self.paths), self.S, self.K), np.int32)  # contiguous view of one period
        self._t0 = -1

    def set_paths(self, paths: np.ndarray) -> None:
        paths = np.asarray(paths, dtype=np.int64)
        if paths.shape != self.paths.shape or not np.array_equal(paths, self.paths):
            self.paths = paths.copy()
            if self._buf.shape[0] != len(paths):
                self._buf = np.zeros((len(paths), self.chunk, self.S, self.K), np.int32)
                self._cur = np.zeros((len(paths), self.S, self.K), np.int32)
            self._t0 = -1

    def set_path(self, e: int, path: int) -> None:
        """Change one environment's path (a single env reset); redraws that env's current chunk."""
        self.paths[e] = path
        if self._t0 >= 0:
            _sample(self.model, self.seed, self.paths[e : e + 1], self._t0, self._buf[e : e + 1])

    def get(self, t: int) -> np.ndarray:
        t0 = (t // self.chunk) * self.chunk
        if t0 != self._t0:
            _sample(self.model, self.seed, self.paths, t0, self._buf)
            self._t0 = t0
        self._cur[:] = self._buf[:, t - t0]  # contiguous, so kernels keep one compiled signature
        return self._cur

    def get_env(self, e: int, t: int) -> np.ndarray:
        return self.get(t)[e]


PARALLEL_SAMPLES = 200_000  # blocks at least this big are drawn on all threads


def _sample(model: DemandModel, seed, paths: np.ndarray, t0: int, out: np.ndarray) -> None:
    """Draw a block, on all threads only when it is big enough to pay for waking them."""
    fn = sample_block if out.size >= PARALLEL_SAMPLES else sample_block_serial
    fn(model, np.uint64(seed), np.asarray(paths, np.int64), t0, out)


def sample_paths(model: DemandModel, seed: int, paths: np.ndarray, t0: int, n_periods: int) -> np.ndarray:
    """Demand [P, n_periods, S, K] for whole paths at once (small problems, the oracle, tests)."""
    S, K = model.base.shape
    out = np.zeros((len(paths), n_periods, S, K), np.int32)
    _sample(model, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), np.asarray(paths, np.int64), t0, out)
    return out
