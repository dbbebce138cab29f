"""The demand half of `compile_scenario`: store means (DCs see the sum of their descendants), the
season over the horizon, promotion and shock windows, and the sampling tables of a `DemandModel`.

Called by `restock.envs.compile` in its section order (the scenario generator is shared: promotions
and shocks draw their selections after the SKU attributes and store scales, before supplier caps).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from restock.envs import config as C
from restock.envs.demand import (
    GRID_LAM0,
    GRID_MAX,
    GRID_RATIO,
    KIND_NAMES,
    KIND_NEGBIN,
    KIND_REPLAY,
    KIND_TRUNCNORM,
    MAX_EFFECTS,
    DemandModel,
    build_tables,
)
from restock.envs.limits import _bytes
from restock.envs.replay import load_replay_csv

if TYPE_CHECKING:
    from restock.envs.compile import _Nodes, _Skus

MAX_MEAN_DEMAND = 1e7  # units per period of one SKU at one store (after seasonality and effects)
MAX_TABLE_ENTRIES = 100_000_000  # demand sampling tables: 12 bytes an entry


def demand_table_entries(kind: int, lam_max: float, dispersion: float, cv: float) -> float:
    """Entries `build_tables` would create (an upper estimate from 33 points of the rate grid)."""
    from scipy.stats import nbinom, poisson

    top = min(max(lam_max, GRID_LAM0 * GRID_RATIO), GRID_MAX)
    n_grid = int(math.floor(math.log(top / GRID_LAM0) / math.log(GRID_RATIO))) + 2
    total, prev = 0.0, -1
    for i in np.unique(np.linspace(0, n_grid - 1, 33).astype(np.int64)):
        m = GRID_LAM0 * GRID_RATIO ** float(i)
        with np.errstate(all="ignore"):
            if kind == KIND_NEGBIN:
                n = float(nbinom(dispersion, dispersion / (dispersion + m)).isf(1e-16)) + 2
            elif kind == KIND_TRUNCNORM:
                n = m + 40 * cv * m + 3
            else:
                n = float(poisson.isf(1e-16, m)) + 2
        if not math.isfinite(n):
            return math.inf
        total += (int(i) - prev) * n
        prev = int(i)
    return total


def _select(sel, n: int, fraction: float | None, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n, np.int8)
    if sel == "all":
        mask[:] = 1
    else:
        mask[np.asarray(sel, int)] = 1
    if fraction is not None:
        keep = rng.random(n) < fraction
        mask &= keep.astype(np.int8)
    return mask


@functools.lru_cache(maxsize=16)
def _tables(kind: int, lam_top: float, dispersion: float, cv: float):
    if kind == 0:
        dispersion, cv = 1.0, 0.5  # unused by Poisson: share the cache entry
    return build_tables(kind, lam_top, dispersion, cv)


# ---- demand means per store and SKU; DCs see the sum of their descendants


@dataclass(frozen=True)
class DemandMeans:
    kind: int
    base: np.ndarray  # [S, K] store means before time effects
    mean: np.ndarray  # [N, K]
    replay_trace: np.ndarray | None  # [Tr, S, K] for replayed demand
    fields: dict  # the Params fields of this section


def demand_means(cfg: C.ScenarioConfig, nodes: _Nodes, skus: _Skus) -> DemandMeans:
    M, N, K = nodes.M, nodes.N, len(skus.names)
    kind = KIND_NAMES[cfg.demand.model]
    replay_trace = None
    if kind == KIND_REPLAY:
        rp = cfg.demand.replay
        try:
            replay_trace = load_replay_csv(rp.path, nodes.names[M:], skus.names)
        except ValueError as exc:
            raise C.ConfigError(str(exc)) from None
        base = replay_trace.mean(axis=0) * rp.scale
    else:
        base = nodes.store_scale[:, None] * skus.mean[None, :]
    mean = np.zeros((N, K))
    mean[M:] = base
    for n in range(N - 1, M - 1, -1):
        p = nodes.parent[n]
        while p >= 0:
            mean[p] += mean[n]
            p = nodes.parent[p]
    scale = np.maximum(mean, 0.1)
    fields = dict(mean=mean, scale=scale, inv_scale=1.0 / scale, log_scale=np.log(scale))
    return DemandMeans(kind=kind, base=base, mean=mean, replay_trace=replay_trace, fields=fields)


# ---- season over the horizon (t = 0..T), promotions and shocks, sampling tables


def _season(cfg: C.ScenarioConfig, kind: int) -> np.ndarray:
    T = cfg.horizon
    t = np.arange(T + 1, dtype=float)
    season = np.ones(T + 1)
    if cfg.demand.weekly is not None:
        season *= np.asarray(cfg.demand.weekly)[np.arange(T + 1) % 7]
    if cfg.demand.yearly is not None:
        y = cfg.demand.yearly
        season *= 1.0 + y.amplitude * np.cos(2 * np.pi * (t - y.peak_period) / y.period_length)
    if cfg.demand.trend:
        season *= np.maximum(0.0, 1.0 + cfg.demand.trend * t)
    if kind == KIND_REPLAY:
        season = np.ones(T + 1)
    return season


def _effects(cfg: C.ScenarioConfig, rng: np.random.Generator, S: int) -> tuple[np.ndarray, ...]:
    """(start, end, multiplier, SKU flags, store flags) of every promotion, then every shock."""
    K = cfg.skus.count
    effects = []
    for p_ in cfg.demand.promotions:
        effects.append(
            (
                p_.start,
                p_.end,
                p_.uplift,
                _select(p_.skus, K, p_.sku_fraction, rng),
                _select(p_.stores, S, None, rng),
            )
        )
    for s_ in cfg.demand.shocks:
        effects.append(
            (
                s_.start,
                s_.start + s_.duration,
                s_.multiplier,
                _select(s_.skus, K, s_.sku_fraction, rng),
                _select(s_.stores, S, None, rng),
            )
        )
    if len(effects) > MAX_EFFECTS:
        raise C.ConfigError(
            f"demand: at most {MAX_EFFECTS} promotions and shocks together (got {len(effects)})"
        )
    Q = len(effects)
    return (
        np.asarray([e[0] for e in effects], np.int64).reshape(Q),
        np.asarray([e[1] for e in effects], np.int64).reshape(Q),
        np.asarray([e[2] for e in effects], float).reshape(Q),
        np.asarray([e[3] for e in effects], np.int8).reshape(Q, K),
        np.asarray([e[4] for e in effects], np.int8).reshape(Q, S),
    )


def demand_model(
    cfg: C.ScenarioConfig, rng: np.random.Generator, nodes: _Nodes, means: DemandMeans
) -> DemandModel:
    kind, base, S, K = means.kind, means.base, nodes.S, cfg.skus.count
    season = _season(cfg, kind)
    eff_start, eff_end, eff_mult, eff_sku, eff_store = _effects(cfg, rng, S)
    lam_top = float(base.max(initial=0.0) * season.max(initial=1.0) * np.prod(np.maximum(eff_mult, 1.0)))
    if not lam_top <= MAX_MEAN_DEMAND:
        raise C.ConfigError(
            f"demand: the largest mean demand of one SKU at one store is {lam_top:.3g} units per period "
            f"(mean x demand_scale x seasonality x promotions and shocks); the limit is {MAX_MEAN_DEMAND:g}"
        )
    tab_kind = kind if kind != KIND_REPLAY else 0
    entries = demand_table_entries(
        tab_kind, max(lam_top, 1.0) * 1.05, float(cfg.demand.dispersion), float(cfg.demand.cv)
    )
    if not entries <= MAX_TABLE_ENTRIES:
        knob = {KIND_NEGBIN: "raise demand.dispersion", KIND_TRUNCNORM: "lower demand.cv"}.get(
            tab_kind, "lower demand.mean"
        )
        raise C.ConfigError(
            f"demand: the sampling tables would hold about {entries:.3g} entries x 12 bytes = "
            f"{_bytes(12 * entries)}, over the limit of {_bytes(12 * MAX_TABLE_ENTRIES)} "
            f"(the distribution's tail is too long); {knob}"
        )
    grid, ptr, cdf, guide = _tables(
        tab_kind, round(max(lam_top, 1.0) * 1.05, 6), float(cfg.demand.dispersion), float(cfg.demand.cv)
    )
    replay = kind == KIND_REPLAY
    return DemandModel(
        kind=kind,
        base=np.ascontiguousarray(base, float),
        season=season,
        eff_start=eff_start,
        eff_end=eff_end,
        eff_mult=eff_mult,
        eff_sku=eff_sku,
        eff_store=eff_store,
        dispersion=float(cfg.demand.dispersion),
        cv=float(cfg.demand.cv),
        trace=means.replay_trace if means.replay_trace is not None else np.zeros((1, S, K)),
        replay_start=(
            -1
            if (replay and cfg.demand.replay.start == "random")
            else int(cfg.demand.replay.start)
            if replay
            else 0
        ),
        replay_scale=float(cfg.demand.replay.scale) if replay else 1.0,
        grid_lam=grid,
        tab_ptr=ptr,
        tab_cdf=cdf,
        tab_guide=guide,
        inv_log_ratio=(ilr := 1.0 / math.log(grid[1] / grid[0]) if len(grid) > 1 else 1.0),
        log_base=np.where(base > 0, np.log(np.maximum(base, 1e-300) / grid[0]) * ilr, -1e300),
    )
