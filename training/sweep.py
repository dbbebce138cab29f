"""`restock sweep`: hyperparameter search and multi-seed runs on Ray Tune.

Every trial is one ordinary ``restock train`` run (SB3 or RLlib, `training.train.train`) inside a Tune
*function trainable*: ``ray.tune.Tuner`` draws the trial's experiment fields from the search file, the
seeds are a grid (``--seeds N``: seeds ``seed .. seed + N - 1`` of the experiment, every sampled
configuration trained with each), ``--samples M`` draws M configurations, ``--scheduler asha`` prunes
trials on their training episode cost (reported every rollout or iteration). A trial that finishes
is scored by the held-out greedy cost of its deployed policies on the sweep's evaluation paths
(``SWEEP_EVAL_SEED``: the same paths for every trial, so trials compare on common random numbers; not
the paths keep_best selects on, nor `restock eval`'s default seed), and the sweep writes

- ``OUT/sweep.csv``: one row per trial (status, seed, the searched fields, env steps, held-out cost,
  run directory),
- ``OUT/sweep.md``: the trials ranked by held-out cost and, per configuration, the mean over seeds with
  a 95% t-interval,
- ``OUT/best``: a link to the best trial's run directory (``restock eval SCEN --policies
  base_stock,OUT/best``, ``restock export OUT/best``),
- ``OUT/trials/``: the run directories, ``OUT/tune/``: Tune's own records.

Search file (YAML): experiment field paths, dotted, each with one of ``choice: [..]``, ``grid: [..]``,
``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``randint: [lo, hi]`` (inclusive)::

    ppo.learning_rate: {loguniform: [0.0001, 0.001]}
    ppo.ent_coef: {choice: [0.0, 0.003]}

With ``--ray-address`` the trials run on the cluster's nodes and write their run directories under
``OUT``, which must then be a filesystem every node shares.
"""

from __future__ import annotations

import copy
import csv
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from restock.envs.config import ConfigError
from restock.training.experiment import ExperimentConfig

SWEEP_EVAL_SEED = 20_000
KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
NOT_SEARCHABLE = ("seed", "name", "trainer")


def _set_path(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"search: {dotted}: {p} is not a section of the experiment")
    d[parts[-1]] = value


def _candidates(kind: str, args: Any, field: str) -> list:
    """The values a spec may produce that are checked against the experiment schema."""
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"search: {field}: {kind} needs a non-empty list of values")
        return list(args)
    if not (isinstance(args, list) and len(args) == 2):
        raise ConfigError(f"search: {field}: {kind} needs [low, high]")
    lo, hi = args
    if kind == "randint":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or lo > hi:
            raise ConfigError(f"search: {field}: randint needs whole numbers low <= high, not {args}")
        return [lo, hi]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        raise ConfigError(f"search: {field}: {kind} needs numbers [low, high], not {args}")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ConfigError(f"search: {field}: {kind} needs finite low < high, not {args}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"search: {field}: loguniform needs low > 0, not {lo}")
    return [float(lo), float(hi)]


def load_search(path: str | Path, base: dict) -> dict[str, tuple[str, Any]]:
    """Parse and check a search file against the experiment ``base`` (its fields as a dict): every
    field must exist and accept every candidate value (ConfigError naming the field otherwise)."""
    from restock.envs.safeyaml import YamlInputError, load_yaml_file

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--search: {path}: no such file")
    try:
        data = load_yaml_file(p, "search file")
    except YamlInputError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"--search: {p}: the top level must be a non-empty mapping of experiment fields")
    out: dict[str, tuple[str, Any]] = {}
    for field, spec in data.items():
        if not isinstance(field, str) or not field:
            raise ConfigError(f"search: {field!r}: field names are dotted experiment paths")
        if field in NOT_SEARCHABLE:
            raise ConfigError(f"search: {field}: not searchable (seeds come from --seeds)")
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
            raise ConfigError(
                f"search: {field}: give exactly one of {', '.join(KINDS)} (e.g. choice: [a, b])"
            )
        kind, args = next(iter(spec.items()))
        for v in _candidates(kind, args, field):
            trial = copy.deepcopy(base)
            _set_path(trial, field, v)
            try:
                ExperimentConfig.model_validate(trial)
            except ValidationError as err:
                msg = err.errors()[0]["msg"]
                raise ConfigError(
                    f"search: {field}: value {v!r} is refused by the experiment: {msg}"
                ) from None
        out[field] = (kind, args)
    return out


