"""Ray RLlib path: multi-agent PPO on the new API stack, one policy per role (`store_policy`,
`dc_policy`) shared by every agent of the role, with restock's per-SKU network as the RLModule.

A local Ray instance by default; ``rllib.ray_address`` (``--ray-address HOST:PORT``) joins an existing
cluster and ``rllib.num_env_runners`` (``--num-env-runners``) spreads rollouts over its workers, so
outgrowing one machine means adding machines, not code. Workers import restock, so install it
(editable) in the environment that runs ``ray start`` on every node, and use the same
``RAY_AUTH_MODE`` for ``ray start`` and the driver (Ray 2.60 turns token authentication on by
default).

Checkpoints are RLlib's own (``algo.save_to_path``, written to a temporary folder and renamed), plus
the plain weights under ``policies/``. RLlib 2.60 does not save its random generators or the
environments, so a resumed run continues from the checkpointed weights and optimiser but is not bit
for bit the uninterrupted run; PPO's adaptive KL penalty is switched off because its coefficient is
not restored (a known RLlib issue), and weights are pushed to remote env runners synchronously after
a restore (another one).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import role_nodes
from agents.learned import save_role
from agents.networks import PerSkuNet
from envs.compile import Compiled
from training.common import Baseline, Monitor, net_config, observation_stats, write_json_atomic
from training.experiment import ExperimentConfig


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    class Drop(logging.Filter):
        DROP = ("You are running PPO on the new API stack", "RLModule(config=", "Install gputil")

        def filter(self, record):
            return not any(d in record.getMessage() for d in self.DROP)

    for name in (
        "ray.rllib",
        "ray.rllib.algorithms.algorithm_config",
        "ray.rllib.core.rl_module.rl_module",
        "ray._common.deprecation",
        "ray.rllib.utils.deprecation",
        "ray.tune.utils.util",
    ):
        logging.getLogger(name).addFilter(Drop())
        logging.getLogger(name).setLevel(logging.ERROR)


def _g(d: dict, path: str, default=None):
    for p in path.split("/"):
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def build_config(compiled: Compiled, exp: ExperimentConfig, baseline: Baseline, net_cfgs: dict, shield: bool):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from training.rllib_callbacks import InventoryMetrics
    from training.rllib_env import RLlibInventoryEnv
    from training.rllib_module import PerSkuRLModule
    from training.rllib_runner import InventoryEnvRunner

    ppo = exp.ppo
    env_config = {
        "scenario": compiled.config.model_dump(mode="json"),
        "roles": list(exp.roles),
        "baseline": {"policy": baseline.policy, "knobs": baseline.knobs},
        "reward_scale": baseline.reward_scale / (1.0 - ppo.gamma) if ppo.gamma < 1 else baseline.reward_scale,
        "seed": exp.seed,
        "shield": shield,
        "shield_penalty": exp.shield.penalty,
        "central_critic": exp.network.centralised_critic,
        "num_envs": exp.num_envs,  # kernel environments inside one RLlib env (training/rllib_env.py)
    }
    policies = {f"{r}_policy" for r in exp.roles}
    n_trained = sum(len(role_nodes(compiled, r)) for r in exp.roles)

    def mapping(agent_id, episode=None, **kwargs):
        return "dc_policy" if agent_id.startswith("dc_") else "store_policy"

    config = (
        PPOConfig()
        .environment(
            RLlibInventoryEnv,
            env_config=env_config,
            disable_env_checking=True,
            # levels are categorical: nothing to unsquash or clip (the env clips to the masks), and
            # RLlib's connector would deep-copy every agent's action each step to find that out
            normalize_actions=False,
            clip_actions=False,
        )
        .env_runners(
            num_env_runners=exp.rllib.num_env_runners,
            num_envs_per_env_runner=1,  # one RLlib env holds exp.num_envs kernel environments
            env_runner_cls=InventoryEnvRunner,
            rollout_fragment_length="auto",
        )
        .multi_agent(
            policies=policies,
            policy_mapping_fn=mapping,
            policies_to_train=sorted(policies),
            count_steps_by="agent_steps",
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={
                    f"{r}_policy": RLModuleSpec(
                        module_class=PerSkuRLModule, model_config={"net": net_cfgs[r].to_dict()}
                    )
                    for r in exp.roles
                }
            )
        )
        .training(
            # counted in agent steps (an RLlib env step is exp.num_envs environment steps): the
            # configured environment steps times the trained nodes of one environment
            train_batch_size_per_learner=exp.rllib.train_batch_size * n_trained,
            minibatch_size=min(ppo.minibatch_size, exp.rllib.train_batch_size * n_trained),
            num_epochs=ppo.n_epochs,
            lr=ppo.learning_rate,
            gamma=ppo.gamma,
            lambda_=ppo.gae_lambda,
            clip_param=ppo.clip_range,
            entropy_coeff=ppo.ent_coef,
            vf_loss_coeff=ppo.vf_coef,
            grad_clip=ppo.max_grad_norm,
            use_kl_loss=False,
        )
        .learners(num_learners=0)
        .callbacks(InventoryMetrics)
        .debugging(seed=exp.seed, log_level="ERROR")
    )
    return config


def _learner_nets(algo, roles: list[str]) -> dict[str, PerSkuNet]:
    learner = algo.learner_group._learner  # the local learner (num_learners=0)
    return {r: learner.module[f"{r}_policy"].net for r in roles}


def force_sync_env_runner_weights(algo) -> None:
    """Push the learner's weights to every env runner synchronously (RLlib 2.60 may drop the push
    that follows a restore, leaving remote runners with fresh weights)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    st = algo.learner_group.get_state(
        components=COMPONENT_LEARNER + "/" + COMPONENT_RL_MODULE, inference_only=True
    )[COMPONENT_LEARNER]
    state = {COMPONENT_RL_MODULE: st[COMPONENT_RL_MODULE]}
    algo.env_runner_group.foreach_env_runner(lambda er: er.set_state(state), local_env_runner=True)


