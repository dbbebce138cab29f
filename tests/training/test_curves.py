"""Learning curves: a one-point run shows its point, the baseline is drawn from the run's own scenario."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from restock.training.curves import (
    baseline_episode_cost,
    learning_curve_figure,
    plot_learning_curve,
    plot_seeds,
    run_horizon,
)


def _run(tmp_path, name, points, horizon=30, per_period=12.5):
    d = tmp_path / name
    d.mkdir()
    # run.json as train() writes it: a baseline cost per period and no horizon
    (d / "run.json").write_text(
        json.dumps(
            {
                "scenario": "tiny",
                "trainer": "sb3",
                "baseline": {"policy": "s_S", "cost_per_period": per_period},
            }
        )
    )
    (d / "scenario.yaml").write_text(yaml.safe_dump({"name": "tiny", "horizon": horizon}))
    rows = ["step,tag,value"] + [f"{s},eval/episodic_cost,{v}" for s, v in points]
    (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    return d


def test_curves__horizon_from_the_saved_scenario_and_baseline_per_episode(tmp_path):
    d = _run(tmp_path, "a", [(100, 400.0)])
    assert run_horizon(d) == 30
    assert baseline_episode_cost(d) == pytest.approx(12.5 * 30)


def test_curves__one_logged_point_has_a_marker_and_the_baseline_is_drawn(tmp_path):
    d = _run(tmp_path, "a", [(100, 400.0)])
    fig = learning_curve_figure(d)
    ax = fig.axes[0]
    data = [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]
    assert len(data) == 1 and list(data[0].get_xdata()) == [100]
    hlines = [line for line in ax.get_lines() if list(line.get_ydata()) == [375.0, 375.0]]
    assert len(hlines) == 1 and hlines[0].get_linestyle() == "--"
    lo, hi = ax.get_ylim()
    assert lo < 375.0 < hi and lo < 400.0 < hi  # both visible
    assert "money units" in ax.get_ylabel()
    assert plot_learning_curve(d).stat().st_size > 0


def test_curves__seeds_mean_band_and_baseline(tmp_path):
    dirs = [
        _run(tmp_path, f"s{i}", [(0, 500.0 + i), (100, 420.0 + 3 * i), (200, 400.0 - i)]) for i in range(3)
    ]
    out = plot_seeds(dirs, tmp_path / "seeds.png", per=30)
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="no run has"):
        plot_seeds(dirs, tmp_path / "x.png", tag="nothing")
    np.testing.assert_allclose(baseline_episode_cost(dirs[0]) / 30, 12.5)


def test_no_global_matplotlib_backend_switch_anywhere():
    """`matplotlib.use` and pyplot change process-wide state (a notebook's inline plots break): the
    package draws on its own Agg canvases."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("envs", "agents", "training", "eval", "serving", "restock"):
        for f in (root / folder).rglob("*.py"):
            text = f.read_text()
            if "matplotlib.use(" in text or "pyplot" in text:
                offenders.append(str(f.relative_to(root)))
    assert offenders == []


def test_curves__an_excursion_is_clipped_and_named():
    """One seed's evaluation at 7x the others would flatten every curve: the axis stops 25% above the
    highest start or reference line and the plot says how many points are above it and the highest."""
    from matplotlib.figure import Figure
    from restock.training.curves import _clip_outliers

    x = np.array([0.0, 100.0, 200.0])
    series = [(x, np.array([1300.0, 9151.0, 1100.0])), (x, np.array([1280.0, 1250.0, 1090.0]))]
    ax = Figure().add_subplot()
    _clip_outliers(ax, series, [1320.0])
    lo, hi = ax.get_ylim()
    assert hi == pytest.approx(1.25 * 1320.0) and lo < 1090.0
    assert [t.get_text() for t in ax.texts] == ["1 evaluation above the axis (highest 9,151)"]
    calm = Figure().add_subplot()
    _clip_outliers(calm, series[1:], [1320.0])
    assert not calm.texts
