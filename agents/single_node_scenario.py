"""The exact single-node DP (`agents.single_node_dp`) applied to restock scenarios.

`spec_from_scenario` turns a one-store, one-SKU, stationary scenario into the DP's model (and says
why another scenario is `NotCovered`), with the exact law of the simulator's demand
(`simulator_pmf`); `DPOptimalPolicy` executes a solved DP table as a restock policy; `StateTable`
and `state_index` map the simulator's state onto the DP's exact states (for `agents.exact` and the
``dcl`` trainer).
"""

from __future__ import annotations

import math

import numpy as np
from restock.agents.single_node_dp import DPSolution, SingleNodeSpec, poisson_pmf, solve, state_space
from restock.envs.array_env import ArrayEnv
from restock.envs.demand import KIND_POISSON
from scipy.stats import poisson

__all__ = [
    "DPOptimalPolicy",
    "NotCovered",
    "StateTable",
    "simulator_pmf",
    "spec_from_scenario",
    "state_index",
]


class NotCovered(ValueError):
    """The scenario is not a single stocking point the exact DP models; the message says why."""


def simulator_pmf(compiled, node: int = 0, k: int = 0) -> np.ndarray:
    """The exact law of one period's demand as `envs.demand` draws it for a stationary scenario.

    Poisson draws are exact Poisson; negative binomial and truncated normal draws mix the two grid
    tables around the mean (weights that keep the mean exact), so their law is that mixture.
    """
    dm = compiled.demand
    s = node - compiled.M
    lam = float(dm.base[s, k] * dm.season[0])
    if lam <= 0:
        return np.array([1.0])
    if dm.kind == KIND_POISSON:
        return poisson_pmf(lam)
    grid, ptr, cdf = dm.grid_lam, dm.tab_ptr, dm.tab_cdf

    def table(i):
        c = cdf[ptr[i] : ptr[i + 1]]
        return np.diff(np.concatenate([[0.0], c]))

    if lam > grid[-1]:
        raise NotCovered(f"demand mean {lam} is above the sampler's tables: its law is not tabulated")
    if lam < grid[0]:
        t0 = table(0) * (lam / grid[0])
        t0[0] += 1.0 - lam / grid[0]
        return t0 / t0.sum()
    i = int(np.searchsorted(grid, lam, side="right") - 1)
    i = min(max(i, 0), grid.size - 2)
    w = (lam - grid[i]) / (grid[i + 1] - grid[i])
    a, b = table(i), table(i + 1)
    n = max(a.size, b.size)
    pmf = np.zeros(n)
    pmf[: a.size] += (1 - w) * a
    pmf[: b.size] += w * b
    return pmf / pmf.sum()


def spec_from_scenario(compiled, backlog_tail: float = 1e-12) -> SingleNodeSpec:
    """The DP model of a one-store, one-SKU, stationary scenario; `NotCovered` names what is not."""
    cfg, p = compiled.config, compiled.params
    why = []
    if compiled.N != 1 or compiled.M != 0:
        why.append(
            f"it has {compiled.M} DCs and {compiled.S} stores (the DP covers one store fed by a supplier)"
        )
    if compiled.K != 1:
        why.append(f"it has {compiled.K} SKUs (the DP covers one)")
    if why:
        raise NotCovered("; ".join(why))
    d = cfg.demand
    if d.model == "replay":
        why.append("demand is replayed from a trace (not i.i.d.)")
    if d.weekly or d.yearly or d.trend or d.promotions or d.shocks:
        why.append("demand is not stationary (weekly/yearly/trend/promotions/shocks)")
    if cfg.disruptions:
        why.append("it has disruptions")
    if not p.lt_fixed[0]:
        why.append("the lead time is stochastic")
    if np.isfinite(p.lane_cap[0]) or np.isfinite(p.storage_cap).any() or np.isfinite(p.budget[0]):
        why.append("a lane, storage or budget capacity applies")
    if np.isfinite(p.max_increase[0]):
        why.append("orders are rate-limited (max_order_increase)")
    if np.isfinite(p.sup_cap).any():
        why.append("the supplier's capacity is finite")
    if why:
        raise NotCovered("; ".join(why))
    L = int(p.lt_value[0, 0])
    pmf = simulator_pmf(compiled)
    unmet = "backlog" if p.backlog[0] else "lost"
    forecast = float(p.mean[0, 0] * p.season[0])
    spec = SingleNodeSpec(
        lead_time=L,
        pmf=pmf,
        holding=float(p.hold[0, 0]),
        penalty=float(p.stockout[0, 0]),
        unmet=unmet,
        order_cost=float(p.order_cost[0, 0]),
        fixed_cost=float(p.fixed_cost[0, 0]),
        pipeline_rate=float(p.pipe_hold[0, 0]),
        discount=float(cfg.discount),
        levels=int(p.levels[0]),
        mode=int(p.mode[0]),
        cover_step=float(p.cover_step[0]),
        forecast=forecast,
        qstep=int(p.qstep[0, 0]),
        lot=int(p.lot[0]),
        moq=int(p.moq[0]),
        name=cfg.name,
    )
    if unmet == "backlog":
        # lowest net inventory kept: the position never exceeds Smax, so x >= Smax - D[L+1 periods];
        # clamp where that tail is below backlog_tail
        mu = spec.mean
        var = float(np.dot((np.arange(pmf.size) - mu) ** 2, pmf))
        m = (L + 1) * mu
        sd = math.sqrt(max((L + 1) * var, 1e-9))
        far = int(max(poisson.isf(backlog_tail, m), m + 8 * sd)) + 1
        spec.x_min = -max(far - spec.max_position, 1)
    env = ArrayEnv(compiled, num_envs=1, features=False)
    env.reset(seed=0)
    st = env.state
    W = st.pipe.shape[2]
    t0 = int(st.t[0])
    x0 = int(st.on_hand[0, 0, 0]) - int(st.backlog[0, 0, 0])
    pipe0 = [int(st.pipe[0, 0, (t0 + i) % W, 0]) for i in range(1, max(L, 1))]
    spec.initial = (x0, *pipe0)
    return spec


