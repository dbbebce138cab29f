"""RLlib with per-(node, SKU) credit (``rllib.pair_credit``, training/rllib_pairs.py): the env's per-SKU
rewards, the learner's per-SKU batch columns and GAE, and a short run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from restock.training.rllib_env import RLlibInventoryEnv  # noqa: E402
from restock.training.rllib_pairs import (  # noqa: E402
    PAIR_HORIZON,
    PAIR_REWARDS,
    PAIR_TERMINAL,
    pair_value_targets,
)

SEED = 3


def _env(**kw) -> RLlibInventoryEnv:
    cfg = {
        "scenario": "tiny",
        "roles": ["store", "dc"],
        "seed": SEED,
        "num_envs": 2,
        "pair_credit": True,
        "reward_scale": 7.0,
    }
    cfg.update(kw)
    return RLlibInventoryEnv(cfg)


def test_pair_gae__matches_a_hand_computation():
    """Two episode chunks of two real rows each, as RLlib's AddOneTsToEpisodesAndTruncate lays them out
    (a bootstrap row after each): the first truncated (bootstraps from V of its bootstrap row, does not
    propagate), the second terminated (no bootstrap). Each SKU column is also RLlib's own function."""
    from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

    g, lam = 0.9, 0.5
    v = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0], [-1.0, 0.25], [4.0, -0.5], [9.0, 9.0]])
    r = np.array([[0.3, -1.0], [1.2, 0.7], [0.0, 0.0], [-0.4, 2.0], [0.9, -3.0], [0.0, 0.0]])
    term = np.array([0, 0, 0, 0, 1, 0], np.float64)
    trunc = np.array([0, 1, 0, 0, 0, 0], np.float64)
    got = pair_value_targets(v, r, term, trunc, g, lam)
    assert got.shape == (6, 2)
    for k in range(2):
        a1 = r[1, k] + g * v[2, k] - v[1, k]  # truncated: bootstrap from the appended row, no propagation
        a0 = r[0, k] + g * v[1, k] - v[0, k] + g * lam * a1
        a4 = r[4, k] - v[4, k]  # terminated: no bootstrap
        a3 = r[3, k] + g * v[4, k] - v[3, k] + g * lam * a4
        for row, a in ((0, a0), (1, a1), (3, a3), (4, a4)):
            assert got[row, k] == pytest.approx(a + v[row, k], rel=1e-5, abs=1e-6), (row, k)
        ref = compute_value_targets(v[:, k], r[:, k], term, trunc, gamma=g, lambda_=lam)
        np.testing.assert_allclose(got[:, k], ref, rtol=1e-5, atol=1e-6)


def test_env__per_sku_rewards_add_up_to_the_node_rewards_and_a_dc_gets_its_subtree():
    """Store pairs add up to the store's reward; a DC pair's credit is its SKU's cost over the DC and its
    stores (dc_reward "region", the default) or the DC's own cost of it (dc_reward "own"). Two envs on the
    same seed and actions: "own" also gives the DC's own node reward the subtree sum is checked against."""
    env, own = _env(), _env(dc_reward="own")
    c = env.compiled
    env.reset(seed=SEED)
    own.reset(seed=SEED)
    rng = np.random.default_rng(0)
    for t in range(c.horizon):
        acts = {a: rng.integers(0, 9, env.K) for a in env.possible_agents}
        _, rew, _, trunc, infos = env.step(acts)
        _, rew_o, _, _, inf_o = own.step(acts)
        # the step that reaches the horizon says so (the learner ends the episode's GAE there)
        assert all(bool(i.get(PAIR_HORIZON)) == (t == c.horizon - 1) for i in infos.values())
        for e in range(env.E):
            ids = [a for a in env.possible_agents if a.endswith(f"_e{e}")]
            stores = [a for a in ids if a.startswith("store_")]
            dc = next(a for a in ids if a.startswith("dc_"))
            for a in stores:
                assert infos[a][PAIR_REWARDS].shape == (env.K,)
                assert infos[a][PAIR_REWARDS].sum() == pytest.approx(rew[a], rel=1e-5, abs=1e-6)
                np.testing.assert_array_equal(inf_o[a][PAIR_REWARDS], infos[a][PAIR_REWARDS])
            subtree = rew_o[dc] + sum(rew_o[a] for a in stores)
            assert infos[dc][PAIR_REWARDS].sum() == pytest.approx(subtree, rel=1e-5, abs=1e-6)
            assert inf_o[dc][PAIR_REWARDS].sum() == pytest.approx(rew_o[dc], rel=1e-5, abs=1e-6)
    assert trunc["__all__"] and "episode_summary" in infos[stores[0]]
    # off by default: no per-SKU rewards
    env = _env(pair_credit=False)
    env.reset(seed=SEED)
    _, _, _, _, infos = env.step({a: np.full(env.K, 3) for a in env.possible_agents})
    assert not any(PAIR_REWARDS in i for i in infos.values())


