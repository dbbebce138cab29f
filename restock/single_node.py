"""A gymnasium face for one-node scenarios: one store ordering from a supplier (``single_lost_sales``,
the ``lost_sales/`` family, or any scenario of yours with no DC and one store).

    env = restock.make("lost_sales/ls_L2_p9")    # or gymnasium.make("restock/SingleNode-v0", scenario=...)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample(mask=info["action_mask"]))

- observation: the node's feature vector (``float32``, the same features the trainers see: per SKU its
  stock, pipeline and demand features, then the node's; names in ``env.feature_names``);
- action: the order level of each SKU (``Discrete(levels)`` for one SKU, ``MultiDiscrete`` for several),
  mapped to a quantity as the scenario's ``action`` block says (order-up-to or lot steps). Levels the
  mask forbids (``info["action_mask"]``, [K, levels] of 0/1, or [levels] for one SKU) are clipped to
  the nearest allowed one, and with ``shield=True`` (the default) every order passes restock's shield, as
  in training, evaluation and serving;
- reward: minus the period's total cost of the node (holding, in-transit holding, stockout or lost
  sales, ordering, overflow), undiscounted: apply the scenario's ``discount`` (``env.discount``) yourself;
- the episode ends with ``truncated=True`` at the scenario's horizon (``terminated`` is always False:
  the horizon is a time limit, not a terminal state).

``reset(seed=s)`` draws the episode's sample path from ``s``: the same seed gives the same demand.
Networks with DCs or several stores are refused (use ``restock.parallel_env`` or ``restock.ArrayEnv``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import restock.gym_registration  # noqa: F401  (registers restock/SingleNode-v0)
from restock.envs.array_env import ArrayEnv, compile_any
from restock.envs.types import NODE_FEATURES


class SingleNodeEnv(gym.Env):
    """One store, one agent: a ``gymnasium.Env`` over restock's kernel (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, scenario: Any = "single_lost_sales", shield: bool = True, **overrides: Any):
        c = compile_any(scenario, **overrides)
        if c.N != 1:
            raise ValueError(
                f"restock.make / restock/SingleNode-v0: scenario {c.config.name!r} has {c.M} DC(s) and "
                f"{c.S} store(s); the single-agent face covers one-node scenarios only (one store, no DC, "
                "e.g. single_lost_sales or lost_sales/ls_L2_p9). For networks use "
                "restock.parallel_env (PettingZoo, one agent per node) or restock.ArrayEnv."
            )
        sh = None
        if shield:
            from restock.agents.shield import Shield

            sh = Shield(c)
        self.compiled = c
        self.discount = float(c.config.discount)
        self._env = ArrayEnv(c, num_envs=1, seed=int(c.config.seed), shield=sh)
        self.K = c.K
        self.levels = int(c.params.levels[0])
        self.feature_names = [f"sku{k}.{f}" for k in range(c.K) for f in c.sku_features] + list(NODE_FEATURES)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(self._env.obs_dim,), dtype=np.float32)
        if self.K == 1:
            self.action_space = spaces.Discrete(self.levels)
        else:
            self.action_space = spaces.MultiDiscrete(np.full(self.K, self.levels, np.int64))

    def _mask(self) -> np.ndarray:
        m = self._env.mask[0, 0, :, : self.levels]
        return m[0].copy() if self.K == 1 else m.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        path = int(self.np_random.integers(0, 2**31 - 1))
        obs, _ = self._env.reset(paths=np.array([path], np.int64))
        return obs[0, 0].copy(), {"action_mask": self._mask(), "path": path}

    def step(self, action):
        lv = np.asarray(action, np.int64).reshape(1, 1, self.K)
        obs, _, _, done, info = self._env.step(lv)
        cost = info["cost"][0, 0]
        out = {
            "action_mask": self._mask(),
            "cost": float(cost.sum()),
            "ordered": info["executed"][0, 0].copy(),
            "period": self._env.t,
        }
        return obs[0, 0].copy(), -float(cost.sum()), False, bool(done), out


def make(scenario: Any = "single_lost_sales", **kwargs: Any) -> SingleNodeEnv:
    """The single-agent gymnasium env of a one-node scenario (a shipped name, a YAML path, a mapping or a
    config); keywords are ``shield`` and scenario overrides (``horizon=100``, ``demand__mean=4``)."""
    return SingleNodeEnv(scenario, **kwargs)