def _warm_start(
    algo, compiled, exp: ExperimentConfig, baseline: Baseline, shield_factory, log, monitor
) -> None:
    """Behaviour cloning of the baseline into the learner's networks, then a synchronous weight push."""
    from training.bc import bc_budget, collect, pretrain

    nets = _learner_nets(algo, exp.roles)
    scale = baseline.reward_scale / (1.0 - exp.ppo.gamma) if exp.ppo.gamma < 1 else baseline.reward_scale
    for role, net in nets.items():
        data = collect(
            compiled,
            role,
            baseline.joint(),
            exp.bc_episodes,
            seed=exp.seed + 500,
            gamma=exp.ppo.gamma,
            reward_scale=scale,
            shield=shield_factory(compiled) if shield_factory else None,
        )
        budget = bc_budget(exp, len(role_nodes(compiled, role)))  # proportionate to the run
        res = pretrain(net, data, epochs=exp.bc_epochs, seed=exp.seed, log=log, **budget)
        monitor.log(0, {f"charts/bc_accuracy/{role}": res["accuracy"]})
    force_sync_env_runner_weights(algo)


def save_checkpoint(algo, run_dir: Path, roles: list[str], env_steps: int) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(exist_ok=True)
    final = root / f"{env_steps:012d}"
    tmp = root / f".tmp-{env_steps:012d}"
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for r, net in _learner_nets(algo, roles).items():
        save_role(run_dir, r, net)
    write_json_atomic(root / "latest.json", {"path": final.name, "env_steps": env_steps, "trainer": "rllib"})
    return final


