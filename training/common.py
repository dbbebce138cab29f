"""Shared training plumbing: run directories, the baseline, feature statistics, TensorBoard, metrics."""

from __future__ import annotations

import csv
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from restock.agents.base import JointPolicy
from restock.agents.catalogue import load_params, make_policy, save_params
from restock.agents.networks import NetConfig, feature_stats
from restock.agents.tuning import tune
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import Compiled
from restock.envs.constraints import CONSTRAINTS
from restock.envs.roles import role_nodes
from restock.envs.types import NODE_FEATURES
from restock.training.experiment import ExperimentConfig

TB_TAGS = (
    "charts/episodic_cost",
    "charts/SPS",
    "inventory/fill_rate",
    "inventory/holding_cost",
    "inventory/stockout_cost",
    "safety/intervention_rate",
    "safety/violations",
)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - SB3 shuffles minibatches with the legacy global RNG
    torch.manual_seed(seed)


def new_run_dir(root: str | Path, scenario: str, exp: str, seed: int) -> Path:
    """runs/{scenario}__{exp}__{seed}__{time}: one TensorBoard run per training run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = Path(root) / f"{scenario}__{exp}__{seed}__{stamp}"
    n = 1
    while d.exists():
        n += 1
        d = Path(root) / f"{scenario}__{exp}__{seed}__{stamp}-{n}"
    d.mkdir(parents=True)
    return d


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps(data, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )
    os.replace(tmp, path)


@dataclass
class Baseline:
    """The tuned heuristic that plays the untrained role and sets the reward scale."""

    policy: str
    knobs: dict
    cost_per_period: float
    reward_scale: float  # mean cost per agent and period under the baseline

    def joint(self) -> JointPolicy:
        return JointPolicy(make_policy(self.policy, self.knobs))


def prepare_baseline(
    compiled: Compiled, exp: ExperimentConfig, run_dir: Path, log=print, shield_factory=None
) -> Baseline:
    """The baseline's knobs (from the parameter file, or tuned quickly) and its cost, measured behind the
    shield like everything the agents will do."""
    name = exp.baseline
    knobs: dict = {}
    if exp.baseline_params and "{scenario}" in exp.baseline_params:  # one experiment file for a family
        exp = exp.model_copy(
            update={"baseline_params": exp.baseline_params.replace("{scenario}", compiled.config.name)}
        )
    if name not in ("zero",):
        data = None
        if exp.baseline_params and not Path(exp.baseline_params).exists():
            log(
                f"note: baseline parameter file {exp.baseline_params} not found (run `restock tune` to make it)"
            )
        elif exp.baseline_params:
            data = load_params(exp.baseline_params)
            if data.get("scenario") != compiled.config.name:
                log(f"note: baseline parameters were tuned on {data.get('scenario')!r}")
        entry = exp.baseline_entry or name
        if exp.baseline_entry and not (data and entry in data.get("policies", {})):
            raise ValueError(
                f"baseline_entry: {entry!r} is not in the baseline parameter file {exp.baseline_params} "
                f"(make it with `restock tune {compiled.config.name} --policy {name} --per-sku --out FILE`)"
            )
        if data and entry in data.get("policies", {}):
            of = data["policies"][entry].get("policy", entry)
            if of != name:
                raise ValueError(
                    f"baseline_entry: {entry!r} in {exp.baseline_params} holds knobs of {of!r}, "
                    f"not of the baseline {name!r}"
                )
            knobs = data["policies"][entry]["knobs"]
        else:
            log(f"tuning the {name} baseline on {compiled.config.name} (quick: 8 paths, 2 rounds)...")
            res = tune(compiled, name, episodes=8, rounds=2, eval_episodes=8, shield=shield_factory)
            save_params(run_dir / "baseline_params.json", res)
            knobs = res.knobs
    joint = JointPolicy(make_policy(name, knobs))
    env = ArrayEnv(compiled, num_envs=4, seed=99, shield=shield_factory(compiled) if shield_factory else None)
    env.reset()
    joint.bind(compiled)
    for _ in range(compiled.horizon):
        env.step_qty(joint.propose(env).qty)
    cost = env.episode_cost.sum(axis=2)  # [E, N]
    per_agent_period = float(cost.mean() / compiled.horizon)
    return Baseline(
        policy=name,
        knobs=knobs,
        cost_per_period=float(cost.sum(axis=1).mean() / compiled.horizon),
        reward_scale=max(per_agent_period, 1e-6),
    )


def observation_stats(
    compiled: Compiled, role: str, baseline: Baseline, episodes: int = 2
) -> tuple[list, list]:
    """Feature normalisation statistics from rollouts of the baseline (the states a policy starts in)."""
    env = ArrayEnv(compiled, num_envs=episodes, seed=98)
    env.reset()
    joint = baseline.joint()
    joint.bind(compiled)
    nodes = role_nodes(compiled, role)
    rows = []
    for _ in range(compiled.horizon):
        rows.append(env.obs[:, nodes].reshape(-1, env.obs_dim).copy())
        env.step_qty(joint.propose(env).qty)
    return feature_stats(np.concatenate(rows), env.F, env.G)


def net_config(
    compiled: Compiled, role: str, exp: ExperimentConfig, stats: tuple[list, list], global_state: int = 0
) -> NetConfig:
    env_F = len(compiled.sku_features)  # the scenario's observation block
    G = len(NODE_FEATURES)
    L = int(compiled.params.levels[role_nodes(compiled, role)[0]])
    return NetConfig(
        n_skus=compiled.K,
        sku_features=env_F,
        node_features=G,
        levels=L,
        hidden=tuple(exp.network.hidden),
        value_hidden=tuple(exp.network.value_hidden),
        global_state=global_state,
        feat_mean=stats[0],
        feat_std=stats[1],
    )


@dataclass
class Monitor:
    """TensorBoard writer plus a CSV of the same scalars (learning curves without TensorBoard)."""

    run_dir: Path
    writer: Any = None
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir))
        self._csv = self.run_dir / "metrics.csv"

    def config_text(self, cfg: dict) -> None:
        lines = ["| key | value |", "|---|---|"]
        for k, v in _flatten(cfg).items():
            lines.append(f"| {k} | {v} |")
        self.writer.add_text("config", "\n".join(lines), 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            if v is not None and np.isfinite(v):
                self.writer.add_scalar(k, float(v), step)
        self.writer.flush()
        row = {"step": step, **{k: float(v) for k, v in scalars.items() if v is not None}}
        self.rows.append(row)
        new = not self._csv.exists()
        with open(self._csv, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["step", "tag", "value"])
            if new:
                w.writeheader()
            for k, v in row.items():
                if k != "step":
                    w.writerow({"step": step, "tag": k, "value": v})

    def close(self) -> None:
        self.writer.close()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def save_resolved_config(
    run_dir: Path, compiled: Compiled, exp: ExperimentConfig, trainer: str, gamma: dict | None = None
) -> dict:
    """config.yaml (the experiment as run, ``ppo.gamma`` resolved; ``gamma``: {value, source}, where
    the PPO discount came from) and scenario.yaml."""
    cfg = {
        "trainer": trainer,
        "scenario": compiled.config.name,
        "scenario_hash": compiled.config_hash,
        **({"gamma": gamma} if gamma is not None else {}),
        "experiment": exp.model_dump(mode="json"),
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run_dir / "scenario.yaml").write_text(
        yaml.safe_dump(compiled.config.model_dump(mode="json"), sort_keys=False)
    )
    return cfg


def safety_scalars(info: dict) -> dict[str, float]:
    """safety/* tags from a step's shield info (zero when no shield ran). Rates are per node-SKU decision,
    as in `restock eval`'s safety_intervention_rate."""
    dec = float(np.sum(info.get("shield_sku_decisions", 0)))
    inter = np.asarray(info.get("shield_interventions", 0.0))
    viol = float(np.sum(info.get("shield_executed_violations", 0.0)))
    out = {"safety/intervention_rate": float(inter.sum() / dec) if dec else 0.0, "safety/violations": viol}
    names = CONSTRAINTS
    if inter.ndim == 2 and dec:
        for j, c in enumerate(names[: inter.shape[1]]):
            out[f"safety/intervention_rate/{c}"] = float(inter[:, j].sum() / dec)
    return out


def make_eval(compiled: Compiled, exp: ExperimentConfig, baseline: Baseline, shield_factory):
    """Greedy evaluation of the trained roles' networks (the other roles: the baseline) on the held-out
    paths the SB3 trainer uses (seed 10_000 + exp.seed, ``eval_episodes``), common random numbers."""
    from restock.agents.base import JointPolicy
    from restock.agents.learned import TorchPolicy
    from restock.eval.rollout import rollout

    def run(nets: dict) -> dict:
        pols = dict(baseline.joint().policies)
        for role, net in nets.items():
            pols[role] = TorchPolicy(net)
        res = rollout(
            compiled,
            JointPolicy(pols),
            episodes=exp.eval_episodes,
            seed=10_000 + exp.seed,
            shield=shield_factory(compiled) if shield_factory else None,
            trace_sku=None,
        )
        return episodic_objective(compiled, res)

    return run


def episodic_objective(compiled: Compiled, res) -> dict:
    """What held-out evaluation and ``keep_best`` minimise per episode: the total cost, or the net cost
    (cost minus revenue, undiscounted) when the scenario's reward includes revenue (a profit scenario:
    the cheapest policy there may sell nothing). When the reward is discounted (``reward.discounted``:
    period t's reward weighted by discount^t, OR-Gym's discounted profit), so is this objective, with the
    same weights, so that ``keep_best`` keeps what PPO maximises."""
    weights = np.asarray(compiled.params.reward_disc, float)[: res.horizon]
    if getattr(res, "period_cost", None) is not None and np.any(weights != 1.0):
        net = res.period_cost - (res.period_revenue if compiled.params.include_revenue else 0.0)
        cost = (net * weights).sum(axis=1)
        return {"episodic_cost": float(cost.mean()), "episodic_cost_std": float(cost.std())}
    cost = res.cost.sum(axis=(1, 2))
    if compiled.params.include_revenue:
        cost = cost - res.revenue.sum(axis=1)
    return {"episodic_cost": float(cost.mean()), "episodic_cost_std": float(cost.std())}


def write_cloned_run(run_dir: Path, roles: list[str]) -> None:
    """``cloned/`` as a run directory of its own (the warm start of the dcl and pair_ppo trainers), so
    `restock eval` can compare with it."""
    import shutil

    info = json.loads((run_dir / "run.json").read_text())
    info = {
        **info,
        "status": "done",
        "roles": roles,
        "experiment": f"{info.get('experiment')} (behaviour-cloned start)",
    }
    write_json_atomic(run_dir / "cloned" / "run.json", info)
    if (run_dir / "config.yaml").exists():
        shutil.copyfile(run_dir / "config.yaml", run_dir / "cloned" / "config.yaml")
