"""The behaviour-cloned start of a `default` training run, as a run directory `restock eval` can judge.

    python docs/results/default_clone.py --seed 0 --steps 16384 --out runs/default_clone

Runs `restock train default --trainer sb3 --config configs/experiments/default.yaml --steps STEPS --seed SEED`
through the same code path (`training.train.train`, SB3 trainer: the same baseline, shielded rollouts,
network initialisation and behaviour-cloning budget, 160 gradient steps for 16,384 steps), and stops it
where PPO would start: `MaskablePPO.learn` is replaced by a function that saves the cloned network as the
run's store policy and returns. Both trainers start from this network (their step-0 held-out evaluation is
the same number; docs/results/default_trainers.py prints it), so `restock eval` on this directory measures
what the warm start alone gives on the held-out paths, and the trained runs' paired differences to it what
PPO added. The experiment's `scenario_overrides` apply as in `restock train` (default.yaml pins the store
grid its documented runs had: 16 levels to 6 periods of cover).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from restock.agents.learned import save_role
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training import sb3_train
from restock.training.experiment import load_experiment
from restock.training.train import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=16384)
    ap.add_argument("--config", default="configs/experiments/default.yaml")
    ap.add_argument("--out", default="runs/default_clone")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    exp = load_experiment(a.config)
    exp = exp.model_copy(update={"seed": a.seed, "steps": a.steps, "minutes": None})
    compiled = compile_scenario(load_scenario("default", **exp.scenario_overrides))  # as restock train does
    holder: dict = {}

    def cloned_only(self, *args, **kwargs):  # replaces MaskablePPO.learn
        save_role(holder["run_dir"], "store", self.policy.per_sku_net)
        raise sb3_train._StopForTest()

    sb3_train.MaskablePPO.learn = cloned_only
    orig = sb3_train.train_sb3

    def capture(compiled_, exp_, run_dir, *rest, **kw):
        holder["run_dir"] = Path(run_dir)
        return orig(compiled_, exp_, run_dir, *rest, **kw)

    sb3_train.train_sb3 = capture
    run_dir = train(compiled, exp, "sb3", out_root=a.out)
    print(run_dir)


if __name__ == "__main__":
    main()
