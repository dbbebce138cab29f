"""Per-(node, SKU) credit on the RLlib path (``rllib.pair_credit: true``): `--trainer pair_ppo`'s
reward, critic and loss under RLlib 2.60's new API stack.

With one reward per agent a node's K SKU actions share one advantage, so each SKU's action is credited
with the other SKUs' noise (`training.pair_ppo` explains why that stalls many-SKU scenarios). With pair
credit, per agent (node) and step:

- **rewards** (`env_pair_rewards`): the env puts the node's per-SKU rewards [K] in the agent's info dict
  under ``"pair_rewards"``: minus `envs.pair_costs.pair_costs` of the node (a DC's, with ``rllib.dc_reward``
  "region", the default: `envs.pair_costs.subtree_costs`, its SKU's cost over itself and every node below it;
  with "own": the DC's own cost of the SKU), divided by the env's ``reward_scale`` like the node reward.
  Every step checks the pairs against the kernel's node costs (`envs.pair_costs.check_pair_costs`). A store's
  pair rewards add up to its node reward; a DC's add up to its subtree's net cost ("region"; its node
  reward is then the region mean) or to its node reward ("own").
- **batch** (`PairRewardsToBatch`, a learner connector right after RLlib's
  ``AddOneTsToEpisodesAndTruncate``): the info of step t is the agent episode's info t + 1 (info 0 is
  the reset's, or the previous chunk's last step), so row t of the batch gets ``infos[t + 1]`` and the
  artificial bootstrap row RLlib appends to each episode chunk gets zeros (its ``LOSS_MASK`` is False).
  The column is built with the same episode iterator and `add_n_batch_items` as RLlib's own columns, so
  its rows line up with them through ``AgentToModuleMapping`` and ``BatchIndividualItems``.
- **values**: `PerSkuRLModule` gets a per-SKU value head (`pair_ppo.PairCritic`, values [B, K]).
- **advantages** (`PairGAE`, in place of RLlib's ``GeneralAdvantageEstimation``): RLlib's
  ``compute_value_targets`` arithmetic (ray/rllib/utils/postprocessing/value_predictions.py) per SKU
  column (`pair_value_targets`): ``terminateds`` gate the bootstrap, ``truncateds`` (the last real row
  of every chunk that did not terminate) stop the recursion but bootstrap from V(s_T), read from the
  artificial row. The step that reaches the scenario's horizon ends the evaluated problem: the env says
  so in its info (``"pair_horizon"``), `PairRewardsToBatch` marks that row (``"pair_terminal"``) and
  `PairGAE` treats it as terminal (no value after the horizon, as `pair_ppo`), where RLlib would
  bootstrap from V(s_T) of a truncated episode. Advantages [B, K] are standardised over the real rows
  and all SKUs (RLlib's GAE standardises over the module's rows, bootstrap rows included).
- **loss** (`PairPPOLearner`): PPO's clipped surrogate per pair (per-SKU log-prob ratio x per-SKU
  advantage; the sampling policy's per-SKU log-probs come from the logits the env runner stored,
  ``ACTION_DIST_INPUTS``), per-SKU value loss (clipped at ``vf_clip_param`` like RLlib's), per-SKU
  entropy, each a mean over the real rows and the SKUs (as `pair_ppo._ppo_update`). ``approx_kl`` (the
  logged metric and what ``target_kl`` early stopping checks) and ``clip_fraction`` are per pair, as in
  `pair_ppo`: the joint action's KL is K times a pair's, and with ``target_kl`` on it a 100-SKU store
  stopped after a few minibatches of every iteration, its critic with it (the first version did, and
  its held-out cost on `default` rose by 15% in 14,560 steps). The policy and the critic have an Adam
  optimiser each, so RLlib's ``grad_clip`` (applied per optimiser) bounds their gradient norms apart. The first ``pair_warmup`` iterations (2, `pair_ppo.WARMUP_ITERATIONS`) train the
  critic alone: advantages from an untrained critic would undo the behaviour-cloned start. The warm-up
  counter is the learner's and restarts with a resumed run.

Not supported with pair credit (refused by `check_pair_experiment`): the centralised critic (its value is
per node) and ``shield.penalty`` (a per-node reward term).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate, GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.torch_utils import explained_variance
from restock.envs.pair_costs import check_pair_costs, pair_costs, subtree_costs
from restock.training.pair_ppo import WARMUP_ITERATIONS
from restock.training.rllib_learner import RestockPPOLearner

PAIR_REWARDS = "pair_rewards"  # info key (env) and batch column (learner): per-SKU rewards [K]
PAIR_HORIZON = "pair_horizon"  # info key (env): this step ended the episode at the scenario's horizon
PAIR_TERMINAL = "pair_terminal"  # batch column (learner): 1 on the last row of an episode that ended so
PAIR_WARMUP_KEY = "pair_warmup"  # learner metric: 1 while the critic trains alone


def check_pair_experiment(exp) -> None:
    """Refuse what pair credit cannot honour (ValueError naming the field)."""
    if not exp.rllib.pair_credit:
        return
    if exp.network.centralised_critic:
        raise ValueError(
            "network.centralised_critic: rllib.pair_credit has a critic per (node, SKU) pair; use one of them"
        )
    if exp.shield.penalty:
        raise ValueError("shield.penalty: not supported with rllib.pair_credit (a per-node reward term)")


# ------------------------------------------------------------------------------------------------
# the env side


def env_pair_rewards(env, on_hand_before: np.ndarray, tc: int) -> np.ndarray:
    """Per-SKU rewards [agents, K] of the step just taken by ``env`` (an `RLlibInventoryEnv`), in its
    ``possible_agents`` order: minus the pair costs of each agent's node, over the env's ``reward_scale``.
    A DC pair's cost is its SKU's cost over the DC's subtree (``dc_reward`` "region", the default) or the
    DC's own (``dc_reward`` "own": its ordering, holding and the stockout penalty on what it owes or
    cancels to its stores, without the stores' own costs)."""
    c = env.compiled
    p = c.params
    pc = pair_costs(p, env.env.state, on_hand_before, tc)
    check_pair_costs(pc, env.env.out, bool(p.include_revenue), c.config.name)
    credit = pc
    if env.dc_reward == "region" and not np.all(p.is_store[env.nodes] == 1):  # a trained DC: its subtree
        credit = np.where(p.is_store.astype(bool)[None, :, None], pc, subtree_costs(p, pc))
    return (-credit[env._e_idx, env._n_idx] / env.reward_scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# the learner connectors


class PairRewardsToBatch(ConnectorV2):
    """Learner connector: the ``"pair_rewards"`` column [rows, K] from the agents' infos (after
    ``AddOneTsToEpisodesAndTruncate``: row t gets info t + 1, the artificial last row zeros)."""

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, shared_data=None, **kwargs):
        for sa in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            n = len(sa)  # this chunk's rows, the artificial bootstrap row included
            infos = sa.get_infos()
            if len(infos) != n + 1:
                raise RuntimeError(f"pair credit: {len(infos)} infos for {n} rows of agent {sa.agent_id}")
            K = int(rl_module[sa.module_id].K)
            rows = np.zeros((n, K), np.float32)
            terminal = np.zeros(n, np.float32)
            if n > 1 and infos[n - 1].get(PAIR_HORIZON):
                terminal[n - 2] = 1.0  # the last real row ended the episode at the horizon
            if n > 1:
                try:
                    rows[: n - 1] = np.stack([info[PAIR_REWARDS] for info in infos[1:n]])
                except KeyError:
                    raise RuntimeError(
                        f"pair credit: agent {sa.agent_id}'s infos lack {PAIR_REWARDS!r} (the env must be "
                        "built with pair_credit=True)"
                    ) from None
            self.add_n_batch_items(batch, PAIR_REWARDS, rows, n, sa)
            self.add_n_batch_items(batch, PAIR_TERMINAL, terminal, n, sa)
        return batch


