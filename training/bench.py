"""`restock bench --training`: throughput of both trainers on `default` — rollout collection alone,
the share of rollout time spent inside the environment, and full training iterations end to end.

Both trainers are measured the same way, in this one process: the store agents of `default`, E = 8
environments, the same per-SKU network (`training.common.net_config`), the same torch thread count
(1, the training default), the DC played by base-stock inside the env. Environment steps are
periods x environments. To damp the load of a shared machine the two trainers are measured in
alternating rounds and each ratio is of the summed figures (steps over seconds, all rounds together).

Rollouts (``sb3_env_steps_per_s``, ``rllib_env_steps_per_s``, ``rllib_to_sb3_ratio``): rollout
collection alone (SB3's ``collect_rollouts``; RLlib's local env runner's ``sample``): policy forward
pass, action sampling, environment steps and the trainer's buffering, not the gradient updates. Masks
are on in both; RLlib's env runs the shield (``shield=True``), SB3's ``RoleVecEnv`` here has none.

End to end (``sb3_end_to_end_env_steps_per_s``, ``rllib_end_to_end_env_steps_per_s``,
``rllib_to_sb3_end_to_end_ratio``): whole training iterations, rollout plus PPO update. SB3: what
``MaskablePPO.learn`` does per iteration, ``collect_rollouts`` then ``model.train()``; RLlib:
``algo.train()`` with ``num_env_runners=0`` (the local env runner) and ``num_learners=0`` (the local
learner), metrics and callbacks included. One warm-up iteration each is run before timing. Both run
with the shield on (``Shield(mode="enforce")``, as ``restock train`` builds it) and the same PPO
settings, from ``exp.ppo`` defaults except where set here:

- rollout per iteration: ``E2E_PERIODS`` = 32 periods x 8 environments = 256 environment steps =
  2,560 agent steps (10 stores of `default` per environment). SB3: ``n_steps=32`` on the
  ``RoleVecEnv``, whose rows are (environment, store) agents, so its buffer holds 32 x 80 = 2,560
  rows. RLlib: ``exp.rllib.train_batch_size = 32 x 8`` environment steps, which ``build_config`` turns
  into ``train_batch_size_per_learner = 256 x 10 = 2,560`` agent steps (``count_steps_by=
  "agent_steps"``, one RLlib env step being 8 environment steps of 10 agents each);
- minibatch: ``E2E_MINIBATCH`` = 512 agent rows in both (SB3 ``batch_size``; RLlib
  ``minibatch_size = min(exp.ppo.minibatch_size, 2,560)``, also in agent steps);
- ``E2E_EPOCHS`` = 2 epochs in both (SB3 ``n_epochs``, RLlib ``num_epochs``), ``target_kl`` off in
  both so that every iteration does all its epochs; learning rate, gamma (``resolve_gamma``), GAE
  lambda, clip range, entropy and value coefficients, gradient clipping and the reward scale
  (baseline scale / (1 - gamma)) are the same ``exp.ppo`` values in both.

The learners then see the same 2,560 agent steps per iteration in minibatches of 512 rows. RLlib's
learner connector adds one masked bootstrap row per agent and episode fragment (80 per iteration, more
when an episode of 91 periods ends inside the fragment) and its minibatch iterator cycles until every
row was seen ``num_epochs`` times, so it trains on more rows per iteration (5,632 against SB3's 5,120
with these settings, measured: 11 minibatches of 512 against 10); the rows each trained per iteration
are reported (``training_bench.end_to_end``). Environment steps are counted from what each trainer ran:
SB3's periods x environments per ``collect_rollouts``, RLlib's sampled env steps of each ``train()``
result times the environments in one RLlib env.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any

import numpy as np

SCENARIO = "default"
E2E_PERIODS = 32  # periods per environment per training iteration (both trainers)
E2E_EPOCHS = 2  # PPO epochs per iteration (both trainers)
E2E_MINIBATCH = 512  # agent rows per minibatch (both trainers)


@functools.lru_cache(maxsize=4)
def _setup_shared(num_envs: int):
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.common import Baseline, net_config, observation_stats
    from restock.training.experiment import load_experiment

    c = compile_scenario(load_scenario(SCENARIO))
    exp = load_experiment(None, num_envs=num_envs, roles=["store"])
    base = Baseline("base_stock", {}, 0.0, 1.0)
    cfg = net_config(c, "store", exp, observation_stats(c, "store", base, episodes=1))
    return c, exp, base, cfg


def _setup(num_envs: int):
    """The compiled scenario, a fresh experiment (callers modify it), the baseline and the network."""
    c, exp, base, cfg = _setup_shared(num_envs)
    return c, exp.model_copy(deep=True), base, cfg


def _e2e_experiment(exp, num_envs: int):
    """The experiment both end-to-end runners train with (module docstring)."""
    exp.rllib.num_env_runners = 0
    exp.rllib.num_learners = 0
    exp.ppo.rollout_steps = E2E_PERIODS
    exp.rllib.train_batch_size = E2E_PERIODS * num_envs
    exp.ppo.n_epochs = E2E_EPOCHS
    exp.ppo.minibatch_size = E2E_MINIBATCH
    exp.ppo.target_kl = None
    return exp


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


class _Iterations:
    """Timing of whole training iterations (``_iteration`` returns the environment steps it ran)."""

    def _iteration(self) -> int:
        raise NotImplementedError

    def run(self, seconds: float) -> tuple[int, float]:
        """Whole iterations for at least ``seconds`` (one at least): (environment steps, seconds)."""
        steps, t0 = 0, time.perf_counter()
        while True:
            steps += self._iteration()
            if time.perf_counter() - t0 >= seconds:
                return steps, time.perf_counter() - t0


class SB3Training(_Iterations):
    """SB3 end to end: ``collect_rollouts`` then ``model.train()``, as ``MaskablePPO.learn`` iterates."""

    def __init__(self, num_envs: int = 8, warmup: int = 1):
        from restock.agents.base import JointPolicy
        from restock.agents.heuristics import BaseStockPolicy
        from restock.agents.shield import Shield
        from restock.training.experiment import resolve_gamma
        from restock.training.sb3_env import RoleVecEnv
        from restock.training.sb3_train import build_model
        from stable_baselines3.common.callbacks import BaseCallback

        c, exp, base, cfg = _setup(num_envs)
        exp = _e2e_experiment(exp, num_envs)
        ppo = exp.ppo
        gamma = resolve_gamma(exp, c)[0]
        scale = base.reward_scale / (1.0 - gamma) if gamma < 1 else base.reward_scale
        self.venv = RoleVecEnv(
            c,
            "store",
            num_envs,
            exp.seed,
            JointPolicy(BaseStockPolicy()),
            shield=Shield(c, mode="enforce"),
            reward_scale=scale,
            shield_penalty=exp.shield.penalty,
        )
        self.model = build_model(self.venv, exp, cfg, gamma, ppo.minibatch_size)

        class Go(BaseCallback):
            def _on_step(self) -> bool:
                return True

        self.cb = Go()
        self.model._setup_learn(10**12, self.cb)
        self.cb.init_callback(self.model)
        self.num_envs = num_envs
        self.steps_per_iteration = ppo.rollout_steps * num_envs  # environment steps
        rows = ppo.rollout_steps * self.venv.num_envs  # agent rows in the rollout buffer
        self.agent_steps_per_iteration = rows
        self.rows_trained_per_iteration = ppo.n_epochs * rows
        self.minibatches_per_iteration = ppo.n_epochs * math.ceil(rows / ppo.minibatch_size)
        self.iterations = 0
        for _ in range(warmup):
            self._iteration()
        self.iterations = 0

    def _iteration(self) -> int:
        m = self.model
        before = m.num_timesteps
        m.collect_rollouts(self.venv, self.cb, m.rollout_buffer, n_rollout_steps=m.n_steps)
        m._update_current_progress_remaining(m.num_timesteps, m._total_timesteps)
        m.train()
        self.iterations += 1
        return (m.num_timesteps - before) // self.venv.n  # agent steps -> environment steps


class RLlibTraining(_Iterations):
    """RLlib end to end: ``algo.train()`` with the local env runner and the local learner."""

    def __init__(self, num_envs: int = 8, warmup: int = 1):
        from restock.training.rllib_env import kernel_envs_per_step
        from restock.training.rllib_train import _quiet, build_config

        _quiet()
        c, exp, base, cfg = _setup(num_envs)
        exp = _e2e_experiment(exp, num_envs)
        config = build_config(c, exp, base, {"store": cfg}, shield=True)
        self.algo = config.build_algo()
        self.per_step = kernel_envs_per_step(self.algo.config.env_config)
        self.num_envs = num_envs
        self.steps_per_iteration = exp.rllib.train_batch_size  # environment steps
        self.agent_steps_per_iteration = config.train_batch_size_per_learner
        self.minibatch_size = config.minibatch_size
        self.num_epochs = config.num_epochs
        self.rows_trained: list[int] = []  # per timed iteration (bootstrap rows and wrap-around included)
        self.iterations = 0
        for _ in range(warmup):
            self._iteration()
        self.iterations = 0
        self.rows_trained = []

    def _iteration(self) -> int:
        from ray.rllib.utils.metrics import (
            ALL_MODULES,
            ENV_RUNNER_RESULTS,
            LEARNER_RESULTS,
            NUM_ENV_STEPS_SAMPLED,
            NUM_MODULE_STEPS_TRAINED,
        )

        res = self.algo.train()
        self.iterations += 1
        self.rows_trained.append(int(res[LEARNER_RESULTS][ALL_MODULES][NUM_MODULE_STEPS_TRAINED]))
        return int(res[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED]) * self.per_step

    def close(self) -> None:
        self.algo.stop()


def _alternate(runners: dict, rounds: int, seconds: float, detail: bool):
    """``rounds`` rounds, each trainer in turn for ``seconds``: summed (steps, seconds) by name, and the
    per-round figures (steps per second, or with ``detail`` iterations, steps, seconds as well)."""
    import torch

    tot = {name: [0, 0.0] for name in runners}
    per_round = []
    for _ in range(rounds):
        fig = {}
        for name, runner in runners.items():
            torch.set_num_threads(1)
            it0 = getattr(runner, "iterations", 0)
            n, dt = runner.run(seconds)
            tot[name][0] += n
            tot[name][1] += dt
            if detail:
                fig[name] = {
                    "iterations": runner.iterations - it0,
                    "env_steps": n,
                    "seconds": round(dt, 3),
                    "env_steps_per_s": round(n / dt, 1),
                }
            else:
                fig[name] = round(n / dt, 1)
        per_round.append(fig)
    return tot, per_round


def run_training_bench(
    seconds: float = 5.0,
    rounds: int = 4,
    num_envs: int = 8,
    e2e_seconds: float = 5.0,
    e2e_rounds: int = 3,
) -> dict[str, Any]:
    """Rollouts: ``rounds`` alternating rounds of ``seconds`` per trainer; then end to end:
    ``e2e_rounds`` rounds of at least ``e2e_seconds`` (whole iterations, one at least) per trainer."""
    import ray
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    own = not ray.is_initialized()
    if own:
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    rl = rlt = None
    try:
        sb = SB3Rollouts(num_envs)
        rl = RLlibRollouts(num_envs)
        tot, per_round = _alternate({"sb3": sb, "rllib": rl}, rounds, seconds, detail=False)
        sb3_sps = tot["sb3"][0] / tot["sb3"][1]
        rl_sps = tot["rllib"][0] / tot["rllib"][1]
        out = {
            "sb3_env_steps_per_s": sb3_sps,
            "sb3_env_share_of_rollout": sb.env_time / tot["sb3"][1],
            "sb3_agent_steps_per_s": sb3_sps * sb.venv.n,
            "rllib_env_steps_per_s": rl_sps,
            "rllib_env_share_of_rollout": float(np.clip(rl.env_time / tot["rllib"][1], 0, 1)),
            "rllib_to_sb3_ratio": rl_sps / sb3_sps,
        }
        # RLlibRollouts times every RLlibInventoryEnv.step: restore it before the end-to-end algo runs
        rl.close()
        rl = None
        del sb

        sbt = SB3Training(num_envs)
        rlt = RLlibTraining(num_envs)
        etot, e2e_round = _alternate({"sb3": sbt, "rllib": rlt}, e2e_rounds, e2e_seconds, detail=True)
        sb3_e2e = etot["sb3"][0] / etot["sb3"][1]
        rl_e2e = etot["rllib"][0] / etot["rllib"][1]
        out.update(
            {
                "sb3_end_to_end_env_steps_per_s": sb3_e2e,
                "rllib_end_to_end_env_steps_per_s": rl_e2e,
                "rllib_to_sb3_end_to_end_ratio": rl_e2e / sb3_e2e,
            }
        )
        out["training_bench"] = {
            "scenario": SCENARIO,
            "num_envs": num_envs,
            "torch_threads": 1,
            "rounds": rounds,
            "seconds_per_round": seconds,
            "steps_per_s_by_round": per_round,
            "end_to_end": {
                "rounds": e2e_rounds,
                "seconds_per_round": e2e_seconds,
                "warmup_iterations": 1,
                "periods_per_iteration": E2E_PERIODS,
                "env_steps_per_iteration": sbt.steps_per_iteration,
                "agent_steps_per_iteration": {
                    "sb3": sbt.agent_steps_per_iteration,
                    "rllib": rlt.agent_steps_per_iteration,
                },
                "minibatch_agent_rows": {"sb3": sbt.model.batch_size, "rllib": rlt.minibatch_size},
                "epochs": {"sb3": sbt.model.n_epochs, "rllib": rlt.num_epochs},
                "rows_trained_per_iteration": {
                    "sb3": sbt.rows_trained_per_iteration,
                    "rllib": float(np.mean(rlt.rows_trained)),
                },
                "minibatches_per_iteration": {
                    "sb3": sbt.minibatches_per_iteration,
                    "rllib": float(np.mean(rlt.rows_trained)) / rlt.minibatch_size,
                },
                "by_round": e2e_round,
            },
            "load_average": list(os.getloadavg()),
        }
        return out
    finally:
        for r in (rl, rlt):
            if r is not None:
                r.close()
        if own:
            ray.shutdown()
        torch.set_num_threads(threads)
