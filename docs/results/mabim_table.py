"""Results table for the MABIM-shaped benchmarks (docs/results/benchmarks.md, section "MABIM").

Runs tuned heuristics on common sample paths behind the shield, as ``restock eval`` does, and prints per
policy: restock's cost per episode (the objective: minus MABIM's reward2 plus a constant of the path),
the same episode scored in MABIM's reward2 form, the fill rate, order lines per day, units disposed for
lack of space and the shield's executed violations.

    python docs/results/mabim_table.py --params-dir out/mabim --episodes 100 --seed 4242 \\
        --json out/mabim/table.json

MABIM's reward2 per SKU and day: margin x sales - 0.5 x procurement cost x excess - 10 x [order > 0]
- holding x stock - 0.1 x margin x lost. restock's cost charges 1.1 x margin per lost unit instead of
0.1 x margin (the lost margin enters the cost rather than a smaller revenue), so

    reward2 = revenue - cost + (stockout cost at the store) / 1.1

with revenue = margin x units sold (the scenario's ``price`` is the margin). In the 3-echelon chain it
is the network's reward2 with one margin per unit sold to customers (MABIM's internal transfer margins
are not modelled; see benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from restock.agents.catalogue import load_params, make_policy
from restock.agents.shield import Shield
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.types import (
    C_FIXED,
    C_HOLD,
    C_OVERFLOW,
    C_STOCKOUT,
    K_DEMAND,
    K_DISPOSED,
    K_LOST,
    K_ORDER_LINES,
)
from restock.eval.rollout import rollout
from scipy import stats

SCENARIOS = {"single": "benchmarks/mabim_sku1000_single", "3echelon": "benchmarks/mabim_sku1000_3echelon"}


def ci(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(half)


def run(
    key: str, params_dir: Path, policies: list[str], episodes: int, seed: int, no_shield: bool = False
) -> list[dict]:
    c = compile_scenario(load_scenario(SCENARIOS[key]))
    suffix = "_noshield" if no_shield else ""
    tuned = load_params(params_dir / f"{key}{suffix}_params.json")["policies"]
    paths = np.arange(episodes, dtype=np.int64)
    store = c.N - 1
    rows = []
    for name in policies:
        if name != "zero" and name not in tuned:
            continue
        knobs = tuned.get(name, {}).get("knobs", {})
        t0 = time.perf_counter()
        res = rollout(
            c,
            make_policy(name, knobs),
            paths=paths,
            seed=seed,
            shield=Shield(c, mode="monitor" if no_shield else "enforce"),
            trace_sku=None,
        )
        secs = time.perf_counter() - t0
        cost = res.cost.sum(axis=(1, 2))
        revenue = res.revenue.sum(axis=1)
        reward2 = revenue - cost + res.cost[:, store, C_STOCKOUT] / 1.1
        fill = 1.0 - res.kpi[:, store, K_LOST] / np.maximum(res.kpi[:, store, K_DEMAND], 1.0)
        viol = res.shield.get("shield_executed_violations")
        interv = res.shield.get("shield_interventions")
        rows.append(
            {
                "scenario": key,
                "policy": name + (" (no shield)" if no_shield else ""),
                "knobs": knobs,
                "paths": episodes,
                "seed": seed,
                "cost_per_episode": ci(cost),
                "reward2_per_episode": ci(reward2),
                "fill_rate": ci(fill),
                "order_lines_per_day": ci(res.kpi[:, :, K_ORDER_LINES].sum(axis=1) / c.horizon),
                "disposed_units": ci(res.kpi[:, :, K_DISPOSED].sum(axis=1)),
                "cost_parts_mean": {
                    "holding": float(res.cost[:, :, C_HOLD].sum(axis=1).mean()),
                    "lost_sales_and_orders": float(res.cost[:, :, C_STOCKOUT].sum(axis=1).mean()),
                    "fixed_order": float(res.cost[:, :, C_FIXED].sum(axis=1).mean()),
                    "overflow": float(res.cost[:, :, C_OVERFLOW].sum(axis=1).mean()),
                },
                "executed_violations": int(np.asarray(viol).sum()) if viol is not None else None,
                "shield_interventions_per_episode": float(np.asarray(interv).sum() / episodes)
                if interv is not None
                else None,
                "seconds": secs,
            }
        )
        r = rows[-1]
        print(
            f"{key:9s} {r['policy']:22s} cost/ep {r['cost_per_episode'][0]:12,.0f} ± {r['cost_per_episode'][1]:8,.0f}"
            f"  reward2/ep {r['reward2_per_episode'][0]:12,.0f} ± {r['reward2_per_episode'][1]:8,.0f}"
            f"  fill {r['fill_rate'][0]:.4f}  lines/day {r['order_lines_per_day'][0]:7.1f}"
            f"  disposed {r['disposed_units'][0]:9,.0f}  viol {r['executed_violations']}"
            f"  interventions/ep {r['shield_interventions_per_episode']}  {secs:.0f} s",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params-dir", type=Path, default=Path("out/mabim"))
    ap.add_argument("--scenarios", default="single,3echelon")
    ap.add_argument("--policies", default="zero,base_stock,s_S,r_Q")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-shield", action="store_true", help="monitor mode: MABIM's soft capacity")
    a = ap.parse_args()
    rows = []
    for key in a.scenarios.split(","):
        rows += run(key, a.params_dir, a.policies.split(","), a.episodes, a.seed, a.no_shield)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
