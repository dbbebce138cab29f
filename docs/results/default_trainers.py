"""Tables for docs/results/default_trainers.md: SB3 and RLlib on `default` at the same budget.

    python docs/results/default_trainers.py out/eval/default_cmp200 runs/default_cmp runs/default_clone \
        out/eval/default_cmp200_clone0 out/eval/default_cmp200_clone1 out/eval/default_cmp200_clone2

Further report folders (those holding a paired.json) are evaluations on the same paths with a run's
cloned start as the baseline: their paired differences are what PPO added on top of the warm start.

Reads one `restock eval` report folder (kpis.json, paired.json; the eval's --baseline is the best tuned
heuristic) whose policies include run directories of both trainers (each run's run.json names its
trainer). Per run: cost per period with its 95% interval over the held-out paths and the paired relative
cost difference to the baseline with its 95% interval. Per trainer: the across-seed mean of the per-seed
paired differences with a 95% Student-t interval over seeds (n - 1 degrees of freedom). Between the
trainers: the difference of those across-seed means with a Welch 95% interval (both measured against the
same baseline episodes, so the comparison is on common paths; seeds are not paired across trainers).
Also the trainer's own held-out greedy cost (metrics.csv `eval/episodic_cost`, 8 paths, the same at every
evaluation) of the cloned start (step 0) and of the final weights: what PPO added on top of the warm start.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def t_ci(x: list[float]) -> tuple[float, float, float]:
    a = np.asarray(x, float)
    m = float(a.mean())
    if len(a) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return m, m - h, m + h


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    d = float(a_.mean() - b_.mean())
    va, vb = a_.var(ddof=1) / len(a_), b_.var(ddof=1) / len(b_)
    df = (va + vb) ** 2 / (va**2 / (len(a_) - 1) + vb**2 / (len(b_) - 1))
    h = float(stats.t.ppf(0.975, df) * np.sqrt(va + vb))
    return d, d - h, d + h


def own_eval(run: Path) -> tuple[float, float, int] | None:
    rows = []
    with open(run / "metrics.csv") as f:
        for r in csv.reader(f):
            if len(r) == 3 and r[1] == "eval/episodic_cost":
                rows.append((int(r[0]), float(r[2])))
    if len(rows) < 2:
        return None
    rows.sort()
    return rows[0][1], rows[-1][1], rows[-1][0]


def find_run(name: str, roots: list[str]) -> Path | None:
    for r in roots:
        p = Path(r) / name
        if (p / "run.json").exists():
            return p
    return None


def main(folder: str, roots: list[str]) -> None:
    d = Path(folder)
    kpis = json.loads((d / "kpis.json").read_text())
    pj = json.loads((d / "paired.json").read_text())
    base = pj["baseline"]
    from restock.envs.config import load_scenario

    horizon = load_scenario(pj["scenario"]).horizon
    print(
        f"Baseline for paired differences: `{base}`; {pj['episodes']} held-out paths, seed {pj.get('seed')}.\n"
    )
    print(
        "| policy | trainer | seed | env steps | cost per period (95% CI) | vs tuned (s,S), paired (95% CI) | violations |"
    )
    print("|---|---|---|---|---|---|---|")
    by_trainer: dict[str, list[float]] = {}
    own: list[str] = []
    for pol, k in kpis.items():
        run = find_run(pol.split(" [")[0], roots)
        info = json.loads((run / "run.json").read_text()) if run is not None else None
        c = k["total_cost"]
        cost = f"{c['mean'] / horizon:,.1f} [{c['ci95'][0] / horizon:,.1f}, {c['ci95'][1] / horizon:,.1f}]"
        rel = pj["paired"].get(pol, {}).get("total_cost_relative")
        rs = (
            "(baseline)"
            if pol == base
            else ""
            if rel is None
            else (f"{100 * rel['mean']:+.2f}% [{100 * rel['ci95'][0]:+.2f}%, {100 * rel['ci95'][1]:+.2f}%]")
        )
        viol = k.get("safety_executed_violations", {}).get("mean", float("nan"))
        if info is None:
            print(f"| {pol} | heuristic | | | {cost} | {rs} | {viol:g} |")
            continue
        trainer, seed = info["trainer"], info["seed"]
        if (info.get("summary") or {}).get("stopped") == "test":  # docs/results/default_clone.py
            trainer = "cloned start"
        roles = (info.get("summary") or {}).get("roles", {})
        steps = f"{sum(r.get('env_steps', 0) for r in roles.values()):,}" if roles else ""
        print(f"| {run.name} | {trainer} | {seed} | {steps} | {cost} | {rs} | {viol:g} |")
        if rel is not None:
            by_trainer.setdefault(trainer, []).append(rel["mean"])
        oe = own_eval(run)
        if oe and trainer != "cloned start":
            c0, c1, s1 = oe
            sel = roles.get("store", {}).get("selected") or {}
            kept = f"{sel['env_steps']:,} ({sel['eval_cost'] / horizon:,.1f})" if sel else "last"
            own.append(
                f"| {trainer} | {seed} | {s1:,} | {c0 / horizon:,.1f} | {c1 / horizon:,.1f} | "
                f"{100 * (c1 / c0 - 1):+.2f}% | {kept} |"
            )
    print("\n| trainer | seeds | across-seed mean vs tuned (s,S) (95% t over seeds) |")
    print("|---|---|---|")
    for tr, xs in sorted(by_trainer.items()):
        m, lo, hi = t_ci(xs)
        print(f"| {tr} | {len(xs)} | **{100 * m:+.2f}%** [{100 * lo:+.2f}%, {100 * hi:+.2f}%] |")
    if {"rllib", "sb3"} <= set(by_trainer) and min(len(by_trainer["rllib"]), len(by_trainer["sb3"])) >= 2:
        dm, lo, hi = welch(by_trainer["rllib"], by_trainer["sb3"])
        print(
            f"\nRLlib minus SB3 (difference of across-seed means, Welch 95%): **{100 * dm:+.2f} points** "
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}] (negative: RLlib cheaper)."
        )
    if own:
        print(
            "\nWhat PPO added on the trainer's own held-out evaluation (8 paths, the same at every evaluation):\n"
        )
        print(
            "| trainer | seed | last evaluation, step | cloned start, per period | last evaluated weights, per "
            "period | change | deployed (keep_best): step (per period) |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(own))


if __name__ == "__main__":
    extra = sys.argv[2:]
    main(sys.argv[1], [a for a in extra if not (Path(a) / "paired.json").exists()] or ["runs"])
    vs_clone = [a for a in extra if (Path(a) / "paired.json").exists()]
    if vs_clone:
        print("\nWhat PPO added, paired against each seed's cloned start on the same held-out paths:\n")
        print("| run | vs its cloned start, paired (95% CI) |")
        print("|---|---|")
        for a in vs_clone:
            pj = json.loads((Path(a) / "paired.json").read_text())
            for pol, v in pj["paired"].items():
                if pol == pj["baseline"]:
                    continue
                r = v["total_cost_relative"]
                print(
                    f"| {pol.split(' [')[0]} | {100 * r['mean']:+.2f}% [{100 * r['ci95'][0]:+.2f}%, {100 * r['ci95'][1]:+.2f}%] |"
                )
