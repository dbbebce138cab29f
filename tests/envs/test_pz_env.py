"""The PettingZoo face: API and seed tests on every shipped scenario, masks, strict and clip modes."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test
from restock.envs import parallel_env
from restock.envs.config import shipped_scenarios

# the top-level scenarios and one member of each family (lost_sales/ differ only in numbers)
SCENARIOS = [n for n in shipped_scenarios() if "/" not in n] + ["lost_sales/ls_L4_p39"]


def _over(name):
    return {"horizon": 3} if name == "large" else {}


@pytest.mark.parametrize("name", SCENARIOS)
def test_pz__parallel_api_test(name):
    env = parallel_env(name, mode="strict", **_over(name))
    parallel_api_test(env, num_cycles=60 if name != "large" else 3)


@pytest.mark.parametrize("name", SCENARIOS)
def test_pz__parallel_seed_test(name):
    # the seed test samples actions without masks: that is what clip mode is for
    parallel_seed_test(lambda: parallel_env(name, mode="clip", **_over(name)), num_cycles=20)


def test_pz__agents_spaces_and_cached_identity():
    env = parallel_env("tiny")
    assert env.possible_agents == ["dc_0", "store_0", "store_1"]
    assert env.metadata["name"] == "inventory_v0"
    assert env.observation_space("store_0") is env.observation_space("store_0")
    assert env.action_space("store_1") is env.action_space("store_0")  # same role, same levels
    obs, _ = env.reset(seed=0)
    o = obs["store_0"]
    assert o["observation"].dtype == np.float32 and o["action_mask"].dtype == np.int8
    assert o["action_mask"].shape == (3 * 9,)
    assert env.state().shape == env.state_space.shape


def test_pz__strict_mode_names_agent_sku_level_and_constraint():
    env = parallel_env("tiny", mode="strict")
    obs, _ = env.reset(seed=0)
    # find a masked-out level
    for a in env.agents:
        m = obs[a]["action_mask"].reshape(3, -1)
        bad = np.argwhere(m == 0)
        if len(bad):
            k, l = bad[0]
            break
    else:
        pytest.skip("no masked level at reset")
    acts = {x: np.zeros(3, np.int64) for x in env.agents}
    acts[a][k] = l
    with pytest.raises(ValueError) as exc:
        env.step(acts)
    msg = str(exc.value)
    assert a in msg and f"level {l}" in msg and "constraint" in msg


def test_pz__clip_mode_counts_and_executes_an_allowed_level():
    env = parallel_env("tiny", mode="clip", network__stores__storage_capacity=25)
    obs, _ = env.reset(seed=0)
    acts = {a: np.full(3, env.action_space(a).nvec[0] - 1) for a in env.agents}
    masked = sum(
        int((obs[a]["action_mask"].reshape(3, -1)[np.arange(3), acts[a]] == 0).sum()) for a in env.agents
    )
    _, _, _, _, infos = env.step(acts)
    assert sum(i["clipped"] for i in infos.values()) == masked
    assert masked > 0


def test_pz__rewards_and_infos_carry_costs():
    env = parallel_env("tiny", mode="clip")
    env.reset(seed=3)
    _, rew, term, trunc, infos = env.step({a: np.zeros(3, np.int64) for a in env.agents})
    for a in env.possible_agents:
        assert len(infos[a]["cost_breakdown"]) == len(env.cost_names)
        assert rew[a] <= 0.0 and not term[a] and not trunc[a]


def test_pz__episode_truncates_at_horizon():
    env = parallel_env("tiny", horizon=4)
    env.reset(seed=0)
    for _t in range(4):
        _, _, _, trunc, _ = env.step({a: np.zeros(3, np.int64) for a in env.agents})
    assert all(trunc.values()) and env.agents == []
    with pytest.raises(RuntimeError):
        env.step({})


def test_pz__same_seed_same_demand_new_episode_new_path():
    e1, e2 = parallel_env("tiny"), parallel_env("tiny")
    o1, _ = e1.reset(seed=11)
    o2, _ = e2.reset(seed=11)
    z = {a: np.zeros(3, np.int64) for a in e1.possible_agents}
    for _ in range(5):
        o1, r1, *_ = e1.step(z)
        o2, r2, *_ = e2.step(z)
    assert r1 == r2
    e1.reset()  # next episode: next path
    o3, r3, *_ = e1.step(z)
    e2.reset(seed=11)
    o4, r4, *_ = e2.step(z)
    assert r3 != r4 or not np.array_equal(o3["store_0"]["observation"], o4["store_0"]["observation"])
