"""The PettingZoo face of the simulator: ``inventory_v0``.

Env card
--------
Agents
    ``dc_0 .. dc_{M-1}`` (distribution centres, in the scenario's order) and ``store_0 .. store_{S-1}``.
    Every agent acts every period. Policy ids by role: ``dc_policy``, ``store_policy``
    (`envs.roles.policy_id_for`).
Observation (per agent)
    ``Dict({"observation": Box(-inf, inf, (K*F + 4,), float32), "action_mask": Box(0, 1, (K*L,), int8)})``.
    ``observation`` holds F features per SKU (``envs.types.SKU_FEATURES_FIXED`` then the pipeline by
    arrival period; or the subset the scenario's ``observation`` block selects, `envs.observation`),
    quantities divided by the node-SKU mean demand, then 4 node features
    (``envs.types.NODE_FEATURES``). ``action_mask`` is the flat per-SKU, per-level mask (``sum(nvec)``
    flags): level l of SKU k is allowed iff ``mask[k * L + l]``; level 0 is always allowed.
Action (per agent)
    ``MultiDiscrete([L] * K)``: a level per SKU. The scenario's action mapping turns a level into a
    quantity: ``quantity`` orders level x lots_per_level x lot size; ``order_up_to`` raises the
    inventory position to level x cover_step periods of forecast demand (rounded up to the lot size,
    at least the MOQ). Level 0 orders nothing.
Period order
    See `envs.kernel`: arrivals, decisions (masks, policies, shields), shipping, demand, lost sales or
    backlog, costs. A lead time of L makes an order of period t usable in period t+L.
Rewards
    ``-((1 - w) * own cost + w * mean cost over agents) / scale`` with w = ``reward.network_weight``
    (revenue is added when ``reward.include_revenue``). ``infos[agent]`` carries ``cost_breakdown``
    (``env.cost_names``), ``kpi`` (``env.kpi_names``), ``revenue``, ``clipped`` (masked-out levels
    replaced in clip mode) and ``cost`` (constraint cost for constrained-RL learners: the number of
    SKUs whose proposal had to be changed).
Speed options
    Observations are views of the env's buffers, overwritten by the next ``step`` or ``reset``: keep
    one past a step with ``.copy()``, or build the env with ``copy_obs=True``. ``info_detail=False``
    returns an empty dict per agent (the per-period detail stays readable on ``env.array_env.out``).
    Without a shield a step is one compiled call (`envs.kernel.period`); with one, the shield runs
    between the level-to-quantity mapping and the kernel step.
Masked-out actions
    ``mode="strict"`` (default) raises ``ValueError`` naming the agent, SKU, level and constraint.
    ``mode="clip"`` replaces each by the largest allowed level below it and counts the event (for
    trainers whose pre-checks sample without masks).
Episodes
    End by truncation after ``horizon`` periods (no terminal states). ``reset(seed=s)`` restarts the
    sequence of sample paths of seed s: episode i after it plays path i.

Version history
    v0: first release.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv, compile_any
from restock.envs.config import ScenarioConfig
from restock.envs.rng import episode_key
from restock.envs.spaces import FlatMaskMultiDiscrete

ENV_KWARGS = ("mode", "render_mode", "seed", "shield", "copy_obs", "info_detail")


class InventoryEnv(ParallelEnv):
    metadata = {"name": "inventory_v0", "render_modes": ["human", "ansi"], "is_parallelizable": True}

    def __init__(
        self,
        scenario: Any = "default",
        mode: str = "strict",
        render_mode: str | None = None,
        seed: int | None = None,
        shield=None,
        copy_obs: bool = False,
        info_detail: bool = True,
        **overrides: Any,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, not {render_mode!r}"
            )
        self.render_mode = render_mode
        self._core = ArrayEnv(
            compile_any(scenario, **overrides),
            num_envs=1,
            seed=seed or 0,
            mode=mode,
            shield=shield,
            parallel=False,
        )
        c = self._core.compiled
        self.compiled = c
        self.scenario: ScenarioConfig = c.config
        self.possible_agents = list(c.agent_ids)
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._levels = {a: int(c.params.levels[i]) for i, a in enumerate(self.possible_agents)}
        # spaces are built once per level count and shared, so identity checks hold
        by_L = {L: (self._make_obs_space(L), self._make_act_space(L)) for L in set(self._levels.values())}
        self._obs_spaces = {a: by_L[self._levels[a]][0] for a in self.possible_agents}
        self._act_spaces = {a: by_L[self._levels[a]][1] for a in self.possible_agents}
        self.observation_spaces = self._obs_spaces
        self.action_spaces = self._act_spaces
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, (c.N * c.K * 4 + 1,), np.float32)
        self._lv = np.zeros((1, c.N, c.K), np.int64)
        self._raw = np.zeros((c.N, c.K), np.int64)
        self._episode = 0
        self._seed = int(seed or 0)
        self.mode = mode
        self.copy_obs = bool(copy_obs)
        self.info_detail = bool(info_detail)
        self._n = len(self.possible_agents)
        self._views = self._make_views()

    def _make_views(self) -> list:
        """Per agent: (id, observation view, flat mask, and for an agent with fewer levels than the widest
        role the [K, L] face of its own mask buffer and the core's mask it is filled from each step).
        Views of the core's buffers, built once."""
        core = self._core
        K = self.compiled.K
        self._views_of = (core.obs, core.mask)
        views = []
        for i, a in enumerate(self.possible_agents):
            L = self._levels[a]
            if L == core.Lmax:
                flat, face, src = core.mask[0, i].reshape(K * L), None, None
            else:
                flat = np.zeros(K * L, np.int8)
                face, src = flat.reshape(K, L), core.mask[0, i, :, :L]
            views.append((a, core.obs[0, i], flat, face, src))
        return views

    # ---------------------------------------------------------------- spaces
    def _make_obs_space(self, L: int) -> gymnasium.spaces.Dict:
        K, D = self.compiled.K, self._core.obs_dim
        return gymnasium.spaces.Dict(
            {
                "observation": gymnasium.spaces.Box(-np.inf, np.inf, (D,), np.float32),
                "action_mask": gymnasium.spaces.Box(0, 1, (K * L,), np.int8),
            }
        )

    def _make_act_space(self, L: int) -> gymnasium.spaces.MultiDiscrete:
        return FlatMaskMultiDiscrete(np.full(self.compiled.K, L, dtype=np.int64))

    def observation_space(self, agent: str) -> gymnasium.spaces.Dict:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.MultiDiscrete:
        return self._act_spaces[agent]

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    @property
    def cost_names(self):
        return self._core.cost_names

    @property
    def kpi_names(self):
        return self._core.kpi_names

    @property
    def array_env(self) -> ArrayEnv:
        """The underlying one-environment batch (kernel state, buffers, explanations)."""
        return self._core

    # ---------------------------------------------------------------- API
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seed = int(seed)
            self._episode = 0
        path = self._episode
        if options and "path" in options:
            path = int(options["path"])
        self._episode += 1
        core = self._core
        core.seed = self._seed
        core.demand.seed = np.uint64(self._seed & 0xFFFFFFFFFFFFFFFF)
        core.reset(paths=np.asarray([path], np.int64))
        self.agents = list(self.possible_agents)
        obs = self._observations()
        infos = {a: {} for a in self.agents}
        return obs, infos

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called after the episode ended: call reset()")
        core = self._core
        if not core._fused():
            return self._step_general(actions)
        lv = self._lv
        if len(actions) == self._n and list(actions) == self.possible_agents:
            # the common case: every agent, in order; one conversion for all of them
            try:
                arr = np.asarray(list(actions.values()))
            except ValueError:  # ragged: the per-agent loop names the agent
                arr = None
            if arr is not None and arr.shape == lv.shape[1:] and arr.dtype != object:
                np.copyto(lv[0], arr, casting="unsafe")
            else:
                self._gather(actions)
        else:
            self._gather(actions)
        clipped = core.period_levels(lv)  # strict mode raises here, before anything changed
        agents = self.possible_agents
        done = int(core.state.t[0]) >= core._horizon
        rewards = dict(zip(agents, core.out.reward[0].tolist(), strict=True))
        terms = dict.fromkeys(agents, False)
        truncs = dict.fromkeys(agents, done)
        if self.info_detail:
            infos = self._infos(None, clipped[0], None)
        else:
            infos = {a: {} for a in agents}
        obs = self._observations()
        if done:
            self.agents = []
        if self.render_mode == "human":
            print(self.render())
        return obs, rewards, terms, truncs, infos

    def _gather(self, actions: dict[str, Any]) -> None:
        """Actions into self._lv[0], agent by agent, with errors that name the agent (absent: level 0)."""
        K = self.compiled.K
        raw = self._raw
        seen = 0
        for a, act in actions.items():
            i = self._index.get(a)
            if i is None:
                raise ValueError(f"unknown agent {a!r} (agents: {', '.join(self.possible_agents)})")
            arr = np.asarray(act)
            if arr.shape != (K,):
                raise ValueError(
                    f"agent {a}: action must have shape ({K},) (one level per SKU), got {arr.shape}"
                )
            raw[i] = arr
            seen += 1
        if seen != self._n:
            for a in self.possible_agents:
                if a not in actions:
                    raw[self._index[a]] = 0
        self._lv[0] = raw

    def _infos(self, info: dict | None, clipped: np.ndarray | None, shield_cost: np.ndarray | None) -> dict:
        """Per-agent infos: cost breakdown and KPIs (copies: they outlive the step), revenue, clipped
        levels and the constraint cost (the shield's, else the clipped count)."""
        out = self._core.out
        cost = out.cost[0].copy()
        kpi = out.kpi[0].copy()
        rev = out.revenue[0].tolist()
        clip = [0] * self._n if clipped is None else clipped.tolist()
        scost = clip if shield_cost is None else shield_cost[0].tolist()
        infos = {}
        for i, a in enumerate(self.possible_agents):
            infos[a] = {
                "cost_breakdown": cost[i],
                "kpi": kpi[i],
                "revenue": rev[i],
                "clipped": int(clip[i]),
                "cost": float(scost[i]),
            }
        if info is not None and "shield" in info:
            for i, a in enumerate(self.possible_agents):
                infos[a]["shield"] = info["shield"][i]
        return infos

    def _step_general(self, actions: dict[str, Any]):
        """The step with a shield (or a wrapped core): levels, quantities, shield, kernel, one call each."""
        core = self._core
        c = self.compiled
        raw = self._raw
        for a, act in actions.items():
            i = self._index.get(a)
            if i is None:
                raise ValueError(f"unknown agent {a!r} (agents: {', '.join(self.possible_agents)})")
            arr = np.asarray(act)
            if arr.shape != (c.K,):
                raise ValueError(
                    f"agent {a}: action must have shape ({c.K},) (one level per SKU), got {arr.shape}"
                )
            raw[i] = arr
        for a in self.possible_agents:
            if a not in actions:
                raw[self._index[a]] = 0
        lv = self._lv
        lv[0] = raw
        bad, e, n, k = kn.check_levels(c.params, lv, core.mask, self.mode == "clip")
        clipped = None
        if bad:
            if self.mode == "strict":
                raise ValueError(core.explain_masked(0, n, k, int(raw[n, k])))
            clipped = (raw != lv[0]).sum(axis=1)
            core.episode_clipped[0] += clipped
        kn.levels_to_qty(c.params, core.state, core.work, lv, core._qty)
        _, _, reward, done, info = core._advance(core._qty)
        obs = self._observations()
        agents = self.possible_agents
        rewards = dict(zip(agents, reward[0].tolist(), strict=True))
        terms = dict.fromkeys(agents, False)
        truncs = dict.fromkeys(agents, done)
        if self.info_detail:
            infos = self._infos(info, clipped, info.get("constraint_cost"))
        else:
            infos = {a: {} for a in agents}
        if done:
            self.agents = []
        if self.render_mode == "human":
            print(self.render())
        return obs, rewards, terms, truncs, infos

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-agent observations: views of the core's buffers, overwritten by the next step (copies
        with ``copy_obs=True``)."""
        core = self._core
        if self._views_of[0] is not core.obs or self._views_of[1] is not core.mask:
            self._views = self._make_views()
        out = {}
        for a, o, m, face, src in self._views:
            if face is not None:
                np.copyto(face, src)
            if self.copy_obs:
                out[a] = {"observation": o.copy(), "action_mask": m.copy()}
            else:
                out[a] = {"observation": o, "action_mask": m}
        return out

    def state(self) -> np.ndarray:
        """Global state for centralised critics: on hand, in transit, backlog, owed per node and SKU
        (divided by the node-SKU demand scale), then the time fraction."""
        s, p = self._core.state, self.compiled.params
        pipe = s.transit[0]
        back = np.where(p.is_store[:, None] == 1, s.backlog[0], 0)
        dc_owed = np.zeros_like(s.owed[0])
        for c in range(self.compiled.N):
            if p.parent[c] >= 0:
                dc_owed[p.parent[c]] += s.owed[0, c]
        back = back + dc_owed
        feats = np.stack([s.on_hand[0], pipe, back, s.owed[0]], axis=-1) / p.scale[..., None]
        return np.concatenate([feats.ravel(), [s.t[0] / p.horizon]]).astype(np.float32)

    def render(self) -> str | None:
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode")
            return None
        core, c = self._core, self.compiled
        s = core.state
        lines = [f"{c.config.name} t={int(s.t[0])}/{c.horizon}"]
        for i, a in enumerate(self.possible_agents):
            lines.append(
                f"  {a:>10}: on_hand={int(s.on_hand[0, i].sum()):>7} in_transit={int(s.transit[0, i].sum()):>7} "
                f"backlog={int(s.backlog[0, i].sum()):>5} owed={int(s.owed[0, i].sum()):>5}"
            )
        text = "\n".join(lines)
        return text

    def close(self) -> None:
        pass

    def episode_key(self) -> int:
        return int(episode_key(self._seed, self._episode - 1))


def parallel_env(scenario: Any = "default", **kwargs: Any) -> InventoryEnv:
    """Build ``inventory_v0`` for a shipped scenario name, a YAML path or a config object.

    Keyword arguments ``mode``, ``render_mode``, ``seed``, ``shield``, ``copy_obs`` and ``info_detail``
    configure the env (see the env card above); any other keyword overrides a scenario field
    (``horizon=20``, ``demand__model="poisson"``).
    """
    return InventoryEnv(scenario, **kwargs)
