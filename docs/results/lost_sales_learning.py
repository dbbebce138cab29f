"""Judge dcl runs on a lost-sales instance: held-out paths, common random numbers, paired intervals, seeds.

    python docs/results/lost_sales_learning.py ls_L2_p9 runs/dcl/ls_L2_p9__lost_sales_dcl__{0,1,2}__* \
        --episodes 1000 --seed 4242

Every policy runs on the same held-out sample paths (seed 4242: never used in tuning or training), each
path the scenario's 1,000 periods from its initial state, so 1,000 episodes are 1,000,000 periods per
policy. Policies: the exact DP optimum (`dp_optimal`), the tuned capped base-stock heuristic (the params
file `restock tune` wrote), and per training seed the behaviour-cloned start (`RUN/cloned`) and the
learned policy (`RUN`). The learned networks read only the exact state (the dcl trainer scales the other
features out), so they are simulated here as their greedy decision table over the states (computed by the
networks through the kernel's own observations), which is ~100x faster than a forward pass per period;
the script checks first, on 32 paths, that the table and the network (`agents.learned.TorchPolicy` in an
ordinary rollout) order exactly the same quantity in every period, and stops if they differ.

Prints a markdown table: cost per period (95% CI), paired difference to the optimum and to the cloned
start (95% CI over paths), per seed; the across-seed mean and its 95% t-interval; and the exact long-run
average cost of every policy (`agents.exact.exact_policy_cost`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.exact import exact_policy_cost
from restock.agents.learned import TorchPolicy, load_role
from restock.agents.single_node_dp import solve
from restock.agents.single_node_scenario import DPOptimalPolicy, StateTable, spec_from_scenario
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.eval.rollout import rollout
from scipy import stats


def state_table(compiled, table: StateTable, joint: JointPolicy) -> np.ndarray:
    env = ArrayEnv(compiled, num_envs=table.S, seed=0, features=True)
    env.reset()
    table.write(env, np.arange(table.S))
    env._observe(env.params, env.state, env.work, env.obs, env.mask, env.ub)
    joint.bind(compiled)
    return joint.propose(env).qty[:, 0, 0].astype(np.int64)


def simulate(compiled, table: StateTable, q: np.ndarray, episodes: int, seed: int) -> np.ndarray:
    """Cost per period of each episode [P] under a state-table policy (q = 0 outside the table)."""
    env = ArrayEnv(compiled, num_envs=episodes, seed=seed, features=False)
    env.reset(paths=np.arange(episodes))
    tot = np.zeros(episodes)
    for _ in range(compiled.horizon):
        idx = table.index(env)
        qq = np.where(idx >= 0, q[np.maximum(idx, 0)], 0)
        _, _, _, _, info = env.step_qty(qq.reshape(episodes, 1, 1))
        tot += info["cost"][:, 0].sum(axis=1)
    return tot / compiled.horizon


def check_table(compiled, table: StateTable, q: np.ndarray, net, episodes: int = 32) -> None:
    """The network in an ordinary rollout orders what its table says, in every period of every path."""
    res = rollout(compiled, JointPolicy(TorchPolicy(net)), episodes=episodes, seed=77, trace_sku=None)
    env = ArrayEnv(compiled, num_envs=episodes, seed=77, features=False)
    env.reset(paths=np.arange(episodes))
    for t in range(compiled.horizon):
        idx = table.index(env)
        qq = np.where(idx >= 0, q[np.maximum(idx, 0)], 0)
        if not np.array_equal(qq, res.ordered[:, t, 0].astype(np.int64)):
            sys.exit(f"the decision table differs from the network at period {t}: not a state-based policy")
        env.step_qty(qq.reshape(episodes, 1, 1))


def ci(x: np.ndarray) -> tuple[float, float, float]:
    m = float(np.mean(x))
    h = (
        float(stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x)))
        if len(x) > 1
        else float("nan")
    )
    return m, m - h, m + h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instance")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--params-dir", default="out/params")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    c = compile_scenario(load_scenario(f"lost_sales/{a.instance}"))
    table = StateTable(c)
    opt = solve(spec_from_scenario(c))
    pols: dict[str, tuple[JointPolicy, object]] = {"dp_optimal": (JointPolicy(DPOptimalPolicy(opt)), None)}
    knobs = json.loads((Path(a.params_dir) / f"{a.instance}.json").read_text())["policies"][
        "capped_base_stock"
    ]["knobs"]
    pols["capped_base_stock (tuned)"] = (JointPolicy(make_policy("capped_base_stock", knobs)), None)
    for i, r in enumerate(a.runs):
        for tag, d in (("cloned", Path(r) / "cloned"), ("learned", Path(r))):
            net = load_role(d, "store")
            pols[f"{tag} s{i}"] = (JointPolicy(TorchPolicy(net)), net)
    cost, exact = {}, {}
    for name, (joint, net) in pols.items():
        q = state_table(c, table, joint)
        if net is not None:
            check_table(c, table, q, net)
        cost[name] = simulate(c, table, q, a.episodes, a.seed)
        lo, hi = exact_policy_cost(c, joint)
        exact[name] = 0.5 * (lo + hi)
        print(f"{name}: {cost[name].mean():.4f} simulated, {exact[name]:.4f} exact", file=sys.stderr)
    dp = cost["dp_optimal"]
    n_periods = a.episodes * c.horizon
    print(
        f"**{a.instance}**: {a.episodes:,} held-out paths x {c.horizon:,} periods = {n_periods:,} periods per "
        f"policy (seed {a.seed}); DP optimum {opt.average_cost:.4f} per period (exact, long run)\n"
    )
    print(
        "| policy | cost per period (95% CI) | vs DP optimum, paired | vs cloned start, paired | exact long-run cost | exact gap |"
    )
    print("|---|---|---|---|---|---|")
    gaps, gains = [], []
    for name, x in cost.items():
        m, lo, hi = ci(x)
        rel = 100 * (x / dp - 1)
        dm, dlo, dhi = ci(rel)
        vs_dp = "—" if name == "dp_optimal" else f"{dm:+.3f}% [{dlo:+.3f}, {dhi:+.3f}]"
        vs_cl = ""
        if name.startswith("learned"):
            cl = cost[name.replace("learned", "cloned")]
            gm, glo, ghi = ci(100 * (x - cl) / cl)
            vs_cl = f"{gm:+.3f}% [{glo:+.3f}, {ghi:+.3f}]"
            gaps.append(dm)
            gains.append(gm)
        eg = 100 * (exact[name] / opt.average_cost - 1)
        print(
            f"| {name} | {m:.4f} [{lo:.4f}, {hi:.4f}] | {vs_dp} | {vs_cl} | {exact[name]:.4f} | {eg:+.3f}% |"
        )
    if len(gaps) > 1:
        gm, glo, ghi = ci(np.array(gaps))
        am, alo, ahi = ci(np.array(gains))
        print(
            f"\nAcross {len(gaps)} training seeds: learned vs DP optimum {gm:+.3f}% (95% t-interval "
            f"[{glo:+.3f}, {ghi:+.3f}]); learned vs cloned start {am:+.3f}% [{alo:+.3f}, {ahi:+.3f}]."
        )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {k: {"simulated": float(v.mean()), "exact": exact[k]} for k, v in cost.items()}, indent=2
            )
        )


if __name__ == "__main__":
    main()