def _pair_gae(values, rewards, terminateds, truncateds, gamma, lambda_):
    """Advantages [B, K]: adv[t] = delta[t] + gamma lambda propagate[t] adv[t + 1]. Runs of rows that
    propagate are one linear filter each (scipy's lfilter over the reversed run, all SKUs at once). Not
    a Numba loop: a function compiled while `restock train` runs fails once numba's threads are up (its
    NUMBA_NUM_THREADS is set after numba read the default; numba.core.config.reload_config raises)."""
    from scipy.signal import lfilter

    n = rewards.shape[0]
    nonterm = 1.0 - terminateds
    propagate = nonterm * (1.0 - truncateds)
    if not np.all((propagate == 0.0) | (propagate == 1.0)):
        raise ValueError("pair credit: terminateds and truncateds must be 0 or 1")
    delta = rewards - values
    delta[:-1] += (gamma * nonterm[:-1, None]) * values[1:]
    adv = np.empty_like(delta)
    num, den = np.ones(1, delta.dtype), np.array([1.0, -gamma * lambda_], delta.dtype)
    ends = np.union1d(np.flatnonzero(propagate == 0.0), [n - 1]) if n else []
    start = 0
    for end in ends:  # rows start..end: the recursion runs within, and stops at `end`
        seg = delta[start : end + 1][::-1]
        adv[start : end + 1] = lfilter(num, den, seg, axis=0)[::-1]
        start = int(end) + 1
    return adv