def _tune_space(search: dict[str, tuple[str, Any]]) -> dict:
    from ray import tune

    make: dict[str, Callable] = {
        "choice": lambda a: tune.choice(a),
        "grid": lambda a: tune.grid_search(a),
        "uniform": lambda a: tune.uniform(a[0], a[1]),
        "loguniform": lambda a: tune.loguniform(a[0], a[1]),
        "randint": lambda a: tune.randint(a[0], a[1] + 1),  # Tune's upper bound is exclusive
    }
    return {field: make[kind](args) for field, (kind, args) in search.items()}


def held_out_cost(run_dir: Path, compiled, exp: ExperimentConfig, episodes: int) -> dict[str, float]:
    """Greedy cost per episode of a run's deployed policies on the sweep's evaluation paths."""
    from restock.agents.learned import load_learned_policy
    from restock.eval.rollout import rollout
    from restock.training.train import shield_factory_for

    sf = shield_factory_for(exp)
    res = rollout(
        compiled,
        load_learned_policy(run_dir, compiled),
        episodes=episodes,
        seed=SWEEP_EVAL_SEED,
        shield=sf(compiled) if sf else None,
        trace_sku=None,
    )
    cost = res.cost.sum(axis=(1, 2))
    return {"eval_cost": float(cost.mean()), "eval_cost_std": float(cost.std())}


def _trial(config: dict, *, scenario: str, base: dict, trainer: str, out_root: str, episodes: int) -> None:
    """One Tune trial: the experiment with this trial's fields and seed, trained by restock's trainer."""
    import torch
    from ray import tune
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.train import train

    torch.set_num_threads(1)
    data = copy.deepcopy(base)
    for field, value in config["params"].items():
        _set_path(data, field, value.item() if hasattr(value, "item") else value)
    data["seed"] = int(config["seed"])
    data["name"] = f"{data.get('name', 'default')}-{tune.get_context().get_trial_id()}"  # one run dir each
    exp = ExperimentConfig.model_validate(data)
    compiled = compile_scenario(load_scenario(scenario, **exp.scenario_overrides))
    last = {"train_cost": float("nan"), "env_steps": 0}

    def progress(d: dict) -> None:
        last["env_steps"] = int(d["env_steps"])
        if "charts/episodic_cost" in d:  # an iteration that ended episodes: ASHA's metric
            last["train_cost"] = float(d["charts/episodic_cost"])
            tune.report(dict(last))

    run_dir = train(compiled, exp, trainer, out_root=out_root, on_progress=progress, log=lambda s: None)
    final = held_out_cost(run_dir, compiled, exp, episodes)
    tune.report({**last, **final, "run_dir": str(run_dir)})


