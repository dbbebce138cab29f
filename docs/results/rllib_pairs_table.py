"""Tables for docs/results/rllib_pairs.md from `restock eval` report folders' per_episode.csv.

    python docs/results/rllib_pairs_table.py BASELINE FOLDER [FOLDER ...]

Every FOLDER is a report on the same scenario, seed and number of paths (checked), so the policies of all
of them ran on the same sample paths and can be paired across folders. BASELINE is the policy the paired
differences are taken against (the best tuned heuristic). Per policy: cost per period with its 95%
interval, the paired relative difference to BASELINE, executed violations, the shield's intervention rate,
and for a run (`SCENARIO__EXPERIMENT__SEED__TIME`) whose cloned start (`RUN__cloned`) is also among the
policies, what PPO added on top of it (paired). Per experiment: the across-seed mean of the per-seed
paired differences with a 95% Student-t interval over seeds, for the runs, their cloned starts and what
PPO added.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from default_trainers import t_ci
from pair_ppo_table import parts, pct
from restock.envs.kpis import mean_ci
from restock.eval.kpis import paired


def load(folders: list[str]) -> tuple[dict, dict, int]:
    per: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    key = None
    for f in folders:
        pj = json.loads((Path(f) / "paired.json").read_text())
        k = (pj["scenario"], pj["config_hash"], pj["seed"], pj["episodes"])
        if key is not None and k != key:
            raise SystemExit(f"{f}: scenario/config/seed/episodes {k} differ from {key}: not the same paths")
        key = k
        with open(Path(f) / "per_episode.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                per[r["policy"]][r["kpi"]][int(r["path"])] = float(r["value"])
    n = key[3]
    arr = {
        p: {k: np.array([v[i] for i in range(n)]) for k, v in ks.items() if len(v) == n}
        for p, ks in per.items()
    }
    return arr, {"scenario": key[0], "seed": key[2], "episodes": n}, n


def rel(a: np.ndarray, b: np.ndarray) -> dict:
    """Paired relative cost difference (a - b) / b with its 95% interval, as `restock eval` computes it."""
    return paired({"total_cost": a}, {"total_cost": b}, keys=())["total_cost_relative"]


def fmt(d: dict) -> str:
    return f"{pct(d['mean'])} [{pct(d['ci95'][0])}, {pct(d['ci95'][1])}]"


def main(base: str, folders: list[str]) -> None:
    from restock.envs.config import load_scenario

    per, info, n = load(folders)
    if base not in per:
        raise SystemExit(f"baseline {base!r} is not among the policies: {sorted(per)}")
    horizon = load_scenario(info["scenario"]).horizon
    b = per[base]["total_cost"]
    print(f"Baseline for paired differences: `{base}`; {n} held-out paths, seed {info['seed']}.\n")
    print(
        "| policy | experiment | seed | cost per period (95% CI) | vs best heuristic, paired (95% CI) "
        "| PPO added to its clone, paired (95% CI) | executed violations | intervention rate |"
    )
    print("|---|---|---|---|---|---|---|---|")
    groups: dict[str, list[float]] = {}
    by_run = {p.split(" [")[0]: p for p in per}
    for name in sorted(per, key=lambda p: (parts(p)[0] != "", parts(p)[0], parts(p)[1], not parts(p)[2])):
        k = per[name]
        tc = mean_ci(k["total_cost"])
        exp, seed, cloned = parts(name)
        vs_base = None if name == base else rel(k["total_cost"], b)
        r = "(baseline)" if vs_base is None else fmt(vs_base)
        added = ""
        clone = by_run.get(f"{name.split(' [')[0]}__cloned")  # labels may carry " [what played each role]"
        if exp and not cloned and clone is not None:
            a = rel(k["total_cost"], per[clone]["total_cost"])
            added = fmt(a)
            groups.setdefault(f"PPO added ({exp})", []).append(a["mean"])
        if exp and vs_base is not None:
            groups.setdefault(f"cloned start of {exp}" if cloned else exp, []).append(vs_base["mean"])
        viol = sum(float(v.mean()) for kk, v in k.items() if kk.startswith("safety_executed_violations_"))
        inter = (
            float(k["safety_intervention_rate"].mean()) if "safety_intervention_rate" in k else float("nan")
        )
        lo, hi = (c / horizon for c in tc["ci95"])
        print(
            f"| {name} | {('cloned start of ' + exp) if cloned else exp} | {seed} | "
            f"{tc['mean'] / horizon:,.1f} [{lo:,.1f}, {hi:,.1f}] | {r} | {added} | {viol:g} | {inter:.3f} |"
        )
    print("\n| policies | seeds | across-seed mean (95% t-interval over seeds) |")
    print("|---|---|---|")
    for g, xs in groups.items():
        m, lo, hi = t_ci(xs)
        band = f"[{pct(lo)}, {pct(hi)}]" if len(xs) > 1 else "(one seed: no interval)"
        print(f"| {g} | {len(xs)} | {pct(m)} {band} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
