"""Stable-baselines3 path: sb3-contrib MaskablePPO with the per-SKU network, parameter sharing per role.

Roles listed in the experiment are trained one after the other; while one role trains, the other is
played by the tuned baseline heuristic (or, once trained, by its frozen network). Checkpoints hold
everything needed to continue bit for bit: the model (weights, optimiser, counters), the simulator's
state, the sample-path counter and every random generator; they are written at the end of a rollout
(before the update) into a temporary folder that is renamed into place, so a crash never leaves a half
checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from restock.agents.base import JointPolicy
from restock.agents.learned import TorchPolicy, load_role, save_role
from restock.agents.networks import MASK_MIN, NetConfig, PerSkuNet
from restock.envs.compile import Compiled
from restock.training.checkpoints import prune_checkpoints, read_latest
from restock.training.common import (
    Baseline,
    Monitor,
    episodic_objective,
    net_config,
    observation_stats,
    safety_scalars,
    seed_everything,
    write_json_atomic,
)
from restock.training.experiment import ExperimentConfig, resolve_gamma
from restock.training.sb3_env import RoleVecEnv
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.distributions import MaskableDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn


class GroupedMaskableCategorical(MaskableDistribution):
    """MultiDiscrete([L] * K) as one categorical tensor [B, K, L] with masks: the same law as sb3-contrib's
    MaskableMultiCategoricalDistribution, without building K torch distributions per call (which
    dominated training time at 100 SKUs)."""

    def __init__(self, K: int, L: int):
        super().__init__()
        self.K, self.L = K, L
        self.raw: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        self._logp: torch.Tensor | None = None

    def proba_distribution_net(self, latent_dim: int, *args, **kwargs) -> nn.Module:
        return nn.Identity()  # the per-SKU network already outputs the K*L logits

    def proba_distribution(self, action_logits: torch.Tensor) -> GroupedMaskableCategorical:
        self.raw = action_logits.reshape(-1, self.K, self.L)
        self._logp = None
        return self

    def apply_masking(self, masks) -> None:
        self.masks = None if masks is None else torch.as_tensor(masks).reshape(-1, self.K, self.L).bool()
        self._logp = None

    def _log_probs(self) -> torch.Tensor:
        if self._logp is None:
            lg = self.raw
            if self.masks is not None:
                lg = torch.where(self.masks, lg, torch.full_like(lg, MASK_MIN))
            self._logp = torch.log_softmax(lg, dim=-1)
        return self._logp

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        a = actions.reshape(-1, self.K).long().unsqueeze(-1)
        return self._log_probs().gather(-1, a).squeeze(-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        lp = self._log_probs()
        plp = lp.exp() * lp
        if self.masks is not None:
            plp = torch.where(self.masks, plp, torch.zeros_like(plp))
        return -plp.sum(dim=(-1, -2))

    def sample(self) -> torch.Tensor:
        p = self._log_probs().exp().reshape(-1, self.L)
        return torch.multinomial(p, 1).reshape(-1, self.K)

    def mode(self) -> torch.Tensor:
        return self._log_probs().argmax(dim=-1)

    def actions_from_params(self, action_logits: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        self.proba_distribution(action_logits)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, action_logits: torch.Tensor):
        actions = self.actions_from_params(action_logits)
        return actions, self.log_prob(actions)


class _Extractor(nn.Module):
    """SB3's "mlp_extractor": latent_pi are the per-SKU logits, latent_vf the value itself."""

    def __init__(self, net: PerSkuNet):
        super().__init__()
        self.net = net
        self.latent_dim_pi = 0  # set by the policy (K * L)
        self.latent_dim_vf = 1

    def forward(self, features: torch.Tensor):
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.forward_logits(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.forward_value(features).unsqueeze(-1)


class PerSkuMaskablePolicy(MaskableActorCriticPolicy):
    """MaskableActorCriticPolicy whose actor and critic are one `PerSkuNet` (no extra heads)."""

    def __init__(
        self, observation_space, action_space, lr_schedule, net_config: dict | None = None, **kwargs
    ):
        self.net_config = net_config or {}
        kwargs.setdefault("ortho_init", False)
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[], **kwargs)

    def _build_mlp_extractor(self) -> None:
        cfg = NetConfig.from_dict(self.net_config)
        ext = _Extractor(PerSkuNet(cfg))
        ext.latent_dim_pi = int(self.action_space.nvec.sum())
        self.mlp_extractor = ext

    def _build(self, lr_schedule) -> None:
        nvec = self.action_space.nvec
        self.action_dist = GroupedMaskableCategorical(len(nvec), int(nvec[0]))
        super()._build(lr_schedule)
        self.action_net = nn.Identity()
        self.value_net = nn.Identity()
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    @property
    def per_sku_net(self) -> PerSkuNet:
        return self.mlp_extractor.net