def run_sweep(
    scenario: str,
    exp_path: str | None,
    search_path: str | Path,
    out: Path,
    trainer: str = "sb3",
    seeds: int = 1,
    samples: int = 1,
    scheduler: str | None = None,
    ray_address: str | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    episodes: int | None = None,
    max_concurrent: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the sweep; returns {"rows": [...], "best": row or None}. Errors in the inputs: ConfigError or
    ValueError naming the field, raised before Ray starts."""
    from restock.training.experiment import load_experiment
    from restock.training.train import check_for_trainer

    if trainer not in ("sb3", "rllib"):
        raise ValueError(f"--trainer: sweep runs sb3 or rllib, not {trainer!r}")
    if scheduler not in (None, "asha"):
        raise ValueError(f"--scheduler: asha or nothing, not {scheduler!r}")
    exp = load_experiment(exp_path, steps=steps, minutes=minutes)
    if exp.steps is None and exp.minutes is None:
        raise ValueError(
            "give a budget per trial: --steps N or --minutes M (or steps/minutes in the experiment)"
        )
    check_for_trainer(exp, trainer)
    if trainer == "rllib" and (
        exp.rllib.num_env_runners or exp.rllib.num_learners > 1 or exp.rllib.ray_address
    ):
        raise ValueError(
            "rllib.num_env_runners / num_learners / ray_address: a sweep trial trains in its own Tune "
            "actor (1 CPU); give the cluster with --ray-address and keep each trial in one process"
        )
    base = exp.model_dump(mode="json")
    search = load_search(search_path, base)
    scen = str(Path(scenario).resolve()) if Path(scenario).exists() else scenario
    from restock.envs.config import load_scenario

    load_scenario(scen, **exp.scenario_overrides)  # a bad scenario fails here, not in every trial
    episodes = int(episodes or exp.eval_episodes)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials").mkdir(exist_ok=True)

    import ray
    from ray import tune

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env_vars = {"PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0"), "OMP_NUM_THREADS": "1"}
    own_ray = not ray.is_initialized()
    if own_ray:
        if ray_address:
            ray.init(address=ray_address, runtime_env={"env_vars": env_vars}, log_to_driver=False)
        else:
            ray.init(
                num_cpus=os.cpu_count() or 2,
                include_dashboard=False,
                runtime_env={"env_vars": env_vars},
                log_to_driver=False,
            )
    try:
        trainable = tune.with_parameters(
            _trial, scenario=scen, base=base, trainer=trainer, out_root=str(out / "trials"), episodes=episodes
        )
        sched = None
        if scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            sched = ASHAScheduler(grace_period=1, reduction_factor=2)
        seed_list = [exp.seed + i for i in range(int(seeds))]
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"params": _tune_space(search), "seed": tune.grid_search(seed_list)},
            tune_config=tune.TuneConfig(
                num_samples=int(samples),
                scheduler=sched,
                metric="train_cost" if sched else None,
                mode="min" if sched else None,
                max_concurrent_trials=max_concurrent,
            ),
            run_config=tune.RunConfig(name="sweep", storage_path=str(out / "tune"), verbose=0),
        )
        grid = tuner.fit()
        rows = []
        for res in grid:
            m = res.metrics or {}
            cfg = res.config or {}
            row = {
                "trial": m.get("trial_id", ""),
                "status": "error" if res.error else ("done" if "eval_cost" in m else "stopped"),
                "seed": cfg.get("seed"),
                **{f: cfg.get("params", {}).get(f) for f in search},
                "env_steps": m.get("env_steps"),
                "train_cost": m.get("train_cost"),
                "eval_cost": m.get("eval_cost"),
                "eval_cost_std": m.get("eval_cost_std"),
                "run_dir": os.path.relpath(m["run_dir"], out) if m.get("run_dir") else "",
            }
            rows.append(row)
    finally:
        if own_ray:
            ray.shutdown()
    rows.sort(key=lambda r: (r["eval_cost"] is None, r["eval_cost"] or 0.0, str(r["trial"])))
    best = next((r for r in rows if r["eval_cost"] is not None), None)
    _write_tables(out, rows, list(search), best, scenario, trainer, episodes)
    link = out / "best"
    if link.is_symlink() or link.exists():
        link.unlink()
    if best is not None:
        link.symlink_to(best["run_dir"])
    return {"rows": rows, "best": best, "out": str(out)}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def _write_tables(out: Path, rows: list[dict], fields: list[str], best, scenario, trainer, episodes) -> None:
    cols = [
        "trial",
        "status",
        "seed",
        *fields,
        "env_steps",
        "train_cost",
        "eval_cost",
        "eval_cost_std",
        "run_dir",
    ]
    tmp = out / ".sweep.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    tmp.replace(out / "sweep.csv")
    lines = [
        f"# Sweep: {scenario} ({trainer})",
        "",
        f"Held-out greedy cost per episode: {episodes} episodes on the sweep's evaluation paths "
        f"(seed {SWEEP_EVAL_SEED}, the same for every trial). Lower is better.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["eval_cost"] is not None:
            groups.setdefault(tuple(_fmt(r.get(f)) for f in fields), []).append(float(r["eval_cost"]))
    if groups:
        from scipy import stats

        lines += [
            "",
            "## Across seeds",
            "",
            "| " + " | ".join([*fields, "seeds", "mean cost", "95% interval"]) + " |",
        ]
        lines.append("|" + "---|" * (len(fields) + 3))
        for key, vals in sorted(groups.items(), key=lambda kv: np.mean(kv[1])):
            mean = float(np.mean(vals))
            if len(vals) > 1:
                half = float(stats.t.ppf(0.975, len(vals) - 1) * np.std(vals, ddof=1) / math.sqrt(len(vals)))
                ci = f"{mean - half:,.1f} to {mean + half:,.1f}"
            else:
                ci = "- (one seed)"
            lines.append("| " + " | ".join([*key, str(len(vals)), f"{mean:,.1f}", ci]) + " |")
    lines += [
        "",
        f"Best trial: {best['trial']} ({best['run_dir']}), linked as `best`."
        if best
        else "No trial finished.",
    ]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
