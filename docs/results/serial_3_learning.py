"""Judge dcl runs on serial_3 against Clark-Scarf: held-out common paths, paired intervals, training seeds.

    python docs/results/serial_3_learning.py runs/dcl_s3/serial_3__serial_3_dcl__{0,1,2}__* \
        --params out/params/serial_3.json --episodes 1000 --seed 4242

Every policy runs on the same held-out sample paths (seed 4242: never used in tuning or training), each
path the scenario's 200 periods from its initial state, so 1,000 episodes are 200,000 periods per
policy. Policies: Clark-Scarf's optimal policy (echelon base-stock at the exact optimal levels,
`clark_scarf`), the tuned echelon base-stock (the params file), and per training seed the
behaviour-cloned start (``RUN/cloned``) and the learned policy (``RUN``). The learned networks read only
their node's installation and echelon positions (`training.dcl_serial`), so they run here as their
greedy decision table over a grid of those positions, in the kernel without the shield (about 100x
faster than `restock eval`'s forward pass per period); the script first checks, on 32 paths, that the
table and the network as `restock eval` loads it (`agents.learned.load_learned_policy`, behind the
shield) order exactly the same quantities in every period, and stops if they differ. On serial_3 the
shield never changes an order of these policies (`restock eval` reports intervention rate 0).

Prints markdown: cost per period, paired difference (policy minus Clark-Scarf, per path, 95% t-interval)
per seed, the across-seed mean of the learned and cloned gaps with their 95% t-intervals (n - 1 degrees
of freedom), and learned minus cloned per seed and across seeds. ``--json FILE`` saves the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import load_params, make_policy
from restock.agents.echelon import EchelonBaseStock
from restock.agents.learned import load_learned_policy, load_role
from restock.agents.shield import Shield
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training import dcl_serial as ds
from restock.training import dcl_serial_parts as dsp
from scipy import stats


def per_path(compiled, decide, episodes: int, seed: int) -> np.ndarray:
    """Cost per period of each path [P]; decide(env) -> order quantities [P, N, 1]."""
    env = ArrayEnv(compiled, num_envs=episodes, seed=seed, features=True, parallel=False)
    env.reset(paths=np.arange(episodes))
    tot = np.zeros(episodes)
    for _ in range(compiled.horizon):
        _, _, _, _, info = env.step_qty(decide(env))
        tot += info["cost"].sum(axis=(1, 2))
    return tot / compiled.horizon


def heuristic(compiled, joint):
    joint.bind(compiled)
    return lambda env: joint.propose(env).qty.copy()


def learned(compiled, run: Path, check: bool = True):
    """The run's networks as a table over (node, installation, echelon position), checked against
    the network policy `restock eval` loads (behind the shield) on 32 paths."""
    roles = ds._roles(compiled)
    grid = dsp.Grid(compiled, roles, -60, 100, -60, 160)
    grid.refresh({r: load_role(run, r) for r in roles})

    def decide(env):
        ip, eip = dsp.Positions(env)()
        lv = np.zeros(ip.shape, np.int64)
        grid.decide(ip, eip, lv)
        return env.levels_to_qty(lv).copy()

    if not check:
        return decide
    joint = load_learned_policy(run, compiled)
    joint.bind(compiled)
    shield = Shield(compiled)
    env = ArrayEnv(compiled, num_envs=32, seed=1, features=True)
    env.reset()
    for t in range(compiled.horizon):
        q_net, _ = shield(env, joint.propose(env).qty.copy())
        q_tab = decide(env)
        if not np.array_equal(np.asarray(q_net), q_tab):
            raise SystemExit(f"{run}: table and network differ at period {t}")
        env.step_qty(q_tab)
    return decide


def ci(x: np.ndarray) -> tuple[float, float, float]:
    m = float(np.mean(x))
    if x.size < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, x.size - 1) * np.std(x, ddof=1) / np.sqrt(x.size))
    return m, m - h, m + h


def pct(x: np.ndarray, ref: float) -> str:
    m, lo, hi = ci(x)
    return f"{100 * m / ref:+.3f}% [{100 * lo / ref:+.3f}, {100 * hi / ref:+.3f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--params", default="out/params/serial_3.json")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    c = compile_scenario(load_scenario("serial_3"))
    t0 = time.perf_counter()
    cs = per_path(c, heuristic(c, JointPolicy(EchelonBaseStock.from_clark_scarf(c))), a.episodes, a.seed)
    knobs = load_params(a.params)["policies"]["echelon_base_stock"]["knobs"]
    ebs = per_path(c, heuristic(c, JointPolicy(make_policy("echelon_base_stock", knobs))), a.episodes, a.seed)
    ref = float(cs.mean())
    out = {"episodes": a.episodes, "seed": a.seed, "periods_per_policy": a.episodes * c.horizon}
    out["clark_scarf"] = ci(cs)
    out["tuned_echelon_base_stock"] = {"cost": ci(ebs), "minus_cs": ci(ebs - cs)}
    lines = [
        f"Held-out paths: {a.episodes} x {c.horizon} periods (seed {a.seed}), every policy on the same paths, "
        "kernel without the shield (it changes no order of these policies here).",
        "",
        "| policy | cost per period [95% CI] | minus Clark-Scarf, paired [95% CI] | relative |",
        "|---|---|---|---|",
        f"| Clark-Scarf (echelon base-stock at its optimal levels) | {ref:.4f} [{out['clark_scarf'][1]:.4f}, "
        f"{out['clark_scarf'][2]:.4f}] | 0 | 0 |",
        f"| tuned echelon base-stock (the warm start's heuristic) | {ebs.mean():.4f} | "
        f"{ci(ebs - cs)[0]:+.4f} [{ci(ebs - cs)[1]:+.4f}, {ci(ebs - cs)[2]:+.4f}] | {pct(ebs - cs, ref)} |",
    ]
    gaps_l, gaps_c, gains = [], [], []
    out["runs"] = []
    for run in a.runs:
        run = Path(run)
        info = json.loads((run / "run.json").read_text())
        cl = per_path(c, learned(c, run / "cloned"), a.episodes, a.seed)
        le = per_path(c, learned(c, run), a.episodes, a.seed)
        sel = info.get("summary", {}).get("roles", {}).get("store", {}).get("selected", {})
        secs = info.get("summary", {}).get("seconds", float("nan"))
        gaps_l.append(float((le - cs).mean() / ref))
        gaps_c.append(float((cl - cs).mean() / ref))
        gains.append(float((le - cl).mean() / ref))
        lines.append(
            f"| seed {info['seed']}: cloned start | {cl.mean():.4f} | {ci(cl - cs)[0]:+.4f} | {pct(cl - cs, ref)} |"
        )
        lines.append(
            f"| seed {info['seed']}: learned (iteration {sel.get('iteration', '?')}, {secs / 60:.1f} min) | "
            f"{le.mean():.4f} | {ci(le - cs)[0]:+.4f} | {pct(le - cs, ref)} |"
        )
        out["runs"].append(
            {
                "run": run.name,
                "seed": info["seed"],
                "minutes": secs / 60,
                "selected_iteration": sel.get("iteration"),
                "cloned_minus_cs": ci(cl - cs),
                "learned_minus_cs": ci(le - cs),
                "learned_minus_cloned": ci(le - cl),
                "learned_minus_tuned": ci(le - ebs),
            }
        )
    lines += [
        "",
        "| per seed | learned minus cloned start, paired [95% CI] | learned minus tuned heuristic |",
        "|---|---|---|",
    ]
    for r in out["runs"]:
        lc, lt = r["learned_minus_cloned"], r["learned_minus_tuned"]
        lines.append(
            f"| seed {r['seed']} | {100 * lc[0] / ref:+.3f}% [{100 * lc[1] / ref:+.3f}, {100 * lc[2] / ref:+.3f}] | "
            f"{100 * lt[0] / ref:+.3f}% [{100 * lt[1] / ref:+.3f}, {100 * lt[2] / ref:+.3f}] |"
        )
    gl, gc, gg = (100 * np.asarray(g) for g in (gaps_l, gaps_c, gains))
    out["across_seeds_percent"] = {
        "learned_minus_cs": ci(gl),
        "cloned_minus_cs": ci(gc),
        "learned_minus_cloned": ci(gg),
    }
    lines += [
        "",
        f"Across {len(gl)} training seeds (mean and 95% t-interval of the per-seed relative gaps):",
        f"- learned minus Clark-Scarf: **{ci(gl)[0]:+.3f}%** [{ci(gl)[1]:+.3f}, {ci(gl)[2]:+.3f}]",
        f"- cloned start minus Clark-Scarf: {ci(gc)[0]:+.3f}% [{ci(gc)[1]:+.3f}, {ci(gc)[2]:+.3f}]",
        f"- learned minus cloned start: {ci(gg)[0]:+.3f}% [{ci(gg)[1]:+.3f}, {ci(gg)[2]:+.3f}]",
        f"- worst seed, learned minus Clark-Scarf: {gl.max():+.3f}%",
        "",
        f"(judged in {time.perf_counter() - t0:.0f} s)",
    ]
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
