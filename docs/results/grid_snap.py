"""How much an action grid costs a heuristic: the tuned heuristic as it is, against the same heuristic with
a role's orders snapped to the nearest quantity that role's action grid allows (what a perfect clone of it
would order), on the same paths with the shield on.

    python docs/results/grid_snap.py [SCENARIO] [--params FILE] [--policy s_S] [--episodes 200] [--seed 9001]
        [--set action__store__max_cover=6.0 --set action__store__levels=16]

The snapped quantities go through the kernel's own level -> quantity mapping (`levels_to_qty`), as a learned
policy's levels do; the nearest level is `training.bc.levels_for_quantities`, the behaviour-cloning label.
Prints the cost per period of each variant on `restock eval`'s paths (the same seed gives the same
paths), the paired relative difference to the heuristic as it is (mean and 95% interval over paths), and
for the store role the share of positive orders (on the snapped run's own states) the grid cuts by more
than 20%. On `default` (docs/results/rllib_pairs.md): its store grid since 2026-12-05 (12 periods of cover
in 31 levels) costs tuned (s,S) 0.44%; the former one (6 periods in 16 levels, the --set above) 5.1%.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import load_params, make_policy
from restock.agents.shield import Shield
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.roles import role_nodes
from restock.training.bc import levels_for_quantities


def snapped(env: ArrayEnv, nodes: np.ndarray, qty: np.ndarray) -> np.ndarray:
    """qty [E, N, K] with the nodes' orders replaced by their nearest allowed level's quantity."""
    lv = np.zeros(qty.shape, np.int64)
    lv[:, nodes] = levels_for_quantities(env, nodes, qty[:, nodes])
    q = np.zeros(qty.shape, np.int32)
    kn.levels_to_qty(env.params, env.state, env.work, lv, q)
    out = qty.copy()
    out[:, nodes] = q[:, nodes]
    return out


def run(compiled, policy: str, knobs: dict, episodes: int, seed: int, roles: list[str]):
    env = ArrayEnv(compiled, num_envs=episodes, seed=seed, shield=Shield(compiled, mode="enforce"))
    env.reset(paths=np.arange(episodes))  # paths 0..n-1 of the seed: `restock eval --seed`'s paths
    pol = JointPolicy(make_policy(policy, knobs))
    pol.bind(compiled)
    total = np.zeros(episodes)
    cut = pos = 0
    stores = role_nodes(compiled, "store")
    for _ in range(compiled.horizon):
        q = pol.propose(env).qty
        if "store" in roles:
            s = snapped(env, stores, q)[:, stores]
            m = q[:, stores] > 0
            pos += int(m.sum())
            cut += int((s[m] < 0.8 * q[:, stores][m]).sum())
        for role in roles:
            q = snapped(env, role_nodes(compiled, role), q)
        _, _, r, _, _ = env.step_qty(q)
        total -= r.sum(1)
    return total, (cut / pos if pos else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", nargs="?", default="default")
    ap.add_argument("--params", default="out/params/default.json")
    ap.add_argument("--policy", default="s_S")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--set", action="append", default=[], help="scenario override KEY=VALUE (a__b__c)")
    a = ap.parse_args()
    if a.episodes < 2:
        raise SystemExit("--episodes: at least 2 (a paired interval needs two paths)")
    overrides = {}
    for kv in a.set:
        k, eq, v = kv.partition("=")
        if not eq:
            raise SystemExit(f"--set {kv!r}: expected KEY=VALUE, e.g. action__store__levels=31")
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v  # a plain string
    try:
        compiled = compile_scenario(load_scenario(a.scenario, **overrides))
        params = load_params(a.params)
    except (ValueError, OSError) as exc:
        raise SystemExit(str(exc)) from None
    if params.get("scenario") not in (None, compiled.config.name):
        raise SystemExit(
            f"--params: {a.params} was tuned on {params['scenario']!r}, not {compiled.config.name!r}"
        )
    if a.policy not in params["policies"]:
        raise SystemExit(f"--policy: {a.policy!r} is not in {a.params} ({', '.join(params['policies'])})")
    knobs = params["policies"][a.policy].get("knobs", {})
    cls = params["policies"][a.policy].get("policy", a.policy)  # a tuned variant (s_S_per_sku): its heuristic
    H = compiled.horizon
    base, _ = run(compiled, cls, knobs, a.episodes, a.seed, [])
    print(f"{a.policy} as it is: {base.mean() / H:,.1f} per period ({a.episodes} paths, seed {a.seed})")
    for roles in (["dc"], ["store"], ["store", "dc"]):
        tot, cut = run(compiled, cls, knobs, a.episodes, a.seed, roles)
        d = (tot - base) / base
        hw = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
        extra = f"; store orders cut by > 20%: {cut:.1%}" if cut is not None else ""
        print(
            f"snapped to the {'+'.join(roles)} grid: {tot.mean() / H:,.1f} per period, "
            f"{100 * d.mean():+.2f}% [{100 * (d.mean() - hw):+.2f}, {100 * (d.mean() + hw):+.2f}]{extra}"
        )


if __name__ == "__main__":
    main()
