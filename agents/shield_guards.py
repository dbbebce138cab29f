"""The shield's runtime guards that look at inputs rather than orders (compiled with Numba).

An anomaly check flags a store whose demand last period is far above its recent range
(`AnomalyConfig`, `anomaly_step`), and an observation check flags a node whose observation holds NaN
or infinity (`obs_check`); both escalate the node (`agents.records.ESC_ANOMALY`, ``ESC_OBS``). The
circuit breaker that escalations feed, and the fallback policy it hands a node to, are part of
`agents.shield.Shield.decide`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from restock.agents.records import ESC_ANOMALY, ESC_BREAKER, ESC_OBS
from restock.envs import kernel as kn
from restock.envs.types import new_work


@dataclass(frozen=True)
class AnomalyConfig:
    """A store's demand last period is anomalous when it exceeds max(mu + z * sd, ratio * mu) + margin,
    with mu and sd its exponentially weighted mean and deviation (weight ``alpha``), once ``warmup``
    periods have been seen. Anomalous values enter the statistics capped at that threshold."""

    z: float = 8.0
    ratio: float = 4.0
    margin: float = 10.0
    alpha: float = 0.1
    warmup: int = 7


@njit(cache=True)
def anomaly_step(t, last_t, demand, is_store, mu, var, seen, z, ratio, margin, alpha, warmup, esc, out):
    """Update the demand statistics once per period and flag anomalous stores (esc |= ESC_ANOMALY)."""
    E, N, K = demand.shape
    for e in range(E):
        out[e] = 0
        te = np.int64(t[e])
        if te == 0 or te == last_t[e]:
            continue
        last_t[e] = te
        first = seen[e] == 0
        for n in range(N):
            if not is_store[n]:
                continue
            hit = False
            for k in range(K):
                x = float(demand[e, n, k])
                if first:
                    mu[e, n, k] = x
                    var[e, n, k] = x if x > 1.0 else 1.0
                    continue
                m = mu[e, n, k]
                v = var[e, n, k]
                if seen[e] >= warmup and x > ratio * m + margin and x > m + margin:
                    # only values past the cheap bounds need the deviation (one sqrt per suspect)
                    thr = m + z * math.sqrt(v)
                    r = ratio * m
                    if r > thr:
                        thr = r
                    thr += margin
                    if x > thr:
                        hit = True
                        x = thr
                dlt = x - m
                mu[e, n, k] = m + alpha * dlt
                var[e, n, k] = (1.0 - alpha) * (v + alpha * dlt * dlt)
            if hit:
                esc[e, n] |= ESC_ANOMALY
                out[e] += 1
        seen[e] += 1


@njit(cache=True)
def obs_check(bits, esc, rows=None):
    """esc |= ESC_OBS for nodes whose float32 observation (viewed as uint32 ``bits``) holds NaN or
    infinity: an all-ones exponent. Integer max reductions vectorise; float NaN tests do not. With
    ``rows`` (int64 [R, 2] of (environment, node)) only those nodes are checked."""
    E, N, D = bits.shape
    if rows is None:
        R = E * N
    else:
        R = rows.shape[0]
    for r in range(R):
        if rows is None:
            e = r // N
            n = r % N
        else:
            e = rows[r, 0]
            n = rows[r, 1]
        m = np.uint32(0)
        for j in range(D):
            x = bits[e, n, j] & np.uint32(0x7F800000)
            if x > m:
                m = x
        if m == np.uint32(0x7F800000):
            esc[e, n] |= ESC_OBS


class Guards:
    """The runtime guards' state for one batch shape [E, N, K]: per-node demand statistics (anomaly
    check) and circuit breakers (R consecutive escalations open a node's breaker for a cool-down)."""

    def __init__(self, E: int, N: int, K: int):
        self.consec = np.zeros((E, N), np.int64)  # consecutive escalations of a closed breaker
        self.cool = np.zeros((E, N), np.int64)  # periods a node's breaker stays open
        self.mu = np.zeros((E, N, K))
        self.var = np.zeros((E, N, K))
        self.seen = np.zeros(E, np.int64)
        self.last_t = np.full(E, -1, np.int64)

    def open_nodes(self, breakers: bool) -> np.ndarray:
        """[E, N] bool: nodes whose breaker is open this period (none when ``breakers`` is off)."""
        if breakers:
            return self.cool > 0
        return np.zeros(self.cool.shape, bool)

    def check_demand(self, anomaly: AnomalyConfig | None, state, params, esc: np.ndarray) -> np.ndarray:
        """Anomalous stores per environment [E] (esc |= ESC_ANOMALY for them); zeros without ``anomaly``."""
        anomalies = np.zeros(len(self.seen), np.int64)
        if anomaly is not None:
            a = anomaly
            anomaly_step(
                state.t,
                self.last_t,
                state.last_demand,
                params.is_store,
                self.mu,
                self.var,
                self.seen,
                a.z,
                a.ratio,
                a.margin,
                a.alpha,
                a.warmup,
                esc,
                anomalies,
            )
        return anomalies

    def update_breakers(self, esc: np.ndarray, open_: np.ndarray, breaker_after: int, cooldown: int) -> None:
        """Count escalations of closed breakers, open those that reach ``breaker_after`` for ``cooldown``
        periods (esc |= ESC_BREAKER) and count down the open ones."""
        closed = ~open_
        self.consec = np.where(closed, np.where(esc != 0, self.consec + 1, 0), self.consec)
        trip = closed & (self.consec >= breaker_after)
        if trip.any():
            self.cool[trip] = cooldown
            self.consec[trip] = 0
            esc[trip] |= ESC_BREAKER
        if open_.any():
            self.cool[open_] -= 1


def check_observations(obs, esc: np.ndarray, rows: np.ndarray | None = None) -> None:
    """esc |= ESC_OBS for nodes whose observation [E, N, D] holds NaN or infinity (``rows``: only those
    (environment, node) pairs, for float32 C-contiguous observations)."""
    ob = np.asarray(obs)
    if ob.dtype == np.float32 and ob.flags.c_contiguous:
        if rows is None:
            obs_check(ob.view(np.uint32), esc)
        else:
            obs_check(ob.view(np.uint32), esc, np.ascontiguousarray(rows, np.int64))
    else:
        esc[~np.isfinite(ob).all(axis=2)] |= ESC_OBS


def fallback_proposals(ctx, a: np.ndarray, open_: np.ndarray, fallback) -> np.ndarray:
    """The proposal ``a`` [E, N, K] with the rows of nodes whose breaker is open replaced by the
    ``fallback`` policy's (zero orders when it is None)."""
    E, N, K = a.shape
    out = np.array(a, dtype=np.float64 if a.dtype.kind == "f" else np.int64, copy=True)
    nodes = np.flatnonzero(open_.any(axis=0))
    fq = np.zeros((E, len(nodes), K), np.int64)
    pol = fallback
    if pol is not None:
        if hasattr(pol, "bind") and getattr(ctx, "compiled", None) is not None:
            pol.bind(ctx.compiled)
        res = np.asarray(pol.act(ctx, nodes))
        if getattr(pol, "output", "quantities") == "levels":
            full = np.zeros((E, N, K), np.int64)
            full[:, nodes] = res
            q = np.zeros((E, N, K), np.int32)
            work = getattr(ctx, "work", None) or new_work(E, N, ctx.params.n_dcs, K)
            kn.levels_to_qty(ctx.params, ctx.state, work, full, q)
            fq = q[:, nodes].astype(np.int64)
        else:
            fq = res
    sel = open_[:, nodes]
    out[:, nodes] = np.where(sel[:, :, None], fq, out[:, nodes])
    return out
