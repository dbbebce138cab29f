"""One behaviour-cloned start for every network_2e RLlib run (all seeds and ablations start from it).

    python docs/results/network_2e_clone.py --out out/n2e_clone [--updates 300] [--lr 2e-3] [--episodes 16]

Clones the tuned baseline of the experiment file (s,S; knobs from out/params/network_2e.json) into the
per-SKU network of each role, exactly as a run's own warm start does (`training.bc.collect` and
`pretrain`, shielded rollouts, the same observation statistics), but with a fixed number of gradient
steps instead of a share of each run's minutes, and writes OUT/policies/{store,dc}.{pt,json} and a
run.json (so `restock eval` takes OUT as a policy: the cloned start). The
experiment files point `rllib.init_from` at it. On the shared 2-core machine a run's own share (10% of
7 minutes) allowed ~50 steps, which left the cloned start several times costlier than the heuristic.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from restock.agents.learned import save_role
from restock.agents.networks import PerSkuNet
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training.bc import collect, pretrain
from restock.training.common import net_config, observation_stats, prepare_baseline
from restock.training.experiment import load_experiment, resolve_gamma
from restock.training.train import shield_factory_for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/experiments/network_2e.yaml")
    ap.add_argument("--out", default="out/n2e_clone")
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    exp = load_experiment(a.config)
    compiled = compile_scenario(load_scenario("network_2e"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    shield_factory = shield_factory_for(exp)
    baseline = prepare_baseline(compiled, exp, out, shield_factory=shield_factory)
    gamma = resolve_gamma(exp, compiled)[0]
    scale = baseline.reward_scale / (1.0 - gamma)
    report = {
        "baseline": baseline.policy,
        "knobs": baseline.knobs,
        "updates": a.updates,
        "lr": a.lr,
        "roles": {},
    }
    for role in ("store", "dc"):
        t0 = time.perf_counter()
        net = PerSkuNet(net_config(compiled, role, exp, observation_stats(compiled, role, baseline)))
        data = collect(
            compiled,
            role,
            baseline.joint(),
            a.episodes,
            seed=a.seed + 500,
            gamma=gamma,
            reward_scale=scale,
            shield=shield_factory(compiled),
        )
        res = pretrain(
            net,
            data,
            epochs=exp.bc_epochs,
            seed=a.seed,
            log=print,
            lr=a.lr,
            min_updates=a.updates,
            max_updates=a.updates,
        )
        save_role(out, role, net.eval())
        report["roles"][role] = {"accuracy": res["accuracy"], "seconds": time.perf_counter() - t0}
        print(role, report["roles"][role], flush=True)
    (out / "clone.json").write_text(json.dumps(report, indent=2))
    # a run description, so `restock eval` can judge the cloned start like any run
    run = {
        "format": "restock.run/1",
        "trainer": "bc",
        "scenario": compiled.config.name,
        "status": "done",
        "version": "1",
        "roles": ["dc", "store"],
        "baseline": {"policy": baseline.policy, "knobs": baseline.knobs},
    }
    (out / "run.json").write_text(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
