"""RLlib sample paths (issue 10, item 1) and the vectorised RLlib env / module pieces (item 2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from ray.rllib.env.env_context import EnvContext  # noqa: E402
from restock.training.rllib_env import RLlibInventoryEnv, kernel_envs_per_step, path_id  # noqa: E402

SEED = 7


def _cfg(**kw):
    cfg = {
        "scenario": "tiny",
        "roles": ["store"],
        "baseline": {"policy": "base_stock", "knobs": {}},
        "seed": SEED,
        "shield": True,
    }
    cfg.update(kw)
    return cfg


def test_path_id__is_the_seed_sequence_of_runner_env_episode():
    got = path_id(SEED, 2, 5, 11)
    ss = np.random.SeedSequence(entropy=SEED, spawn_key=(2, 5, 11))
    assert got == int(ss.generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
    assert 0 <= got < 2**63
    assert path_id(SEED, 2, 5, 11) == got  # reproducible
    grid = list(itertools.product(range(4), range(8), range(16)))
    ids = [path_id(SEED, *k) for k in grid]
    assert len(set(ids)) == len(grid)  # every (runner, env, episode) has its own path
    assert not set(ids) & {path_id(SEED + 1, *k) for k in grid}  # and the seed matters


def _demand_paths(env: RLlibInventoryEnv) -> np.ndarray:
    """The demand [E, T, S, K] the env's E environments meet over one episode (zero orders)."""
    out = []
    zero = {a: np.zeros(env.K, np.int64) for a in env.possible_agents}
    for _ in range(env.compiled.horizon):
        out.append(env.env.demand.get(env.env.t).copy())
        env.step(zero)
    return np.stack(out, axis=1)


def _runner_env(worker: int, num_envs: int, seed: int = SEED) -> RLlibInventoryEnv:
    env = RLlibInventoryEnv(EnvContext(_cfg(num_envs=num_envs, seed=seed), worker_index=worker))
    env.reset(seed=seed + worker)  # what RLlib's env runner w passes to its first reset
    return env


def test_env__runners_envs_and_episodes_meet_distinct_reproducible_demand():
    envs = [_runner_env(w, 4) for w in (1, 2)]
    first = np.concatenate([_demand_paths(e) for e in envs])  # 8 environments
    flat = first.reshape(len(first), -1)
    assert all(not np.array_equal(a, b) for a, b in itertools.combinations(flat, 2))
    # the next episode of every environment is new too
    for e in envs:
        e.reset()
    second = np.concatenate([_demand_paths(e) for e in envs]).reshape(8, -1)
    assert not any(np.array_equal(a, b) for a in flat for b in second)
    # same seed, same paths; another seed, other paths
    again = np.concatenate([_demand_paths(_runner_env(w, 4)) for w in (1, 2)])
    np.testing.assert_array_equal(again, first)
    other = np.concatenate([_demand_paths(_runner_env(w, 4, seed=SEED + 1)) for w in (1, 2)])
    assert not np.array_equal(other, first)


def test_env__vectorised_env_steps_like_separate_array_envs():
    """E kernel environments in one RLlib env: the same rewards and observations as E one-environment
    ArrayEnvs on the same paths, fed the same levels (baseline DC, shield on)."""
    from restock.agents.base import JointPolicy
    from restock.agents.catalogue import make_policy
    from restock.agents.shield import Shield
    from restock.envs import kernel as kn
    from restock.envs.array_env import ArrayEnv
    from restock.envs.roles import role_nodes

    E = 3
    env = RLlibInventoryEnv(EnvContext(_cfg(num_envs=E), worker_index=1))
    obs, _ = env.reset(seed=SEED + 1)
    c = env.compiled
    stores = role_nodes(c, "store")
    singles = []
    for e in range(E):
        a = ArrayEnv(c, num_envs=1, seed=SEED, shield=Shield(c, mode="enforce"))
        a.reset(paths=env.env.paths[e : e + 1])
        singles.append(a)
    base = JointPolicy(make_policy("base_stock", {}))
    base.bind(c)
    rng = np.random.default_rng(0)
    for _ in range(c.horizon):
        acts = {}
        for aid, o in obs.items():
            m = o["action_mask"].reshape(c.K, -1)
            acts[aid] = np.array([rng.choice(np.flatnonzero(row)) for row in m])
        obs, rew, _, trunc, _ = env.step(acts)
        for e, a in enumerate(singles):
            lv = np.zeros((1, c.N, c.K), np.int64)
            for n in stores:
                lv[0, n] = acts[f"{c.agent_ids[n]}_e{e}"]
            q = np.zeros((1, c.N, c.K), np.int32)
            kn.levels_to_qty(c.params, a.state, a.work, lv, q)
            qty = base.propose(a).qty.astype(np.int64)
            qty[:, stores] = q[:, stores]
            _, _, r, _, _ = a.step_qty(qty)
            for n in stores:
                aid = f"{c.agent_ids[n]}_e{e}"
                assert rew[aid] == pytest.approx(r[0, n] / env.reward_scale)
                np.testing.assert_array_equal(obs[aid]["observations"], a.obs[0, n])
    assert trunc["__all__"]


