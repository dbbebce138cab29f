"""OR-Gym InvManagement-v0/v1 in restock: tuned heuristics and a perfect-information bound, as
discounted profit per episode on common paths (docs/results/benchmarks.md).

    .venv/bin/python docs/results/benchmarks.py --episodes 1000 --params-dir out/orgym --json out/orgym/table.json \
        [--learned v1=RUN ... --warm v1=RUN ...]

Needs the tuned knobs first (``restock tune benchmarks/orgym_invmgmt_vX --policy base_stock|s_S|
echelon_base_stock|base_stock_cutoff --per-node --discounted --out out/orgym/orgym_invmgmt_vX_params.json``).
Every policy runs behind the shield, as ``restock eval`` runs them, on the same paths (ids
0..episodes-1, seed --seed): the tuned heuristics, base-stock with a horizon cut-off wrapped around the
knobs tuned without it (`HorizonCutoff`), the catalogue's ``base_stock_cutoff`` (cut-off and levels
tuned together), and learned runs of `restock train` (``--learned``, one per training seed, and
``--warm``, the same seeds' warm starts alone), with paired differences. The bound is the
perfect-information linear program of these scenarios (below), solved per path on the demand the
policies met; its mean is an upper bound on the expected discounted profit of any policy (it knows each
path's whole future, so no policy can reach it). It is the restock counterpart of Hubbs et al.'s
perfect-information MILP; a sample of paths is also solved with integer variables to check the LP is
not looser than the MILP.

The LP, per path with demand d_t (t = 0..T-1), stages i = 0 (store), 1, 2 with lead times L_i into
them, capacities c = (100, 90, 80), initial stock I0 = (100, 100, 200), discount a:

    max sum_t a^t [p S_t - r3 R2_t - sum_i h_i I_i,t - k0 (lost_t | B_t)]
    I_0,t = I_0,t-1 + R0_{t-L0} - S_t,  I_1,t = I_1,t-1 + R1_{t-L1} - R0_t,  I_2,t = I_2,t-1 + R2_{t-L2} - R1_t
    R0_t <= I_1,t-1,  R1_t <= I_2,t-1          (stages ship from their start-of-period stock)
    R_i,t <= c_i;  v1: S_t <= d_t (lost_t = d_t - S_t);  v0: B_t = B_t-1 + d_t - S_t >= 0;  all >= 0

Every policy's trajectory is feasible for it with at least its profit (orders that are not filled only
add penalties the LP need not pay), so the LP optimum bounds every policy path by path.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import load_params, make_policy
from restock.agents.horizon import reach_to_customer
from restock.agents.learned import load_learned_policy
from restock.agents.shield import Shield
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.kpis import mean_ci
from restock.eval.kpis import episode_kpis
from restock.eval.rollout import rollout
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

POLICIES = ("base_stock", "s_S", "echelon_base_stock")  # tuned per node (restock tune --per-node)
PUBLISHED = {  # Hubbs et al. 2020 (OR-Gym), discounted profit per episode
    "v0": {"perfect-information MILP": 546.8, "shrinking-horizon LP": 508.0, "RLlib PPO": 438.8},
    "v1": {"perfect-information MILP": 542.7, "shrinking-horizon LP": 485.4, "RLlib PPO": 409.8},
}


def _economics(c):
    """The chain's numbers, read from the compiled scenario (stages: store, stage_1, stage_2)."""
    p = c.params
    order = [2, 1, 0]  # node index of stage 0, 1, 2
    return dict(
        T=c.horizon,
        a=float(c.config.discount),
        L=[int(p.lt_value[n, 0]) for n in order],
        cap=[float(p.lane_cap[2]), float(p.lane_cap[1]), float(p.sup_cap[0, 0, 0])],
        I0=[float(c.init_on_hand[n, 0]) for n in order],
        h=[float(p.hold[n, 0]) for n in order],
        k0=float(p.stockout[2, 0]),
        price=float(p.price[2, 0]),
        r3=float(p.order_cost[0, 0]),
        backlog=bool(p.backlog[2]),
    )


