"""The batched array environment: E environments x all agents per call, no per-agent dicts.

It is the fast face of the simulator (tuning, evaluation, the oracle's sample paths, SB3): one kernel
call steps every environment and agent. Observations are ``obs[E, N, D]`` (float32), masks
``mask[E, N, K, Lmax]`` (int8, level l of SKU k allowed), rewards ``reward[E, N]``. Nodes (agents) are
DCs first, then stores, as in `Compiled.agent_ids`.

With ``features=False`` the env computes only masks and bounds after each step and leaves ``obs`` at
zero: about twice as fast, for policies that read ``mask`` and ``ub`` but never ``obs`` (the
heuristics, tuning, the oracle's sample paths).

Every environment of a batch shares the horizon, so all episodes end together; with ``auto_reset``
the next step starts new episodes on fresh sample paths. Environment e of the batch plays sample
path ``paths[e]``: give the same paths to two batches and they see the same demand and lead times
(common random numbers).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from restock.envs import kernel as kn
from restock.envs.compile import Compiled, compile_scenario
from restock.envs.config import ScenarioConfig, load_scenario
from restock.envs.constraints import (
    CONSTRAINTS,
    N_BOUND_CONSTRAINTS,
    inventory_position,
    sku_bounds,
    storage_headroom,
)
from restock.envs.demand import DemandStream
from restock.envs.rng import episode_key
from restock.envs.types import (
    COST_NAMES,
    KPI_NAMES,
    N_COST,
    N_KPI,
    NODE_FEATURES,
    new_step_out,
    new_work,
)

PARALLEL_PAIRS = 100_000  # batches with at least this many node-SKU pairs step on all threads


def choose_parallel(pairs: int) -> bool:
    """Whether a batch of ``pairs`` node-SKU pairs runs the parallel builds: when it is big enough
    (`PARALLEL_PAIRS`), Numba has more than one thread and the machine has at least two idle cores now
    (cores minus the 1-minute load average). On a busy machine the extra threads wait for a core and
    the parallel builds were slower than the serial ones (`large`: 16 s against 8.8 s an episode on 2
    cores at load 4). Both builds give the same results; only the speed depends on the choice."""
    if pairs < PARALLEL_PAIRS:
        return False
    import numba

    if numba.get_num_threads() < 2:
        return False
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform: trust the thread count
        return True
    return (os.cpu_count() or 1) - load >= 2.0


# A shield maps (env, proposed quantities [E, N, K]) to executed quantities and per-env info; see agents.shield
ShieldFn = Callable[["ArrayEnv", np.ndarray], tuple[np.ndarray, dict[str, Any]]]


def compile_any(scenario: str | ScenarioConfig | Compiled | dict, **overrides: Any) -> Compiled:
    if isinstance(scenario, Compiled):
        if overrides:
            return compile_scenario(load_scenario(scenario.config, **overrides))
        return scenario
    return compile_scenario(load_scenario(scenario, **overrides))


class ArrayEnv:
    """E copies of a scenario stepped together by the kernel."""

    def __init__(
        self,
        scenario: str | ScenarioConfig | Compiled | dict,
        num_envs: int = 1,
        seed: int = 0,
        mode: str = "clip",
        auto_reset: bool = False,
        parallel: bool | None = None,
        chunk: int = 32,
        shield: ShieldFn | None = None,
        features: bool = True,
        **overrides: Any,
    ):
        if mode not in ("clip", "strict"):
            raise ValueError(f"mode must be 'clip' or 'strict', not {mode!r}")
        self.compiled = compile_any(scenario, **overrides)
        c = self.compiled
        self.params = c.params
        self.E, self.N, self.K, self.W = int(num_envs), c.N, c.K, c.W
        self.M = c.M
        self.mode = mode
        self.auto_reset = auto_reset
        self.shield = shield
        self.seed = int(seed)
        self.levels = c.params.levels.copy()
        self.Lmax = int(self.levels.max())
        self.F = len(c.sku_features)  # observed per-SKU features (the scenario's observation block)
        self.G = len(NODE_FEATURES)
        self.obs_dim = self.K * self.F + self.G
        pairs = self.E * self.N * self.K
        self._parallel = choose_parallel(pairs) if parallel is None else bool(parallel)
        # `step` parallelises over environments only: one environment steps on the serial build
        self._step = kn.step_par if self._parallel and self.E > 1 else kn.step
        self._l2q = kn.levels_to_qty_par if self._parallel else kn.levels_to_qty
        self.features = bool(features)
        if self.features:
            self._observe = kn.observe_par if self._parallel else kn.observe
        else:  # masks and bounds only: obs stays zero
            fn = kn.observe_bounds_par if self._parallel else kn.observe_bounds
            self._observe = lambda p, s, w, obs, mask, ub: fn(p, s, w, obs, mask, ub, False)

        self.state = c.new_state(self.E)
        self.work = new_work(self.E, self.N, self.M, self.K)
        self.out = new_step_out(self.E, self.N)
        self.obs = np.zeros((self.E, self.N, self.obs_dim), np.float32)
        self.mask = np.zeros((self.E, self.N, self.K, self.Lmax), np.int8)
        self.ub = np.zeros((self.E, self.N, self.K), np.int32)
        self._qty = np.zeros((self.E, self.N, self.K), np.int32)
        self.paths = np.arange(self.E, dtype=np.int64)
        self._next_path = self.E
        self.demand = DemandStream(c.demand, self.seed, self.paths, chunk=chunk)
        self.episode_cost = np.zeros((self.E, self.N, N_COST))
        self.episode_kpi = np.zeros((self.E, self.N, N_KPI))
        self.episode_revenue = np.zeros((self.E, self.N))
        self.episode_clipped = np.zeros((self.E, self.N), np.int64)
        self.episodes_done = 0
        self._all = np.ones(self.E, np.int8)
        self._horizon = int(c.horizon)
        self._lv = np.zeros((self.E, self.N, self.K), np.int64)  # levels of the period being stepped
        self._clipped = np.zeros((self.E, self.N), np.int64)  # clipped levels per node, last period
        self._bound: kn.Bound | None = None
        self._bound_to: tuple = ()

    # ---------------------------------------------------------------- names and sizes
    @property
    def agent_ids(self) -> list[str]:
        return self.compiled.agent_ids

    @property
    def horizon(self) -> int:
        return self.compiled.horizon

    @property
    def t(self) -> int:
        return int(self.state.t[0])

    cost_names = COST_NAMES
    kpi_names = KPI_NAMES
    constraint_names = CONSTRAINTS

    # ---------------------------------------------------------------- episode control
    def reset(
        self, seed: int | None = None, paths: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Start new episodes. ``paths`` picks the sample paths (default: the next unused ones)."""
        if seed is not None:
            self.seed = int(seed)
            self.demand.seed = np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)
            self._next_path = 0
            self.demand._t0 = -1
        if paths is None:
            paths = np.arange(self._next_path, self._next_path + self.E, dtype=np.int64)
            self._next_path += self.E
        paths = np.asarray(paths, dtype=np.int64)
        if paths.shape != (self.E,):
            raise ValueError(f"paths must have shape ({self.E},), got {paths.shape}")
        self.paths = paths.copy()
        self.demand.set_paths(self.paths)
        self.demand._t0 = -1
        keys = np.asarray([episode_key(self.seed, int(pth)) for pth in self.paths], np.uint64)
        c = self.compiled
        kn.reset_envs(self.params, self.state, self._all, keys, c.init_on_hand, c.init_pipe, self.out)
        self.episode_cost[:] = self.out.cost
        self.episode_kpi[:] = self.out.kpi
        self.episode_revenue[:] = 0.0
        self.episode_clipped[:] = 0
        self._observe(self.params, self.state, self.work, self.obs, self.mask, self.ub)
        return self.obs, self.mask

    def done(self) -> bool:
        return self.t >= self.horizon

    # ---------------------------------------------------------------- stepping
    def levels_to_qty(self, levels: np.ndarray) -> np.ndarray:
        """Quantities [E, N, K] that levels [E, N, K] order at the current state."""
        lv = np.ascontiguousarray(levels, dtype=np.int64)
        self._l2q(self.params, self.state, self.work, lv, self._qty)
        return self._qty

    def check_levels(self, levels: np.ndarray) -> tuple[np.ndarray, int]:
        """Validate levels against the masks (strict: raise; clip: clip). Returns (levels, n_clipped)."""
        lv = np.array(levels, dtype=np.int64, copy=True)
        if lv.shape != (self.E, self.N, self.K):
            raise ValueError(f"levels must have shape {(self.E, self.N, self.K)}, got {lv.shape}")
        bad, e, n, k = kn.check_levels(self.params, lv, self.mask, self.mode == "clip")
        if bad and self.mode == "strict":
            raise ValueError(self.explain_masked(e, n, k, int(levels[e, n, k])))
        return lv, bad

    def step(self, levels: np.ndarray):
        """Advance one period with per-SKU action levels [E, N, K]."""
        if self._fused():
            lv = self._lv
            if np.shape(levels) != lv.shape:
                raise ValueError(f"levels must have shape {lv.shape}, got {np.shape(levels)}")
            np.copyto(lv, levels, casting="unsafe")
            self.period_levels(lv)
            return self._finish(self._qty, {})
        lv = np.array(levels, dtype=np.int64, copy=True)
        if lv.shape != (self.E, self.N, self.K):
            raise ValueError(f"levels must have shape {(self.E, self.N, self.K)}, got {lv.shape}")
        bad, e, n, k = kn.check_levels(self.params, lv, self.mask, self.mode == "clip")
        if bad:
            if self.mode == "strict":
                raise ValueError(self.explain_masked(e, n, k, int(levels[e, n, k])))
            self._count_clipped(np.asarray(levels), lv)
        self._l2q(self.params, self.state, self.work, lv, self._qty)
        return self._advance(self._qty)

    def step_qty(self, qty: np.ndarray):
        """Advance one period with order quantities [E, N, K] (heuristics that think in units).

        Quantities are executed as given (after the shield, when one is set): unlike levels they are
        not checked against the masks here; negative values order nothing.
        """
        q = np.asarray(qty)
        if q.shape != (self.E, self.N, self.K):
            raise ValueError(f"qty must have shape {(self.E, self.N, self.K)}, got {q.shape}")
        if not np.issubdtype(q.dtype, np.integer):
            if not np.all(np.isfinite(q)):
                raise ValueError("qty contains NaN or infinity")
            q = np.floor(q)
        self._qty[:] = np.clip(q, 0, 2**30)
        return self._advance(self._qty)

    # ---------------------------------------------------------------- the one-call period
    def _fused(self) -> bool:
        """Whether `step` can run the period as one compiled call (`kernel.period`): a serial batch,
        no shield between the policy and the kernel, `_advance` not wrapped, an episode under way."""
        return (
            not self._parallel
            and self.shield is None
            and "_advance" not in self.__dict__
            and int(self.state.t[0]) < self._horizon
        )

    def bound(self) -> kn.Bound:
        """The `kernel.Bound` over this batch's arrays (rebuilt when one of them was replaced)."""
        to = self._bound_to
        if (
            self._bound is None
            or to[0] is not self.params
            or to[1] is not self.state
            or to[2] is not self.work
            or to[3] is not self.out
            or to[4] is not self.obs
            or to[5] is not self.mask
            or to[6] is not self.ub
        ):
            self._bound_to = (self.params, self.state, self.work, self.out, self.obs, self.mask, self.ub)
            self._bound = kn.bind(
                self.params,
                self.state,
                self.work,
                self.out,
                self.obs,
                self.mask,
                self.ub,
                self._qty,
                self.episode_cost,
                self.episode_kpi,
                self.episode_revenue,
                self.episode_clipped,
                self._clipped,
            )
        return self._bound

    def period_levels(self, lv: np.ndarray) -> np.ndarray:
        """Run one period from int64 levels lv[E, N, K] in one compiled call, with no dicts built.

        For fast faces (`InventoryEnv.step`) that have checked `_fused()`: ``lv`` is clipped in place
        in clip mode; in strict mode a masked-out level raises before anything changes. Returns the
        levels clipped per node this period ([E, N], a buffer overwritten by the next call).
        """
        clip = self.mode == "clip"
        bad, e, n, k = kn.period(self.bound(), lv, clip, self.features, self.demand.get(int(self.state.t[0])))
        if bad and not clip:
            raise ValueError(self.explain_masked(e, n, k, int(lv[e, n, k])))
        return self._clipped

    def _count_clipped(self, raw: np.ndarray, fixed: np.ndarray) -> None:
        self.episode_clipped += (np.asarray(raw) != fixed).sum(axis=2)

    def _advance(self, qty: np.ndarray):
        if self.done():
            if not self.auto_reset:
                raise RuntimeError(
                    "the episode is over: call reset() (or build the env with auto_reset=True)"
                )
            self.reset()
        info: dict[str, Any] = {}
        if self.shield is not None:
            qty, sinfo = self.shield(self, qty)
            info.update(sinfo)
        t = self.t
        self._step(self.params, self.state, self.work, qty, self.demand.get(t), self.out)
        if "reward_penalty" in info:  # a shield configured with an intervention penalty
            np.subtract(self.out.reward, info["reward_penalty"], out=self.out.reward)
        self.episode_cost += self.out.cost
        self.episode_kpi += self.out.kpi
        self.episode_revenue += self.out.revenue
        self._observe(self.params, self.state, self.work, self.obs, self.mask, self.ub)
        return self._finish(qty, info)

    def _finish(self, qty: np.ndarray, info: dict[str, Any]):
        """The end of a period, after the kernel stepped and observed: info, episode end, auto reset."""
        done = int(self.state.t[0]) >= self._horizon
        info.update(cost=self.out.cost, kpi=self.out.kpi, revenue=self.out.revenue, executed=qty)
        if done:
            self.episodes_done += self.E
            info["episode"] = self.episode_summary()
            if self.auto_reset:
                info["final_obs"] = self.obs.copy()
                self.reset()
        return self.obs, self.mask, self.out.reward, done, info

    def episode_summary(self) -> dict[str, np.ndarray]:
        """Totals of the current episode per environment and node."""
        return {
            "cost": self.episode_cost.copy(),
            "kpi": self.episode_kpi.copy(),
            "revenue": self.episode_revenue.copy(),
            "clipped": self.episode_clipped.copy(),
            "paths": self.paths.copy(),
        }

    # ---------------------------------------------------------------- explanations
    def bounds(self, e: int, n: int, k: int) -> dict[str, int]:
        """Per-constraint upper bounds on node n's order of SKU k in environment e (None = unbounded)."""
        scratch = np.zeros(8, np.int64)
        head = storage_headroom(self.params, self.state, e, n)
        sku_bounds(self.params, self.state, e, n, k, head, scratch)
        return {
            CONSTRAINTS[c]: (None if scratch[c] >= (1 << 30) else int(scratch[c]))
            for c in range(N_BOUND_CONSTRAINTS)
        }

    def explain_masked(self, e: int, n: int, k: int, level: int) -> str:
        agent = self.agent_ids[n]
        L = int(self.levels[n])
        sku = self.compiled.sku_names[k]
        if not 0 <= level < L:
            return f"agent {agent}, SKU {sku} (index {k}): level {level} is out of range 0..{L - 1}"
        q = int(kn.level_qty(self.params, n, k, level, int(self._ip(e, n, k)), min(self.t, self.horizon)))
        bounds = self.bounds(e, n, k)
        why = [f"{c} (bound {b})" for c, b in bounds.items() if b is not None and q > b]
        if not why:
            why = [f"lot_moq (lot {int(self.params.lot[k])}, MOQ {int(self.params.moq[k])})"]
        return (
            f"agent {agent}, SKU {sku} (index {k}): level {level} (order of {q} units) is masked out by "
            f"constraint {', '.join(why)}"
        )

    def _ip(self, e: int, n: int, k: int) -> int:
        return int(inventory_position(self.params, self.state, e, n, k))
