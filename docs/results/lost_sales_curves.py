"""Exact learning curves of dcl runs: the exact long-run cost gap to the DP optimum after every iteration.

    python docs/results/lost_sales_curves.py ls_L2_p9 runs/dcl/ls_L2_p9__lost_sales_dcl__{0,1,2}__* \
        --out docs/results/ls_L2_p9_dcl_curve.png

Iteration 0 is the behaviour-cloned start (RUN/cloned), iteration k the checkpoint RUN/checkpoints/iter_k;
each point is exact (`agents.exact.exact_policy_cost` of the network's greedy policy), not simulated.
Mean and 95% t-band over the training seeds given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.exact import exact_policy_cost
from restock.agents.learned import TorchPolicy, load_role
from restock.agents.single_node_dp import solve
from restock.agents.single_node_scenario import spec_from_scenario
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training.curves import _figure
from scipy import stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instance")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    c = compile_scenario(load_scenario(f"lost_sales/{a.instance}"))
    opt = solve(spec_from_scenario(c)).average_cost
    curves = []
    for r in a.runs:
        dirs = [Path(r) / "cloned", *sorted((Path(r) / "checkpoints").glob("iter_*"))]
        gaps = [
            100 * (np.mean(exact_policy_cost(c, JointPolicy(TorchPolicy(load_role(d, "store"))))) / opt - 1)
            for d in dirs
        ]
        curves.append(gaps)
        print(Path(r).name, " ".join(f"{g:+.3f}%" for g in gaps), file=sys.stderr)
    n = min(len(g) for g in curves)
    Y = np.array([g[:n] for g in curves])
    x = np.arange(n)
    mean = Y.mean(axis=0)
    half = (
        stats.t.ppf(0.975, len(Y) - 1) * Y.std(axis=0, ddof=1) / np.sqrt(len(Y)) if len(Y) > 1 else 0 * mean
    )
    fig, ax = _figure(7, 4)
    for y in Y:
        ax.plot(x, y, ".-", lw=0.8, alpha=0.4, color="tab:blue")
    ax.plot(x, mean, "o-", lw=1.8, color="tab:blue", label=f"mean of {len(Y)} training seeds")
    ax.fill_between(x, mean - half, mean + half, color="tab:blue", alpha=0.2, label="95% t-band over seeds")
    ax.axhline(0, color="k", ls="--", lw=1, label=f"DP optimum ({opt:.4f} per period)")
    ax.axhline(0.5, color="tab:red", ls=":", lw=1, label="target: +0.5%")
    ax.set_xticks(x, ["cloned"] + [str(i) for i in x[1:]])
    ax.set_xlabel("policy iteration (0 = behaviour-cloned tuned capped base-stock)")
    ax.set_ylabel("exact long-run cost above the optimum (%)")
    ax.set_title(f"{a.instance}: dcl learning curve (exact evaluation)")
    ax.set_ylim(min(-0.05, float((mean - half).min()) - 0.05), max(0.6, float((mean + half).max()) + 0.05))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
