"""RLlib's face of the simulator: one native MultiAgentEnv holding E kernel environments.

Design (issue 10, item 2). Ray 2.60 vectorises multi-agent envs only synchronously: a Python loop
over one-environment copies, each stepping the kernel on its own. Here one RLlib env *is* the
batch: it holds an `ArrayEnv` of ``num_envs`` = E environments, and RLlib is configured with one such
env per env runner (``num_envs_per_env_runner=1``). Each RLlib step is therefore one kernel call (and
one shield call, one baseline call) over all E environments, and RLlib's one forward pass per step
covers every agent of every environment. RLlib agents are (environment, node) pairs with ids
``"{node id}_e{e}"`` (``store_3_e5``): each has its own trajectory, rewards and value bootstrap, as
one agent of one environment had before, and the policy mapping by role prefix is unchanged. All
environments share the horizon, so the E episodes start and end together and RLlib sees one episode
per E kernel episodes; one RLlib env step is E environment steps (`kernel_envs_per_step`), which the
trainer and the benchmark convert back.

Only the agents of the trained roles are RLlib agents; any other role is played inside the env by
the baseline heuristic, so RLlib never samples for it. Observations are renamed for RLlib's masking
convention: ``{"observations": ..., "action_mask": ...}`` (plus ``"global_state"`` for a centralised
critic). Shield and costs are exactly those of the PettingZoo env: the same ArrayEnv and the same
shield hook run underneath. Rewards are the kernel's per-node rewards, except that a trained DC's is by
default the mean over its region (itself and its stores; ``dc_reward``), since a DC's own cost does not
charge it for the sales its stores lose.

Centralised critic (issue 10, item 6; ``central_critic``): every agent's observation also carries
``"global_state"``, MAPPO's agent-specific global state in pooled form (`RLlibInventoryEnv._global`):
per SKU, the state of the node's parent, the mean of its children, and the means over all stores and
all DCs. Only the value function reads it (`training.rllib_module`), so the deployed policies act on
their own observation, as in serving.

Sample paths (item 1). Every (env runner, sub-environment, episode) plays its own demand and
lead-time stream, reproducible from the run seed: environment e of the j-th episode of env runner w
plays the kernel's sample path ``path_id(seed, w, v * E + e, j)``, a 63-bit number drawn by
``numpy.random.SeedSequence(entropy=seed, spawn_key=(w, v * E + e, j))`` (the kernel hashes
(seed, path) into the demand and lead-time draws, `envs.rng`). ``w`` is RLlib's
``EnvContext.worker_index`` (0 for the local env runner, 1.. for remote ones). RLlib 2.60's new API
stack gives every sub-environment of a runner the same EnvContext (its ``vector_index`` is always 0);
sub-environment v is told apart only by its first reset seed, ``config.seed + worker_index + v``
(`EnvRunner.__init__`, `SyncVectorMultiAgentEnv.reset`), from which ``v`` is recovered (evaluation
runners add 1,000,000, which keeps their paths apart too). Adding runners or environments therefore
adds distinct paths, and a run replays its paths from its seed.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.roles import role_nodes
from restock.envs.types import C_HOLD, C_STOCKOUT, K_DEMAND, K_FILLED

_PATH_MASK = (1 << 63) - 1


def path_id(seed: int, runner: int, env_index: int, episode: int) -> int:
    """The sample path (a 63-bit id) of one (env runner, sub-environment, episode), from the run seed."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(runner), int(env_index), int(episode)))
    return int(ss.generate_state(1, np.uint64)[0]) & _PATH_MASK


GLOBAL_SKU_FEATURES = (
    16  # per SKU in the centralised critic's input: 4 features x (parent, children, stores, DCs)
)


def global_state_dim(K: int) -> int:
    """Size of the centralised critic's input (`RLlibInventoryEnv._global`) for K SKUs."""
    return K * GLOBAL_SKU_FEATURES + 1


def kernel_envs_per_step(env_config: dict | None) -> int:
    """Environment steps in one RLlib env step (the kernel environments one RLlib env holds)."""
    return int((env_config or {}).get("num_envs", 1))


