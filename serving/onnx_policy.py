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
        if not np.isfinite(lg).all():
            raise PolicyError(f"{self.name}: non-finite logits")
        lg = lg.reshape(B, K, L)
        lv = lg.argmax(axis=-1)
        # softmax of the chosen (largest) logit: exp(0) / sum exp(logits - max), the same float32
        # operations as normalising every level and picking the chosen one, without doing the rest
        ez = np.exp(lg - lg.max(axis=-1, keepdims=True))
        chosen = np.float32(1.0) / ez.sum(axis=-1)
        return lv.astype(np.int64), chosen.mean(axis=-1)

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        nodes = np.asarray(nodes)
        E, K = ctx.obs.shape[0], ctx.compiled.K
        obs = ctx.obs[:, nodes].reshape(E * len(nodes), -1)
        mask = ctx.mask[:, nodes].reshape(E * len(nodes), K, -1)
        lv, conf = self.act_rows(obs, mask)
        self.last_confidence = conf.reshape(E, len(nodes))
        return lv.reshape(E, len(nodes), K)