def _lp(e: dict, d: np.ndarray):
    """(c, A_eq, b_eq, A_ub, b_ub, bounds) of the minimisation form (-profit), constants dropped."""
    T, a = e["T"], e["a"]
    nv = 8  # per period: R0 R1 R2 I0 I1 I2 S B
    R = lambda i, t: nv * t + i  # noqa: E731
    I = lambda i, t: nv * t + 3 + i  # noqa: E731
    S = lambda t: nv * t + 6  # noqa: E731
    B = lambda t: nv * t + 7  # noqa: E731
    n = nv * T
    cost = np.zeros(n)
    lb, ub = np.zeros(n), np.full(n, np.inf)
    for t in range(T):
        w = a**t
        cost[S(t)] = -e["price"] * w
        cost[R(2, t)] = e["r3"] * w
        for i in range(3):
            cost[I(i, t)] = e["h"][i] * w
            ub[R(i, t)] = e["cap"][i]
        if e["backlog"]:
            cost[B(t)] = e["k0"] * w
        else:
            cost[S(t)] -= e["k0"] * w  # -k0 (d - S): the constant -k0 d is added back by the caller
            ub[S(t)] = d[t]
            ub[B(t)] = 0.0
    eq_rows, eq_cols, eq_vals, beq = [], [], [], []
    ub_rows, ub_cols, ub_vals, bub = [], [], [], []
    row = 0
    for t in range(T):
        for i in range(3):  # inventory balance of stage i
            entries = [(I(i, t), 1.0)]
            rhs = 0.0
            if t > 0:
                entries.append((I(i, t - 1), -1.0))
            else:
                rhs += e["I0"][i]
            if t - e["L"][i] >= 0:
                entries.append((R(i, t - e["L"][i]), -1.0))
            entries.append((S(t) if i == 0 else R(i - 1, t), 1.0))
            for col, v in entries:
                eq_rows.append(row)
                eq_cols.append(col)
                eq_vals.append(v)
            beq.append(rhs)
            row += 1
        if e["backlog"]:  # B_t - B_t-1 + S_t = d_t
            entries = [(B(t), 1.0), (S(t), 1.0)] + ([(B(t - 1), -1.0)] if t > 0 else [])
            for col, v in entries:
                eq_rows.append(row)
                eq_cols.append(col)
                eq_vals.append(v)
            beq.append(float(d[t]))
            row += 1
    urow = 0
    for t in range(T):
        for i in (1, 2):  # R_{i-1},t <= I_i,t-1 (start-of-period stock)
            ub_rows.append(urow)
            ub_cols.append(R(i - 1, t))
            ub_vals.append(1.0)
            if t > 0:
                ub_rows.append(urow)
                ub_cols.append(I(i, t - 1))
                ub_vals.append(-1.0)
                bub.append(0.0)
            else:
                bub.append(e["I0"][i])
            urow += 1
    A_eq = sparse.csr_matrix((eq_vals, (eq_rows, eq_cols)), shape=(row, n))
    A_ub = sparse.csr_matrix((ub_vals, (ub_rows, ub_cols)), shape=(urow, n))
    return cost, A_eq, np.array(beq), A_ub, np.array(bub), lb, ub


def bound_path(e: dict, d: np.ndarray, integer: bool = False) -> float:
    """The perfect-information discounted profit of one demand path (LP, or MILP with ``integer``)."""
    cost, A_eq, beq, A_ub, bub, lb, ub = _lp(e, d)
    const = 0.0
    if not e["backlog"]:
        const = -e["k0"] * float(sum(e["a"] ** t * d[t] for t in range(e["T"])))
    if integer:
        res = milp(
            cost,
            constraints=[LinearConstraint(A_eq, beq, beq), LinearConstraint(A_ub, -np.inf, bub)],
            bounds=Bounds(lb, ub),
            integrality=np.ones_like(cost),
        )
    else:
        res = linprog(cost, A_ub=A_ub, b_ub=bub, A_eq=A_eq, b_eq=beq, bounds=list(zip(lb, ub, strict=True)))
    if res.status != 0:
        raise RuntimeError(f"bound LP: {res.message}")
    return -float(res.fun) + const


