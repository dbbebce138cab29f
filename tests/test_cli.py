"""The `restock` command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from restock.cli import app

runner = CliRunner()


def test_cli__help_on_every_command():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("scenarios", "simulate", "bench", "demo"):
        sub = runner.invoke(app, [cmd, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output


def test_cli__scenarios_lists_shipped():
    res = runner.invoke(app, ["scenarios"])
    assert res.exit_code == 0 and "default" in res.output and "serial_3" in res.output


def test_cli__check_bad_file_exits_2_with_field_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nskus: {count: 2, colour: red}\nnetwork: {suppliers: [{id: s}], stores: {parent: s}}\n"
    )
    res = runner.invoke(app, ["scenarios", "--check", str(bad)])
    assert res.exit_code == 2
    assert "skus" in res.output and "colour" in res.output and "Traceback" not in res.output


def test_cli__check_good_file(tmp_path):
    res = runner.invoke(app, ["scenarios", "--check", "configs/scenarios/tiny.yaml"])
    assert res.exit_code == 0 and "valid" in res.output


def test_cli__simulate_json():
    res = runner.invoke(app, ["simulate", "tiny", "--policy", "random", "--episodes", "3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    fr = data["random"]["fill_rate"]
    assert 0.0 <= fr["mean"] <= 1.0 and fr["ci95"][0] <= fr["mean"] <= fr["ci95"][1]


def test_cli__simulate_unknown_policy_exits_2():
    res = runner.invoke(app, ["simulate", "tiny", "--policy", "magic"])
    assert res.exit_code == 2 and "unknown policy" in res.output


def test_cli__unknown_scenario_exits_2():
    res = runner.invoke(app, ["simulate", "nowhere"])
    assert res.exit_code == 2 and "unknown scenario" in res.output


def test_cli__demo_table_says_what_each_row_is_and_judges_the_learned_policy(capsys):
    """The demo's closing table, on made-up per-path costs: rows labelled in words, paired differences
    to the best heuristic with intervals, the verdict, and what the perfect-information bound means."""
    from types import SimpleNamespace

    import numpy as np

    from restock.cli.demo import _print_table

    rng = np.random.default_rng(0)
    base = 7800 + rng.normal(0, 300, 50)  # total cost per path of 1,000 periods
    per = {
        "base_stock": base * 1.02,
        "capped_base_stock": base,
        "runs/x": base * 0.995 + rng.normal(0, 2, 50),
        "dp_optimal": base * 0.99,
        "oracle": base[:2] * 0.8,
    }
    res = SimpleNamespace(
        scenario="lost_sales/ls_L2_p19", per_episode={k: {"total_cost": v} for k, v in per.items()}
    )
    _print_table(res, {"average_cost": 7.6644}, "runs/x", 1000)
    out = " ".join(capsys.readouterr().out.split())
    assert "capped base-stock" in out and "(best heuristic)" in out and "+2.00% [+1.9" in out
    assert "learned policy vs the best heuristic: -0.50% [" in out
    assert "cheaper than the best heuristic (capped_base_stock): the 95% interval excludes zero" in out
    assert "optimal policy (DP)" in out and "7.6644" in out
    assert "perfect information (2 p.)" in out and "No policy can reach it" in out


@pytest.mark.heavy
def test_cli__demo_runs_end_to_end_on_a_small_budget(tmp_path):
    """The whole `restock demo` on a small budget (minutes):
    `python -m restock demo --episodes 4 --iterations 1 --states 200 --oracle-episodes 1 --out TMP`
    (pytest -m heavy tests/test_cli.py -k demo_runs_end_to_end)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "restock", "demo", "--episodes", "4", "--iterations", "1"]
    cmd += ["--states", "200", "--oracle-episodes", "1", "--out", str(tmp_path / "demo")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    out = " ".join(res.stdout.split())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "learned policy vs the best heuristic" in out and "optimal policy (DP)" in out
    assert "POST /v1/decisions for store_0" in out and "hash chain ok" in out
    assert (tmp_path / "demo" / "artifact" / "manifest.json").exists()