def test_check__pair_credit_refuses_the_centralised_critic_and_the_shield_penalty():
    from restock.training.experiment import ExperimentConfig
    from restock.training.rllib_train import check_experiment

    check_experiment(ExperimentConfig.model_validate({"rllib": {"pair_credit": True}}))
    bad = {"rllib": {"pair_credit": True}, "network": {"centralised_critic": True}}
    with pytest.raises(ValueError, match="network.centralised_critic"):
        check_experiment(ExperimentConfig.model_validate(bad))
    bad = {"rllib": {"pair_credit": True}, "shield": {"penalty": 0.5}}
    with pytest.raises(ValueError, match="shield.penalty"):
        check_experiment(ExperimentConfig.model_validate(bad))
    check_experiment(ExperimentConfig.model_validate({"network": {"centralised_critic": True}}))


@pytest.mark.slow
def test_learner_batch__per_sku_rewards_advantages_and_targets(tmp_path):
    """The learner pipeline of a pair-credit algorithm on sampled episodes: rows line up (each store row's
    per-SKU rewards add up to its node reward), bootstrap rows get zeros, advantages and value targets are
    [B, K] (the advantages standardised over the real rows), and the values come from a per-SKU head."""
    import ray
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.common import net_config, observation_stats, prepare_baseline
    from restock.training.experiment import load_experiment
    from restock.training.rllib_pairs import PairPPOLearner
    from restock.training.rllib_train import _quiet, build_config

    _quiet()
    c = compile_scenario(load_scenario("tiny"))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        exp = load_experiment(None, steps=64, bc_episodes=0)
        exp.roles = ["store", "dc"]
        exp.num_envs = 2
        exp.rllib.pair_credit = True
        exp.rllib.train_batch_size = 64
        base = prepare_baseline(c, exp, tmp_path, log=lambda s: None)
        cfgs = {r: net_config(c, r, exp, observation_stats(c, r, base)) for r in exp.roles}
        algo = build_config(c, exp, base, cfgs, shield=True).build_algo()
        try:
            learner = algo.learner_group._learner
            assert isinstance(learner, PairPPOLearner)
            # one optimiser per network, so that grad_clip bounds the policy's and the critic's norms apart
            for mid in ("store_policy", "dc_policy"):
                opts = dict(learner.get_optimizers_for_module(mid))
                assert set(opts) == {"policy", "critic"}
                module = learner.module[mid].unwrapped()
                critic = {id(q) for q in module.pair_critic.parameters()}
                assert {id(q) for g in opts["critic"].param_groups for q in g["params"]} == critic
                policy = {id(q) for g in opts["policy"].param_groups for q in g["params"]}
                assert policy == {id(q) for q in module.net.parameters()} and not policy & critic
            episodes = algo.env_runner_group.local_env_runner.sample(num_timesteps=300, random_actions=False)
            batch = learner._learner_connector(
                rl_module=learner.module, batch={}, episodes=episodes, shared_data={}, metrics=learner.metrics
            )
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    for mid in ("store_policy", "dc_policy"):
        b = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in batch[mid].items() if k != Columns.OBS}
        B = b[Columns.REWARDS].shape[0]
        real = b[Columns.LOSS_MASK].astype(bool)
        assert B > 60 and (~real).sum() >= 4  # past the horizon (30): episodes end and restart
        pr = b[PAIR_REWARDS]
        assert pr.shape == (B, c.K)
        assert np.all(pr[~real] == 0.0)
        assert b[Postprocessing.ADVANTAGES].shape == (B, c.K)
        assert b[Postprocessing.VALUE_TARGETS].shape == (B, c.K)
        adv = b[Postprocessing.ADVANTAGES][real]
        assert abs(adv.mean()) < 1e-4 and adv.std() == pytest.approx(1.0, rel=1e-3)
        # episodes that reach the horizon (30) end there: their last real row is terminal (the value
        # target is the reward, nothing bootstrapped), the next row is the chunk's bootstrap row
        term = np.flatnonzero(b[PAIR_TERMINAL] == 1.0)
        assert len(term) >= 2 and np.all(real[term]) and np.all(~real[term + 1])
        np.testing.assert_allclose(b[Postprocessing.VALUE_TARGETS][term], pr[term], rtol=1e-5, atol=1e-6)
        cut = np.flatnonzero(b[Columns.TRUNCATEDS].astype(bool) & (b[PAIR_TERMINAL] == 0.0))
        assert len(cut) >= 1  # the chunks that end mid-episode still bootstrap
        if mid == "store_policy":
            np.testing.assert_allclose(pr[real].sum(-1), b[Columns.REWARDS][real], rtol=1e-5, atol=1e-6)
        else:  # a DC's per-SKU rewards are its subtree's: 3 x its reward, the mean over the DC and 2 stores
            np.testing.assert_allclose(pr[real].sum(-1), 3 * b[Columns.REWARDS][real], rtol=1e-5, atol=1e-6)
        vals = learner.module[mid].compute_values(
            {Columns.OBS: {k: torch.as_tensor(v) for k, v in batch[mid][Columns.OBS].items()}}
        )
        assert tuple(vals.shape) == (B, c.K)


