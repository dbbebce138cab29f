"""SB3 trainer: a tiny-budget run end to end, kill-and-resume reproduces the uninterrupted run,
and the learned policy round-trips through evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from restock.agents.learned import load_learned_policy
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.eval.rollout import rollout
from restock.training.experiment import load_experiment
from restock.training.sb3_env import RoleVecEnv
from restock.training.train import train
from typer.testing import CliRunner

from restock.cli import app


@pytest.fixture(scope="module")
def tiny():
    return compile_scenario(load_scenario("tiny"))


def _exp(**kw):
    exp = load_experiment(
        None,
        steps=kw.pop("steps", 1024),
        checkpoint_every=kw.pop("checkpoint_every", 512),
        eval_every=kw.pop("eval_every", 10**9),
        **kw,
    )
    exp.ppo.rollout_steps = 16
    exp.ppo.minibatch_size = 64
    return exp


def test_sb3__vec_env_masks_and_shapes(tiny):
    from restock.agents.base import JointPolicy
    from restock.agents.heuristics import ZeroPolicy

    venv = RoleVecEnv(tiny, "store", num_envs=3, seed=0, other=JointPolicy(ZeroPolicy()))
    obs = venv.reset()
    assert obs.shape == (3 * 2, venv.observation_space.shape[0])
    m = venv.env_method("action_masks")
    assert len(m) == 6 and m[0].shape == (3 * 9,) and m[0].dtype == bool
    acts = np.zeros((6, 3), np.int64)
    obs, r, d, infos = venv.step(acts)
    assert r.shape == (6,) and not d.any()


def test_sb3__train_writes_a_run_that_evaluates(tiny, tmp_path):
    run = train(tiny, _exp(), "sb3", out_root=tmp_path, log=lambda s: None)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["roles"] == ["store"]
    tags = {line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    for tag in (
        "charts/episodic_cost",
        "charts/SPS",
        "inventory/fill_rate",
        "inventory/holding_cost",
        "inventory/stockout_cost",
        "safety/intervention_rate",
        "safety/violations",
        "losses/value_loss",
    ):
        assert tag in tags, tag
    assert list(run.glob("events.out.tfevents.*"))
    rates = [
        float(line.split(",")[2])
        for line in (run / "metrics.csv").read_text().splitlines()[1:]
        if line.split(",")[1] == "safety/intervention_rate"
    ]
    assert rates and all(0.0 <= r <= 1.0 for r in rates)  # a share of node-SKU decisions, as in eval
    ent = [
        float(line.split(",")[2])
        for line in (run / "metrics.csv").read_text().splitlines()[1:]
        if line.split(",")[1] == "losses/entropy"
    ]
    assert ent and all(e > 0 for e in ent)  # the entropy itself (SB3 logs its negative as entropy_loss)
    pol = load_learned_policy(run, tiny)
    res = rollout(tiny, pol, episodes=3, seed=7)
    assert np.isfinite(res.cost).all() and res.kpi[:, tiny.M :, 8].sum() > 0  # the learned stores order
    r = CliRunner().invoke(
        app,
        [
            "eval",
            "tiny",
            "--policies",
            f"zero,{run}",
            "--episodes",
            "3",
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    # store trained, tiny's DC played by the run's baseline: labelled so (issue 12, item 4)
    keys = list(json.loads(r.stdout))
    assert any(
        k.startswith(f"{run.name} [store learned; dc: ") and k.endswith(" heuristic]") for k in keys
    ), keys


def test_sb3__crash_after_first_checkpoint_then_resume_matches(tiny, tmp_path):
    exp = _exp(steps=1536, checkpoint_every=512)
    whole = train(tiny, exp, "sb3", out_root=tmp_path / "a", log=lambda s: None)
    cut = train(tiny, exp, "sb3", out_root=tmp_path / "b", log=lambda s: None, stop_after_checkpoints=1)
    assert json.loads((cut / "run.json").read_text())["status"] == "stopped"
    resumed = train(tiny, exp, "sb3", out_root=tmp_path / "b", resume=cut, log=lambda s: None)
    wa = torch.load(whole / "policies" / "store.pt", weights_only=True)
    wb = torch.load(resumed / "policies" / "store.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_sb3__sigkill_after_first_checkpoint_then_resume(tmp_path):
    """A real kill: the `restock train` process dies by SIGKILL once its first checkpoint is on disk;
    `--resume` then finishes the run with the same weights as an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(
        "name: kill\nroles: [store]\nnum_envs: 4\nsteps: 6144\ncheckpoint_every: 512\n"
        "eval_every: 1000000000\nbc_episodes: 2\nbc_epochs: 1\n"
        "ppo: {rollout_steps: 16, minibatch_size: 64, n_epochs: 2}\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [
        sys.executable,
        "-m",
        "restock.cli",
        "train",
        "tiny",
        "--trainer",
        "sb3",
        "--config",
        str(exp_file),
    ]
    root = Path(__file__).parents[2]
    whole = subprocess.run(
        [*cmd, "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env, cwd=root, timeout=600
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "b")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=root,
    )
    deadline = time.time() + 300
    latest = None
    while time.time() < deadline and latest is None:
        found = list((tmp_path / "b").glob("*/checkpoints/latest.json")) if (tmp_path / "b").exists() else []
        latest = found[0] if found else None
        time.sleep(0.05)
    assert latest is not None, "no checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_b = latest.parent.parent
    assert json.loads((run_b / "run.json").read_text())["status"] == "running"  # it never finished
    res = subprocess.run(
        [*cmd, "--resume", str(run_b)], capture_output=True, text=True, env=env, cwd=root, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run_a = next((tmp_path / "a").iterdir())
    wa = torch.load(run_a / "policies" / "store.pt", weights_only=True)
    wb = torch.load(run_b / "policies" / "store.pt", weights_only=True)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_sb3__keep_best_deploys_the_lowest_held_out_cost(tiny, tmp_path):
    exp = _exp(steps=1536, eval_every=512, eval_episodes=2, bc_episodes=2, bc_epochs=1)
    run = train(tiny, exp, "sb3", out_root=tmp_path, log=lambda s: None)
    info = json.loads((run / "run.json").read_text())
    sel = info["summary"]["roles"]["store"]["selected"]
    evals = [
        (int(s), float(v))
        for s, tag, v in (line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:])
        if tag == "eval/episodic_cost"
    ]
    assert len(evals) >= 3 and evals[0][0] == 0  # the behaviour-cloned start is evaluated too
    assert sel["eval_cost"] == pytest.approx(min(v for _, v in evals))
    assert sel["env_steps"] == min(evals, key=lambda e: e[1])[0]
    deployed = torch.load(run / "policies" / "store.pt", weights_only=True)
    best = torch.load(run / "best" / "policies" / "store.pt", weights_only=True)
    assert deployed.keys() == best.keys() and all(torch.equal(deployed[k], best[k]) for k in best)
