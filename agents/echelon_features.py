"""Echelon features for learned policies of multi-echelon networks (serial chains, trees).

A node's own observation (`envs.kernel.observe`) has its installation state only; in a serial chain
the exactly optimal policy (Clark and Scarf) orders on the *echelon* inventory position, which also
counts everything downstream (`agents.echelon`). A network trained with echelon features reads, per
SKU, the kernel's F features followed by one more, ``echelon_position`` (the echelon inventory
position divided by the same node-SKU demand scale as the kernel's quantities); the node features
follow as usual. So its `NetConfig` has ``sku_features = F + 1``, and the run directory marks the role
with ``policies/<role>.features.json`` (``{"extra_sku_features": ["echelon_position"]}``), which
`agents.learned.load_learned_policy` reads to build an `EchelonTorchPolicy` instead of a `TorchPolicy`.

The observation with the extra feature is ``augment(ctx, nodes)``: the caller (evaluation, export
parity, training) builds it from the state. A serving request carries the node's echelon position
itself (``echelon_position``, `serving.schema`), and the engine appends it with `augment_rows`. Only
`make_echelon_policy` needs torch (imported there), so serving can import this module without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from restock.agents.echelon import echelon_positions

EXTRA_SKU_FEATURES = ("echelon_position",)


def features_file(run_dir: str | Path, role: str) -> Path:
    return Path(run_dir) / "policies" / f"{role}.features.json"


def write_features(run_dir: str | Path, role: str) -> None:
    p = features_file(run_dir, role)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"extra_sku_features": list(EXTRA_SKU_FEATURES)}, indent=2))


def uses_echelon(run_dir: str | Path, role: str) -> bool:
    p = features_file(run_dir, role)
    if not p.exists():
        return False
    extra = json.loads(p.read_text()).get("extra_sku_features", [])
    if list(extra) != list(EXTRA_SKU_FEATURES):
        raise ValueError(f"{p}: unknown extra features {extra} (known: {list(EXTRA_SKU_FEATURES)})")
    return True


def demand_scale(params) -> np.ndarray:
    """[N, K] the kernel's node-SKU demand scale (observations divide quantities by it)."""
    return np.maximum(params.mean, 0.1)


def echelon_of(ctx) -> np.ndarray:
    """Echelon inventory positions [E, N, K] (int64) of every node of ctx now."""
    s, p = ctx.state, ctx.params
    out = np.zeros(s.on_hand.shape, np.int64)
    echelon_positions(s.on_hand, s.transit, s.owed, s.backlog, p.parent, out)
    return out


def augment_rows(obs: np.ndarray, eip: np.ndarray, scale: np.ndarray, K: int, F: int) -> np.ndarray:
    """obs [B, K*F + G] and echelon positions eip [B, K] (units), scale [B, K] -> [B, K*(F+1) + G]."""
    B = obs.shape[0]
    sku = obs[:, : K * F].reshape(B, K, F)
    extra = (eip / scale).astype(np.float32)[:, :, None]
    return np.concatenate([np.concatenate([sku, extra], axis=2).reshape(B, -1), obs[:, K * F :]], axis=1)


def augment(ctx, nodes: np.ndarray) -> np.ndarray:
    """Observations with the echelon feature, [E * len(nodes), K*(F+1) + G] float32 (node-major per env)."""
    nodes = np.asarray(nodes, np.int64)
    E, K = ctx.obs.shape[0], ctx.compiled.K
    F = (ctx.obs.shape[2] - _node_features()) // K
    eip = echelon_of(ctx)[:, nodes].reshape(E * len(nodes), K)
    scale = np.broadcast_to(demand_scale(ctx.params)[nodes][None], (E, len(nodes), K)).reshape(-1, K)
    return augment_rows(ctx.obs[:, nodes].reshape(E * len(nodes), -1), eip, scale, K, F)


def _node_features() -> int:
    from restock.envs.types import NODE_FEATURES

    return len(NODE_FEATURES)


def make_echelon_policy(net, **kwargs):
    """An `EchelonTorchPolicy` (a `TorchPolicy` reading the augmented observation)."""
    import torch
    from restock.agents.learned import TorchPolicy

    class EchelonTorchPolicy(TorchPolicy):
        def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
            nodes = np.asarray(nodes)
            E, K = ctx.obs.shape[0], ctx.compiled.K
            L = self.net.cfg.levels
            obs = torch.as_tensor(augment(ctx, nodes))
            mask = torch.as_tensor(
                ctx.mask[:, nodes, :, :L].reshape(E * len(nodes), K * L).astype(np.float32)
            )
            with torch.no_grad():
                logits = self.net.forward_logits(obs, mask).reshape(-1, K, L)
                probs = torch.softmax(logits, dim=-1)
                if self.deterministic:
                    lv = probs.argmax(dim=-1)
                else:
                    lv = torch.multinomial(probs.reshape(-1, L), 1, generator=self._gen).reshape(-1, K)
                chosen = probs.gather(-1, lv.unsqueeze(-1)).squeeze(-1)
            self.last_confidence = chosen.mean(dim=-1).reshape(E, len(nodes)).numpy()
            return lv.reshape(E, len(nodes), K).numpy().astype(np.int64)

    return EchelonTorchPolicy(net, **kwargs)
