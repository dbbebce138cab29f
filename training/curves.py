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


def _run_info(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_horizon(run_dir: str | Path) -> int | None:
    """The episode length the run trained and evaluated on: run.json's ``horizon`` where present, else
    the resolved scenario the run saved (``scenario.yaml``, written with every run)."""
    run_dir = Path(run_dir)
    h = _run_info(run_dir).get("horizon")
    if h:
        return int(h)
    path = run_dir / "scenario.yaml"
    if path.exists():
        import yaml

        h = (yaml.safe_load(path.read_text()) or {}).get("horizon")
        return int(h) if h else None
    return None


def baseline_episode_cost(run_dir: str | Path) -> float | None:
    """The baseline's cost per episode under the run's conditions (cost per period x horizon), or None."""
    per = _run_info(Path(run_dir)).get("baseline", {}).get("cost_per_period")
    horizon = run_horizon(run_dir)
    return float(per) * horizon if per and horizon else None


def _figure(w: float = 8, h: float = 4.5):
    """A figure that draws with Agg without switching matplotlib's global backend (notebooks keep theirs)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_learning_curve(
    run_dir: str | Path, out: str | Path | None = None, title: str | None = None
) -> Path | None:
    """Write ``learning_curve_figure`` to ``out`` (default: the run's learning_curve.png); None when the
    run logged no cost yet."""
    run_dir = Path(run_dir)
    fig = learning_curve_figure(run_dir, title)
    if fig is None:
        return None
    out = Path(out) if out else run_dir / "learning_curve.png"
    fig.savefig(out, dpi=110)
    return out


def learning_curve_figure(run_dir: str | Path, title: str | None = None):
    """Episodic cost during training (and greedy evaluations) against env steps; dashed: the baseline's
    cost per episode under the same conditions. A `matplotlib.figure.Figure` (a notebook shows it), or
    None when the run logged no cost yet.

    Every point has a marker, so a run with one logged point still shows it."""
    run_dir = Path(run_dir)
    m = read_metrics(run_dir)
    train, held = m.get("charts/episodic_cost", []), m.get("eval/episodic_cost", [])
    if not train and not held:
        return None
    run = _run_info(run_dir)
    fig, ax = _figure()
    ys: list[float] = []
    if train:
        xs, ys_t = zip(*train, strict=True)
        ys = list(ys_t)
        ax.plot(xs, ys, ".-", lw=1.0, ms=4, alpha=0.6, label="training episodes (sampled actions)")
    ey: list[float] = []
    if held:
        ex, ey_t = zip(*held, strict=True)
        ey = list(ey_t)
        ax.plot(ex, ey, "o-", lw=1.5, ms=4, label="greedy policy, held-out paths")
    base = run.get("baseline", {})
    base_cost = baseline_episode_cost(run_dir)
    if base_cost:
        ax.axhline(
            base_cost, color="k", ls="--", lw=1, label=f"baseline {base.get('policy')} (training conditions)"
        )
    ax.set_xlabel("env steps (periods x environments)")
    horizon = run_horizon(run_dir)
    ax.set_ylabel("cost per episode" + (f" of {horizon} periods" if horizon else "") + " (money units)")
    ax.set_title(title or f"{run.get('scenario', '')}: {run.get('trainer', '')} learning curve")
    vals = (ys[len(ys) // 4 :] or ys) + ey + ([base_cost] if base_cost else [])
    lo, hi = min(vals), max(vals)
    pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi) * 0.01, 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_seeds(
    run_dirs: list[str | Path],
    out: str | Path,
    tag: str = "eval/episodic_cost",
    title: str = "",
    reference: dict[str, float] | None = None,
    per: float = 1.0,
    baseline: bool = True,
) -> Path:
    """Mean and 95% t-band over training seeds of one tag (held-out greedy cost by default).

    The runs' logged steps differ, so each run is interpolated onto the union of steps within its own
    range; points where fewer than two runs have data are not banded. ``reference``: horizontal lines
    (e.g. an exact optimum); ``per`` divides every value (e.g. the horizon, for cost per period);
    ``baseline``: also draw the runs' baseline (mean over the runs that recorded one).
    """
    import numpy as np
    from scipy import stats

    series = []
    for d in run_dirs:
        pts = read_metrics(d).get(tag, [])
        if pts:
            x, y = zip(*sorted(pts), strict=True)
            series.append((np.asarray(x, float), np.asarray(y, float) / per))
    if not series:
        raise ValueError(f"no run has {tag} in its metrics.csv")
    grid = np.unique(np.concatenate([x for x, _ in series]))
    Y = np.full((len(series), grid.size), np.nan)
    for i, (x, y) in enumerate(series):
        inside = (grid >= x[0]) & (grid <= x[-1])
        Y[i, inside] = np.interp(grid[inside], x, y)
    n = np.sum(~np.isnan(Y), axis=0)
    mean = np.nanmean(Y, axis=0)
    sd = np.zeros(grid.size)
    for j in np.flatnonzero(n > 1):
        sd[j] = np.std(Y[~np.isnan(Y[:, j]), j], ddof=1)
    half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    fig, ax = _figure()
    for x, y in series:
        ax.plot(x, y, ".", ms=3, alpha=0.35, color="tab:blue")
    ax.plot(grid, mean, "o-", ms=3, lw=1.5, color="tab:blue", label=f"mean of {len(series)} training seeds")
    ax.fill_between(
        grid, mean - half, mean + half, alpha=0.2, color="tab:blue", label="95% t-band over seeds"
    )
    refs = dict(reference or {})
    bases = [b for b in (baseline_episode_cost(d) for d in run_dirs) if b]
    if baseline and bases:
        pol = _run_info(Path(run_dirs[0])).get("baseline", {}).get("policy", "")
        refs[f"baseline {pol} (training conditions)".replace("  ", " ")] = float(np.mean(bases)) / per
    for name, v in refs.items():
        ax.axhline(v, ls="--", lw=1, color="k" if "optim" in name else "tab:red", label=name)
    _clip_outliers(ax, series, [*refs.values()])
    ax.set_xlabel("env steps (simulated periods)")
    ax.set_ylabel("held-out greedy cost" + (" per period" if per != 1 else " per episode") + " (money units)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return Path(out)


def _clip_outliers(ax, series: list, refs: list[float]) -> None:
    """Keep the plot readable when a seed has an excursion far above where runs start (e.g. one
    evaluation at 7x the cost): the y axis stops 25% above the highest starting value or reference line,
    and the text names how many evaluations are above it and the highest one."""
    import numpy as np

    start = np.array([float(y[0]) for _, y in series] + [float(r) for r in refs])
    start = start[np.isfinite(start)]
    ys = np.concatenate([y for _, y in series])
    ys = ys[np.isfinite(ys)]
    if start.size == 0 or ys.size == 0:
        return
    top = 1.25 * float(start.max())
    above = ys > top
    if not np.any(above) or top <= 0:  # (costs that can be negative, e.g. net of revenue: left alone)
        return
    bottom = min(float(ys.min()), float(start.min()))  # the data's, not a band widened by the excursion
    ax.set_ylim(bottom - 0.1 * (top - bottom), top)
    k = int(above.sum())
    ax.text(
        0.01,
        0.02,
        f"{k} evaluation{'s' if k > 1 else ''} above the axis (highest {float(ys.max()):,.0f})",
        transform=ax.transAxes,
        va="bottom",
        fontsize=8,
        color="tab:gray",
    )
