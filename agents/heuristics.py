"""Classical heuristics: zero, random, base-stock, (s,S), (R,Q) and capped base-stock.

All of them respect the masks. Level policies (zero, random) pick allowed levels. Quantity policies
compute a quantity from the node's inventory position and then clip it to the per-SKU bound the mask
encodes (``ctx.ub``) and snap it to the lot size and MOQ, so what they propose passes every per-SKU
check; constraints shared across SKUs or nodes are the shield's job.

Quantity heuristics are parametrised by a few *knobs* per role (store, dc) around demand statistics
computed once from the scenario (`DemandStats`): a reorder or order-up-to level for node n and SKU k
in period t is

    level = forecast over the protection interval + z * sd over the protection interval

where the protection interval is the mean lead time into n plus one review period, the forecast uses
the scenario's mean demand and seasonality, and z = newsvendor quantile of the SKU's critical ratio
(stores) + the role's ``z`` knob (the DC has no stockout cost of its own, so its z is the knob alone).
Tuning (`agents.tuning`) searches the knobs by simulation on common random numbers. Knobs may be
arrays with one row per environment, so many candidates are simulated in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from restock.envs import kernel as kn
from restock.envs.demand import KIND_NEGBIN, KIND_REPLAY, KIND_TRUNCNORM
from restock.envs.rng import next_uniform, row_key
from restock.envs.roles import ROLES, role_nodes
from scipy import stats

# ------------------------------------------------------------------------------------------------
# level policies


class ZeroPolicy:
    """Never orders. The trivially safe action: a floor for comparisons and the fallback of last resort."""

    name = "zero"
    version = "1"
    output = "levels"

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        E, K = ctx.obs.shape[0], ctx.compiled.K
        return np.zeros((E, len(nodes), K), np.int64)


@njit(cache=True)
def sample_masked_levels(mask, nodes, seed, t, out):
    """out[E, len(nodes), K]: a uniformly random allowed level per SKU (counter-based randomness)."""
    E, _, K, L = mask.shape
    for e in range(E):
        for i in range(nodes.shape[0]):
            n = nodes[i]
            st = row_key(seed, e, t, n)
            for k in range(K):
                cnt = 0
                for l in range(L):
                    cnt += mask[e, n, k, l]
                st, u = next_uniform(st)
                pick = np.int64(u * cnt)
                j = 0
                for l in range(L):
                    if mask[e, n, k, l]:
                        if j == pick:
                            out[e, i, k] = l
                            break
                        j += 1


class RandomPolicy:
    """A uniformly random allowed level for every SKU (masks respected); deterministic given its seed."""

    name = "random"
    version = "1"
    output = "levels"

    def __init__(self, seed: int = 0):
        self.seed = np.uint64(seed)
        self._calls = 0

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        E, K = ctx.obs.shape[0], ctx.compiled.K
        out = np.zeros((E, len(nodes), K), np.int64)
        t = int(ctx.state.t[0]) + 1_000_003 * self._calls
        self._calls += 1
        sample_masked_levels(ctx.mask, np.asarray(nodes, np.int64), self.seed, t, out)
        return out


# ------------------------------------------------------------------------------------------------
# demand statistics shared by the quantity heuristics


@dataclass
class DemandStats:
    """Per node and SKU: one-period mean and sd of the demand the node sees, and its lead time."""

    mu: np.ndarray  # [N, K] mean demand per period (DCs: sum over the stores they serve)
    sd1: np.ndarray  # [N, K] sd of one period's demand
    lt_mean: np.ndarray  # [N, K] mean lead time into the node
    lt_var: np.ndarray  # [N, K] lead-time variance
    crit: np.ndarray  # [N, K] newsvendor quantile z of stockout / (stockout + holding); 0 at DCs
    season_cum: np.ndarray  # [T + 2] cumulative season multipliers (season_cum[t] = sum season[:t])
    unit_cost: np.ndarray  # [K]
    holding: np.ndarray  # [N, K]
    fixed: np.ndarray  # [N, K]

    @classmethod
    def from_compiled(cls, c) -> DemandStats:
        p, m = c.params, c.demand
        base = m.base  # [S, K]
        if m.kind == KIND_NEGBIN:
            var_s = base + base**2 / m.dispersion
        elif m.kind == KIND_TRUNCNORM:
            var_s = (m.cv * base) ** 2
        elif m.kind == KIND_REPLAY:
            var_s = (m.trace * m.replay_scale).var(axis=0)
        else:
            var_s = base.copy()
        N, K = p.mean.shape
        var = np.zeros((N, K))
        var[c.M :] = var_s
        for n in range(N - 1, c.M - 1, -1):
            a = p.parent[n]
            while a >= 0:
                var[a] += var[n]
                a = p.parent[a]
        W = p.lt_cdf.shape[2]
        pmf = np.diff(np.concatenate([np.zeros((N, K, 1)), p.lt_cdf], axis=2), axis=2)
        ls = np.arange(W)
        lt_mean = np.where(p.lt_fixed[:, None] == 1, p.lt_value, (pmf * ls).sum(axis=2))
        lt_var = np.where(p.lt_fixed[:, None] == 1, 0.0, (pmf * ls**2).sum(axis=2) - lt_mean**2)
        tot = p.hold + p.stockout
        cr = np.where(tot > 0, p.stockout / np.where(tot > 0, tot, 1.0), 0.5)
        crit = np.where(p.is_store[:, None] == 1, stats.norm.ppf(np.clip(cr, 1e-4, 1 - 1e-4)), 0.0)
        season_cum = np.concatenate([[0.0], np.cumsum(np.append(p.season, p.season[-1]))])
        return cls(
            mu=p.mean.copy(),
            sd1=np.sqrt(np.maximum(var, 0.0)),
            lt_mean=np.maximum(lt_mean, 0.0),
            lt_var=np.maximum(lt_var, 0.0),
            crit=crit,
            season_cum=season_cum,
            unit_cost=p.unit_cost.copy(),
            holding=p.hold.copy(),
            fixed=p.fixed_cost.copy(),
        )

    def season_integral(self, x: np.ndarray) -> np.ndarray:
        """Sum of seasonal multipliers over [0, x) (fractional periods pro rata; constant past the horizon)."""
        T1 = len(self.season_cum) - 2  # season has T1 + 1 entries (t = 0..T)
        x = np.asarray(x, float)
        i = np.minimum(np.floor(x).astype(np.int64), T1 + 1)
        last = self.season_cum[-1] - self.season_cum[-2]
        frac = x - i
        step = np.where(i <= T1, self.season_cum[np.minimum(i + 1, T1 + 1)] - self.season_cum[i], last)
        return self.season_cum[i] + frac * step

    def protection(self, t: int, review: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(forecast, sd) [N, K] of demand over the protection interval (lead time + review) from t."""
        P = self.lt_mean + review
        season_sum = self.season_integral(t + P) - self.season_integral(np.full_like(P, float(t)))
        fc = self.mu * season_sum
        sd = np.sqrt(P * self.sd1**2 + self.lt_var * self.mu**2)
        return fc, sd


