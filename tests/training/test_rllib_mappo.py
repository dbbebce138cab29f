"""Store and DC policies learning together (issue 10, item 6): the MAPPO-style centralised critic and
the DC's regional reward on the RLlib path."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from restock.training.rllib_env import (  # noqa: E402
    GLOBAL_SKU_FEATURES,
    RLlibInventoryEnv,
    global_state_dim,
)

SEED = 3


def _cfg(**kw):
    cfg = {
        "scenario": "tiny",
        "roles": ["store", "dc"],
        "baseline": {"policy": "base_stock", "knobs": {}},
        "seed": SEED,
        "shield": True,
        "central_critic": True,
        "num_envs": 2,
    }
    cfg.update(kw)
    return cfg


def _module(env: RLlibInventoryEnv, agent: str, seed: int = 0):
    from restock.training.common import net_config
    from restock.training.experiment import ExperimentConfig
    from restock.training.rllib_module import PerSkuRLModule

    role = "dc" if agent.startswith("dc_") else "store"
    torch.manual_seed(seed)
    cfg = net_config(env.compiled, role, ExperimentConfig(), ([], []))
    return PerSkuRLModule(
        observation_space=env.observation_spaces[agent],
        action_space=env.action_spaces[agent],
        model_config={"net": cfg.to_dict(), "central_critic": True},
    )


def _batch(o: dict) -> dict:
    return {k: torch.as_tensor(np.asarray(v))[None] for k, v in o.items()}


def _stepped_env(**kw) -> tuple[RLlibInventoryEnv, dict]:
    env = RLlibInventoryEnv(_cfg(**kw))
    obs, _ = env.reset(seed=SEED)
    for _ in range(4):
        obs, *_ = env.step({a: np.full(env.K, 3, np.int64) for a in env.possible_agents})
    return env, obs


def test_global_state__layout_parent_children_and_pooled_roles():
    """Each agent's critic input: per SKU, its parent's state, its children's mean, the mean over stores
    and over DCs (log1p of scaled on hand, in transit, backlog/owed out, owed in), then the period."""
    env, obs = _stepped_env()
    c, s, p = env.compiled, env.env.state, env.compiled.params
    K, S = c.K, GLOBAL_SKU_FEATURES
    assert env.observation_spaces["store_0_e0"]["global_state"].shape == (global_state_dim(K),)
    dc = int(np.flatnonzero(p.is_store == 0)[0])
    stores = np.flatnonzero(p.is_store == 1)
    for e in range(env.E):
        owed_out = np.zeros(s.owed[e].shape)
        for ch in stores:
            owed_out[dc] += s.owed[e, ch]
        back = np.where(p.is_store[:, None] == 1, s.backlog[e], owed_out)
        f = np.log1p(np.stack([s.on_hand[e], s.transit[e], back, s.owed[e]], -1) / p.scale[..., None])
        for n, aid in enumerate(c.agent_ids):
            g = obs[f"{aid}_e{e}"]["global_state"]
            blocks = g[:-1].reshape(K, S)
            parent = f[dc] if n in stores else np.zeros((K, 4))
            kids = f[stores].mean(0) if n == dc else np.zeros((K, 4))
            np.testing.assert_allclose(blocks[:, 0:4], parent, rtol=1e-6)
            np.testing.assert_allclose(blocks[:, 4:8], kids, rtol=1e-6)
            np.testing.assert_allclose(blocks[:, 8:12], f[stores].mean(0), rtol=1e-6)
            np.testing.assert_allclose(blocks[:, 12:16], f[dc], rtol=1e-6)
            assert g[-1] == pytest.approx(s.t[e] / p.horizon)


def test_central_critic__store_value_sees_the_dc_and_dc_value_sees_the_stores():
    """Changing only the DC's stock changes a store's value (not its action distribution: the policy
    stays decentralised), and changing only the stores' stock changes the DC's value."""
    env, obs = _stepped_env()
    c = env.compiled
    dc = int(np.flatnonzero(c.params.is_store == 0)[0])
    dc_id = f"{c.agent_ids[dc]}_e0"
    store_mod, dc_mod = _module(env, "store_0_e0", 1), _module(env, dc_id, 2)
    before = {a: dict(obs[a]) for a in ("store_0_e0", dc_id)}
    st = env.env.state
    st.on_hand[0, dc] += 50  # the DC of environment 0 only
    after_dc = env._global()
    st.on_hand[0, dc] -= 50
    st.on_hand[0, c.params.is_store == 1] += 20  # the stores of environment 0 only
    after_stores = env._global()
    st.on_hand[0, c.params.is_store == 1] -= 20
    store0 = c.agent_ids.index("store_0")
    np.testing.assert_array_equal(env._global()[0, store0], before["store_0_e0"]["global_state"])
    changed = dict(before["store_0_e0"], global_state=after_dc[0, store0])
    with torch.no_grad():
        v0 = store_mod._values(_batch(before["store_0_e0"]))
        v1 = store_mod._values(_batch(changed))
        l0 = store_mod._logits(_batch(before["store_0_e0"]))
        l1 = store_mod._logits(_batch(changed))
    assert not np.array_equal(before["store_0_e0"]["global_state"], changed["global_state"])
    assert abs(float(v1 - v0)) > 1e-6
    torch.testing.assert_close(l0, l1)

    changed_dc = dict(before[dc_id], global_state=after_stores[0, dc])
    with torch.no_grad():
        w0 = dc_mod._values(_batch(before[dc_id]))
        w1 = dc_mod._values(_batch(changed_dc))
    assert abs(float(w1 - w0)) > 1e-6


def test_central_critic__train_forward_shares_the_body_and_matches_compute_values():
    env, obs = _stepped_env()
    mod = _module(env, "store_1_e1", 4)
    b = _batch(obs["store_1_e1"])
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        out = mod._forward_train({Columns.OBS: b})
        v = mod.compute_values({Columns.OBS: b})
    torch.testing.assert_close(out[Columns.EMBEDDINGS], v)
    # the deployed network's config has no global state: serving never needs it
    assert mod.net.cfg.global_state == 0


def test_dc_reward__region_mean_of_the_dc_and_its_stores():
    """dc_reward=region gives a DC the mean reward of itself and its stores; stores keep their own."""
    own, _ = _stepped_env(dc_reward="own", central_critic=False)
    region, _ = _stepped_env(dc_reward="region", central_critic=False)
    acts = {a: np.full(own.K, 2, np.int64) for a in own.possible_agents}
    _, r_own, *_ = own.step(acts)
    _, r_reg, *_ = region.step(acts)
    c = own.compiled
    for e in range(own.E):
        ids = [f"{a}_e{e}" for a in c.agent_ids]
        dc = f"{c.agent_ids[0]}_e{e}"
        assert c.params.is_store[0] == 0
        assert r_reg[dc] == pytest.approx(np.mean([r_own[a] for a in ids]))
        for a in ids:
            if a != dc:
                assert r_reg[a] == r_own[a]
    assert r_reg[f"{c.agent_ids[0]}_e0"] != r_own[f"{c.agent_ids[0]}_e0"]


@pytest.mark.slow
def test_joint_run__store_and_dc_policies_both_train(tmp_path, monkeypatch):
    """A short joint run (store + DC, centralised critic, local Ray) changes both roles' weights."""
    import restock.training.rllib_train as rt
    from restock.agents.learned import load_role
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.experiment import ExperimentConfig
    from restock.training.train import train

    start: dict = {}

    def record_start(algo, compiled, exp, baseline, shield_factory, log, monitor, net_cfgs, run_dir):
        for role, net in rt.learner_nets(algo, net_cfgs).items():
            start[role] = {k: v.clone() for k, v in net.state_dict().items()}

    monkeypatch.setattr(rt, "_warm_start", record_start)
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    exp = ExperimentConfig.model_validate(
        {
            "name": "joint",
            "roles": ["store", "dc"],
            "steps": 256,
            "num_envs": 4,
            "seed": SEED,
            "keep_best": False,
            "bc_episodes": 1,
            "bc_epochs": 1,
            "eval_every": 10**6,
            "eval_episodes": 2,
            "checkpoint_every": 10**6,
            "network": {"centralised_critic": True},
            "ppo": {"minibatch_size": 64, "n_epochs": 2, "rollout_steps": 16, "target_kl": None},
        }
    )
    run = train(compile_scenario(load_scenario("tiny")), exp, "rllib", out_root=tmp_path, log=lambda m: None)
    assert set(start) == {"store", "dc"}
    for role in ("store", "dc"):
        end = load_role(run, role).state_dict()
        moved = [k for k in start[role] if not torch.equal(start[role][k], end[k])]
        assert any(k.startswith("body.") for k in moved), role
        assert any(k.startswith("logits.") for k in moved), role


