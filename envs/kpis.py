"""The headline KPIs and the summary every KPI gets: a mean with its Student-t 95% interval.

Shared by tuning (`agents.tuning` reports held-out costs with `mean_ci`) and evaluation
(`eval.kpis` defines the KPIs per episode and summarises them with `mean_ci`; reports, the command
line and paired comparisons show `HEADLINE`). It lives here, below both, so that nothing under
``agents/`` imports ``eval/``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

HEADLINE = (
    "total_cost",
    "fill_rate",
    "cycle_service_level",
    "stockout_days",
    "inventory_turns",
    "avg_on_hand",
)


def mean_ci(x: np.ndarray, level: float = 0.95) -> dict:
    """{"mean", "ci95": [lo, hi], "std", "n"} of a sample (a zero-width interval for one value)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "std": float("nan"), "n": 0}
    m = float(x.mean())
    if n == 1:
        return {"mean": m, "ci95": [m, m], "std": 0.0, "n": 1}
    sd = float(x.std(ddof=1))
    h = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
    return {"mean": m, "ci95": [m - h, m + h], "std": sd, "n": n}