def _knob(knobs: dict, role: str, key: str, default: float) -> np.ndarray:
    v = knobs.get(role, {}).get(key, default)
    return np.asarray(v, dtype=float)


SKU_SUFFIX = (
    "_by_sku"  # knobs[unit][key + SKU_SUFFIX]: one value of the knob per SKU (restock tune --per-sku)
)


def _by_sku(v, K: int, E: int, where: str) -> np.ndarray:
    """A per-SKU knob as [E or 1, K]: a list of K values (every environment) or [E, K] (tuning batches)."""
    a = np.asarray(v, dtype=float)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != K or a.shape[0] not in (1, E):
        raise ValueError(
            f"knobs.{where}: a per-SKU knob needs one value per SKU ({K} for this scenario), "
            f"got shape {list(np.shape(v))}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"knobs.{where}: per-SKU values must be finite")
    return a


def check_sku_knobs(knobs: dict, compiled, where: str) -> None:
    """ValueError naming the field when a per-SKU knob does not have one finite value per SKU of the
    scenario (a parameter file tuned for another SKU count)."""
    for unit, d in knobs.items():
        for key, v in d.items() if isinstance(d, dict) else ():
            if key.endswith(SKU_SUFFIX):
                try:
                    _by_sku(v, compiled.K, 1, f"{unit}.{key}")
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None


def _per_node(compiled, knobs: dict, key: str, default: float, E: int) -> np.ndarray:
    """A knob as [E, N, 1], or [E, N, K] when per-SKU values are given: role values broadcast to the
    role's nodes; arrays give one value per env.

    Knobs are keyed by role (``"store"``, ``"dc"``) and, optionally, by node id (``compiled.agent_ids``,
    e.g. ``"dc_1"``): a node's own entry overrides its role's for the keys it has (`restock tune
    --per-node`). A unit's ``key + "_by_sku"`` entry (a list of K values, `restock tune --per-sku`)
    replaces that unit's ``key`` SKU by SKU; precedence: node per SKU, node, role per SKU, role."""
    N, K = compiled.N, compiled.K
    sku = {u: d[key + SKU_SUFFIX] for u, d in knobs.items() if isinstance(d, dict) and key + SKU_SUFFIX in d}
    out = np.empty((E, N, K if sku else 1))
    for role in ROLES:
        nodes = role_nodes(compiled, role)
        v = _knob(knobs, role, key, default)
        out[:, nodes] = v.reshape(-1, 1, 1) if v.ndim else v
        if role in sku:
            out[:, nodes] = _by_sku(sku[role], K, E, f"{role}.{key}{SKU_SUFFIX}")[:, None, :]
    for n, node in enumerate(compiled.agent_ids):
        if key in knobs.get(node, {}):
            v = np.asarray(knobs[node][key], dtype=float)
            out[:, n] = v.reshape(-1, 1) if v.ndim else v
        if node in sku:
            out[:, n] = _by_sku(sku[node], K, E, f"{node}.{key}{SKU_SUFFIX}")
    return out


@njit(cache=True)
def clip_snap(q, ub, lot, moq, out):
    """out = q[E, N', K] clipped to the per-SKU bounds ub and snapped to lot size and MOQ (never above ub)."""
    E, N, K = q.shape
    for e in range(E):
        for i in range(N):
            for k in range(K):
                x = q[e, i, k]
                u = ub[e, i, k]
                if not (x > 0.0):  # also catches NaN
                    out[e, i, k] = 0
                    continue
                L = lot[k]
                v = np.int64(math.ceil(x - 1e-9))
                v = ((v + L - 1) // L) * L  # round up to a lot
                if v > u:
                    v = (u // L) * L  # the largest lot multiple that fits
                m = ((moq[k] + L - 1) // L) * L
                if 0 < v < m:
                    v = m if m <= u else 0
                out[e, i, k] = v


class _QuantityHeuristic:
    """Shared machinery: stats, knobs broadcast per env and node, inventory positions, clip and snap."""

    name = "heuristic"
    version = "1"
    output = "quantities"
    knob_defaults: dict[str, float] = {}
    knob_bounds: dict[str, tuple[float, float]] = {}

    def __init__(self, knobs: dict[str, dict[str, Any]] | None = None):
        self.knobs = knobs or {}
        self._bound_to = None

    def bind(self, compiled) -> None:
        if self._bound_to is not compiled:
            self.stats = DemandStats.from_compiled(compiled)
            self._bound_to = compiled

    def knob(self, ctx, key: str) -> np.ndarray:
        E = ctx.obs.shape[0]
        return _per_node(ctx.compiled, self.knobs, key, self.knob_defaults[key], E)

    def positions(self, ctx) -> np.ndarray:
        E, N, K = ctx.state.on_hand.shape
        ip = np.empty((E, N, K), np.int64)
        kn.inventory_positions(ctx.params, ctx.state, ctx.work, ip)
        return ip

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        self.bind(ctx.compiled)
        raw = self.raw(ctx)  # [E, N, K] float quantities for every node
        nodes = np.asarray(nodes)
        out = np.zeros((raw.shape[0], len(nodes), raw.shape[2]), np.int64)
        clip_snap(
            np.ascontiguousarray(raw[:, nodes]),
            np.ascontiguousarray(ctx.ub[:, nodes]).astype(np.int64),
            ctx.params.lot,
            ctx.params.moq,
            out,
        )
        return out

    def raw(self, ctx) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"policy": self.name, "knobs": _jsonable(self.knobs)}


def _jsonable(knobs: dict) -> dict:
    return {r: {k: (np.asarray(v).tolist()) for k, v in d.items()} for r, d in knobs.items()}


def _level(h: _QuantityHeuristic, ctx, review: float = 1.0) -> np.ndarray:
    t = int(ctx.state.t[0])
    fc, sd = h.stats.protection(t, review)
    z = h.stats.crit[None] + h.knob(ctx, "z")
    return fc[None] + z * sd[None]


class BaseStockPolicy(_QuantityHeuristic):
    """Order up to S every period: q = S - inventory position (installation stock)."""

    name = "base_stock"
    knob_defaults = {"z": 0.0}
    knob_bounds = {"z": (-3.0, 4.0)}

    def raw(self, ctx) -> np.ndarray:
        return _level(self, ctx) - self.positions(ctx)


class CappedBaseStockPolicy(_QuantityHeuristic):
    """Base-stock with a cap on each order: q = min(S - IP, cap). Strong for lost sales with lead times
    (Xin 2021); the cap is ``cap`` periods of mean demand."""

    name = "capped_base_stock"
    knob_defaults = {"z": 0.0, "cap": 2.0}
    knob_bounds = {"z": (-3.0, 4.0), "cap": (0.5, 6.0)}

    def raw(self, ctx) -> np.ndarray:
        t = int(ctx.state.t[0])
        q = _level(self, ctx) - self.positions(ctx)
        season = ctx.params.season[min(t, ctx.params.horizon)]
        cap = self.knob(ctx, "cap") * self.stats.mu[None] * season
        return np.minimum(q, np.maximum(cap, 1.0))


def _eoq(h: _QuantityHeuristic, ctx) -> np.ndarray:
    """Economic order quantity per node and SKU (units), at least one lot; times the ``q`` knob."""
    st = h.stats
    hold = np.maximum(st.holding, 1e-9)
    eoq = np.sqrt(2.0 * np.maximum(st.fixed, 0.0) * st.mu / hold)
    eoq = np.maximum(eoq, ctx.params.lot[None, :].astype(float))
    return h.knob(ctx, "q") * np.maximum(eoq, st.mu)[None]


class SSPolicy(_QuantityHeuristic):
    """(s, S): when the inventory position is at or below s, order up to S = s + Q (Q from the EOQ)."""

    name = "s_S"
    knob_defaults = {"z": 0.0, "q": 1.0}
    knob_bounds = {"z": (-3.0, 4.0), "q": (0.2, 5.0)}

    def raw(self, ctx) -> np.ndarray:
        s = _level(self, ctx)
        ip = self.positions(ctx)
        big_s = s + _eoq(self, ctx)
        return np.where(ip <= s, big_s - ip, 0.0)


class RQPolicy(_QuantityHeuristic):
    """(R, Q): when the inventory position is at or below R, order the smallest multiple of Q that
    lifts it above R."""

    name = "r_Q"
    knob_defaults = {"z": 0.0, "q": 1.0}
    knob_bounds = {"z": (-3.0, 4.0), "q": (0.2, 5.0)}

    def raw(self, ctx) -> np.ndarray:
        r = _level(self, ctx)
        ip = self.positions(ctx)
        Q = np.maximum(_eoq(self, ctx), 1.0)
        n = np.floor((r - ip) / Q) + 1.0
        return np.where(ip <= r, n * Q, 0.0)


HEURISTICS = {
    "zero": ZeroPolicy,
    "random": RandomPolicy,
    "base_stock": BaseStockPolicy,
    "capped_base_stock": CappedBaseStockPolicy,
    "s_S": SSPolicy,
    "r_Q": RQPolicy,
}
TUNABLE = ("base_stock", "capped_base_stock", "s_S", "r_Q", "echelon_base_stock", "base_stock_cutoff")
