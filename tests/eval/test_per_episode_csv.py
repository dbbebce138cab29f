"""`restock eval` writes per_episode.csv: every policy's KPIs per sample path, from which the paired
comparison in paired.json is recomputed exactly (and any other pair of policies can be compared later)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
from typer.testing import CliRunner

from restock.cli import app


def test_eval__per_episode_csv_reproduces_the_paired_differences(tmp_path):
    out = tmp_path / "ev"
    res = CliRunner().invoke(
        app,
        ["eval", "tiny", "--policies", "zero,base_stock,s_S", "--episodes", "6", "--seed", "5",
         "--baseline", "base_stock", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "per_episode.csv")))
    per: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        per[(r["policy"], r["kpi"])][int(r["path"])] = float(r["value"])
    assert {p for p, _ in per} == {"zero", "base_stock", "s_S"}
    kpis = json.loads((out / "kpis.json").read_text())
    paired = json.loads((out / "paired.json").read_text())["paired"]
    for pol in ("zero", "s_S"):
        a = np.array([per[(pol, "total_cost")][i] for i in range(6)])
        b = np.array([per[("base_stock", "total_cost")][i] for i in range(6)])
        assert np.isclose(a.mean(), kpis[pol]["total_cost"]["mean"], rtol=1e-12)
        assert np.isclose(((a - b) / b).mean(), paired[pol]["total_cost_relative"]["mean"], rtol=1e-12)
        assert np.isclose((a - b).mean(), paired[pol]["total_cost"]["mean"], rtol=1e-12)
    assert len(per[("zero", "fill_rate")]) == 6
