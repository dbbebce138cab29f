"""Tables for the pair_ppo results (docs/results/pair_ppo.md) from `restock eval` report folders.

    python docs/results/pair_ppo_table.py MAIN [ADDED ...]

MAIN: one report folder whose --baseline is the best tuned heuristic and whose policies include the runs
(run directories `SCENARIO__EXPERIMENT__SEED__TIME`) and their cloned starts (`docs/results/pair_ppo_runs.sh`
links each run's ``cloned/`` as `out/pp_clones/RUN__cloned`). Per policy: cost per period with its 95%
interval over the held-out paths, the paired relative difference to the baseline with its 95% interval,
executed violations and the shield's intervention rate. Per experiment (and for the cloned starts):
the across-seed mean of the per-seed paired differences with a 95% Student-t interval over seeds.

ADDED: report folders on the same paths, each with one run's cloned start as --baseline and that run as
the other policy: the paired difference is what PPO added on top of its warm start.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from default_trainers import t_ci


def pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


# experiment names a run was made under that are the same experiment file under another name: seed 0 of
# default_pair_ppo ran from a copy named after the learning rate being tried (the only difference)
ALIAS = {"default_pair_ppo_lr1e3": "default_pair_ppo"}


def parts(name: str) -> tuple[str, str, bool]:
    """(experiment, seed, is the cloned start) of a run's policy name."""
    run = name.split(" [")[0]
    bits = run.split("__")
    if len(bits) < 4:
        return "", "", False
    return ALIAS.get(bits[1], bits[1]), bits[2], run.endswith("__cloned")


def main(main_dir: str, added: list[str]) -> None:
    d = Path(main_dir)
    kpis = json.loads((d / "kpis.json").read_text())
    pj = json.loads((d / "paired.json").read_text())
    base, n, horizon = pj["baseline"], pj["episodes"], None
    from restock.envs.config import load_scenario

    horizon = load_scenario(pj["scenario"]).horizon
    print(f"Baseline for paired differences: `{base}`; {n} held-out paths, seed {pj.get('seed')}.\n")
    print(
        "| policy | experiment | seed | cost per period (95% CI) | vs best heuristic, paired (95% CI) "
        "| executed violations | intervention rate |"
    )
    print("|---|---|---|---|---|---|---|")
    groups: dict[str, list[float]] = {}
    for name, k in kpis.items():
        tc = k["total_cost"]
        lo, hi = (c / horizon for c in tc["ci95"])
        exp, seed, cloned = parts(name)
        if name == base:
            rel = "(baseline)"
        else:
            p = pj["paired"][name]["total_cost_relative"]
            rel = f"{pct(p['mean'])} [{pct(p['ci95'][0])}, {pct(p['ci95'][1])}]"
            if exp:
                groups.setdefault(f"cloned start of {exp}" if cloned else exp, []).append(p["mean"])
        viol = sum(v["mean"] for key, v in k.items() if key.startswith("safety_executed_violations"))
        inter = k.get("safety_intervention_rate", {}).get("mean", float("nan"))
        label = name.split(" [")[0]
        print(
            f"| {label} | {('cloned start of ' + exp) if cloned else exp} | {seed} | "
            f"{tc['mean'] / horizon:,.1f} [{lo:,.1f}, {hi:,.1f}] | {rel} | {viol:g} | {inter:.3f} |"
        )
    print("\n| policies | seeds | across-seed mean vs best heuristic (95% t-interval over seeds) |")
    print("|---|---|---|")
    for g, xs in groups.items():
        m, lo, hi = t_ci(xs)
        print(f"| {g} | {len(xs)} | {pct(m)} [{pct(lo)}, {pct(hi)}] |")
    if not added:
        return
    print(
        "\nWhat PPO added on top of its warm start (paired against the run's own cloned start, same paths):\n"
    )
    print("| run | seed | learned vs its cloned start, paired (95% CI) |")
    print("|---|---|---|")
    per_exp: dict[str, list[float]] = {}
    for folder in added:
        a = json.loads((Path(folder) / "paired.json").read_text())
        if (a["scenario"], a.get("seed"), a["episodes"]) != (pj["scenario"], pj.get("seed"), pj["episodes"]):
            raise SystemExit(f"{folder}: evaluated on other paths than {main_dir}")
        for name, p in a["paired"].items():
            r = p["total_cost_relative"]
            exp, seed, _ = parts(name)
            per_exp.setdefault(exp, []).append(r["mean"])
            print(
                f"| {name.split(' [')[0]} | {seed} | {pct(r['mean'])} [{pct(r['ci95'][0])}, {pct(r['ci95'][1])}] |"
            )
    print("\n| experiment | seeds | across-seed mean of what PPO added (95% t-interval over seeds) |")
    print("|---|---|---|")
    for exp, xs in per_exp.items():
        m, lo, hi = t_ci(xs)
        print(f"| {exp} | {len(xs)} | {pct(m)} [{pct(lo)}, {pct(hi)}] |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
