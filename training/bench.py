"""`restock bench --training`: rollout throughput of both trainers on `default`, and the share of
rollout time spent inside the environment (the rest is policy inference and trainer overhead).

Both trainers are measured the same way, in this one process: the store agents of `default`, E = 8
environments, the same per-SKU network (`training.common.net_config`), the same torch thread count
(1, the training default), the DC played by base-stock inside the env, masks and shield on. The
figure is rollout collection alone (SB3's ``collect_rollouts``; RLlib's local env runner's
``sample``): policy forward pass, action sampling, environment steps and the trainer's buffering,
not the gradient updates. Environment steps are periods x environments. To damp the load of a
shared machine the two are measured in alternating rounds and the ratio is of the summed figures.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

SCENARIO = "default"


def _setup(num_envs: int):
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.common import Baseline, net_config, observation_stats
    from restock.training.experiment import load_experiment

    c = compile_scenario(load_scenario(SCENARIO))
    exp = load_experiment(None, num_envs=num_envs, roles=["store"])
    base = Baseline("base_stock", {}, 0.0, 1.0)
    cfg = net_config(c, "store", exp, observation_stats(c, "store", base, episodes=1))
    return c, exp, base, cfg


class SB3Rollouts:
    def __init__(self, num_envs: int = 8):
        from restock.agents.base import JointPolicy
        from restock.agents.heuristics import BaseStockPolicy
        from restock.training.sb3_env import RoleVecEnv
        from restock.training.sb3_train import PerSkuMaskablePolicy
        from sb3_contrib import MaskablePPO
        from stable_baselines3.common.callbacks import BaseCallback

        c, _, _, cfg = _setup(num_envs)
        self.num_envs = num_envs
        venv = RoleVecEnv(c, "store", num_envs, 0, JointPolicy(BaseStockPolicy()), reward_scale=100.0)
        self.env_time = 0.0
        inner = venv.step_wait

        def timed_step_wait():
            t0 = time.perf_counter()
            out = inner()
            self.env_time += time.perf_counter() - t0
            return out

        venv.step_wait = timed_step_wait
        self.venv = venv
        self.model = MaskablePPO(
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

        self.model._setup_learn(10**9, Stop())
        self.cb = Stop()
        self.cb.init_callback(self.model)
        self.run(0.0)  # warm up
        self.env_time = 0.0

    def run(self, seconds: float) -> tuple[int, float]:
        """Collect 32-period rollouts for at least ``seconds``: (environment steps, seconds)."""
        steps, t0 = 0, time.perf_counter()
        while True:
            self.model.collect_rollouts(self.venv, self.cb, self.model.rollout_buffer, n_rollout_steps=32)
            steps += 32 * self.num_envs
            if time.perf_counter() - t0 >= seconds:
                return steps, time.perf_counter() - t0


class RLlibRollouts:
    def __init__(self, num_envs: int = 8):
        from restock.training.rllib_env import RLlibInventoryEnv, kernel_envs_per_step
        from restock.training.rllib_train import _quiet, build_config

        _quiet()
        c, exp, base, cfg = _setup(num_envs)
        exp.rllib.num_env_runners = 0  # the local env runner, in this process
        exp.rllib.train_batch_size = 32 * num_envs
        self.env_time = 0.0
        inner = RLlibInventoryEnv.step
        self._restore = lambda: setattr(RLlibInventoryEnv, "step", inner)

        def timed(env, action_dict):
            t0 = time.perf_counter()
            out = inner(env, action_dict)
            self.env_time += time.perf_counter() - t0
            return out

        RLlibInventoryEnv.step = timed
        self.algo = build_config(c, exp, base, {"store": cfg}, shield=True).build_algo()
        self.runner = self.algo.env_runner
        self.per_step = kernel_envs_per_step(self.algo.config.env_config)
        self.agents = len(self.runner.env.envs[0].unwrapped.possible_agents)
        self.run(0.0)  # warm up
        self.env_time = 0.0

    def run(self, seconds: float) -> tuple[int, float]:
        """Sample 32-period fragments (agent steps, as configured) for at least ``seconds``."""
        steps, t0 = 0, time.perf_counter()
        while True:
            eps = self.runner.sample(num_timesteps=32 * self.agents, explore=True)
            steps += sum(e.env_steps() for e in eps) * self.per_step
            if time.perf_counter() - t0 >= seconds:
                return steps, time.perf_counter() - t0

    def close(self) -> None:
        self._restore()
        self.algo.stop()


def run_training_bench(seconds: float = 5.0, rounds: int = 4, num_envs: int = 8) -> dict[str, Any]:
    import ray
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    own = not ray.is_initialized()
    if own:
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    rl = None
    try:
        sb = SB3Rollouts(num_envs)
        rl = RLlibRollouts(num_envs)
        tot = {"sb3": [0, 0.0], "rllib": [0, 0.0]}
        per_round = []
        for _ in range(rounds):
            fig = {}
            for name, runner in (("sb3", sb), ("rllib", rl)):
                torch.set_num_threads(1)
                n, dt = runner.run(seconds)
                tot[name][0] += n
                tot[name][1] += dt
                fig[name] = round(n / dt, 1)
            per_round.append(fig)
        sb3_sps = tot["sb3"][0] / tot["sb3"][1]
        rl_sps = tot["rllib"][0] / tot["rllib"][1]
        return {
            "sb3_env_steps_per_s": sb3_sps,
            "sb3_env_share_of_rollout": sb.env_time / tot["sb3"][1],
            "sb3_agent_steps_per_s": sb3_sps * sb.venv.n,
            "rllib_env_steps_per_s": rl_sps,
            "rllib_env_share_of_rollout": float(np.clip(rl.env_time / tot["rllib"][1], 0, 1)),
            "rllib_to_sb3_ratio": rl_sps / sb3_sps,
            "training_bench": {
                "scenario": SCENARIO,
                "num_envs": num_envs,
                "torch_threads": 1,
                "rounds": rounds,
                "seconds_per_round": seconds,
                "steps_per_s_by_round": per_round,
                "load_average": list(os.getloadavg()),
            },
        }
    finally:
        if rl is not None:
            rl.close()
        if own:
            ray.shutdown()
        torch.set_num_threads(threads)
