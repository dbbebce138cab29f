"""Evaluation harness: identical paths for every policy, KPIs with intervals, reports, stress tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.kpis import mean_ci
from restock.eval.evaluate import evaluate, parse_policies
from restock.eval.report import write_report
from restock.eval.stress import STRESSES, parse_stress
from typer.testing import CliRunner

from restock.cli import app


def test_mean_ci__t_interval():
    r = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert r["mean"] == 2.5 and r["ci95"][0] == pytest.approx(
        2.5 - 3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2
    )


def test_evaluate__common_random_numbers_and_paired_differences(tmp_path):
    c = compile_scenario(load_scenario("tiny"))
    specs, notes = parse_policies("zero,random,base_stock", c)
    assert any("not tuned" in n for n in notes)
    res = evaluate(c, specs, episodes=6, seed=3, baseline="base_stock")
    d = {p: r.demand[:, :, c.M :].sum(axis=2) for p, r in res.rollouts.items()}
    np.testing.assert_array_equal(d["zero"], d["random"])  # customers see the same demand under every policy
    np.testing.assert_array_equal(d["zero"], d["base_stock"])
    assert set(res.paired) == {"zero", "random"}
    diff = res.per_episode["zero"]["total_cost"] - res.per_episode["base_stock"]["total_cost"]
    assert res.paired["zero"]["total_cost"]["mean"] == pytest.approx(diff.mean())
    files = write_report(res, tmp_path)
    data = json.loads(files["kpis.json"].read_text())
    assert set(data) == {"zero", "random", "base_stock"}
    fr = data["base_stock"]["fill_rate"]
    assert fr["ci95"][0] <= fr["mean"] <= fr["ci95"][1]
    for name in ("report.md", "kpis.csv", "cost_breakdown.png", "fill_vs_inventory.png", "sku_trace.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| base_stock |" in (tmp_path / "report.md").read_text()


def test_stress__every_stress_changes_the_scenario():
    base = load_scenario("tiny")
    for name, fn in STRESSES.items():
        cfg = fn(base)
        assert cfg != base, name
        compile_scenario(cfg)
    assert parse_stress("all") == list(STRESSES)
    with pytest.raises(ValueError, match="unknown stress"):
        parse_stress("earthquake")


def test_stress__supplier_outage_hurts_a_base_stock_policy():
    c = compile_scenario(load_scenario("tiny"))
    s = compile_scenario(STRESSES["supplier_outage"](c.config))
    specs, _ = parse_policies("base_stock", c)
    a = evaluate(c, specs, episodes=8, seed=1)
    b = evaluate(s, specs, episodes=8, seed=1)
    assert b.summary["base_stock"]["fill_rate"]["mean"] < a.summary["base_stock"]["fill_rate"]["mean"]


def test_cli__tune_then_eval_with_stress(tmp_path):
    runner = CliRunner()
    params = tmp_path / "p.json"
    r = runner.invoke(
        app,
        [
            "tune",
            "tiny",
            "--policy",
            "base_stock",
            "--out",
            str(params),
            "--episodes",
            "4",
            "--eval-episodes",
            "4",
            "--rounds",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "ev"
    r = runner.invoke(
        app,
        [
            "eval",
            "tiny",
            "--policies",
            "zero,base_stock",
            "--params",
            str(params),
            "--episodes",
            "4",
            "--out",
            str(out),
            "--stress",
            "demand_shock",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data) == {"zero", "base_stock"}
    assert "demand_shock" in json.loads((out / "stress.json").read_text())
    r = runner.invoke(app, ["eval", "tiny", "--policies", "zero,nonsense"])
    assert r.exit_code == 2 and "unknown policy" in r.output