def test_init_from__checked_before_any_work(tmp_path):
    """rllib.init_from must hold weights for every trained role; the sb3 trainer refuses it."""
    from restock.training.experiment import ExperimentConfig
    from restock.training.rllib_train import check_experiment
    from restock.training.train import check_for_trainer

    exp = ExperimentConfig.model_validate({"roles": ["store", "dc"], "rllib": {"init_from": str(tmp_path)}})
    with pytest.raises(ValueError, match="rllib.init_from: no usable store weights"):
        check_experiment(exp)
    with pytest.raises(ValueError, match="rllib.init_from"):
        check_for_trainer(exp, "sb3")
    with pytest.raises(ValueError, match="rllib.dc_reward"):
        check_for_trainer(ExperimentConfig.model_validate({"rllib": {"dc_reward": "own"}}), "sb3")


def test_check__dc_reward_without_a_trained_dc_is_refused():
    """rllib.dc_reward sets a trained DC's reward (and, with pair credit, a DC pair's): with no DC in the
    roles it would do nothing, so it is refused naming the field; the default value passes."""
    from restock.training.experiment import ExperimentConfig
    from restock.training.rllib_train import check_experiment

    for extra in ({}, {"pair_credit": True}):
        bad = {"roles": ["store"], "rllib": {"dc_reward": "own", **extra}}
        with pytest.raises(ValueError, match="rllib.dc_reward"):
            check_experiment(ExperimentConfig.model_validate(bad))
        check_experiment(
            ExperimentConfig.model_validate(
                {"roles": ["store", "dc"], "rllib": {"dc_reward": "own", **extra}}
            )
        )
        check_experiment(
            ExperimentConfig.model_validate({"roles": ["store"], "rllib": {"dc_reward": "region", **extra}})
        )
