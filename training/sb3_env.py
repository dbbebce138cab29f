"""An SB3 VecEnv over the batched array env: parameter sharing within a role.

Every agent of the trained role in every environment is one SB3 "environment": with E environments
and n agents of the role, SB3 sees E*n environments sharing one policy. The other role is played by a
fixed policy (a tuned heuristic or a frozen network). All environments share the horizon, so episodes
end together; SB3 bootstraps the truncated returns from ``terminal_observation``.

Masks go to MaskablePPO through ``action_masks()`` (flat ``sum(nvec)`` vectors); the shield (when set)
runs on the joint proposal before the kernel executes it, exactly as in evaluation and serving.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from restock.agents.base import JointPolicy
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import Compiled
from restock.envs.roles import role_nodes
from restock.envs.types import C_HOLD, C_STOCKOUT, K_DEMAND, K_FILLED
from stable_baselines3.common.vec_env.base_vec_env import VecEnv


class RoleVecEnv(VecEnv):
    def __init__(
        self,
        compiled: Compiled,
        role: str,
        num_envs: int,
        seed: int,
        other: JointPolicy,
        shield=None,
        reward_scale: float = 1.0,
        shield_penalty: float = 0.0,
    ):
        self.env = ArrayEnv(compiled, num_envs=num_envs, seed=seed, shield=shield)
        self.compiled = compiled
        self.role = role
        self.nodes = role_nodes(compiled, role)
        if len(self.nodes) == 0:
            raise ValueError(f"scenario {compiled.config.name!r} has no {role} agents to train")
        self.other = other
        self.other.bind(compiled)
        self.E, self.n = num_envs, len(self.nodes)
        self.K = compiled.K
        self.L = int(compiled.params.levels[self.nodes[0]])
        self.reward_scale = float(reward_scale)
        self.shield_penalty = float(shield_penalty)
        obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.env.obs_dim,), np.float32)
        act_space = gymnasium.spaces.MultiDiscrete(np.full(self.K, self.L, dtype=np.int64))
        super().__init__(self.E * self.n, obs_space, act_space)
        self._actions: np.ndarray | None = None
        self._levels = np.zeros((self.E, compiled.N, self.K), np.int64)
        self._q = np.zeros((self.E, compiled.N, self.K), np.int32)
        self._ep_return = np.zeros(self.E * self.n)
        self.episode_log: list[dict[str, float]] = []  # finished episodes' KPIs (read by the callback)
        self.seed_value = seed

    # ---------------------------------------------------------------- helpers
    def _obs(self) -> np.ndarray:
        return self.env.obs[:, self.nodes].reshape(self.E * self.n, -1).copy()

    def action_masks(self) -> np.ndarray:
        m = self.env.mask[:, self.nodes, :, : self.L]
        return m.reshape(self.E * self.n, self.K * self.L).astype(bool)

    # ---------------------------------------------------------------- VecEnv API
    def reset(self):
        self.env.reset()
        self._ep_return[:] = 0.0
        return self._obs()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.E, self.n, self.K)

    def step_wait(self):
        env = self.env
        other = self.other.propose(env).qty  # quantities for every node; ours are replaced below
        self._levels[:] = 0
        self._levels[:, self.nodes] = self._actions
        kn.levels_to_qty(env.params, env.state, env.work, self._levels, self._q)
        qty = other.astype(np.int64)
        qty[:, self.nodes] = self._q[:, self.nodes]
        _, _, reward, done, info = env.step_qty(qty)
        r = reward[:, self.nodes].reshape(-1) / self.reward_scale
        if self.shield_penalty and "constraint_cost" in info:
            r = r - self.shield_penalty * info["constraint_cost"][:, self.nodes].reshape(-1)
        self._ep_return += r
        dones = np.full(self.E * self.n, done)
        infos: list[dict[str, Any]] = [{} for _ in range(self.E * self.n)]
        if done:
            final = self._obs()
            ep = info["episode"]
            self._log_episode(ep, info)
            for i in range(self.E * self.n):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = True
                infos[i]["episode"] = {"r": float(self._ep_return[i]), "l": self.compiled.horizon}
            obs = self.reset()
        else:
            obs = self._obs()
        return obs, r.astype(np.float32), dones, infos

    def _log_episode(self, ep: dict, info: dict) -> None:
        M = self.compiled.M
        cost = ep["cost"].sum(axis=(1, 2))  # [E]
        kpi = ep["kpi"]
        dem = kpi[:, M:, K_DEMAND].sum(axis=1)
        fill = kpi[:, M:, K_FILLED].sum(axis=1) / np.maximum(dem, 1e-9)
        for e in range(self.E):
            self.episode_log.append(
                {
                    "episodic_cost": float(cost[e]),
                    "fill_rate": float(fill[e]),
                    "holding_cost": float(ep["cost"][e, :, C_HOLD].sum()),
                    "stockout_cost": float(ep["cost"][e, :, C_STOCKOUT].sum()),
                }
            )

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        if attr_name == "render_mode":
            return [None] * len(self._indices(indices))
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        if method_name == "action_masks":
            m = self.action_masks()
            return [m[i] for i in self._indices(indices)]
        fn = getattr(self, method_name)
        return [fn(*method_args, **method_kwargs)] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def has_attr(self, attr_name: str) -> bool:
        return hasattr(self, attr_name)

    def seed(self, seed: int | None = None):
        return [seed] * self.num_envs

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
