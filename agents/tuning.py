"""Tune heuristic knobs by simulation optimisation on common random numbers.

Every candidate is simulated on the same sample paths, and many candidates x paths run as one batch of
the array env (one kernel call per period steps them all), so comparisons are paired and cheap.
The search is a coordinate search: for each knob in turn, a 1-D grid around the incumbent is evaluated
in one batch, the best value is kept, and the grid shrinks each round. The tuned knobs are then
re-evaluated on held-out paths (a different seed) to report an honest cost with its 95% interval.

Parameter files (``restock tune --out FILE``) are JSON: ``{"format": "restock.params/1", "scenario",
"config_hash", "policies": {name: {"knobs": {role: {knob: value}}, "cost_per_period": {"mean",
"ci95"}, ...}}}``; tuning another policy into the same file adds to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import JointPolicy
from agents.heuristics import HEURISTICS, TUNABLE
from envs.array_env import ArrayEnv
from envs.compile import Compiled

PARAMS_FORMAT = "restock.params/1"


def policy_classes() -> dict[str, type]:
    classes = dict(HEURISTICS)
    try:
        from agents.echelon import EchelonBaseStock

        classes["echelon_base_stock"] = EchelonBaseStock
    except ImportError:  # pragma: no cover - optional module
        pass
    return classes


def make_policy(name: str, knobs: dict | None = None, seed: int = 0):
    """A heuristic by name, with tuned knobs when given."""
    classes = policy_classes()
    if name not in classes:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(sorted(classes))})")
    cls = classes[name]
    if name == "random":
        return cls(seed)
    if name == "zero":
        return cls()
    return cls(knobs=knobs or {})


@dataclass
class TuneResult:
    policy: str
    scenario: str
    config_hash: str
    knobs: dict[str, dict[str, float]]
    cost_per_period: dict[str, Any]  # held-out evaluation: mean and ci95
    train_cost_per_period: float
    episodes: int
    eval_episodes: int
    seed: int
    eval_seed: int
    seconds: float
    evaluations: int
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "knobs": self.knobs,
            "cost_per_period": self.cost_per_period,
            "train_cost_per_period": self.train_cost_per_period,
            "episodes": self.episodes,
            "eval_episodes": self.eval_episodes,
            "seed": self.seed,
            "eval_seed": self.eval_seed,
            "seconds": self.seconds,
            "evaluations": self.evaluations,
            "history": self.history,
        }


def _roles(compiled: Compiled) -> list[str]:
    return (["store"] if compiled.S else []) + (["dc"] if compiled.M else [])


def evaluate_candidates(
    compiled: Compiled,
    name: str,
    candidates: list[dict],
    paths: np.ndarray,
    seed: int,
    shield=None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Total cost [G, P] of G knob settings on the same P paths, all in one batched simulation."""
    G, P = len(candidates), len(paths)
    E = G * P
    # ``shield`` is a factory (compiled -> shield): each batch needs its own, sized to the batch
    env = ArrayEnv(
        compiled,
        num_envs=E,
        seed=seed,
        shield=shield(compiled) if callable(shield) and not hasattr(shield, "decide") else shield,
    )
    env.reset(paths=np.tile(paths, G))
    knobs: dict[str, dict[str, np.ndarray]] = {}
    for role in {r for c in candidates for r in c}:
        for key in {k for c in candidates for k in c.get(role, {})}:
            vals = [c.get(role, {}).get(key, make_policy(name).knob_defaults[key]) for c in candidates]
            knobs.setdefault(role, {})[key] = np.repeat(np.asarray(vals, float), P)
    joint = JointPolicy(make_policy(name, knobs))
    joint.bind(compiled)
    for _ in range(compiled.horizon):
        env.step_qty(joint.propose(env).qty)
        if progress:
            progress(1)
    return env.episode_cost.sum(axis=(1, 2)).reshape(G, P)