def state_index(s, lookup: np.ndarray, R: int, D: int, x_min: int) -> np.ndarray:
    """Index [E] of each environment's exact state (x, pipeline by arrival period) in a DP table, -1 outside."""
    E = s.on_hand.shape[0]
    x = s.on_hand[:, 0, 0].astype(np.int64) - s.backlog[:, 0, 0]
    code = x - x_min
    ok = (code >= 0) & (code < R)
    W = s.pipe.shape[2]
    t = s.t.astype(np.int64)
    same_t = bool((t == t[0]).all())
    mult = 1
    for i in range(1, D):
        mult *= R
        if same_t:  # one period for all: a slice, not a gather
            pi = s.pipe[:, 0, (int(t[0]) + i) % W, 0].astype(np.int64)
        else:
            pi = s.pipe[np.arange(E), 0, (t + i) % W, 0].astype(np.int64)
        ok &= pi < R
        code = code + pi * mult
    return np.where(ok, lookup[np.where(ok, code, 0)], -1)


class DPOptimalPolicy:
    """The DP's optimal order for the current exact state (`restock eval ... --policies dp_optimal`).

    Reads the raw state (on hand, backlog, the pipeline by arrival period) of the one store; states
    outside the DP's table (a position above the top level, or a backlog deeper than the DP keeps)
    order nothing, respectively the most the levels allow.
    """

    name = "dp_optimal"
    version = "exact"
    output = "quantities"

    def __init__(self, solution: DPSolution | None = None):
        self.solution = solution

    def bind(self, compiled) -> None:
        if self.solution is None:
            self.solution = solve(spec_from_scenario(compiled))
        self._W = compiled.W

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        sol = self.solution
        s, spec = ctx.state, sol.spec
        D, R = sol.coords.shape[1], sol.radix
        E = s.on_hand.shape[0]
        out = np.zeros((E, len(nodes), 1), np.int64)
        nodes = np.asarray(nodes, np.int64)
        if nodes.size == 0:
            return out
        x = s.on_hand[:, 0, 0].astype(np.int64) - s.backlog[:, 0, 0].astype(np.int64)
        ip = x + s.transit[:, 0, 0].astype(np.int64)
        idx = state_index(s, sol.lookup, R, D, spec.x_min)
        q = np.where(idx >= 0, sol.action[np.maximum(idx, 0)], 0)
        deep = (idx < 0) & (ip < spec.max_position)  # a backlog deeper than the table: order the most
        q = np.where(deep, spec.max_position - ip, q)
        out[:, :, 0] = q[:, None]
        return out


class StateTable:
    """The finite state set of a single-node scenario and vectorised state -> index lookups."""

    def __init__(self, compiled):
        try:
            self.spec = spec_from_scenario(compiled)
        except NotCovered as exc:
            raise ValueError(
                f"this needs one decision per period (one store, one SKU, fixed lead time): {exc}"
            ) from None
        self.coords, self.lookup, self.R, self.smax = state_space(self.spec)
        self.S, self.D = self.coords.shape
        self.xmin = self.spec.x_min

    def index(self, env) -> np.ndarray:
        """State index [E] of every environment (-1 outside the table)."""
        return state_index(env.state, self.lookup, self.R, self.D, self.xmin)

    def write(self, env, idx: np.ndarray) -> None:
        """Put environment e in state idx[e] (period t as it is; the pipeline by arrival period)."""
        s = env.state
        c = self.coords[idx]
        x = c[:, 0]
        s.on_hand[:, 0, 0] = np.maximum(x, 0)
        s.backlog[:, 0, 0] = np.maximum(-x, 0)
        s.pipe[:, 0, :, 0] = 0
        W = s.pipe.shape[2]
        t = s.t.astype(np.int64)
        for i in range(1, self.D):
            s.pipe[np.arange(env.E), 0, (t + i) % W, 0] = c[:, i]
        s.transit[:, 0, 0] = c[:, 1:].sum(axis=1)
