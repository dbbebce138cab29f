"""An onnxruntime-backed `Policy`: the exported masked-logits graph, acting greedily.

It satisfies `agents.base.Policy` (``act(ctx, nodes)`` returns levels [E, len(nodes), K]), so
evaluation can run an exported artifact exactly as it runs the torch network, and it adds
`act_rows` for the serving shim, which scores only the rows it was asked about. Greedy means the
first level with the largest logit per SKU, as ``torch.argmax`` picks; confidence is the mean over
SKUs of the probability (softmax of the masked logits) of the chosen level, as `TorchPolicy` reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit


@njit(cache=True)
def _greedy(lg, K, L, levels, conf):
    """levels[b, k] = first argmax over l of lg[b, k*L + l]; conf[b] = mean over k of the softmax
    probability of that level (1 / sum exp(logit - max) in float32, averaged in float64: it can differ
    from `TorchPolicy`'s float32 mean in the last float32 digit). One pass over the logits; False (and
    nothing reliable written) when a logit is not finite."""
    B = lg.shape[0]
    one = np.float32(1.0)
    for b in range(B):
        acc = 0.0
        for k in range(K):
            o = k * L
            best = lg[b, o]
            arg = 0
            for l in range(1, L):
                v = lg[b, o + l]
                if v > best:
                    best = v
                    arg = l
            z = np.float32(0.0)
            for l in range(L):
                v = lg[b, o + l]
                if not np.isfinite(v):
                    return False
                z += np.exp(v - best)
            levels[b, k] = arg
            acc += one / z
        conf[b] = acc / K
    return True


class PolicyError(RuntimeError):
    """The model could not produce a decision (runtime failure or non-finite logits)."""


class OnnxPolicy:
    """One role's exported network behind onnxruntime (CPU, one thread per session)."""

    output = "levels"

    def __init__(
        self, path: str | Path, levels: int, name: str = "onnx", version: str = "1", threads: int = 1
    ):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != ["obs", "mask"]:
            raise ValueError(f"{path}: expected inputs ['obs', 'mask'], the model has {names}")
        self.levels = int(levels)
        self.name = name
        self.version = version
        self.last_confidence: np.ndarray | None = None

    def logits(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Masked logits [B, K*L] for obs [B, D] float32 and mask [B, K*L] float32."""
        try:
            out = self.session.run(
                ["logits"],
                {
                    "obs": np.ascontiguousarray(obs, dtype=np.float32),
                    "mask": np.ascontiguousarray(mask, dtype=np.float32),
                },
            )[0]
        except Exception as exc:
            raise PolicyError(f"{self.name}: inference failed: {exc}") from exc
        return out

    def act_rows(self, obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy levels [B, K] and confidences [B] for observation rows obs [B, D] and masks
        mask [B, K, >= L] (int8 or float, level l of SKU k allowed)."""
        B, K = mask.shape[0], mask.shape[1]
        L = self.levels
        m = mask[:, :, :L].reshape(B, K * L).astype(np.float32)
        lg = self.logits(obs, m)
        lv = np.empty((B, K), np.int64)
        conf = np.empty(B, np.float64)
        if not _greedy(np.ascontiguousarray(lg, dtype=np.float32), K, L, lv, conf):
            raise PolicyError(f"{self.name}: non-finite logits")
        return lv, conf

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        nodes = np.asarray(nodes)
        E, K = ctx.obs.shape[0], ctx.compiled.K
        obs = ctx.obs[:, nodes].reshape(E * len(nodes), -1)
        mask = ctx.mask[:, nodes].reshape(E * len(nodes), K, -1)
        lv, conf = self.act_rows(obs, mask)
        self.last_confidence = conf.reshape(E, len(nodes))
        return lv.reshape(E, len(nodes), K)