def test_env__agents_are_environment_node_pairs():
    env = RLlibInventoryEnv(_cfg(num_envs=2, roles=["store", "dc"]))
    c = env.compiled
    assert kernel_envs_per_step({"num_envs": 2}) == 2 and kernel_envs_per_step({}) == 1
    assert len(env.possible_agents) == 2 * c.N
    assert {a.rsplit("_e", 1)[0] for a in env.possible_agents} == set(c.agent_ids)
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(env.possible_agents)
    for a, o in obs.items():
        assert env.observation_spaces[a].contains(o)


def test_env__global_state_per_environment():
    """The centralised critic's state of environment e is built from that environment alone (its layout:
    tests/training/test_rllib_mappo.py)."""
    env = RLlibInventoryEnv(_cfg(num_envs=2, central_critic=True))
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step({a: np.ones(env.K, np.int64) for a in env.possible_agents})
    g = env._global()
    before = g.copy()
    env.env.state.on_hand[1] += 7  # environment 1 only
    after = env._global()
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.array_equal(after[1], before[1])
    c = env.compiled
    for e in range(2):
        for n, aid in enumerate(c.agent_ids):
            a = f"{aid}_e{e}"
            if a in obs:
                np.testing.assert_array_equal(obs[a]["global_state"], before[e, n])
                assert env.observation_spaces[a].contains(obs[a])


def test_block_categorical__matches_rllib_multicategorical():
    from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
    from restock.training.rllib_module import BlockCategorical

    g = torch.Generator().manual_seed(0)
    B, K, L = 6, 5, 4
    logits = torch.randn(B, K * L, generator=g)
    logits[:, 1] = -1e8  # a masked level
    other = torch.randn(B, K * L, generator=g)
    ours = BlockCategorical.get_partial_dist_cls(levels=L).from_logits(logits)
    ref = TorchMultiCategorical.from_logits(logits, input_lens=[L] * K)
    act = torch.randint(0, L, (B, K), generator=g)
    torch.testing.assert_close(ours.logp(act), ref.logp(act))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    theirs = TorchMultiCategorical.from_logits(other, input_lens=[L] * K)
    ours_o = BlockCategorical.get_partial_dist_cls(levels=L).from_logits(other)
    torch.testing.assert_close(ours.kl(ours_o), ref.kl(theirs))
    torch.testing.assert_close(ours.to_deterministic().sample(), ref.to_deterministic().sample())
    # sampling: right shape, never a masked level, frequencies match the probabilities
    torch.manual_seed(0)
    draws = torch.stack([ours.sample() for _ in range(4000)])  # [n, B, K]
    assert draws.shape == (4000, B, K)
    assert not (draws[:, :, 0] == 1).any()
    freq = torch.nn.functional.one_hot(draws, L).float().mean(0)  # [B, K, L]
    probs = torch.softmax(logits.reshape(B, K, L), -1)
    assert torch.max(torch.abs(freq - probs)) < 0.04