class RLlibInventoryEnv(MultiAgentEnv):
    """env_config: scenario (dict or name), roles, baseline {policy, knobs}, reward_scale, seed,
    num_envs (kernel environments held, default 1), shield (bool), shield_penalty, central_critic
    (bool), dc_reward ("region" or "own"), pair_credit (bool: each agent's info carries its per-SKU rewards
    under ``"pair_rewards"``, `training.rllib_pairs`). An RLlib ``EnvContext`` adds the env runner's
    ``worker_index``."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = dict(config or {})
        self.runner = int(getattr(config, "worker_index", 0) or 0)
        scen = cfg.get("scenario", "tiny")
        self.compiled = compile_scenario(load_scenario(scen))
        c = self.compiled
        shield = None
        if cfg.get("shield", True):
            try:
                from restock.agents.shield import Shield

                shield = Shield(c, mode="enforce")
            except ImportError:
                shield = None
        self.E = kernel_envs_per_step(cfg)
        self.run_seed = int(cfg.get("seed", 0))
        self.env = ArrayEnv(c, num_envs=self.E, seed=self.run_seed, shield=shield)
        self.roles = list(cfg.get("roles", ["store", "dc"]))
        self.nodes = np.concatenate([role_nodes(c, r) for r in self.roles]).astype(np.int64)
        base = cfg.get("baseline", {"policy": "base_stock", "knobs": {}})
        self.baseline = JointPolicy(make_policy(base.get("policy", "base_stock"), base.get("knobs")))
        self.baseline.bind(c)
        self._base_roles = [
            (r, role_nodes(c, r)) for r in ("dc", "store") if r not in self.roles and len(role_nodes(c, r))
        ]
        self.reward_scale = float(cfg.get("reward_scale", 1.0))
        self.shield_penalty = float(cfg.get("shield_penalty", 0.0))
        self.central = bool(cfg.get("central_critic", False))
        # per-(node, SKU) rewards in each agent's info dict (training/rllib_pairs.py)
        self.pair_credit = bool(cfg.get("pair_credit", False))
        self.K = c.K
        self.gdim = global_state_dim(c.K)
        # DCs' rewards: "region" = the mean net cost over the DC and its stores (a DC's own cost has no
        # term for its stores' lost sales, so on its own reward it would learn to starve them); "own"
        self.dc_reward = str(cfg.get("dc_reward", "region"))
        # groups of trained nodes sharing a level count (one per role): gathered as blocks
        self._groups = []
        for r in self.roles:
            ns = role_nodes(c, r).astype(np.int64)
            for L in np.unique(c.params.levels[ns]):
                self._groups.append((ns[c.params.levels[ns] == L], int(L)))
        # agent table, environment-major: (agent id, group, e, index in group, node)
        self._table = []
        for e in range(self.E):
            for g, (ns, _) in enumerate(self._groups):
                for i, n in enumerate(ns):
                    self._table.append((f"{c.agent_ids[n]}_e{e}", g, e, i, int(n)))
        self.possible_agents = [t[0] for t in self._table]
        self.agents = list(self.possible_agents)
        self._e_idx = np.array([t[2] for t in self._table], np.int64)
        self._n_idx = np.array([t[4] for t in self._table], np.int64)
        spaces, act = {}, {}
        for g, (_, L) in enumerate(self._groups):
            d = {
                "observations": gymnasium.spaces.Box(-np.inf, np.inf, (self.env.obs_dim,), np.float32),
                "action_mask": gymnasium.spaces.Box(0.0, 1.0, (self.K * L,), np.float32),
            }
            if self.central:
                d["global_state"] = gymnasium.spaces.Box(-np.inf, np.inf, (self.gdim,), np.float32)
            spaces[g] = gymnasium.spaces.Dict(d)
            act[g] = gymnasium.spaces.MultiDiscrete(np.full(self.K, L, np.int64))
        self.observation_spaces = {t[0]: spaces[t[1]] for t in self._table}
        self.action_spaces = {t[0]: act[t[1]] for t in self._table}
        self._episode = 0
        self._sub = 0  # this env's index among its runner's RLlib sub-environments
        self._levels_buf = np.zeros((self.E, c.N, c.K), np.int64)
        self._q = np.zeros((self.E, c.N, c.K), np.int32)
        parent = c.params.parent
        self._children = [(ch, int(parent[ch])) for ch in range(c.N) if parent[ch] >= 0]
        self._n_children = np.bincount([par for _, par in self._children], minlength=c.N)
        # region mixing matrix: reward'[n] = sum_m R[n, m] reward[m] (identity unless dc_reward=region)
        R = np.eye(c.N)
        if self.dc_reward == "region":
            for n in range(c.N):
                if c.params.is_store[n] == 0:
                    members = [n] + [ch for ch, par in self._children if par == n]
                    R[n] = 0.0
                    R[n, members] = 1.0 / len(members)
        self._R = R

    # ------------------------------------------------------------------ paths
    def episode_paths(self, episode: int) -> np.ndarray:
        """The kernel sample paths [E] of this env's ``episode``-th episode."""
        return np.array(
            [path_id(self.run_seed, self.runner, self._sub * self.E + e, episode) for e in range(self.E)],
            np.int64,
        )

    # ------------------------------------------------------------------ observations
    def _global(self) -> np.ndarray:
        """[E, N, gdim] the centralised critic's input per node (MAPPO's agent-specific global state,
        pooled): per SKU, log1p of 4 state features (on hand, in transit, backlog at stores or owed to
        children at DCs, owed by the parent; each scaled by its node's demand scale) for (a) the node's
        parent (zeros for a DC supplied by a supplier), (b) the mean over its children (zeros for a
        store), (c) the mean over all stores, (d) the mean over all DCs; then the period / horizon.
        A store's critic therefore sees its DC's stock of every SKU and a DC's critic its stores'."""
        s, p = self.env.state, self.compiled.params
        E, N, K = s.on_hand.shape
        owed_out = np.zeros(s.owed.shape, np.float64)
        for ch, par in self._children:
            owed_out[:, par] += s.owed[:, ch]
        back = np.where(p.is_store[None, :, None] == 1, s.backlog, owed_out)
        feats = np.stack([s.on_hand, s.transit, back, s.owed], axis=-1) / p.scale[None, ..., None]
        feats = np.log1p(np.maximum(feats, 0.0))  # [E, N, K, 4]
        parent = np.zeros_like(feats)
        kids = np.zeros_like(feats)
        for ch, par in self._children:
            parent[:, ch] = feats[:, par]
            kids[:, par] += feats[:, ch]
        kids /= np.maximum(self._n_children, 1)[None, :, None, None]
        pooled = [
            np.broadcast_to(feats[:, m].mean(axis=1, keepdims=True), feats.shape)
            if m.any()
            else np.zeros_like(feats)
            for m in (p.is_store == 1, p.is_store == 0)
        ]
        g = np.concatenate([parent, kids, *pooled], axis=-1).reshape(E, N, K * GLOBAL_SKU_FEATURES)
        t = np.broadcast_to((s.t / p.horizon)[:, None, None], (E, N, 1))
        return np.concatenate([g, t], axis=-1).astype(np.float32)

    def _obs(self) -> dict[str, dict[str, np.ndarray]]:
        env = self.env
        blocks = []
        for ns, L in self._groups:
            o = env.obs[:, ns]  # [E, n, D] (a copy)
            m = env.mask[:, ns, :, :L].reshape(self.E, len(ns), -1).astype(np.float32)
            blocks.append((o, m))
        g = self._global() if self.central else None
        out = {}
        for aid, gi, e, i, n in self._table:
            o, m = blocks[gi]
            d = {"observations": o[e, i], "action_mask": m[e, i]}
            if g is not None:
                d["global_state"] = g[e, n]
            out[aid] = d
        return out

    # ------------------------------------------------------------------ episodes
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            # RLlib seeds sub-environment v of runner w with config.seed + w + v (first reset only)
            sub = int(seed) - self.run_seed - self.runner
            self._sub = sub if sub >= 0 else int(seed) & _PATH_MASK
            self._episode = 0
        self.env.reset(paths=self.episode_paths(self._episode))
        self._episode += 1
        self.agents = list(self.possible_agents)
        self._safety = np.zeros(3)  # node-SKU decisions, interventions, executed violations
        return self._obs(), {}

    def _baseline_qty(self) -> np.ndarray:
        """Quantities [E, N, K] of the untrained roles (zero elsewhere)."""
        env, c = self.env, self.compiled
        qty = np.zeros((self.E, c.N, c.K), np.int64)
        for role, ns in self._base_roles:
            pol = self.baseline.policies[role]
            out = np.asarray(pol.act(env, ns))
            if pol.output == "levels":
                full = np.zeros((self.E, c.N, c.K), np.int64)
                full[:, ns] = out
                q = np.zeros((self.E, c.N, c.K), np.int32)
                kn.levels_to_qty(c.params, env.state, env.work, full, q)
                qty[:, ns] = q[:, ns]
            else:
                qty[:, ns] = out
        return qty

    def step(self, action_dict: dict[str, Any]):
        env, c = self.env, self.compiled
        qty = self._baseline_qty()
        lv = self._levels_buf
        lv[:] = 0
        if len(action_dict) == len(self._table):
            lv[self._e_idx, self._n_idx] = np.stack([action_dict[a] for a in self.possible_agents])
        else:
            for a, _, e, _, n in self._table:
                if a in action_dict:
                    lv[e, n] = action_dict[a]
        # unmasked samples (RLlib's pre-checks) are clipped to allowed levels, as in clip mode
        kn.check_levels(c.params, lv, env.mask, True)
        kn.levels_to_qty(c.params, env.state, env.work, lv, self._q)
        qty[:, self.nodes] = self._q[:, self.nodes]
        if self.pair_credit:
            before, tc = env.state.on_hand.copy(), min(env.t, c.horizon)
        _, _, reward, done, info = env.step_qty(qty)
        obs = self._obs()
        if self.dc_reward == "region":
            reward = reward @ self._R.T
        r = reward[self._e_idx, self._n_idx] / self.reward_scale
        cc = info.get("constraint_cost")
        if self.shield_penalty and cc is not None:
            r = r - self.shield_penalty * cc[self._e_idx, self._n_idx]
        rewards = dict(zip(self.possible_agents, r.tolist(), strict=True))
        if "shield_sku_decisions" in info:
            self._safety += [
                np.sum(info["shield_sku_decisions"]),
                np.sum(info["shield_interventions"]),
                np.sum(info["shield_executed_violations"]),
            ]
        infos: dict[str, dict] = {}
        if done:
            ep = info["episode"]
            M = c.M
            dem = ep["kpi"][:, M:, K_DEMAND].sum(axis=1)
            fill = ep["kpi"][:, M:, K_FILLED].sum(axis=1) / np.maximum(dem, 1e-9)
            summary = {  # means over the E episodes that end here
                "episodic_cost": float(ep["cost"].sum(axis=(1, 2)).mean()),
                "fill_rate": float(fill.mean()),
                "holding_cost": float(ep["cost"][:, :, C_HOLD].sum(axis=1).mean()),
                "stockout_cost": float(ep["cost"][:, :, C_STOCKOUT].sum(axis=1).mean()),
                "intervention_rate": float(self._safety[1] / self._safety[0]) if self._safety[0] else 0.0,
                "violations": float(self._safety[2] / self.E),
            }
            infos = {a: {"episode_summary": summary} for a in self.possible_agents}
            self.agents = []
        if self.pair_credit:
            from restock.training.rllib_pairs import PAIR_HORIZON, PAIR_REWARDS, env_pair_rewards

            pr = env_pair_rewards(self, before, tc)
            for a, row in zip(self.possible_agents, pr, strict=True):
                infos.setdefault(a, {})[PAIR_REWARDS] = row
                if done:
                    infos[a][PAIR_HORIZON] = True
        terminateds = {"__all__": False}
        truncateds = dict.fromkeys(self.possible_agents, done)
        truncateds["__all__"] = done
        return obs, rewards, terminateds, truncateds, infos