# ------------------------------------------------------------------------------------------------
# checkpoints


def build_model(
    venv: RoleVecEnv, exp: ExperimentConfig, cfg: NetConfig, gamma: float, batch: int
) -> MaskablePPO:
    """The MaskablePPO model of a role: the per-SKU policy and the experiment's PPO settings (minibatch
    ``batch`` agent rows). `restock bench --training` builds its SB3 learner here too."""
    ppo = exp.ppo
    return MaskablePPO(
        PerSkuMaskablePolicy,
        venv,
        learning_rate=ppo.learning_rate,
        n_steps=ppo.rollout_steps,
        batch_size=batch,
        n_epochs=ppo.n_epochs,
        gamma=gamma,
        gae_lambda=ppo.gae_lambda,
        clip_range=ppo.clip_range,
        ent_coef=ppo.ent_coef,
        vf_coef=ppo.vf_coef,
        max_grad_norm=ppo.max_grad_norm,
        target_kl=ppo.target_kl,
        seed=exp.seed,
        device="cpu",
        verbose=0,
        policy_kwargs={"net_config": cfg.to_dict()},
    )


def _rng_state() -> dict:
    """The global generators' states as plain JSON (checkpoints hold no pickles)."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state().tolist(),
    }


def _set_rng_state(s: dict) -> None:
    v, keys, gauss = s["python"]
    random.setstate((v, tuple(keys), gauss))
    name, mt, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, np.asarray(mt, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))


def save_checkpoint(
    ckpt_root: Path,
    model: MaskablePPO,
    venv: RoleVecEnv,
    meta: dict,
    keep: int | None = None,
    roles: list[str] | None = None,
) -> Path:
    """Atomically write checkpoints/<steps>/, point checkpoints/latest at it, then keep the newest ``keep``
    folders (``roles``: the run's training order, as each role's env steps start again from 0)."""
    steps = int(meta["env_steps"])
    final = ckpt_root / f"{steps:012d}"
    tmp = ckpt_root / f".tmp-{steps:012d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.zip")
    env = venv.env
    np.savez(
        tmp / "env_state.npz",
        paths=env.paths,
        next_path=env._next_path,
        seed=env.seed,
        **{f"state_{k}": v for k, v in env.state._asdict().items()},
        episode_cost=env.episode_cost,
        episode_kpi=env.episode_kpi,
        episode_revenue=env.episode_revenue,
        ep_return=venv._ep_return,
        last_obs=model._last_obs,
        last_episode_starts=model._last_episode_starts,
    )
    (tmp / "rng.json").write_text(json.dumps(_rng_state()))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(ckpt_root / "latest.json", {"path": final.name, **meta})
    prune_checkpoints(ckpt_root, keep, order=lambda p: _ckpt_order(p, roles or []))
    return final


def _ckpt_order(p: Path, roles: list[str]) -> tuple:
    try:
        role = json.loads((p / "meta.json").read_text()).get("role")
    except (OSError, ValueError):
        role = None
    return (roles.index(role) if role in roles else -1, int(p.name))


def load_checkpoint(ckpt: Path, venv: RoleVecEnv, device: str = "cpu") -> MaskablePPO:
    model = MaskablePPO.load(
        ckpt / "model.zip", env=venv, device=device, custom_objects={"policy_class": PerSkuMaskablePolicy}
    )
    z = np.load(ckpt / "env_state.npz")
    env = venv.env
    for k, arr in env.state._asdict().items():
        arr[...] = z[f"state_{k}"]
    env.paths = z["paths"].copy()
    env._next_path = int(z["next_path"])
    env.demand.set_paths(env.paths)
    env.demand._t0 = -1
    env.episode_cost[...] = z["episode_cost"]
    env.episode_kpi[...] = z["episode_kpi"]
    env.episode_revenue[...] = z["episode_revenue"]
    from restock.envs import kernel as kn

    kn.observe(
        env.params, env.state, env.work, env.obs, env.mask, env.ub
    ) if not env._parallel else kn.observe_par(env.params, env.state, env.work, env.obs, env.mask, env.ub)
    venv._ep_return[:] = z["ep_return"]
    model._last_obs = z["last_obs"]
    model._last_episode_starts = z["last_episode_starts"]
    _set_rng_state(json.loads((ckpt / "rng.json").read_text()))
    return model


# ------------------------------------------------------------------------------------------------
# the training loop


class TrainCallback(BaseCallback):
    """TensorBoard scalars, progress, periodic checkpoints and evaluations, the time budget."""

    def __init__(
        self,
        venv: RoleVecEnv,
        monitor: Monitor,
        role: str,
        run_dir: Path,
        exp: ExperimentConfig,
        deadline: float | None,
        step_offset: int,
        on_progress: Callable[[dict], None] | None,
        evaluate: Callable[[], dict] | None,
        stop_after_checkpoints: int | None = None,
    ):
        super().__init__()
        self.venv, self.monitor, self.role, self.run_dir, self.exp = venv, monitor, role, run_dir, exp
        self.deadline = deadline
        self.offset = step_offset
        self.on_progress = on_progress
        self.evaluate = evaluate
        self.n_agents = venv.n
        self._t0 = time.perf_counter()
        self._steps0 = 0
        self._last_ckpt = 0
        self._last_eval = 0
        self._shield_acc: dict[str, Any] = {}
        self.stop_after = stop_after_checkpoints
        self.checkpoints = 0
        self.stopped_for_time = False
        self.best: dict | None = _read_best(run_dir, role)  # survives --resume

    def env_steps(self) -> int:
        return self.offset + self.num_timesteps // self.n_agents

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()
        self._steps0 = self.num_timesteps
        self._last_ckpt = self.env_steps()
        self._last_eval = self.env_steps()
        if self.evaluate is not None and self.exp.keep_best and self.best is None:
            self._eval_and_keep(self.env_steps())  # the starting (e.g. behaviour-cloned) policy competes

    def _on_step(self) -> bool:
        info = self.venv.env_last_info if hasattr(self.venv, "env_last_info") else None
        if info:
            for k in ("shield_sku_decisions", "shield_interventions", "shield_executed_violations"):
                if k in info:
                    self._shield_acc[k] = self._shield_acc.get(k, 0) + np.asarray(info[k]).sum(axis=0)
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.stopped_for_time = True
            return False
        return True

    def _on_rollout_end(self) -> None:
        steps = self.env_steps()
        dt = max(time.perf_counter() - self._t0, 1e-9)
        sps = (self.num_timesteps - self._steps0) / self.n_agents / dt
        scal: dict[str, float] = {"charts/SPS": sps}
        log = self.venv.episode_log
        if log:
            for key, tag in (
                ("episodic_cost", "charts/episodic_cost"),
                ("fill_rate", "inventory/fill_rate"),
                ("holding_cost", "inventory/holding_cost"),
                ("stockout_cost", "inventory/stockout_cost"),
            ):
                scal[tag] = float(np.mean([r[key] for r in log]))
            self.venv.episode_log = []
        scal.update(safety_scalars({k: v[None] if np.ndim(v) else v for k, v in self._shield_acc.items()}))
        self._shield_acc = {}
        lv = self.model.logger.name_to_value
        for src, dst, sign in (
            ("train/policy_gradient_loss", "losses/policy_loss", 1.0),
            ("train/value_loss", "losses/value_loss", 1.0),
            # SB3 logs the entropy *loss*, -mean(entropy); losses/entropy is the entropy (as on RLlib's path)
            ("train/entropy_loss", "losses/entropy", -1.0),
            ("train/approx_kl", "losses/approx_kl", 1.0),
            ("train/clip_fraction", "losses/clipfrac", 1.0),
            ("train/explained_variance", "losses/explained_variance", 1.0),
        ):
            if src in lv:
                scal[dst] = sign * float(lv[src])
        self.monitor.log(steps, {f"{k}" if "/" in k else k: v for k, v in scal.items()})
        if self.on_progress:
            self.on_progress({"env_steps": steps, "role": self.role, **scal})
        if self.evaluate is not None and steps - self._last_eval >= self.exp.eval_every:
            self._last_eval = steps
            self._eval_and_keep(steps)

    def _eval_and_keep(self, steps: int) -> None:
        res = self.evaluate()
        self.monitor.log(steps, {f"eval/{k}": v for k, v in res.items()})
        if self.exp.keep_best and (self.best is None or res["episodic_cost"] < self.best["eval_cost"]):
            self.best = {"env_steps": steps, "eval_cost": res["episodic_cost"]}
            best_dir = self.run_dir / "best"
            save_role(best_dir, self.role, self.model.policy.per_sku_net)
            tmp = best_dir / f".{self.role}.json.tmp"
            tmp.write_text(json.dumps(self.best))
            tmp.replace(best_dir / f"{self.role}.json")

    def _on_rollout_start(self) -> None:
        # after the previous update and before the next rollout: the model, the simulator and every
        # random generator are in step here, so a checkpoint taken now resumes bit for bit
        steps = self.env_steps()
        if steps - self._last_ckpt >= self.exp.checkpoint_every:
            self._last_ckpt = steps
            self.checkpoint()
            if self.stop_after is not None and self.checkpoints >= self.stop_after:
                raise _StopForTest()

    def checkpoint(self) -> None:
        save_role(self.run_dir, self.role, self.model.policy.per_sku_net)
        save_checkpoint(
            self.run_dir / "checkpoints",
            self.model,
            self.venv,
            {
                "env_steps": self.env_steps(),
                "role": self.role,
                "num_timesteps": int(self.model.num_timesteps),
            },
            keep=self.exp.keep_checkpoints,
            roles=list(self.exp.roles),
        )
        self.checkpoints += 1


def _read_best(run_dir: Path, role: str) -> dict | None:
    p = Path(run_dir) / "best" / f"{role}.json"
    return json.loads(p.read_text()) if p.exists() else None


class _StopForTest(Exception):
    """Raised to simulate a crash right after a checkpoint (tests of --resume)."""


def train_sb3(
    compiled: Compiled,
    exp: ExperimentConfig,
    run_dir: Path,
    baseline: Baseline,
    monitor: Monitor,
    shield_factory=None,
    resume: Path | None = None,
    on_progress: Callable[[dict], None] | None = None,
    stop_after_checkpoints: int | None = None,
    log=print,
) -> dict:
    """Train the experiment's roles in turn; returns a summary for run.json."""
    seed_everything(exp.seed)
    t_start = time.perf_counter()
    deadline = t_start + 60 * exp.minutes if exp.minutes else None
    trained: dict[str, PerSkuNet] = {}
    summary: dict[str, Any] = {"roles": {}}
    start_role_idx = 0
    ckpt = None
    if resume is not None:
        latest, ckpt = read_latest(resume)
        if latest.get("role") not in exp.roles:
            raise ValueError(
                f"--resume: {resume}/checkpoints/latest.json names role {latest.get('role')!r}; this "
                f"experiment trains {list(exp.roles)}"
            )
        start_role_idx = exp.roles.index(latest["role"])
        for r in exp.roles[:start_role_idx]:
            trained[r] = load_role(resume, r)
    gamma = resolve_gamma(exp, compiled)[0]  # train() resolved it already; a direct call resolves here
    for idx, role in enumerate(exp.roles):
        if idx < start_role_idx:
            continue
        other = {r: (TorchPolicy(trained[r]) if r in trained else None) for r in ("store", "dc") if r != role}
        base = baseline.joint()
        pols = {r: (other.get(r) or base.policies[r]) for r in ("store", "dc")}
        other_joint = JointPolicy(pols)
        shield = shield_factory(compiled) if shield_factory else None
        # rewards in units of the baseline's cost per agent and period, times (1 - gamma): returns are
        # then about -1, small enough for the value head under clipped gradients
        scale = baseline.reward_scale / (1.0 - gamma) if gamma < 1 else baseline.reward_scale
        venv = RoleVecEnv(
            compiled,
            role,
            exp.num_envs,
            exp.seed,
            other_joint,
            shield=shield,
            reward_scale=scale,
            shield_penalty=exp.shield.penalty,
        )
        _wrap_info(venv)
        stats = observation_stats(compiled, role, baseline)
        cfg = net_config(compiled, role, exp, stats)
        ppo = exp.ppo
        n_agents = venv.n
        batch = max(1, min(ppo.minibatch_size, venv.num_envs * ppo.rollout_steps))
        total_env_steps = exp.steps or 10**12
        offset = 0
        if ckpt is not None and idx == start_role_idx:
            model = load_checkpoint(ckpt, venv)
            meta = json.loads((ckpt / "meta.json").read_text())
            offset = 0
            remaining = total_env_steps * n_agents - int(meta["num_timesteps"])
            log(f"resuming {role} from {ckpt.name} ({meta['env_steps']} env steps)")
            reset = False
        else:
            model = build_model(venv, exp, cfg, gamma, batch)
            remaining = total_env_steps * n_agents
            reset = True
            if exp.bc_episodes and exp.bc_epochs:
                from restock.training.bc import bc_budget, collect, pretrain

                data = collect(
                    compiled,
                    role,
                    other_joint_for_bc(baseline, trained, role),
                    exp.bc_episodes,
                    seed=exp.seed + 500,
                    gamma=gamma,
                    reward_scale=venv.reward_scale,
                    shield=shield_factory(compiled) if shield_factory else None,
                )
                budget = bc_budget(exp, n_agents)  # proportionate to the run, as on the RLlib path
                res = pretrain(
                    model.policy.per_sku_net, data, epochs=exp.bc_epochs, seed=exp.seed, log=log, **budget
                )
                monitor.log(0, {"charts/bc_accuracy": res["accuracy"]})
                # a fresh optimiser: Adam's moments from behaviour cloning do not belong to PPO
                model.policy.optimizer = model.policy.optimizer_class(
                    model.policy.parameters(), lr=ppo.learning_rate, **model.policy.optimizer_kwargs
                )
        evaluate = _make_eval(compiled, role, model, other_joint, exp, shield_factory)
        cb = TrainCallback(
            venv, monitor, role, run_dir, exp, deadline, offset, on_progress, evaluate, stop_after_checkpoints
        )
        try:
            model.learn(total_timesteps=max(remaining, 1), callback=cb, reset_num_timesteps=reset)
        except _StopForTest:
            return {"stopped": "test", "role": role}
        net = model.policy.per_sku_net
        cb.checkpoint()  # final checkpoint (the last weights, for --resume) and weights of this role
        summary["roles"][role] = {
            "env_steps": cb.env_steps(),
            "stopped_for_time": cb.stopped_for_time,
            "seconds": time.perf_counter() - t_start,
        }
        if exp.keep_best and cb.best is not None:
            # the deployed weights: the best greedy policy on the held-out evaluation paths
            best = load_role(run_dir / "best", role)
            net = copy.deepcopy(net)
            net.load_state_dict(best.state_dict())
            save_role(run_dir, role, net)
            summary["roles"][role]["selected"] = dict(cb.best)
            log(
                f"{role}: kept the weights from env step {cb.best['env_steps']:,} (held-out greedy cost "
                f"{cb.best['eval_cost']:,.1f} per episode)"
            )
        trained[role] = net
        ckpt = None
        if cb.stopped_for_time:
            log(f"time budget reached while training {role}")
            break
    summary["seconds"] = time.perf_counter() - t_start
    return summary


