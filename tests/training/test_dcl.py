"""The dcl trainer (training/dcl_train.py): state tables, a short run end to end, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.exact import exact_policy_cost
from restock.agents.learned import TorchPolicy, load_role
from restock.agents.single_node_dp import solve
from restock.agents.single_node_scenario import spec_from_scenario
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training.dcl_train import StateTable
from restock.training.experiment import load_experiment
from restock.training.train import train


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # as `restock train` does: tiny networks, and spare threads spin on a shared machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_state_table_round_trip():
    c = compile_scenario(load_scenario("lost_sales/ls_L3_p9", horizon=50))
    table = StateTable(c)
    env = ArrayEnv(c, num_envs=table.S, features=False)
    env.reset()
    for _ in range(3):  # at a period where the pipeline ring has turned
        env.step_qty(np.zeros((table.S, 1, 1), np.int64))
    idx = np.random.default_rng(0).permutation(table.S)
    table.write(env, idx)
    np.testing.assert_array_equal(table.index(env), idx)
    # and the kernel agrees with the written state: the position is x + pipeline
    ip = env.state.on_hand[:, 0, 0] + env.state.transit[:, 0, 0]
    np.testing.assert_array_equal(ip, table.coords[idx].sum(axis=1))


def test_exact_policy_cost_of_a_heuristic_matches_simulation_order():
    c = compile_scenario(load_scenario("lost_sales/ls_L2_p4"))
    opt = solve(spec_from_scenario(c)).average_cost
    lo, hi = exact_policy_cost(c, JointPolicy(make_policy("base_stock", {"store": {"z": 0.0}})))
    assert hi - lo < 1e-6
    assert lo >= opt - 1e-9  # no heuristic beats the optimum


@pytest.mark.slow
def test_dcl_short_run_learns_from_the_cloned_start(tmp_path):
    """Three policy-iteration steps on a small instance: the run directory as the other trainers write it,
    a learned policy that reads only the exact state, and an exact cost no worse than the cloned start."""
    c = compile_scenario(load_scenario("lost_sales/ls_L1_p19", horizon=200))
    exp = load_experiment(
        None,
        name="t",
        trainer="dcl",
        roles=["store"],
        baseline="capped_base_stock",
        eval_episodes=4,
        dcl={
            "iterations": 3,
            "states": 200,
            "rollouts": 64,
            "rollouts_growth": 1.0,
            "horizon": 30,
            "sample_envs": 16,
            "sample_periods": 50,
            "burn_in": 20,
            "epochs": 150,
            "bc_epochs": 300,
        },
    )
    run = train(c, exp, "dcl", out_root=tmp_path, log=lambda s: None)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["trainer"] == "dcl" and info["roles"] == ["store"]
    for f in (
        "policies/store.pt",
        "cloned/policies/store.pt",
        "cloned/run.json",
        "metrics.csv",
        "best/store.json",
    ):
        assert (run / f).exists(), f
    tags = {line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {"eval/episodic_cost", "dcl/labels_changed", "losses/policy_loss", "charts/SPS"} <= tags
    opt = solve(spec_from_scenario(c)).average_cost
    learned = np.mean(exact_policy_cost(c, JointPolicy(TorchPolicy(load_role(run, "store")))))
    cloned = np.mean(exact_policy_cost(c, JointPolicy(TorchPolicy(load_role(run / "cloned", "store")))))
    assert learned >= opt - 1e-9
    print(f"exact cost: optimum {opt:.4f}, cloned {cloned:.4f}, learned {learned:.4f}")
    assert learned < cloned, (learned, cloned, opt)
    assert learned <= opt * 1.02, (learned, opt)


def test_dcl_refuses_what_it_cannot_train(tmp_path):
    c = compile_scenario(load_scenario("tiny"))
    exp = load_experiment(None, name="t", trainer="dcl", roles=["store"], baseline="base_stock")
    with pytest.raises(ValueError, match="one decision per period"):
        train(c, exp, "dcl", out_root=tmp_path, log=lambda s: None)
