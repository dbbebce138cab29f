"""Learning curves of dcl runs on serial_3: every checkpoint's paired gap to Clark-Scarf, mean and band over seeds.

    python docs/results/serial_3_curves.py runs/dcl_s3/serial_3__serial_3_dcl__{0,1,2}__* \
        --out docs/results/serial_3_dcl_curve.png --episodes 200

Iteration 0 is the behaviour-cloned start (RUN/cloned), iteration k the checkpoint RUN/checkpoints/iter_k.
Each point: the policy's cost per period minus Clark-Scarf's on the same held-out paths (seed 4242,
``--episodes`` x 200 periods; the networks as tables, as in serial_3_learning.py), relative to Clark-Scarf's; the line is the mean over
the training seeds and the band its 95% t-interval. Also writes ``<out stem>_heldout.png``: the trainers'
own held-out greedy cost (`training.curves.plot_seeds`, tag eval/episodic_cost, per period).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.echelon import EchelonBaseStock
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training.curves import _figure, plot_seeds
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serial_3_learning import heuristic, learned, per_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=4242)
    a = ap.parse_args(argv)
    c = compile_scenario(load_scenario("serial_3"))
    cs = per_path(c, heuristic(c, JointPolicy(EchelonBaseStock.from_clark_scarf(c))), a.episodes, a.seed)
    curves = []
    for r in a.runs:
        r = Path(r)
        dirs = [r / "cloned", *sorted((r / "checkpoints").glob("iter_*"))]
        gaps = [
            100 * float((per_path(c, learned(c, d, check=False), a.episodes, a.seed) - cs).mean() / cs.mean())
            for d in dirs
        ]
        print(r.name, " ".join(f"{g:+.3f}%" for g in gaps))
        curves.append(gaps)
    n = min(len(g) for g in curves)
    Y = np.asarray([g[:n] for g in curves])
    x = np.arange(n)
    mean = Y.mean(axis=0)
    half = (
        stats.t.ppf(0.975, Y.shape[0] - 1) * Y.std(axis=0, ddof=1) / np.sqrt(Y.shape[0])
        if Y.shape[0] > 1
        else np.zeros(n)
    )
    fig, ax = _figure()
    for g in Y:
        ax.plot(x, g, ".", ms=4, alpha=0.4, color="tab:blue")
    ax.plot(x, mean, "o-", color="tab:blue", label=f"learned, mean of {Y.shape[0]} seeds")
    ax.fill_between(x, mean - half, mean + half, alpha=0.25, color="tab:blue", label="95% t-band")
    ax.axhline(0.0, color="k", lw=1, label="Clark-Scarf (optimal)")
    ax.axhline(1.0, color="tab:red", lw=1, ls="--", label="target: +1%")
    ax.set_xlabel("policy iteration (0 = behaviour-cloned start)")
    ax.set_ylabel("cost minus Clark-Scarf, % (paired, held-out paths)")
    ax.set_title(f"serial_3, dcl: {a.episodes} x {c.horizon} held-out periods per point (seed {a.seed})")
    ax.legend(fontsize=8)
    fig.savefig(a.out, dpi=110, bbox_inches="tight")
    print(f"wrote {a.out}")
    held = Path(a.out).with_name(Path(a.out).stem + "_heldout.png")
    plot_seeds(
        a.runs,
        held,
        title="serial_3, dcl: trainer's held-out greedy cost (own paths per seed)",
        per=float(c.horizon),
    )
    print(f"wrote {held}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
