"""How high could a perfect-information bound on `default` go? Clairvoyant policies run in the real kernel.

A perfect-information bound is at most the cost of the best policy that knows the path's future. This
script builds simple clairvoyant policies for a one-DC network whose stores have a fixed lead time, runs
them in the kernel (unshielded, on the same paths and seed as `restock eval`) and prints their realised
cost. The lowest of them is an upper bound on the perfect-information optimum, so no valid
perfect-information bound can exceed it, and a policy's gap to any such bound is at least
(policy - clairvoyant) / clairvoyant.

The policies ("cover"): every store and SKU orders, when its stock would not cover the demand of its
next arrival period, exactly the demand of the next R periods minus what it will hold (R = alpha times
the EOQ cycle sqrt(2 fixed / (holding x mean demand)), 1..R_MAX); the DC, knowing those store orders
and every lead time of its supplier lane, places each order in the latest period from which it arrives
in time and sizes it to R_dc periods of store orders. alpha runs over a grid; each alpha is one policy.

Usage: .venv/bin/python docs/results/bound_clairvoyant.py [--seed 0] [--paths 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from restock.agents.base import JointPolicy
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.demand import sample_paths
from restock.envs.types import COST_NAMES
from restock.eval.oracle import path_lead_times
from restock.eval.rollout import rollout

R_MAX = 14
ALPHAS = (0.35, 0.5, 0.7, 1.0, 1.4)


class Plan:
    """Orders a fixed plan [N, K, T] (units) on one path."""

    name = "clairvoyant_plan"
    version = "1"
    output = "quantities"

    def __init__(self, plan: np.ndarray):
        self.plan = plan

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        t = int(ctx.state.t[0])
        return self.plan[nodes][None, :, :, t].astype(np.int64)


def _cycle(fixed, hold, mean, alpha):
    r = alpha * np.sqrt(2.0 * fixed / np.maximum(hold * mean, 1e-12))
    return np.clip(np.rint(r), 1, R_MAX).astype(np.int64)


def cover_plan(c, dem: np.ndarray, L: np.ndarray, alpha: float) -> np.ndarray:
    """plan[N, K, T]: the store and DC orders of the clairvoyant cover policy (module docstring)."""
    p = c.params
    M, N, K, T = c.M, c.N, c.K, c.horizon
    assert M == 1 and (p.parent[M:] == 0).all(), "one DC feeding every store"
    assert (p.lt_fixed[M:] == 1).all(), "stores with a fixed lead time"
    plan = np.zeros((N, K, T))
    arrivals = np.zeros((N, K, T + R_MAX + 8))
    w = min(c.W, T)
    arrivals[:, :, :w] += c.init_pipe[:, :, :w]
    arrivals[:, :, 0] += c.init_on_hand
    d = dem.astype(np.float64)  # [T, S, K]
    for s in range(c.S):
        n = M + s
        lead = int(p.lt_value[n, 0])
        R = _cycle(p.fixed_cost[n], p.hold[n], d[:, s, :].mean(axis=0) + 1e-9, alpha)
        stock = np.zeros(K)
        for t in range(T):
            stock = stock + arrivals[n, :, t]
            stock = np.maximum(stock - d[t, s], 0.0)  # end of t (lost sales)
            a = t + lead
            if a >= T:
                continue
            # stock at the start of a without a new order: what is held now and arrives in t+1..a
            ahead = stock + arrivals[n, :, t + 1 : a + 1].sum(axis=1) - d[t + 1 : a, s].sum(axis=0)
            need = ahead < d[a, s]
            if not need.any():
                continue
            hi = np.minimum(a + R, T)
            cover = np.array([d[a : hi[k], s, k].sum() for k in range(K)])
            later = np.array([arrivals[n, k, a + 1 : hi[k]].sum() for k in range(K)])
            q = np.where(need, np.maximum(cover - np.maximum(ahead, 0.0) - later, 0.0), 0.0)
            plan[n, :, t] = q
            arrivals[n, :, a] += q
    # DC: store orders are its demand, shipped in the period they are placed
    D = plan[M:].sum(axis=0)  # [K, T]
    Rdc = _cycle(p.fixed_cost[0], p.hold[0], D.mean(axis=1) + 1e-9, alpha)
    Ldc = L[0]  # [K, T]
    for k in range(K):
        sup = np.cumsum(arrivals[0, k, :T])
        dem_cum = np.cumsum(D[k])
        for t in range(T):
            if sup[t] >= dem_cum[t] - 1e-9:
                continue
            ok = np.flatnonzero(np.arange(T) + Ldc[k] <= t)
            if len(ok) == 0:
                continue  # nothing can arrive by t: the DC owes the stores until something does
            s0 = int(ok.max())
            arrive = s0 + int(Ldc[k, s0])
            hi = min(t + int(Rdc[k]) - 1, T - 1)
            q = dem_cum[hi] - sup[t]
            plan[0, k, s0] += q
            sup[arrive:] += q
    return np.rint(plan)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--paths", default="0,1,2,3,4")
    args = ap.parse_args()
    c = compile_scenario(load_scenario(args.scenario))
    for path in [int(x) for x in args.paths.split(",")]:
        t0 = time.perf_counter()
        dem = sample_paths(c.demand, args.seed, np.array([path]), 0, c.horizon)[0]
        L = path_lead_times(c, args.seed, path)
        costs = {}
        for alpha in ALPHAS:
            res = rollout(
                c, JointPolicy(Plan(cover_plan(c, dem, L, alpha))), paths=np.array([path]), seed=args.seed
            )
            costs[alpha] = res.cost[0].sum(axis=0)
        best = min(costs, key=lambda a: costs[a].sum())
        out = {
            "path": path,
            "best_alpha": best,
            "cost": float(costs[best].sum()),
            "parts": dict(zip(COST_NAMES, map(float, costs[best]), strict=True)),
            "by_alpha": {str(a): float(v.sum()) for a, v in costs.items()},
            "seconds": time.perf_counter() - t0,
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
