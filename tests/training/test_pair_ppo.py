"""The pair_ppo trainer (training/pair_ppo.py): per-pair costs that add up to the kernel's, a short run end
to end, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.learned import load_role
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.pair_costs import check_pair_costs, pair_costs, subtree_costs
from restock.envs.roles import role_nodes
from restock.envs.types import COST_NAMES, KPI_NAMES
from restock.training.experiment import load_experiment
from restock.training.train import train


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _drive(c, periods: int, seed: int, big: bool):
    """Step a batch with random orders at every node (large ones with ``big``: storage overflows, DCs run
    short and ration); yield (pair costs, env) after every step."""
    env = ArrayEnv(c, num_envs=3, seed=seed)
    env.reset()
    pol = JointPolicy(make_policy("base_stock", {}))
    pol.bind(c)
    rng = np.random.default_rng(seed)
    for _ in range(periods):
        qty = pol.propose(env).qty.astype(np.int64)
        hi = 60 if big else 8
        stores = role_nodes(c, "store")
        qty[:, stores] = rng.integers(0, hi, size=qty[:, stores].shape)
        qty[:, : c.M] = np.where(rng.random(qty[:, : c.M].shape) < 0.5, qty[:, : c.M], 0)
        before = env.state.on_hand.copy()
        tc = min(int(env.t), c.horizon)
        env.step_qty(qty)
        yield pair_costs(c.params, env.state, before, tc), env


@pytest.mark.parametrize(
    "name", ["tiny", "default", "serial_3", "constrained", "network_2e", "benchmarks/orgym_invmgmt_v1"]
)
def test_pair_costs_add_up_to_each_nodes_kernel_cost(name):
    """Every (node, SKU) pair's cost, rebuilt from the state, adds up to the kernel's cost of each node
    (stores and DCs; lost sales and backlog; revenue where the reward includes it)."""
    c = compile_scenario(load_scenario(name, horizon=12))
    overflow = COST_NAMES.index("overflow")
    unmet = KPI_NAMES.index("unmet")
    saw = {"overflow": False, "dc_short": False}
    for big in (False, True):
        for pc, env in _drive(c, 12, seed=3, big=big):
            check_pair_costs(pc, env.out, bool(c.params.include_revenue), name)
            node = env.out.cost.sum(-1) - (env.out.revenue if c.params.include_revenue else 0.0)
            np.testing.assert_allclose(pc.sum(-1), node, rtol=1e-9, atol=1e-9)
            saw["overflow"] |= bool(np.any(env.out.cost[..., overflow] > 0))
            saw["dc_short"] |= bool(np.any(env.out.kpi[:, : c.M, unmet] > 0))
            assert np.all(np.isfinite(pc))
    if name == "tiny":  # the overflow share and a DC's shortage are exercised, not only the zero case
        assert saw["overflow"] and saw["dc_short"], saw


def test_a_dc_pairs_credit_is_its_sku_cost_over_the_subtree():
    c = compile_scenario(load_scenario("serial_3", horizon=6))
    for pc, _env in _drive(c, 6, seed=2, big=False):
        sub = subtree_costs(c.params, pc)
        # serial chain: node 0 feeds 1 feeds 2 (one SKU): the top DC's credit is the chain's cost
        np.testing.assert_allclose(sub[:, 0], pc.sum(axis=1))
        np.testing.assert_allclose(sub[:, c.N - 1], pc[:, c.N - 1])


def test_a_cost_the_decomposition_does_not_cover_stops_with_a_clear_error():
    # disposal of arrivals that do not fit is charged to the node, not to a (node, SKU) decision
    c = compile_scenario(load_scenario("tiny", network__stores__overflow="dispose"))
    with pytest.raises(ValueError, match="per-SKU decomposition does not cover"):
        for pc, env in _drive(c, 30, seed=1, big=True):
            check_pair_costs(pc, env.out, False, "tiny")


def _exp(**kw):
    base = dict(
        name="t",
        trainer="pair_ppo",
        roles=["store"],
        baseline="base_stock",
        num_envs=2,
        steps=300,
        eval_every=120,
        checkpoint_every=120,
        eval_episodes=2,
        bc_episodes=2,
        bc_epochs=1,
        ppo={"minibatch_size": 60, "n_epochs": 2, "learning_rate": 0.003},
    )
    base.update(kw)
    return load_experiment(None, **base)


def test_pair_ppo_short_run_writes_a_run_directory_and_moves_off_the_clone(tmp_path):
    c = compile_scenario(load_scenario("tiny"))
    run = train(
        c, _exp(keep_best=False, keep_checkpoints=2), "pair_ppo", out_root=tmp_path, log=lambda s: None
    )
    info = json.loads((run / "run.json").read_text())
    # checkpoints at 120 and 240 env steps and at the end (300): keep_checkpoints 2 leaves the newest two,
    # named by env steps like the other trainers', latest.json naming the last
    kept = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert kept == [f"{240:012d}", f"{300:012d}"]
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["path"] == f"{300:012d}"
    assert (run / "checkpoints" / f"{300:012d}" / "policies" / "store.pt").exists()
    assert info["status"] == "done" and info["trainer"] == "pair_ppo" and info["roles"] == ["store"]
    for f in ("policies/store.pt", "cloned/policies/store.pt", "cloned/run.json", "checkpoints/latest.json"):
        assert (run / f).exists(), f
    tags = {line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {
        "eval/episodic_cost",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/approx_kl",
        "losses/entropy",
        "charts/SPS",
        "charts/episodic_cost",
        "safety/intervention_rate",
    } <= tags
    # two critic warm-up iterations, then PPO changes the policy (keep_best off: the last weights)
    learned, cloned = load_role(run, "store"), load_role(run / "cloned", "store")
    with torch.no_grad():
        diff = sum(
            float((a - b).abs().sum()) for a, b in zip(learned.parameters(), cloned.parameters(), strict=True)
        )
    assert diff > 0
    summary = info["summary"]["roles"]["store"]
    assert summary["iterations"] == 5 and summary["env_steps"] == 300


def test_pair_ppo_trains_store_and_dc_together(tmp_path):
    c = compile_scenario(load_scenario("tiny", horizon=10))
    run = train(
        c,
        _exp(roles=["store", "dc"], steps=60, keep_best=False),
        "pair_ppo",
        out_root=tmp_path,
        log=lambda s: None,
    )
    info = json.loads((run / "run.json").read_text())
    assert info["roles"] == ["dc", "store"]
    tags = {line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {"losses/value_loss/dc", "losses/value_loss/store"} <= tags
    assert (run / "cloned" / "policies" / "dc.pt").exists()


def test_pair_ppo_is_deterministic_for_a_seed(tmp_path):
    c = compile_scenario(load_scenario("tiny", horizon=10))
    nets = []
    for i in range(2):
        run = train(
            c, _exp(steps=60, keep_best=False), "pair_ppo", out_root=tmp_path / str(i), log=lambda s: None
        )
        nets.append(load_role(run, "store"))
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"ppo": {"rollout_steps": 8}}, "ppo.rollout_steps"),
        ({"shield": {"penalty": 0.1}}, "shield.penalty"),
        ({"dcl": {"iterations": 2}}, "dcl.iterations"),
        ({"network": {"centralised_critic": True}}, "network.centralised_critic"),
    ],
)
def test_pair_ppo_refuses_settings_it_does_not_use(tmp_path, kw, field):
    c = compile_scenario(load_scenario("tiny"))
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        train(c, _exp(**kw), "pair_ppo", out_root=tmp_path, log=lambda s: None)
    assert not any(tmp_path.iterdir())  # refused before a run directory was made


def test_behaviour_cloning_gets_at_least_the_minimum_steps_for_a_small_role():
    """A DC role has few pairs: its share of a proportional cloning budget was a handful of gradient steps."""
    from restock.training.pair_ppo import BC_MIN_STEPS, _bc_caps

    exp = _exp(steps=43_680, ppo={"minibatch_size": 16_384, "n_epochs": 4})
    small = _bc_caps(exp, 40)  # network_2e's DCs: 2 x 20 SKUs
    assert small["max_updates"] == BC_MIN_STEPS
    big = _bc_caps(exp, 100_000)
    assert big["max_updates"] > BC_MIN_STEPS  # proportional above the floor
