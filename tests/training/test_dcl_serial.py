"""The dcl trainer on a network (training/dcl_serial.py): every stage of serial_3 learned with the echelon
feature; the run directory evaluates, exports and plays the same decisions as the table the rollouts use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from restock.agents.echelon_features import augment, uses_echelon
from restock.agents.learned import load_learned_policy, load_role
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training import dcl_serial as ds
from restock.training import dcl_serial_parts as dsp
from restock.training.experiment import load_experiment
from restock.training.train import train


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _exp(**dcl):
    base = {
        "iterations": 1,
        "states": 40,
        "rollouts": 16,
        "rollouts_growth": 1.0,
        "horizon": 20,
        "window": 2,
        "sample_envs": 16,
        "sample_periods": 60,
        "burn_in": 20,
        "epochs": 100,
        "bc_epochs": 600,
        "chunk": 20_000,
    }
    base.update(dcl)
    return load_experiment(
        None,
        name="t",
        trainer="dcl",
        roles=["store", "dc"],
        baseline="echelon_base_stock",
        eval_episodes=4,
        dcl=base,
    )


def test_snapshot_restores_the_state_with_the_pipeline_rotated_to_period_zero():
    """A state copied at period t and written into an environment at period 0 is the same state: the
    same positions now, and the same arrivals and costs on the same demand."""
    c = compile_scenario(load_scenario("serial_3", horizon=40))
    a = ArrayEnv(c, num_envs=8, seed=3, features=False)
    a.reset()
    rng = np.random.default_rng(0)
    for _ in range(7):  # the ring (W = 3) has turned
        a.step_qty(rng.integers(0, 9, size=(8, c.N, 1)))
    snap = dsp._snapshot(a.state, np.arange(8))
    b = ArrayEnv(c, num_envs=8, seed=3, features=False)
    b.reset()
    dsp._write(b.state, snap, np.arange(8))
    pa, pb = dsp.Positions(a), dsp.Positions(b)
    for x, y in zip(pa(), pb(), strict=True):
        np.testing.assert_array_equal(x, y)
    # the same orders from here: arrivals match period by period (demand differs: different t)
    for _ in range(4):
        q = rng.integers(0, 9, size=(8, c.N, 1))
        a.step_qty(q)
        b.step_qty(q)
        np.testing.assert_array_equal(a.state.arrived, b.state.arrived)


@pytest.mark.slow
def test_dcl_network_run_directory_eval_and_export(tmp_path):
    """A one-iteration run on serial_3: layout, the echelon policy in `load_learned_policy`, the cloned
    start equal to the tuned heuristic's decisions, the table equal to the networks, and an export with
    ONNX parity on echelon observations."""
    c = compile_scenario(load_scenario("serial_3"))
    run = train(c, _exp(), "dcl", out_root=tmp_path, log=lambda s: None)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["trainer"] == "dcl" and info["roles"] == ["dc", "store"]
    for f in (
        "policies/store.pt",
        "policies/dc.pt",
        "policies/dc.features.json",
        "cloned/policies/dc.pt",
        "cloned/policies/dc.features.json",
        "cloned/run.json",
        "checkpoints/iter_0001/policies/store.pt",
        "checkpoints/latest.json",
        "best/store.json",
        "metrics.csv",
    ):
        assert (run / f).exists(), f
    tags = {line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {"eval/episodic_cost", "dcl/labels_changed", "losses/policy_loss", "charts/SPS"} <= tags
    assert uses_echelon(run, "dc") and uses_echelon(run, "store")

    # the learned policy as `restock eval` builds it decides what the rollouts' table decides
    roles = ds._roles(c)
    nets = {r: load_role(run, r) for r in roles}
    grid = dsp.Grid(c, roles, -40, 60, -40, 90)
    grid.refresh(nets)
    joint = load_learned_policy(run, c)
    joint.bind(c)
    env = ArrayEnv(c, num_envs=16, seed=5)
    env.reset()
    pos = dsp.Positions(env)
    lv = np.zeros(env.state.on_hand.shape, np.int64)
    for _ in range(120):
        ip, eip = pos()
        grid.decide(ip, eip, lv)
        q_table = env.levels_to_qty(lv).copy()
        q_net = joint.propose(env).qty
        np.testing.assert_array_equal(q_table, q_net)
        env.step_qty(q_net)

    # the cloned start plays the tuned echelon base-stock (nearly everywhere on its own visits)
    from restock.agents.base import JointPolicy
    from restock.agents.catalogue import make_policy

    cloned = load_learned_policy(run / "cloned", c)
    heur = JointPolicy(make_policy("echelon_base_stock", info["baseline"]["knobs"]))
    cloned.bind(c)
    heur.bind(c)
    env = ArrayEnv(c, num_envs=16, seed=6)
    env.reset()
    same = tot = 0
    for _ in range(150):
        qh = heur.propose(env).qty
        same += int((cloned.propose(env).qty == qh).sum())
        tot += qh.size
        env.step_qty(qh)
    assert same / tot > 0.97, same / tot

    # export: the ONNX graph reads the echelon observation, parity checked on it
    from restock.training.export import export_run

    man = export_run(run, tmp_path / "art", n_parity=300, log=lambda s: None)
    for role in ("store", "dc"):
        r = man["roles"][role]
        assert r["policy"] == "onnx" and r["extra_sku_features"] == ["echelon_position"]
        assert r["parity"]["greedy_mismatches"] - r["parity"]["greedy_mismatches_at_ties"] == 0
    rows = augment(env, np.array([0, 1]))
    assert rows.shape[1] == r["inputs"]["obs"][1]


def test_dcl_network_refuses_what_it_cannot_train(tmp_path):
    c = compile_scenario(load_scenario("tiny"))
    with pytest.raises(ValueError, match="dcl on a network needs"):
        train(c, _exp(), "dcl", out_root=tmp_path, log=lambda s: None)