def pair_value_targets(values, rewards, terminateds, truncateds, gamma: float, lambda_: float) -> np.ndarray:
    """GAE value targets [B, K]: RLlib 2.60's ``compute_value_targets`` (a flat batch of episode chunks
    cut by ``terminateds`` / ``truncateds`` [B]) for each SKU column of ``values`` / ``rewards`` [B, K]."""
    v = np.asarray(values, np.float32)
    adv = _pair_gae(
        v,
        np.asarray(rewards, np.float32),
        np.asarray(terminateds, np.float32).reshape(-1),
        np.asarray(truncateds, np.float32).reshape(-1),
        float(gamma),
        float(lambda_),
    )
    adv += v
    return adv


class PairGAE(ConnectorV2):
    """RLlib's ``GeneralAdvantageEstimation`` per SKU: advantages and value targets [B, K] from the
    module's per-SKU values and the ``"pair_rewards"`` column (last in the learner pipeline)."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, gamma, lambda_):
        super().__init__(input_observation_space, input_action_space)
        self.gamma = gamma
        self.lambda_ = lambda_

    def __call__(self, *, rl_module, episodes, batch: dict[str, Any], **kwargs):
        for mid, mb in batch.items():
            module = rl_module[mid]
            if not isinstance(module, ValueFunctionAPI) or PAIR_REWARDS not in mb:
                continue
            if module.is_stateful():
                raise ValueError("pair credit: stateful (recurrent) modules are not supported")
            with torch.no_grad():
                vt = module.compute_values(mb)
            device = vt.device
            values = convert_to_numpy(vt)
            terminateds = convert_to_numpy(mb[Columns.TERMINATEDS]).astype(np.float32).reshape(-1)
            truncateds = convert_to_numpy(mb[Columns.TRUNCATEDS]).astype(np.float32).reshape(-1)
            if PAIR_TERMINAL in mb:  # the horizon ends the evaluated problem: no value beyond it
                end = convert_to_numpy(mb[PAIR_TERMINAL]).astype(np.float32).reshape(-1)
                terminateds = np.maximum(terminateds, end)
                truncateds = truncateds * (1.0 - end)
            targets = pair_value_targets(
                values,
                convert_to_numpy(mb[PAIR_REWARDS]),
                terminateds,
                truncateds,
                self.gamma,
                self.lambda_,
            )
            adv = targets - values
            real = convert_to_numpy(mb[Columns.LOSS_MASK]).astype(bool) if Columns.LOSS_MASK in mb else None
            sel = adv[real] if real is not None else adv
            adv = (adv - sel.mean()) / max(1e-4, float(sel.std()))
            mb[Postprocessing.ADVANTAGES] = torch.from_numpy(adv.astype(np.float32)).to(device)
            mb[Postprocessing.VALUE_TARGETS] = torch.from_numpy(targets).to(device)
        return batch


# ------------------------------------------------------------------------------------------------
# the learner


def _per_sku_logp(
    logits: torch.Tensor, actions: torch.Tensor, levels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities [B, K, L] of every level and [B, K] of the taken ones, from flat logits."""
    lp = torch.log_softmax(logits.reshape(logits.shape[0], -1, levels), dim=-1)
    return lp, lp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