def other_joint_for_bc(baseline: Baseline, trained: dict, role: str) -> JointPolicy:
    """The baseline everywhere except roles already trained (their frozen networks)."""
    base = baseline.joint()
    pols = {r: (TorchPolicy(trained[r]) if r in trained else base.policies[r]) for r in ("store", "dc")}
    return JointPolicy(pols)


def _wrap_info(venv: RoleVecEnv) -> None:
    """Keep the last step's info on the env so the callback can read shield counts."""
    inner = venv.env._advance

    def advance(qty, _inner=inner):
        out = _inner(qty)
        venv.env_last_info = out[4]
        return out

    venv.env._advance = advance
    venv.env_last_info = None


def _make_eval(compiled, role, model, other_joint, exp: ExperimentConfig, shield_factory):
    """Greedy evaluation of the current network on held-out paths (seed 10_000 + exp.seed)."""
    from restock.eval.rollout import rollout

    def run() -> dict:
        net = model.policy.per_sku_net
        pols = dict(other_joint.policies)
        pols[role] = TorchPolicy(net)
        res = rollout(
            compiled,
            JointPolicy(pols),
            episodes=exp.eval_episodes,
            seed=10_000 + exp.seed,
            shield=shield_factory(compiled) if shield_factory else None,
            trace_sku=None,
        )
        net.train()
        return episodic_objective(compiled, res)

    return run
