"""Learning curves of the network_2e RLlib runs: held-out greedy cost per period, mean and 95% t-band
over training seeds, one figure per set of learned roles.

    python docs/results/network_2e_curves.py runs/n2e

Also prints, per run, the trainer's own held-out greedy cost per period (8 paths, seed 10000 + seed, the
same paths at every evaluation) of the cloned start and of PPO's last weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

from restock.training.curves import plot_seeds, read_metrics

TITLES = {
    "network_2e": "store + DC learned jointly",
    "network_2e_store": "store only learns",
    "network_2e_dc": "DC only learns",
}


def main(root: str) -> None:
    for exp, title in TITLES.items():
        runs = sorted(p for p in Path(root).glob(f"network_2e__{exp}__*") if (p / "metrics.csv").exists())
        if runs:
            out = Path("docs/results") / f"{exp}_rllib_curve.png"
            plot_seeds(runs, out, per=91.0, title=f"network_2e, RLlib MAPPO: {title} ({len(runs)} seeds)")
            print(out)
        for run in runs:  # the cloned start (step 0) vs PPO's last weights, same evaluation paths
            ev = sorted(read_metrics(run).get("eval/episodic_cost", []))
            if len(ev) >= 2:
                (_, c0), (s1, c1) = ev[0], ev[-1]
                print(
                    f"| {title} | {run.name.split('__')[2]} | {s1:,} | {c0 / 91:,.1f} | {c1 / 91:,.1f} | "
                    f"{100 * (c1 / c0 - 1):+.2f}% |"
                )


if __name__ == "__main__":
    main(sys.argv[1])
