"""RLlib's face of the simulator: a native MultiAgentEnv over the batched array env (E = 1).

Only the agents of the trained roles are RLlib agents; any other role is played inside the env by
the baseline heuristic, so RLlib never samples for it. Observations are renamed for RLlib's masking
convention: ``{"observations": ..., "action_mask": ...}`` (plus ``"global_state"`` for a centralised
critic). Shield, rewards and costs are exactly those of the PettingZoo env: the same ArrayEnv and
the same shield hook run underneath.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from agents.base import JointPolicy, role_nodes
from envs import kernel as kn
from envs.array_env import ArrayEnv
from envs.compile import compile_scenario
from envs.config import load_scenario
from envs.types import C_HOLD, C_STOCKOUT, K_DEMAND, K_FILLED


class RLlibInventoryEnv(MultiAgentEnv):
    """env_config: scenario (dict or name), roles, baseline {policy, knobs}, reward_scale, seed,
    shield (bool), shield_penalty, central_critic (bool)."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = dict(config or {})
        scen = cfg.get("scenario", "tiny")
        self.compiled = compile_scenario(load_scenario(scen))
        c = self.compiled
        shield = None
        if cfg.get("shield", True):
            try:
                from agents.shield import Shield

                shield = Shield(c, mode="enforce")
            except ImportError:
                shield = None
        self.env = ArrayEnv(c, num_envs=1, seed=int(cfg.get("seed", 0)), shield=shield)
        self.roles = list(cfg.get("roles", ["store", "dc"]))
        self.nodes = np.concatenate([role_nodes(c, r) for r in self.roles]).astype(np.int64)
        self.possible_agents = [c.agent_ids[n] for n in self.nodes]
        self.agents = list(self.possible_agents)
        from agents.tuning import make_policy

        base = cfg.get("baseline", {"policy": "base_stock", "knobs": {}})
        self.baseline = JointPolicy(make_policy(base.get("policy", "base_stock"), base.get("knobs")))
        self.baseline.bind(c)
        self.reward_scale = float(cfg.get("reward_scale", 1.0))
        self.shield_penalty = float(cfg.get("shield_penalty", 0.0))
        self.central = bool(cfg.get("central_critic", False))
        self.K = c.K
        self.levels = {
            a: int(c.params.levels[n]) for a, n in zip(self.possible_agents, self.nodes, strict=True)
        }
        self.gdim = c.N * c.K * 4 + 1
        spaces = {}
        for a in self.possible_agents:
            d = {
                "observations": gymnasium.spaces.Box(-np.inf, np.inf, (self.env.obs_dim,), np.float32),
                "action_mask": gymnasium.spaces.Box(0.0, 1.0, (self.K * self.levels[a],), np.float32),
            }
            if self.central:
                d["global_state"] = gymnasium.spaces.Box(-np.inf, np.inf, (self.gdim,), np.float32)
            spaces[a] = gymnasium.spaces.Dict(d)
        self.observation_spaces = spaces
        self.action_spaces = {
            a: gymnasium.spaces.MultiDiscrete(np.full(self.K, self.levels[a], np.int64))
            for a in self.possible_agents
        }
        self._episode = 0
        self._seed = int(cfg.get("seed", 0))
        self._levels_buf = np.zeros((1, c.N, c.K), np.int64)
        self._q = np.zeros((1, c.N, c.K), np.int32)
        self._ret = dict.fromkeys(self.possible_agents, 0.0)

    def _global(self) -> np.ndarray:
        s, p = self.env.state, self.compiled.params
        owed_out = np.zeros_like(s.owed[0])
        for ch in range(self.compiled.N):
            if p.parent[ch] >= 0:
                owed_out[p.parent[ch]] += s.owed[0, ch]
        back = np.where(p.is_store[:, None] == 1, s.backlog[0], owed_out)
        feats = np.stack([s.on_hand[0], s.transit[0], back, s.owed[0]], axis=-1) / p.scale[..., None]
        return np.concatenate([feats.ravel(), [s.t[0] / p.horizon]]).astype(np.float32)

    def _obs(self) -> dict[str, dict[str, np.ndarray]]:
        env = self.env
        g = self._global() if self.central else None
        out = {}
        for a, n in zip(self.possible_agents, self.nodes, strict=True):
            L = self.levels[a]
            d = {
                "observations": env.obs[0, n].copy(),
                "action_mask": env.mask[0, n, :, :L].reshape(-1).astype(np.float32),
            }
            if g is not None:
                d["global_state"] = g
            out[a] = d
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seed = int(seed)
            self._episode = 0
            self.env.seed = self._seed
            self.env.demand.seed = np.uint64(self._seed & 0xFFFFFFFFFFFFFFFF)
        self.env.reset(paths=np.array([self._episode], np.int64))
        self._episode += 1
        self.agents = list(self.possible_agents)
        self._ret = dict.fromkeys(self.possible_agents, 0.0)
        self._safety = np.zeros(3)  # node-SKU decisions, interventions, executed violations
        return self._obs(), {a: {} for a in self.agents}

    def step(self, action_dict: dict[str, Any]):
        env, c = self.env, self.compiled
        qty = self.baseline.propose(env).qty.astype(np.int64)
        lv = self._levels_buf
        lv[:] = 0
        for a, n in zip(self.possible_agents, self.nodes, strict=True):
            if a in action_dict:
                lv[0, n] = np.asarray(action_dict[a], np.int64)
        # unmasked samples (RLlib's pre-checks) are clipped to allowed levels, as in clip mode
        kn.check_levels(c.params, lv, env.mask, True)
        kn.levels_to_qty(c.params, env.state, env.work, lv, self._q)
        qty[:, self.nodes] = self._q[:, self.nodes]
        _, _, reward, done, info = env.step_qty(qty)
        obs = self._obs()
        rewards, infos = {}, {}
        cc = info.get("constraint_cost")
        if "shield_sku_decisions" in info:
            self._safety += [
                np.sum(info["shield_sku_decisions"]),
                np.sum(info["shield_interventions"]),
                np.sum(info["shield_executed_violations"]),
            ]
        for a, n in zip(self.possible_agents, self.nodes, strict=True):
            r = float(reward[0, n]) / self.reward_scale
            if self.shield_penalty and cc is not None:
                r -= self.shield_penalty * float(cc[0, n])
            rewards[a] = r
            self._ret[a] += r
            infos[a] = {"cost": float(cc[0, n]) if cc is not None else 0.0}
        if done:
            ep = info["episode"]
            M = c.M
            dem = ep["kpi"][0, M:, K_DEMAND].sum()
            summary = {
                "episodic_cost": float(ep["cost"][0].sum()),
                "fill_rate": float(ep["kpi"][0, M:, K_FILLED].sum() / max(dem, 1e-9)),
                "holding_cost": float(ep["cost"][0, :, C_HOLD].sum()),
                "stockout_cost": float(ep["cost"][0, :, C_STOCKOUT].sum()),
                "intervention_rate": float(self._safety[1] / self._safety[0]) if self._safety[0] else 0.0,
                "violations": float(self._safety[2]),
            }
            for a in infos:
                infos[a]["episode_summary"] = summary
            self.agents = []
        terminateds = {"__all__": False}
        truncateds = {a: done for a in self.possible_agents}
        truncateds["__all__"] = done
        return obs, rewards, terminateds, truncateds, infos