def test_fast_gae__equals_rllib_value_targets():
    from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets
    from restock.training.rllib_module import fast_value_targets

    rng = np.random.default_rng(3)
    n = 500
    values = rng.normal(size=n).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    term = (rng.random(n) < 0.02).astype(np.float32)
    trunc = (rng.random(n) < 0.05).astype(np.float32)
    trunc[-1] = 1.0
    ref = compute_value_targets(values, rewards, term, trunc, gamma=0.99, lambda_=0.95)
    got = fast_value_targets(values, rewards, term, trunc, gamma=0.99, lambda_=0.95)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_module__one_body_pass_gives_the_networks_logits_and_values():
    import gymnasium
    from restock.agents.networks import NetConfig
    from restock.training.rllib_module import PerSkuRLModule

    K, F, G, L = 3, 4, 2, 5
    cfg = NetConfig(n_skus=K, sku_features=F, node_features=G, levels=L)
    obs_space = gymnasium.spaces.Dict(
        {
            "observations": gymnasium.spaces.Box(-np.inf, np.inf, (K * F + G,), np.float32),
            "action_mask": gymnasium.spaces.Box(0.0, 1.0, (K * L,), np.float32),
        }
    )
    act_space = gymnasium.spaces.MultiDiscrete(np.full(K, L))
    m = PerSkuRLModule(
        observation_space=obs_space, action_space=act_space, model_config={"net": cfg.to_dict()}
    )
    torch.manual_seed(1)
    x = torch.randn(7, K * F + G)
    mask = (torch.rand(7, K * L) > 0.3).float()
    obs = {"observations": x, "action_mask": mask}
    logits, values = m.logits_and_values(obs)
    torch.testing.assert_close(logits, m.net.forward_logits(x, mask))
    torch.testing.assert_close(values, m.net.forward_value(x))
    torch.testing.assert_close(m._logits(obs), m.net.forward_logits(x, mask))


def _remote_runner_paths(seed: int) -> list[tuple[int, np.ndarray]]:
    """(runner index, demand [E, T, S, K]) from each of 2 remote env runners with 4 environments each,
    after RLlib's own first reset and one sampled step."""
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.common import Baseline, net_config, observation_stats
    from restock.training.experiment import load_experiment
    from restock.training.rllib_train import build_config

    c = compile_scenario(load_scenario("tiny"))
    exp = load_experiment(None, num_envs=4, roles=["store"], seed=seed)
    exp.rllib.num_env_runners = 2
    exp.rllib.train_batch_size = 4 * c.horizon
    base = Baseline("base_stock", {}, 0.0, 1.0)
    cfgs = {"store": net_config(c, "store", exp, observation_stats(c, "store", base, episodes=1))}
    from ray.rllib.env.env_runner_group import EnvRunnerGroup

    # the env runners alone, as PPO builds them (no learner): RLlib's seeding and env contexts
    group = EnvRunnerGroup(config=build_config(c, exp, base, cfgs, shield=True), local_env_runner=False)
    horizon = c.horizon

    def probe(er):
        env = er.env.envs[0].unwrapped
        er.sample(num_timesteps=len(env.possible_agents), explore=True)  # RLlib resets, then steps once
        dem = np.stack([env.env.demand.get(t).copy() for t in range(horizon)], axis=1)
        return env.runner, dem

    try:
        return sorted(group.foreach_env_runner(probe, local_env_runner=False), key=lambda r: r[0])
    finally:
        group.stop()


@pytest.mark.heavy
def test_rllib__two_remote_runners_of_four_envs_meet_eight_distinct_paths_again_from_the_seed():
    """2 remote env runners x 4 environments: 8 pairwise-distinct demand paths; the same seed gives
    the same 8 again. About 1-2 minutes (two algorithms with remote runners); run with
    `.venv/bin/python -m pytest -q -m heavy tests/training/test_rllib_paths.py`."""
    import ray

    own = not ray.is_initialized()
    if own:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        first = _remote_runner_paths(SEED)
        again = _remote_runner_paths(SEED)
    finally:
        if own:
            ray.shutdown()
    assert [w for w, _ in first] == [1, 2]
    paths = np.concatenate([d for _, d in first])
    assert paths.shape[0] == 8
    flat = paths.reshape(8, -1)
    assert all(not np.array_equal(a, b) for a, b in itertools.combinations(flat, 2))
    np.testing.assert_array_equal(np.concatenate([d for _, d in again]), paths)
