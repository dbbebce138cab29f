"""Tables for docs/results/network_2e.md from one `restock eval` report folder.

    python docs/results/network_2e_table.py out/eval/network_2e [more report folders]

Reads kpis.json and paired.json (the eval's --baseline is the best tuned heuristic). Several folders
(runs evaluated as they finished) must share the baseline, scenario, seed and number of paths: the same
held-out paths, so every paired difference is against the same baseline episodes. Per run (policy names
are run directories `network_2e__{experiment}__{seed}__{time}`): cost per period with its 95% interval
over the held-out paths, the paired relative cost difference to the baseline with its 95% interval,
executed violations and the shield's intervention rate. Per experiment: the across-seed mean of the
per-seed paired differences with a 95% Student-t interval over seeds (n - 1 degrees of freedom).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

LABEL = {"network_2e": "store + DC (joint)", "network_2e_store": "store only", "network_2e_dc": "DC only"}


def main(folders: list[str]) -> None:
    kpis: dict = {}
    paired: dict = {}
    pj: dict = {}
    for folder in folders:
        d = Path(folder)
        p = json.loads((d / "paired.json").read_text())
        key = (p["baseline"], p["scenario"], p.get("seed"), p["episodes"])
        if pj and key != (pj["baseline"], pj["scenario"], pj.get("seed"), pj["episodes"]):
            raise SystemExit(
                f"{folder}: evaluated on other paths or against another baseline than {folders[0]}"
            )
        pj = pj or p
        kpis.update(json.loads((d / "kpis.json").read_text()))
        paired.update(p["paired"])
    base = pj["baseline"]
    from restock.envs.config import load_scenario

    horizon = load_scenario(pj["scenario"]).horizon
    print(
        f"Baseline for paired differences: `{base}`; {pj['episodes']} held-out paths, seed {pj.get('seed')}.\n"
    )
    print(
        "| policy | seed | cost per period (95% CI) | vs best heuristic, paired (95% CI) | executed violations | intervention rate |"
    )
    print("|---|---|---|---|---|---|")
    per_exp: dict[str, list[float]] = {}
    rows = []
    for pol, k in kpis.items():
        parts = Path(pol).name.split("__")
        exp, seed = (parts[1], parts[2]) if len(parts) >= 4 else (pol, "")
        c = k["total_cost"]
        cost = f"{c['mean'] / horizon:,.1f} [{c['ci95'][0] / horizon:,.1f}, {c['ci95'][1] / horizon:,.1f}]"
        rel = paired.get(pol, {}).get("total_cost_relative")
        rs = (
            "(baseline)"
            if pol == base
            else ""
            if rel is None
            else (f"{100 * rel['mean']:+.2f}% [{100 * rel['ci95'][0]:+.2f}%, {100 * rel['ci95'][1]:+.2f}%]")
        )
        viol = k.get("safety_executed_violations", {}).get("mean", float("nan"))
        inter = k.get("safety_intervention_rate", {}).get("mean", float("nan"))
        rows.append(
            (
                exp in LABEL,
                exp,
                seed,
                f"| {LABEL.get(exp, pol)} | {seed} | {cost} | {rs} | {viol:g} | {inter:.3f} |",
            )
        )
        if exp in LABEL and rel is not None:
            per_exp.setdefault(exp, []).append(rel["mean"])
    for *_, line in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        print(line)
    print("\n| learned roles | seeds | across-seed mean vs best heuristic (95% t-interval over seeds) |")
    print("|---|---|---|")
    for exp in LABEL:
        v = np.asarray(per_exp.get(exp, []))
        if v.size == 0:
            continue
        if v.size > 1:
            h = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
            ci = f"[{100 * (v.mean() - h):+.2f}%, {100 * (v.mean() + h):+.2f}%]"
        else:
            ci = "(one seed: no interval)"
        print(f"| {LABEL[exp]} | {v.size} | {100 * v.mean():+.2f}% {ci} |")


if __name__ == "__main__":
    main(sys.argv[1:])
