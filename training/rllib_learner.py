"""RLlib's PPO learner with what restock's SB3 path reports and honours: the approximate KL between the
sampling policy and the updated one, the clip fraction, and ``ppo.target_kl`` early stopping.

RLlib 2.60's ``mean_kl_loss`` is the KL *penalty* term, computed only with ``use_kl_loss=True`` (restock
switches the adaptive penalty off, so it is always 0). ``approx_kl`` here is the estimator SB3 logs
(``train/approx_kl``, Schulman's k3: ``mean((r - 1) - log r)`` with ``r = pi_new / pi_old`` of the
sampled action), so the two trainers' ``losses/approx_kl`` mean the same thing.

Early stopping follows SB3 (``MaskablePPO.train``): once a minibatch's ``approx_kl`` exceeds
``1.5 * target_kl``, that minibatch and the rest of the iteration's epochs make no optimiser step.
The loss of a stopped module is returned without a gradient path, so its parameters keep ``grad=None``
and torch's optimisers skip them. With several remote learners each learner would decide on its own
shard and their weights would drift apart, so the trainer refuses ``target_kl`` with more than one
learner (see ``training.rllib_train.check_experiment``).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns

APPROX_KL_KEY = "approx_kl"
CLIP_FRACTION_KEY = "clip_fraction"
KL_STOPPED_KEY = "kl_early_stopped"


def approx_kl(logp_new: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """SB3's estimator of KL(old || new) from the log-probabilities of the sampled actions."""
    log_ratio = logp_new - logp_old
    return torch.mean((torch.exp(log_ratio) - 1.0) - log_ratio)


class RestockPPOLearner(PPOTorchLearner):
    """PPOTorchLearner + approx_kl / clip_fraction metrics + SB3-style target_kl early stopping.

    ``learner_config_dict["target_kl"]`` (None: no early stopping).
    """

    def build(self) -> None:
        super().build()
        self._kl_stopped: set = set()

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._kl_stopped = set()  # a new iteration: every module may step again

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        module = self.module[module_id].unwrapped()
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        with torch.no_grad():
            logp_new = dist.logp(batch[Columns.ACTIONS])
            logp_old = batch[Columns.ACTION_LOGP]
            log_ratio = self._clipped_log_ratio(module, dist, batch, logp_new - logp_old)
            if Columns.LOSS_MASK in batch:
                m = batch[Columns.LOSS_MASK]
                logp_new, logp_old, log_ratio = logp_new[m], logp_old[m], log_ratio[m]
            kl = self._approx_kl(logp_new, logp_old, log_ratio)
            clip = torch.mean((torch.abs(torch.exp(log_ratio) - 1.0) > config.clip_param).float())
        target = (config.learner_config_dict or {}).get("target_kl")
        if target is not None and module_id not in self._kl_stopped and float(kl) > 1.5 * float(target):
            self._kl_stopped.add(module_id)
        self.metrics.log_value((module_id, APPROX_KL_KEY), kl.item(), reduce="mean")
        self.metrics.log_value((module_id, CLIP_FRACTION_KEY), clip.item(), reduce="mean")
        self.metrics.log_value(
            (module_id, KL_STOPPED_KEY), float(module_id in self._kl_stopped), reduce="max", window=1
        )
        loss = self._ppo_loss(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        if module_id in self._kl_stopped:
            return loss.detach()  # no gradient path: the optimiser skips this module's parameters
        return loss

    def _clipped_log_ratio(self, module, dist, batch, joint: torch.Tensor) -> torch.Tensor:
        """The log-probability ratios PPO clips (for the clip fraction): the joint action's here."""
        return joint

    def _approx_kl(
        self, logp_new: torch.Tensor, logp_old: torch.Tensor, log_ratio: torch.Tensor
    ) -> torch.Tensor:
        """The KL that is logged and checked against ``target_kl``: the joint action's here."""
        return approx_kl(logp_new, logp_old)

    def _ppo_loss(self, *, module_id, config, batch, fwd_out):
        """The loss (RLlib's PPO loss here; `training.rllib_pairs.PairPPOLearner`: per (node, SKU) pair)."""
        return super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )

    def compute_gradients(self, loss_per_module, **kwargs):
        grads = super().compute_gradients(loss_per_module, **kwargs)
        # a stopped module's parameters have no gradient (None): leave them out of clipping and stepping
        return {pid: g for pid, g in grads.items() if g is not None}