class PairPPOLearner(RestockPPOLearner):
    """`RestockPPOLearner` with per-pair advantages (`PairRewardsToBatch`, `PairGAE` in place of RLlib's
    GAE) and PPO's loss per (node, SKU) pair. ``learner_config_dict["pair_warmup"]``: critic-only
    iterations at the start (default `pair_ppo.WARMUP_ITERATIONS`)."""

    def build(self) -> None:
        super().build()
        self._pair_updates = 0
        lc = self._learner_connector
        if lc is None or not self.config.add_default_connectors_to_learner_pipeline:
            raise ValueError("rllib.pair_credit needs RLlib's default learner connectors")
        lc.insert_after(AddOneTsToEpisodesAndTruncate, PairRewardsToBatch())
        lc.insert_before(
            GeneralAdvantageEstimation, PairGAE(gamma=self.config.gamma, lambda_=self.config.lambda_)
        )
        lc.remove(GeneralAdvantageEstimation)

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._pair_updates += 1

    def _warming_up(self, config) -> bool:
        n = (config.learner_config_dict or {}).get("pair_warmup", WARMUP_ITERATIONS)
        return self._pair_updates <= int(n)

    def _clipped_log_ratio(self, module, dist, batch, joint: torch.Tensor) -> torch.Tensor:
        _, new = _per_sku_logp(dist.logits, batch[Columns.ACTIONS], module.L)
        _, old = _per_sku_logp(batch[Columns.ACTION_DIST_INPUTS], batch[Columns.ACTIONS], module.L)
        return new - old  # [B, K]: the ratios this loss clips

    def _approx_kl(self, logp_new, logp_old, log_ratio: torch.Tensor) -> torch.Tensor:
        # per pair, as `pair_ppo` (the joint action's KL is K times larger: with target_kl on it a
        # 100-SKU store stopped after a few minibatches of every iteration, its critic with it)
        return torch.mean((torch.exp(log_ratio) - 1.0) - log_ratio)

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        """Two Adam optimisers, the policy's and the per-pair critic's, so that ``grad_clip`` (RLlib
        clips per optimiser) bounds each network's gradient norm on its own, as `pair_ppo` does: with one
        joint norm the critic's regression gradients shrank the policy's steps."""
        module = self._module[module_id].unwrapped()
        critic = list(module.pair_critic.parameters())
        ids = {id(q) for q in critic}
        policy = [q for q in self.get_parameters(self._module[module_id]) if id(q) not in ids]
        for name, params in (("policy", policy), ("critic", critic)):
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.Adam(params),
                params=params,
                lr_or_lr_schedule=config.lr,
            )

    def _ppo_loss(self, *, module_id, config, batch, fwd_out):
        module = self.module[module_id].unwrapped()
        acts = batch[Columns.ACTIONS]
        lp_all, lp_new = _per_sku_logp(fwd_out[Columns.ACTION_DIST_INPUTS], acts, module.L)
        with torch.no_grad():
            _, lp_old = _per_sku_logp(batch[Columns.ACTION_DIST_INPUTS], acts, module.L)
        ratio = torch.exp(lp_new - lp_old)  # [B, K]
        adv = batch[Postprocessing.ADVANTAGES]  # [B, K]
        surrogate = torch.min(
            adv * ratio, adv * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param)
        )
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))  # [B, K]
        targets = batch[Postprocessing.VALUE_TARGETS]
        vf = torch.pow(values - targets, 2.0)
        vf_clipped = torch.clamp(vf, 0, config.vf_clip_param)
        probs = lp_all.exp()
        entropy = -(probs * lp_all).sum(-1)  # [B, K]
        if Columns.LOSS_MASK in batch:
            m = batch[Columns.LOSS_MASK]
            surrogate, vf, vf_clipped, entropy = surrogate[m], vf[m], vf_clipped[m], entropy[m]
            values, targets = values[m], targets[m]
        ent_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        warm = self._warming_up(config)
        policy_terms = -surrogate.mean() - ent_coeff * entropy.mean()
        total = config.vf_loss_coeff * vf_clipped.mean() + (0.0 if warm else 1.0) * policy_terms
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: -surrogate.mean(),
                VF_LOSS_KEY: vf_clipped.mean(),
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: vf.mean(),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(
                    targets.reshape(-1), values.reshape(-1)
                ),
                ENTROPY_KEY: entropy.mean(),
                LEARNER_RESULTS_KL_KEY: torch.tensor(0.0, device=total.device),
                PAIR_WARMUP_KEY: float(warm),
            },
            key=module_id,
            window=1,
        )
        return total
