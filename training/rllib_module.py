"""The RLlib RLModule: restock's `PerSkuNet` (the same network as the SB3 path) under RLlib's API.

Masking follows RLlib's example (`action_masking_rlm.py`): the flat ``sum(nvec)`` mask comes in the
observation dict and masked logits are pushed to a large negative value. The optional centralised
critic feeds ``obs["global_state"]`` to the value head only, so inference never needs it.

Speed (issue 10, item 2):

- `_forward_train` runs the shared per-SKU body once and feeds both heads from it (the logits and
  the value that RLlib's PPO loss asks for); RLlib's default would run the body twice.
- Actions use `BlockCategorical`, one distribution over K blocks of L logits held as one [B, K, L]
  tensor: sampling, log-probabilities, entropies and KL are single tensor operations, where RLlib's
  `TorchMultiCategorical` builds and loops over K `torch.distributions.Categorical` objects (K = 100
  on `default`).
- `fast_gae` (installed on import) replaces RLlib's per-timestep Python loop in
  `compute_value_targets` with a Numba loop of the same arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.distribution.torch.torch_distribution import TorchDeterministic
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from restock.agents.networks import MASK_MIN, NetConfig, PerSkuNet
from torch import nn


class BlockCategorical(Distribution):
    """K independent categoricals of L levels each, from flat logits [..., K*L] (a MultiDiscrete
    action of K equal blocks). Actions are [..., K] integers; logp, entropy and kl sum over K."""

    def __init__(self, logits: torch.Tensor, levels: int):
        super().__init__()
        self.logits = logits
        self.levels = int(levels)
        lg = logits.reshape(*logits.shape[:-1], -1, self.levels)
        self.log_probs = torch.log_softmax(lg, dim=-1)  # [..., K, L]

    @classmethod
    @override(Distribution)
    def from_logits(cls, logits: torch.Tensor, levels: int, **kwargs) -> BlockCategorical:
        return cls(logits, levels)

    @override(Distribution)
    def sample(self, *, sample_shape=None) -> torch.Tensor:
        # inverse CDF for all B x K categoricals at once: the first level whose cumulative
        # probability reaches u (u > 0, so a level of probability 0 is never drawn)
        cdf = self.log_probs.exp().cumsum(dim=-1)
        u = torch.rand(cdf.shape[:-1] + (1,), dtype=cdf.dtype).clamp_(min=1e-7) * cdf[..., -1:]
        return (cdf < u).sum(dim=-1).clamp_(max=self.levels - 1)

    @override(Distribution)
    def rsample(self, *, sample_shape=None):
        raise NotImplementedError("categorical actions have no reparameterised sample")

    @override(Distribution)
    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        idx = value.long().unsqueeze(-1)
        return self.log_probs.gather(-1, idx).squeeze(-1).sum(-1)

    @override(Distribution)
    def entropy(self) -> torch.Tensor:
        p = self.log_probs.exp()
        return -(p * self.log_probs).sum(dim=(-2, -1))

    @override(Distribution)
    def kl(self, other: BlockCategorical, **kwargs) -> torch.Tensor:
        p = self.log_probs.exp()
        return (p * (self.log_probs - other.log_probs)).sum(dim=(-2, -1))

    @staticmethod
    @override(Distribution)
    def required_input_dim(space, **kwargs) -> int:
        return int(np.sum(space.nvec))

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=torch.argmax(self.log_probs, dim=-1))


class CentralCritic(nn.Module):
    """MAPPO's centralised value function over the shared per-SKU body (the policy stays decentralised).

    Input: the actor's per-SKU embeddings [B, K, H] and node context [B, G] (from one pass of
    `PerSkuNet`'s body) and the global state [B, K * S + 1] (`training.rllib_env.RLlibInventoryEnv._global`:
    S pooled features per SKU, then the period). Each SKU's embedding is joined with that SKU's global
    features and mapped by one shared layer, the result is mean-pooled over SKUs (so the critic, like the
    policy, works for any SKU count), joined with the node context and the period, and mapped to a value.
    Its weights live beside ``net`` in the RLModule and are never part of the deployed policy.
    """

    def __init__(self, hidden: int, node_features: int, sku_global: int, value_hidden: tuple[int, ...]):
        super().__init__()
        self.S = int(sku_global)
        v = list(value_hidden)
        self.sku = nn.Sequential(nn.Linear(hidden + self.S, v[0]), nn.Tanh())
        layers: list[nn.Module] = []
        for a, b in zip([v[0] + node_features + 1, *v], v, strict=False):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(v[-1], 1)
        nn.init.orthogonal_(self.out.weight, gain=1.0)

    def forward(self, emb: torch.Tensor, ctx_n: torch.Tensor, global_state: torch.Tensor) -> torch.Tensor:
        B, K, _ = emb.shape
        g = global_state[:, : K * self.S].reshape(B, K, self.S)
        t = global_state[:, K * self.S :]
        pooled = self.sku(torch.cat([emb, g], dim=-1)).mean(dim=1)
        return self.out(self.body(torch.cat([pooled, ctx_n, t], dim=-1))).squeeze(-1)


class PerSkuRLModule(TorchRLModule, ValueFunctionAPI):
    """model_config: {"net": NetConfig.to_dict(), "central_critic": bool, "pair_credit": bool}. With a
    centralised critic the observation dict carries ``"global_state"`` and the value comes from
    `CentralCritic`; with pair credit the values are per SKU ([B, K], `pair_ppo.PairCritic`)."""

    @override(RLModule)
    def setup(self):
        cfg = NetConfig.from_dict(self.model_config["net"])
        self.net = PerSkuNet(cfg)
        self.critic = None
        if self.model_config.get("central_critic"):
            from restock.training.rllib_env import GLOBAL_SKU_FEATURES

            self.critic = CentralCritic(
                cfg.hidden[-1], cfg.node_features, GLOBAL_SKU_FEATURES, tuple(cfg.value_hidden)
            )
        self.K = int(len(self.action_space.nvec))
        self.L = int(self.action_space.nvec[0])
        # per-(node, SKU) credit (training/rllib_pairs.py): a per-SKU value head, values [B, K]
        self.pair_critic = None
        if self.model_config.get("pair_credit"):
            from restock.training.pair_ppo import PairCritic

            self.pair_critic = PairCritic(self.net, tuple(cfg.value_hidden) or (64,))
        self.action_dist_cls = BlockCategorical.get_partial_dist_cls(levels=self.L)

    @override(RLModule)
    def get_inference_action_dist_cls(self):
        return self.action_dist_cls

    @override(RLModule)
    def get_exploration_action_dist_cls(self):
        return self.action_dist_cls

    @override(RLModule)
    def get_train_action_dist_cls(self):
        return self.action_dist_cls

    def _logits(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """`PerSkuNet.forward_logits` (the same function), masking in place of a second tensor."""
        x = obs["observations"]
        emb, _ = self.net.embed(x)
        logits = self.net.logits(emb).reshape(x.shape[0], -1)
        return logits.masked_fill_(obs["action_mask"] <= 0.5, MASK_MIN)

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._logits(batch[Columns.OBS])}

    # RLlib 2.60's env runners call these with gradients on; acting needs none (the learner
    # recomputes logits in `_forward_train`), and without a graph the pass is several times faster
    @override(RLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            return self._forward(batch, **kwargs)

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            return self._forward(batch, **kwargs)

    def logits_and_values(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked logits [B, K*L] and values [B] from one pass of the shared per-SKU body."""
        net = self.net
        x = obs["observations"]
        emb, ctx_n = net.embed(x)
        logits = net.logits(emb).reshape(x.shape[0], -1)
        logits = logits.masked_fill(obs["action_mask"] <= 0.5, MASK_MIN)
        return logits, self._value_head(emb, ctx_n, obs)

    def _value_head(
        self, emb: torch.Tensor, ctx_n: torch.Tensor, obs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        if self.pair_critic is not None:
            return self.pair_critic(obs["observations"])  # [B, K]
        if self.critic is not None:
            return self.critic(emb, ctx_n, obs["global_state"])
        net = self.net
        parts = [emb.mean(dim=1), ctx_n]
        if net.cfg.global_state:
            parts.append(obs["global_state"])
        return net.value(net.value_body(torch.cat(parts, dim=-1))).squeeze(-1)

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        logits, values = self.logits_and_values(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: values}

    def _values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb, ctx_n = self.net.embed(obs["observations"])
        return self._value_head(emb, ctx_n, obs)

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is not None:
            return embeddings
        return self._values(batch[Columns.OBS])


@njit(cache=True)
def _gae(values, rewards, terminateds, truncateds, gamma, lambda_):
    n = rewards.shape[0]
    adv = np.zeros(n, np.float32)
    running = 0.0
    for t in range(n - 1, -1, -1):
        nonterm = 1.0 - terminateds[t]
        nxt = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * nonterm * nxt - values[t]
        running = delta + gamma * lambda_ * nonterm * (1.0 - truncateds[t]) * running
        adv[t] = running
    return adv


def fast_value_targets(values, rewards, terminateds, truncateds, gamma: float, lambda_: float):
    """RLlib 2.60's `compute_value_targets` (GAE value targets over a flat batch of episode chunks,
    cut by `terminateds`/`truncateds`) with its per-timestep Python loop in Numba."""
    v = np.asarray(values, np.float64)
    adv = _gae(
        v,
        np.asarray(rewards, np.float64),
        np.asarray(terminateds, np.float64),
        np.asarray(truncateds, np.float64),
        float(gamma),
        float(lambda_),
    )
    return (adv + v).astype(np.float32)


def install_fast_gae() -> None:
    """Point RLlib's GAE learner connector at `fast_value_targets` (same results, tested)."""
    from ray.rllib.connectors.learner import general_advantage_estimation as gae

    gae.compute_value_targets = fast_value_targets


install_fast_gae()
