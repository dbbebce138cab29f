"""The RLlib RLModule: restock's `PerSkuNet` (the same network as the SB3 path) under RLlib's API.

Masking follows RLlib's example (`action_masking_rlm.py`): the flat ``sum(nvec)`` mask comes in the
observation dict and masked logits are pushed to a large negative value; MultiDiscrete actions use a
MultiCategorical over K blocks of L logits. The optional centralised critic feeds
``obs["global_state"]`` to the value head only, so inference never needs it.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from agents.networks import NetConfig, PerSkuNet


class PerSkuRLModule(TorchRLModule, ValueFunctionAPI):
    """model_config: {"net": NetConfig.to_dict()}."""

    @override(RLModule)
    def setup(self):
        cfg = NetConfig.from_dict(self.model_config["net"])
        self.net = PerSkuNet(cfg)
        self.K = int(len(self.action_space.nvec))
        self.L = int(self.action_space.nvec[0])
        self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=[self.L] * self.K)

    def _logits(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.forward_logits(obs["observations"], obs["action_mask"])

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._logits(batch[Columns.OBS])}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        return {Columns.ACTION_DIST_INPUTS: self._logits(obs), Columns.EMBEDDINGS: self._values(obs)}

    def _values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        g = obs.get("global_state") if self.net.cfg.global_state else None
        return self.net.forward_value(obs["observations"], g)

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is not None:
            return embeddings
        return self._values(batch[Columns.OBS])