@pytest.mark.slow
def test_run__pair_credit_trains_and_writes_the_usual_run_directory(tmp_path):
    """A short `restock train tiny --trainer rllib` with rllib.pair_credit: the run directory as usual, the
    critic alone for the first two iterations (the policy does not move: approx_kl 0), then PPO."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: pairs\nnum_envs: 4\nbc_episodes: 2\nbc_epochs: 1\neval_episodes: 2\neval_every: 256\n"
        "checkpoint_every: 100000\nrllib:\n  pair_credit: true\nppo:\n  minibatch_size: 64\n  n_epochs: 2\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "restock.cli", "train", "tiny", "--trainer", "rllib", "--steps", "512"]
    cmd += ["--out", str(tmp_path / "runs"), "--config", str(exp)]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=420, env=env, cwd=Path(__file__).parents[2]
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    run = sorted((tmp_path / "runs").iterdir())[-1]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["trainer"] == "rllib"
    assert (run / "policies" / "store.pt").exists() and (run / "checkpoints" / "latest.json").exists()
    assert (run / "best" / "policies" / "store.pt").exists()
    # the behaviour-cloned start is kept as a run of its own (restock eval measures what PPO added to it)
    assert (run / "cloned" / "policies" / "store.pt").exists()
    assert json.loads((run / "cloned" / "run.json").read_text())["status"] == "done"
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    series = {}
    for s, tag, v in rows:
        series.setdefault(tag, []).append((int(s), float(v)))
    warm = [v for _, v in sorted(series["rllib/learners/store_policy/pair_warmup"])]
    kl = [v for _, v in sorted(series["losses/approx_kl"])]
    assert warm == [1.0, 1.0, 0.0, 0.0]
    assert kl[:2] == [0.0, 0.0] and all(v > 0 for v in kl[2:])
    assert all(np.isfinite(v) for _, v in series["losses/value_loss"])
    assert {"charts/episodic_cost", "eval/episodic_cost", "losses/entropy"} <= set(series)
