"""The policy network both trainers use: one MLP applied to every SKU with shared weights.

An agent's observation is K blocks of F per-SKU features followed by G node features
(`envs.types.SKU_FEATURES_FIXED`, pipeline slots, `envs.types.NODE_FEATURES`). The network
normalises features with fixed statistics (measured on rollouts of a baseline before training and
stored with the weights, so export and serving see exactly the same transform), concatenates each
SKU's features with the node context, and maps them through one shared MLP to L logits per SKU. The
value head mean-pools the per-SKU embeddings, adds the node context (and optionally a global state
for a centralised critic) and outputs one value. The same weights therefore serve any SKU count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

MASK_MIN = -1e8  # large-finite masked logit (never -inf: it breaks entropies and ONNX)
CLIP = 10.0  # normalised features are clipped to [-CLIP, CLIP]


@dataclass
class NetConfig:
    n_skus: int  # K (informational: the network itself works for any K)
    sku_features: int  # F
    node_features: int  # G
    levels: int  # L
    hidden: tuple[int, ...] = (64, 64)
    value_hidden: tuple[int, ...] = (64,)
    global_state: int = 0  # >0: the value head also sees a global state vector of this size
    feat_mean: list[float] = field(default_factory=list)  # F + G normalisation statistics
    feat_std: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["value_hidden"] = list(self.value_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        d = dict(d)
        d["hidden"] = tuple(d.get("hidden", (64, 64)))
        d["value_hidden"] = tuple(d.get("value_hidden", (64,)))
        return cls(**d)


def _mlp(sizes: list[int], act=nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers)


class PerSkuNet(nn.Module):
    """obs [B, K*F + G] (+ mask [B, K*L]) -> masked logits [B, K*L] and values [B]."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        F, G, L = cfg.sku_features, cfg.node_features, cfg.levels
        mean = np.asarray(cfg.feat_mean or np.zeros(F + G), np.float32)
        std = np.asarray(cfg.feat_std or np.ones(F + G), np.float32)
        self.register_buffer("feat_mean", torch.as_tensor(mean))
        self.register_buffer("feat_std", torch.as_tensor(np.maximum(std, 1e-3)))
        h = list(cfg.hidden)
        self.body = _mlp([F + G, *h])
        self.logits = nn.Linear(h[-1], L)
        self.value_body = _mlp([h[-1] + G + cfg.global_state, *cfg.value_hidden])
        self.value = nn.Linear(cfg.value_hidden[-1], 1)
        nn.init.orthogonal_(self.logits.weight, gain=0.01)
        nn.init.zeros_(self.logits.bias)
        nn.init.orthogonal_(self.value.weight, gain=1.0)

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        F, G = self.cfg.sku_features, self.cfg.node_features
        B = obs.shape[0]
        K = (obs.shape[1] - G) // F
        sku = obs[:, : K * F].reshape(B, K, F)
        ctx = obs[:, K * F :]
        return sku, ctx

    def embed(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sku, ctx = self.split(obs)
        F = self.cfg.sku_features
        # clipped like VecNormalize: states far outside the baseline's (early exploration) must not
        # saturate the tanh units
        sku_n = ((sku - self.feat_mean[:F]) / self.feat_std[:F]).clamp(-CLIP, CLIP)
        ctx_n = ((ctx - self.feat_mean[F:]) / self.feat_std[F:]).clamp(-CLIP, CLIP)
        x = torch.cat([sku_n, ctx_n.unsqueeze(1).expand(-1, sku.shape[1], -1)], dim=-1)
        return self.body(x), ctx_n  # [B, K, H], [B, G]

    def forward_logits(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        emb, _ = self.embed(obs)
        logits = self.logits(emb).reshape(obs.shape[0], -1)  # [B, K*L]
        if mask is not None:
            logits = torch.where(mask > 0.5, logits, torch.full_like(logits, MASK_MIN))
        return logits

    def forward_value(self, obs: torch.Tensor, global_state: torch.Tensor | None = None) -> torch.Tensor:
        emb, ctx_n = self.embed(obs)
        pooled = emb.mean(dim=1)
        parts = [pooled, ctx_n]
        if self.cfg.global_state:
            if global_state is None:
                raise ValueError("this network has a centralised critic: pass global_state")
            parts.append(global_state)
        return self.value(self.value_body(torch.cat(parts, dim=-1))).squeeze(-1)

    def forward(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked logits [B, K*L]: the exported inference graph."""
        return self.forward_logits(obs, mask)


def greedy_levels(logits: torch.Tensor, K: int, L: int) -> torch.Tensor:
    return logits.reshape(logits.shape[0], K, L).argmax(dim=-1)


def sample_levels(logits: torch.Tensor, K: int, L: int, generator: torch.Generator | None = None):
    """Sampled levels [B, K] and their summed log-probabilities [B]."""
    lg = logits.reshape(logits.shape[0], K, L)
    probs = torch.softmax(lg, dim=-1)
    flat = torch.multinomial(probs.reshape(-1, L), 1, generator=generator).reshape(lg.shape[0], K)
    logp = torch.log_softmax(lg, dim=-1).gather(-1, flat.unsqueeze(-1)).squeeze(-1).sum(-1)
    return flat, logp


def feature_stats(obs: np.ndarray, F: int, G: int) -> tuple[list[float], list[float]]:
    """Per-feature mean and std of observations [B, K*F + G], pooling SKUs (all SKUs share the net)."""
    B = obs.shape[0]
    K = (obs.shape[1] - G) // F
    sku = obs[:, : K * F].reshape(B * K, F)
    ctx = obs[:, K * F :]
    mean = np.concatenate([sku.mean(0), ctx.mean(0)])
    std = np.concatenate([sku.std(0), ctx.std(0)])
    return mean.astype(float).tolist(), np.maximum(std, 1e-3).astype(float).tolist()