def tune(
    compiled: Compiled,
    name: str,
    episodes: int = 16,
    seed: int = 1000,
    eval_episodes: int = 32,
    eval_seed: int = 2000,
    rounds: int = 4,
    grid: int = 5,
    shield=None,
    progress: Callable[[int], None] | None = None,
) -> TuneResult:
    """Coordinate search over the policy's knobs per role; returns the tuned knobs and held-out cost."""
    if name not in TUNABLE:
        raise ValueError(f"policy {name!r} has nothing to tune (tunable: {', '.join(TUNABLE)})")
    cls = policy_classes()[name]
    t0 = time.perf_counter()
    roles = _roles(compiled)
    x = {r: dict(cls.knob_defaults) for r in roles}
    step = {k: (hi - lo) / 8.0 for k, (lo, hi) in cls.knob_bounds.items()}
    paths = np.arange(episodes, dtype=np.int64)
    history: list[dict] = []
    evals = 0
    best_cost = float("inf")
    offsets = np.linspace(-1.0, 1.0, grid)
    for _rnd in range(rounds):
        for role in roles:
            for key, (lo, hi) in cls.knob_bounds.items():
                vals = np.unique(np.clip(x[role][key] + offsets * step[key] * (grid // 2), lo, hi))
                cands = []
                for v in vals:
                    c = {r: dict(d) for r, d in x.items()}
                    c[role][key] = float(v)
                    cands.append(c)
                costs = evaluate_candidates(
                    compiled, name, cands, paths, seed, shield=shield, progress=progress
                )
                evals += len(cands)
                means = costs.mean(axis=1)
                j = int(np.argmin(means))
                x = cands[j]
                best_cost = float(means[j])
                history.append(
                    {
                        "role": role,
                        "knob": key,
                        "values": vals.tolist(),
                        "cost_per_period": (means / compiled.horizon).tolist(),
                        "chosen": float(vals[j]),
                    }
                )
        step = {k: v / 2.0 for k, v in step.items()}
    # honest figure: the tuned knobs on held-out paths
    from eval.kpis import mean_ci

    held = (
        evaluate_candidates(
            compiled,
            name,
            [x],
            np.arange(eval_episodes, dtype=np.int64),
            eval_seed,
            shield=shield,
            progress=progress,
        )[0]
        / compiled.horizon
    )
    ci = mean_ci(held)
    return TuneResult(
        policy=name,
        scenario=compiled.config.name,
        config_hash=compiled.config_hash,
        knobs=x,
        cost_per_period={"mean": ci["mean"], "ci95": ci["ci95"]},
        train_cost_per_period=best_cost / compiled.horizon,
        episodes=episodes,
        eval_episodes=eval_episodes,
        seed=seed,
        eval_seed=eval_seed,
        seconds=time.perf_counter() - t0,
        evaluations=evals,
        history=history,
    )


def tune_work(
    compiled: Compiled, name: str, episodes: int, eval_episodes: int, rounds: int, grid: int
) -> int:
    """Periods simulated by `tune` (for progress bars): batches x horizon."""
    cls = policy_classes()[name]
    n_batches = rounds * len(_roles(compiled)) * len(cls.knob_bounds) + 1
    return n_batches * compiled.horizon


def save_params(path: str | Path, result: TuneResult) -> dict:
    """Write (or add to) a parameter file; atomic replace so a crash never leaves half a file."""
    path = Path(path)
    data: dict[str, Any] = {
        "format": PARAMS_FORMAT,
        "scenario": result.scenario,
        "config_hash": result.config_hash,
        "policies": {},
    }
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("scenario") == result.scenario:
            data["policies"] = old.get("policies", {})
    data["policies"][result.policy] = result.to_json()
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return data


def load_params(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--params: cannot read {path}: {exc}") from None
    if data.get("format") != PARAMS_FORMAT or "policies" not in data:
        raise ValueError(f"--params: {path} is not a restock parameter file (format {PARAMS_FORMAT})")
    return data
