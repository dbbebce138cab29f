"""Learning curves of per-pair credit runs (pair_ppo, or rllib with rllib.pair_credit) (held-out greedy cost per period on the trainer's own 8 evaluation
paths, mean and 95% t-band over training seeds), and per run the cost of the cloned start, of the best
evaluated weights (what keep_best deploys) and of the last weights on those paths.

    python docs/results/pair_ppo_curves.py ROOT SCENARIO EXPERIMENT [EXPERIMENT ...]

e.g. `python docs/results/pair_ppo_curves.py runs/pair_ppo default default_pair_ppo default_pair_ppo_lr1e3`
(runs of several experiment names are pooled into one figure named after the first).
"""

from __future__ import annotations

import sys
from pathlib import Path

from restock.envs.config import load_scenario
from restock.training.curves import plot_seeds, read_metrics


def main(root: str, scenario: str, exps: list[str]) -> None:
    per = float(load_scenario(scenario).horizon)
    runs = sorted(
        p
        for e in exps
        for p in Path(root).glob(f"{scenario.split('/')[-1]}__{e}__*")
        if (p / "metrics.csv").exists() and not p.name.endswith("__cloned")
    )
    if not runs:
        raise SystemExit(f"no runs of {exps} under {root}")
    out = Path("docs/results") / f"{exps[0]}_curve.png"
    trainer = "pair_ppo"
    cfg = runs[0] / "config.yaml"
    if cfg.exists():
        import yaml

        trainer = (yaml.safe_load(cfg.read_text()) or {}).get("trainer") or trainer
    plot_seeds(runs, out, per=per, title=f"{scenario}, {trainer}: {exps[0]} ({len(runs)} seeds)")
    print(out)
    print("| run | seed | cloned start | best evaluated (env steps) | last weights |")
    print("|---|---|---|---|---|")
    for run in runs:
        ev = sorted(read_metrics(run).get("eval/episodic_cost", []))
        if len(ev) < 2:
            continue
        (_, c0), (_, c1) = ev[0], ev[-1]
        sb, cb = min(ev, key=lambda x: x[1])
        print(
            f"| {run.name} | {run.name.split('__')[2]} | {c0 / per:,.1f} | {cb / per:,.1f} ({sb:,}; "
            f"{100 * (cb / c0 - 1):+.2f}%) | {c1 / per:,.1f} ({100 * (c1 / c0 - 1):+.2f}%) |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
