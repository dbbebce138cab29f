"""Learning curves (PNG) from a run's metrics.csv, with the baseline's cost for reference."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            try:
                series[row["tag"]].append((int(float(row["step"])), float(row["value"])))
            except (KeyError, ValueError):
                continue
    return dict(series)


def plot_learning_curve(
    run_dir: str | Path, out: str | Path | None = None, title: str | None = None
) -> Path | None:
    """Episodic cost during training (and greedy evaluations) against env steps; dashed: the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    m = read_metrics(run_dir)
    if not m.get("charts/episodic_cost"):
        return None
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs, ys = zip(*m["charts/episodic_cost"], strict=True)
    ax.plot(xs, ys, lw=1.0, alpha=0.6, label="training episodes (sampled actions)")
    if m.get("eval/episodic_cost"):
        ex, ey = zip(*m["eval/episodic_cost"], strict=True)
        ax.plot(ex, ey, "o-", lw=1.5, ms=3, label="greedy policy, held-out paths")
    base = run.get("baseline", {})
    horizon = run.get("horizon")
    base_cost = base.get("cost_per_period", 0) * horizon if base.get("cost_per_period") and horizon else None
    if base_cost:
        ax.axhline(
            base_cost, color="k", ls="--", lw=1, label=f"baseline {base.get('policy')} (training conditions)"
        )
    ax.set_xlabel("env steps (periods x environments)")
    ax.set_ylabel("cost per episode")
    ax.set_title(title or f"{run.get('scenario', '')}: {run.get('trainer', '')} learning curve")
    lo = min(ys[len(ys) // 4 :] or ys)
    hi = max(ys[len(ys) // 4 :] or ys)
    if m.get("eval/episodic_cost"):
        lo = min(lo, min(ey))
        hi = max(hi, max(ey))
    if base_cost:
        lo, hi = min(lo, base_cost), max(hi, base_cost)
    pad = 0.1 * (hi - lo + 1e-9)
    ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "learning_curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
