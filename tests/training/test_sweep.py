"""restock sweep: trials on Ray Tune, a results table with each trial's held-out greedy cost, and the best
trial's run directory usable like any run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("ray.tune")

from restock.cli import app

EXP = """name: sweepfast
num_envs: 4
bc_episodes: 2
bc_epochs: 1
eval_episodes: 2
eval_every: 64
checkpoint_every: 1000000
ppo:
  rollout_steps: 16
  minibatch_size: 64
  n_epochs: 1
"""


def _files(tmp_path: Path, search: str) -> tuple[Path, Path]:
    exp, s = tmp_path / "exp.yaml", tmp_path / "search.yaml"
    exp.write_text(EXP)
    s.write_text(search)
    return exp, s


@pytest.mark.slow
def test_sweep__two_sb3_trials_on_tune_write_the_table_and_the_best_run(tmp_path):
    """Command: restock sweep tiny --config EXP --search SEARCH --seeds 1 --steps 128 --out OUT
    (SEARCH: ppo.learning_rate: {grid: [0.0003, 0.003]}: 2 trials)."""
    exp, search = _files(tmp_path, "ppo.learning_rate: {grid: [0.0003, 0.003]}\n")
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "restock.cli",
        "sweep",
        "tiny",
        "--config",
        str(exp),
        "--search",
        str(search),
    ]
    cmd += ["--seeds", "1", "--steps", "128", "--out", str(out), "--max-concurrent", "2"]
    env = {**os.environ, "PYTHONHASHSEED": "0", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env=env, cwd=Path(__file__).parents[2]
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 2 and all(row["status"] == "done" for row in rows)
    assert {float(row["ppo.learning_rate"]) for row in rows} == {0.0003, 0.003}
    costs = [float(row["eval_cost"]) for row in rows]
    assert costs == sorted(costs) and all(c > 0 for c in costs)  # ranked, best first
    md = (out / "sweep.md").read_text()
    assert "Across seeds" in md and rows[0]["trial"] in md
    # every trial is an ordinary run directory, trained with its own learning rate
    for row in rows:
        run = out / row["run_dir"]
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "done"
        cfg = (run / "config.yaml").read_text()
        assert f"learning_rate: {float(row['ppo.learning_rate'])}" in cfg
    best = out / "best"
    assert best.resolve() == (out / rows[0]["run_dir"]).resolve()
    # the table's cost is the best run's held-out greedy cost, reproduced here
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.experiment import load_experiment
    from restock.training.sweep import held_out_cost

    c = compile_scenario(load_scenario("tiny"))
    again = held_out_cost(best, c, load_experiment(exp), episodes=2)
    assert again["eval_cost"] == pytest.approx(costs[0], rel=1e-9)
    # and restock eval takes it like any run
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "tiny",
            "--policies",
            f"zero,{best}",
            "--episodes",
            "2",
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("search", "args", "needle"),
    [
        ("ppo.learnin_rate: {choice: [0.001]}\n", [], "ppo.learnin_rate"),
        ("ppo.learning_rate: {between: [0.001, 0.01]}\n", [], "ppo.learning_rate: give exactly one of"),
        ("ppo.learning_rate: {loguniform: [0, 0.01]}\n", [], "loguniform needs low > 0"),
        ("ppo.gamma: {choice: [0.9, 1.5]}\n", [], "ppo.gamma: value 1.5"),
        ("seed: {choice: [1, 2]}\n", [], "seed: not searchable"),
        ("ppo.ent_coef: {choice: [0.0]}\n", ["--scheduler", "hyperband"], "--scheduler"),
        ("ppo.ent_coef: {choice: [0.0]}\n", ["--trainer", "dqn"], "--trainer"),
    ],
)
def test_sweep__bad_input_exits_2_naming_the_field(tmp_path, monkeypatch, search, args, needle):
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    exp, s = _files(tmp_path, search)
    out = tmp_path / "sweep"
    r = CliRunner().invoke(
        app,
        [
            "sweep",
            "tiny",
            "--config",
            str(exp),
            "--search",
            str(s),
            "--steps",
            "64",
            "--out",
            str(out),
            *args,
        ],
    )
    assert r.exit_code == 2, r.output
    assert needle in " ".join(r.output.split())
    assert not (out / "sweep.csv").exists()