class HorizonCutoff:
    """A tuned quantity heuristic that orders nothing at a node once what it orders could no longer reach
    a customer before the horizon ends (t + reach[n] > T - 1). The knobs stay the ones tuned without it
    (the catalogue's ``base_stock_cutoff`` tunes them with it, and the cut-off itself)."""

    version = "1"

    def __init__(self, inner, compiled):
        self.inner = inner
        self.name = f"{inner.name}+cutoff"
        self.output = inner.output
        self.reach = reach_to_customer(compiled)

    def bind(self, compiled) -> None:
        if hasattr(self.inner, "bind"):
            self.inner.bind(compiled)

    def act(self, ctx, nodes):
        q = np.asarray(self.inner.act(ctx, nodes))
        late = ctx.state.t[:, None].astype(np.int64) + self.reach[nodes][None, :] > ctx.compiled.horizon - 1
        return np.where(late[:, :, None], 0, q)


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean and 95% Student-t interval of a - b per path (same paths)."""
    return mean_ci(np.asarray(a) - np.asarray(b))


def run(
    version: str, episodes: int, seed: int, params_dir: str, milp_check: int, runs: dict | None = None
) -> dict:
    """Every policy of the table on paths 0..episodes-1 of ``seed``, behind the shield, and the bound.

    ``runs``: {"learned": [run dirs], "warm": [run dirs]} of `restock train` (one per training seed,
    the warm-start runs in the same order); each is evaluated as ``restock eval`` evaluates a run
    (`load_learned_policy`), with paired differences learned - warm start and learned - the heuristic
    it was cloned from (``base_stock_cutoff``)."""
    c = compile_scenario(load_scenario(f"benchmarks/orgym_invmgmt_{version}"))
    params = load_params(os.path.join(params_dir, f"orgym_invmgmt_{version}_params.json"))["policies"]
    out: dict = {"scenario": c.config.name, "episodes": episodes, "seed": seed, "policies": {}}
    demand = None
    per_ep = {}
    # (label, how to build it, knobs)
    todo = [(name, name, params[name]["knobs"]) for name in POLICIES]
    todo.append(("base_stock+cutoff (knobs tuned without it)", "wrapper", params["base_stock"]["knobs"]))
    todo.append(("base_stock_cutoff", "base_stock_cutoff", params["base_stock_cutoff"]["knobs"]))
    runs = runs or {}
    for kind in ("warm", "learned"):
        for i, d in enumerate(runs.get(kind, [])):
            todo.append((f"{kind} {i}", "run", d))
    for label, how, knobs in todo:
        t0 = time.perf_counter()
        if how == "run":
            joint = load_learned_policy(knobs, c)
        elif how == "wrapper":
            joint = JointPolicy(HorizonCutoff(make_policy("base_stock", knobs), c))
        else:
            joint = JointPolicy(make_policy(how, knobs))
        res = rollout(c, joint, episodes=episodes, seed=seed, shield=Shield(c))
        k = episode_kpis(res, c)
        per_ep[label] = k["discounted_profit"]
        out["policies"][label] = {
            ("run" if how == "run" else "knobs"): knobs,
            "discounted_profit": mean_ci(k["discounted_profit"]),
            "fill_rate": mean_ci(k["fill_rate"]),
            "seconds": time.perf_counter() - t0,
        }
        demand = res.demand[:, :, c.M].astype(np.int64)  # the store's customer demand [P, T]
    e = _economics(c)
    t0 = time.perf_counter()
    bound = np.array([bound_path(e, demand[j]) for j in range(episodes)])
    out["bound"] = {"discounted_profit": mean_ci(bound), "seconds": time.perf_counter() - t0}
    for name, v in per_ep.items():
        gap = bound - v
        assert (gap >= -1e-6).all(), f"{name} above the bound on some path"
        out["policies"][name]["gap_to_bound"] = mean_ci(gap)
        out["policies"][name]["share_of_bound"] = float(v.mean() / bound.mean())
    heur = per_ep["base_stock_cutoff"]

    def summary(runs_: list[np.ndarray]) -> dict:
        m = np.mean(runs_, axis=0)  # the seeds' mean per path
        return {
            "seeds": len(runs_),
            "per_seed_mean": [float(x.mean()) for x in runs_],
            "mean_over_seeds": mean_ci(m),
            "share_of_bound": float(m.mean() / bound.mean()),
            "minus_heuristic": _paired(m, heur),
            "per_seed_minus_heuristic": [_paired(x, heur) for x in runs_],
        }

    learned = [per_ep[f"learned {i}"] for i in range(len(runs.get("learned", [])))]
    warm = [per_ep[f"warm {i}"] for i in range(len(runs.get("warm", [])))]
    if warm:
        out["warm_summary"] = summary(warm)
    if learned:
        out["learned_summary"] = summary(learned)
        if len(warm) == len(learned):
            out["learned_summary"]["minus_warm"] = _paired(np.mean(learned, axis=0), np.mean(warm, axis=0))
            out["learned_summary"]["per_seed_minus_warm"] = [
                _paired(x, w) for x, w in zip(learned, warm, strict=True)
            ]
    if milp_check:
        mi = np.array([bound_path(e, demand[j], integer=True) for j in range(milp_check)])
        out["bound"]["milp_check"] = {
            "paths": milp_check,
            "max_lp_minus_milp": float(np.max(bound[:milp_check] - mi)),
        }
    out["published"] = PUBLISHED[version]
    return out


def _runs_arg(items: list[str]) -> dict:
    """``--learned v1=RUN`` / ``--warm v1=RUN`` (repeatable) as {version: {kind: [run dirs]}}."""
    out: dict = {}
    for kind, vals in items:
        for v in vals or []:
            version, _, d = v.partition("=")
            if version not in ("v0", "v1") or not d:
                raise SystemExit(f"--{kind}: expected v0=RUN_DIR or v1=RUN_DIR, got {v!r}")
            out.setdefault(version, {}).setdefault(kind, []).append(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params-dir", default="out/orgym")
    ap.add_argument("--milp-check", type=int, default=50)
    ap.add_argument("--json", default=None)
    ap.add_argument("--learned", action="append", help="v0=RUN or v1=RUN: a learned run (one per seed)")
    ap.add_argument("--warm", action="append", help="v0=RUN or v1=RUN: its warm start alone (same order)")
    ap.add_argument("--versions", default="v0,v1")
    a = ap.parse_args()
    runs = _runs_arg([("learned", a.learned), ("warm", a.warm)])
    table = {
        v: run(v, a.episodes, a.seed, a.params_dir, a.milp_check, runs.get(v)) for v in a.versions.split(",")
    }
    text = json.dumps(table, indent=2)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text)
    for v, r in table.items():
        b = r["bound"]["discounted_profit"]
        print(f"{v}: bound {b['mean']:.1f} [{b['ci95'][0]:.1f}, {b['ci95'][1]:.1f}]")
        for name, pr in r["policies"].items():
            m = pr["discounted_profit"]
            print(
                f"  {name}: {m['mean']:.1f} [{m['ci95'][0]:.1f}, {m['ci95'][1]:.1f}]"
                f" = {100 * pr['share_of_bound']:.1f}% of the bound"
            )
        for kind in ("warm_summary", "learned_summary"):
            if kind in r:
                print(f"  {kind}: " + json.dumps(r[kind]))
        if "milp_check" in r["bound"]:
            print(
                f"  LP - MILP on {r['bound']['milp_check']['paths']} paths: max {r['bound']['milp_check']['max_lp_minus_milp']:.2e}"
            )


if __name__ == "__main__":
    main()
