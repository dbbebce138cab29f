"""`restock bench --training`: rollout throughput of both trainers on `default`, and the share of
rollout time spent inside the environment (the rest is policy inference and trainer overhead)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def bench_sb3(seconds: float = 20.0, num_envs: int = 8) -> dict[str, Any]:
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.base import JointPolicy
    from agents.heuristics import BaseStockPolicy
    from envs.compile import compile_scenario
    from envs.config import load_scenario
    from training.common import Baseline, net_config, observation_stats
    from training.experiment import load_experiment
    from training.sb3_env import RoleVecEnv
    from training.sb3_train import PerSkuMaskablePolicy

    c = compile_scenario(load_scenario("default"))
    exp = load_experiment(None)
    base = Baseline("base_stock", {}, 0.0, 1.0)
    venv = RoleVecEnv(c, "store", num_envs, 0, JointPolicy(BaseStockPolicy()), reward_scale=100.0)
    env_time = [0.0]
    inner = venv.step_wait

    def timed_step_wait():
        t0 = time.perf_counter()
        out = inner()
        env_time[0] += time.perf_counter() - t0
        return out

    venv.step_wait = timed_step_wait
    cfg = net_config(c, "store", exp, observation_stats(c, "store", base, episodes=1))
    model = MaskablePPO(
        PerSkuMaskablePolicy,
        venv,
        n_steps=32,
        batch_size=1024,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_config": cfg.to_dict()},
    )

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return True

    from stable_baselines3.common.buffers import RolloutBuffer  # noqa: F401 - imported for clarity

    model._setup_learn(10**9, Stop())
    cb = Stop()
    cb.init_callback(model)
    model.collect_rollouts(venv, cb, model.rollout_buffer, n_rollout_steps=4)  # warm up
    env_time[0] = 0.0
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.collect_rollouts(venv, cb, model.rollout_buffer, n_rollout_steps=32)
        steps += 32 * num_envs
    dt = time.perf_counter() - t0
    return {
        "sb3_env_steps_per_s": steps / dt,
        "sb3_env_share_of_rollout": env_time[0] / dt,
        "sb3_agent_steps_per_s": steps * venv.n / dt,
    }


def bench_rllib(iterations: int = 2, num_envs: int = 4) -> dict[str, Any]:
    import ray

    from envs.compile import compile_scenario
    from envs.config import load_scenario
    from training.common import Baseline, net_config, observation_stats
    from training.experiment import load_experiment
    from training.rllib_env import RLlibInventoryEnv
    from training.rllib_train import _g, _quiet, build_config

    _quiet()
    c = compile_scenario(load_scenario("default"))
    exp = load_experiment(None, num_envs=num_envs, roles=["store"])
    exp.rllib.train_batch_size = 4 * c.horizon
    base = Baseline("base_stock", {}, 0.0, 1.0)
    cfgs = {"store": net_config(c, "store", exp, observation_stats(c, "store", base, episodes=1))}
    step_time = [0.0]
    inner = RLlibInventoryEnv.step

    def timed(self, action_dict):
        t0 = time.perf_counter()
        out = inner(self, action_dict)
        step_time[0] += time.perf_counter() - t0
        return out

    RLlibInventoryEnv.step = timed
    own = not ray.is_initialized()
    if own:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        algo = build_config(c, exp, base, cfgs, shield=True).build_algo()
        algo.train()  # warm up
        step_time[0] = 0.0
        steps, sample_s = 0, 0.0
        for _ in range(iterations):
            t0 = time.perf_counter()
            r = algo.train()
            steps += int(_g(r, "env_runners/num_env_steps_sampled", 0))
            sample_s += float(_g(r, "timers/env_runner_sampling_timer", time.perf_counter() - t0))
        algo.stop()
    finally:
        RLlibInventoryEnv.step = inner
        if own:
            ray.shutdown()
    return {
        "rllib_env_steps_per_s": steps / max(sample_s, 1e-9),
        "rllib_env_share_of_rollout": float(np.clip(step_time[0] / max(sample_s, 1e-9), 0, 1)),
    }


def run_training_bench() -> dict[str, Any]:
    out = {}
    out.update(bench_sb3())
    out.update(bench_rllib())
    return out
