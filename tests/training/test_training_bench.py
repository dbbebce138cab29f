"""`restock bench --training`: the end-to-end figures (rollout + PPO update of both trainers) beside the
rollout-only ones, from one round of each with the shortest timing (one whole iteration per round)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("ray")
pytest.importorskip("sb3_contrib")


@pytest.mark.slow
def test_training_bench_end_to_end_keys_and_step_counts():
    import ray
    from restock.training.bench import E2E_EPOCHS, E2E_MINIBATCH, E2E_PERIODS, run_training_bench

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        res = run_training_bench(seconds=0.0, rounds=1, num_envs=8, e2e_seconds=0.0, e2e_rounds=1)
    finally:
        ray.shutdown()

    # the rollout-only keys are still there
    for key in (
        "sb3_env_steps_per_s",
        "sb3_env_share_of_rollout",
        "sb3_agent_steps_per_s",
        "rllib_env_steps_per_s",
        "rllib_env_share_of_rollout",
        "rllib_to_sb3_ratio",
    ):
        assert math.isfinite(res[key]) and res[key] > 0, key
    for key in (
        "sb3_end_to_end_env_steps_per_s",
        "rllib_end_to_end_env_steps_per_s",
        "rllib_to_sb3_end_to_end_ratio",
    ):
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, key
    assert res["rllib_to_sb3_end_to_end_ratio"] == pytest.approx(
        res["rllib_end_to_end_env_steps_per_s"] / res["sb3_end_to_end_env_steps_per_s"]
    )

    e2e = res["training_bench"]["end_to_end"]
    per_it = E2E_PERIODS * 8
    assert e2e["env_steps_per_iteration"] == per_it
    # the same rows per iteration, per minibatch and the same epochs for both learners
    assert e2e["agent_steps_per_iteration"] == {"sb3": per_it * 10, "rllib": per_it * 10}  # 10 stores
    assert e2e["minibatch_agent_rows"] == {"sb3": E2E_MINIBATCH, "rllib": E2E_MINIBATCH}
    assert e2e["epochs"] == {"sb3": E2E_EPOCHS, "rllib": E2E_EPOCHS}
    assert e2e["rows_trained_per_iteration"]["sb3"] == E2E_EPOCHS * per_it * 10
    # RLlib: its masked bootstrap rows and the cyclic iterator's wrap-around, never fewer rows
    assert e2e["rows_trained_per_iteration"]["sb3"] <= e2e["rows_trained_per_iteration"]["rllib"]
    assert e2e["rows_trained_per_iteration"]["rllib"] < 1.3 * e2e["rows_trained_per_iteration"]["sb3"]

    (rnd,) = e2e["by_round"]
    for name in ("sb3", "rllib"):
        r = rnd[name]
        # zero seconds per round: exactly one whole iteration, and its steps are those it ran (RLlib's
        # counted from the train() result's sampled env steps)
        assert r["iterations"] == 1
        assert r["env_steps"] == r["iterations"] * per_it
        assert r["seconds"] > 0 and r["env_steps_per_s"] > 0
    assert res["sb3_end_to_end_env_steps_per_s"] == pytest.approx(
        rnd["sb3"]["env_steps"] / rnd["sb3"]["seconds"], rel=1e-2
    )