def train_rllib(
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
    _quiet()
    import ray
    from ray.rllib.algorithms.algorithm import Algorithm

    t_start = time.perf_counter()
    deadline = t_start + 60 * exp.minutes if exp.minutes else None
    address = exp.rllib.ray_address
    own_ray = not ray.is_initialized()
    if own_ray:
        runtime_env = {"env_vars": {"PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}}
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(
                num_cpus=os.cpu_count() or 2,
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=False,
            )
    try:
        net_cfgs = {}
        for r in exp.roles:
            if len(role_nodes(compiled, r)) == 0:
                raise ValueError(f"scenario {compiled.config.name!r} has no {r} agents to train")
            gdim = compiled.N * compiled.K * 4 + 1 if exp.network.centralised_critic else 0
            net_cfgs[r] = net_config(
                compiled, r, exp, observation_stats(compiled, r, baseline), global_state=gdim
            )
        config = build_config(compiled, exp, baseline, net_cfgs, shield=shield_factory is not None)
        if resume is not None:
            latest = json.loads((resume / "checkpoints" / "latest.json").read_text())
            algo = Algorithm.from_checkpoint(str((resume / "checkpoints" / latest["path"]).resolve()))
            force_sync_env_runner_weights(algo)
            log(f"resumed from {latest['path']} ({latest['env_steps']} env steps)")
        else:
            algo = config.build_algo()
            if exp.bc_episodes and exp.bc_epochs:
                _warm_start(algo, compiled, exp, baseline, shield_factory, log, monitor)
        target = exp.steps or 10**12
        steps = 0
        last_ckpt = 0
        n_ckpt = 0
        it = 0
        stopped_for_time = False
        while steps < target:
            r = algo.train()
            it += 1
            steps = int(_g(r, "env_runners/num_env_steps_sampled_lifetime", 0)) * exp.num_envs
            dt = float(r.get("time_this_iter_s", 1e-9))
            scal: dict[str, Any] = {
                "charts/SPS": _g(r, "env_runners/num_env_steps_sampled", 0) * exp.num_envs / max(dt, 1e-9)
            }
            for key, tag in (
                ("episodic_cost", "charts/episodic_cost"),
                ("fill_rate", "inventory/fill_rate"),
                ("holding_cost", "inventory/holding_cost"),
                ("stockout_cost", "inventory/stockout_cost"),
                ("intervention_rate", "safety/intervention_rate"),
                ("violations", "safety/violations"),
            ):
                v = _g(r, f"env_runners/{key}")
                if v is not None:
                    scal[tag] = float(v)
            for role in exp.roles:
                mid = f"{role}_policy"
                for key, tag in (
                    ("policy_loss", "policy_loss"),
                    ("vf_loss", "value_loss"),
                    ("entropy", "entropy"),
                    ("mean_kl_loss", "approx_kl"),
                    ("vf_explained_var", "explained_variance"),
                ):
                    v = _g(r, f"learners/{mid}/{key}")
                    if v is not None:
                        scal[f"losses/{tag}" + ("" if len(exp.roles) == 1 else f"/{role}")] = float(v)
            monitor.log(steps, {k: v for k, v in scal.items() if v is not None and np.isfinite(v)})
            if on_progress:
                on_progress({"env_steps": steps, "role": "+".join(exp.roles), **scal})
            if steps - last_ckpt >= exp.checkpoint_every:
                last_ckpt = steps
                save_checkpoint(algo, run_dir, exp.roles, steps)
                n_ckpt += 1
                if stop_after_checkpoints is not None and n_ckpt >= stop_after_checkpoints:
                    algo.stop()
                    return {"stopped": "test", "env_steps": steps}
            if deadline is not None and time.perf_counter() > deadline:
                stopped_for_time = True
                break
        save_checkpoint(algo, run_dir, exp.roles, steps)
        algo.stop()
        return {
            "roles": {r: {"env_steps": steps} for r in exp.roles},
            "iterations": it,
            "stopped_for_time": stopped_for_time,
            "seconds": time.perf_counter() - t_start,
        }
    finally:
        if own_ray:
            ray.shutdown()
