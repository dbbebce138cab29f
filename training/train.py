"""`restock train`: one entry point for both trainers."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from restock.envs.compile import Compiled
from restock.training.checkpoints import read_latest
from restock.training.common import (
    Monitor,
    new_run_dir,
    prepare_baseline,
    save_resolved_config,
    write_json_atomic,
)
from restock.training.experiment import ExperimentConfig, resolve_gamma

# trainer name -> (module, function); all take the same arguments and write the same run directory
TRAINERS = {
    "sb3": ("restock.training.sb3_train", "train_sb3"),
    "rllib": ("restock.training.rllib_train", "train_rllib"),
    "dcl": ("restock.training.dcl_train", "train_dcl"),
    "pair_ppo": ("restock.training.pair_ppo", "train_pair_ppo"),
}


def shield_factory_for(exp: ExperimentConfig):
    if not exp.shield.enabled:
        return None
    try:
        from restock.agents.shield import Shield
    except ImportError:
        return None
    return lambda compiled: Shield(compiled, mode="enforce")


def _check_sb3(exp: ExperimentConfig) -> None:
    """Refuse RLlib-only settings given to the SB3 trainer (ValueError naming the field)."""
    if exp.network.centralised_critic:
        raise ValueError("network.centralised_critic: the sb3 trainer has no centralised critic (use rllib)")
    r = exp.rllib
    for name, bad in (
        ("ray_address", r.ray_address),
        ("num_env_runners", r.num_env_runners),
        ("num_learners", r.num_learners),
        ("num_gpus_per_learner", r.num_gpus_per_learner),
        ("runtime_env", r.runtime_env),
        ("init_from", r.init_from),
        ("pair_credit", r.pair_credit),
        ("bc_min_steps", r.bc_min_steps),
        # a non-default DC reward only (a sweep re-validates a dumped experiment, so every field is "set")
        ("dc_reward", r.dc_reward != type(r).model_fields["dc_reward"].default),
    ):
        if bad:
            raise ValueError(
                f"rllib.{name}: an RLlib setting; the sb3 trainer runs in one process (use rllib)"
            )


def check_for_trainer(exp: ExperimentConfig, trainer: str) -> None:
    """Every experiment field is honoured by the chosen trainer or refused here, before any work, with a
    ValueError naming the field (``restock train`` exits 2 with it)."""
    if trainer == "sb3":
        _check_sb3(exp)
    elif trainer == "rllib":
        from restock.training.rllib_train import check_experiment

        check_experiment(exp)
    elif trainer == "dcl":
        _check_dcl(exp)
    elif trainer == "pair_ppo":
        from restock.training.pair_ppo import check_experiment

        _check_sb3(exp)
        check_experiment(exp)
    else:
        raise ValueError(f"--trainer must be one of {', '.join(TRAINERS)}, not {trainer!r}")


def _check_dcl(exp: ExperimentConfig) -> None:
    """Refuse settings the dcl trainer does not use (its own knobs live under ``dcl:``)."""
    _check_sb3(exp)
    if exp.ppo.model_fields_set:
        raise ValueError(
            f"ppo.{sorted(exp.ppo.model_fields_set)[0]}: a PPO setting; dcl is configured under dcl:"
        )
    moved = {
        "steps": "dcl.iterations (and minutes)",
        "num_envs": "dcl.sample_envs",
        "bc_episodes": "dcl.sample_envs / dcl.sample_periods (the states the heuristic visits)",
        "bc_epochs": "dcl.bc_epochs",
        "checkpoint_every": "(every iteration is checkpointed)",
        "keep_checkpoints": "(every iteration's checkpoint is kept)",
        "eval_every": "dcl.eval_every_iterations",
    }
    for name, instead in moved.items():
        if name in exp.model_fields_set:
            raise ValueError(f"{name}: not used by the dcl trainer; use {instead}")


def train(
    compiled: Compiled,
    exp: ExperimentConfig,
    trainer: str,
    out_root: str | Path = "runs",
    resume: str | Path | None = None,
    on_progress: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
    stop_after_checkpoints: int | None = None,
) -> Path:
    """Train, write the run directory and return it."""
    check_for_trainer(exp, trainer)
    if trainer == "dcl":
        from restock.envs.types import sku_feature_names

        if list(compiled.sku_features) != sku_feature_names(compiled.W):
            # training/dcl_train.py, dcl_serial*.py and agents/exact.py find features by name in the full
            # layout: a lean observation would be read at the wrong columns
            raise ValueError(
                f"observation.features: the dcl trainer reads the full per-SKU features; scenario "
                f"{compiled.config.name!r} observes a lean set ({len(compiled.sku_features)} features): "
                "use observation.features: full"
            )
    if resume is not None:
        run_dir = Path(resume)
        _, ckpt = read_latest(run_dir)  # refused here, before anything in the run directory is rewritten
        if trainer == "rllib":
            from restock.training.rllib_train import check_resume, checkpoint_meta

            check_resume(ckpt, checkpoint_meta(compiled, exp))
    else:
        run_dir = new_run_dir(out_root, compiled.config.name, exp.name, exp.seed)
    gamma_info = None
    if trainer != "dcl":  # dcl has no PPO discount (it is configured under dcl:)
        # resolved once: the trainers, behaviour cloning and config.yaml all see this value
        gamma, source = resolve_gamma(exp, compiled)
        exp = exp.model_copy(update={"ppo": exp.ppo.model_copy(update={"gamma": gamma})})
        log(f"gamma {gamma:g}: {source}")
        gamma_info = {"value": gamma, "source": source}
    cfg = save_resolved_config(run_dir, compiled, exp, trainer, gamma=gamma_info)
    log(f"run directory: {run_dir}")
    log(f"watch it with: tensorboard --logdir {Path(run_dir).parent}")
    monitor = Monitor(run_dir)
    monitor.config_text(cfg)
    shield_factory = shield_factory_for(exp)
    baseline = prepare_baseline(compiled, exp, run_dir, log=log, shield_factory=shield_factory)
    run_info: dict[str, Any] = {
        "format": "restock.run/1",
        "trainer": trainer,
        "scenario": compiled.config.name,
        "scenario_hash": compiled.config_hash,
        "experiment": exp.name,
        "seed": exp.seed,
        **({"gamma": gamma_info} if gamma_info else {}),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "version": "1",
        "baseline": {
            "policy": baseline.policy,
            "knobs": baseline.knobs,
            "cost_per_period": baseline.cost_per_period,
            "reward_scale": baseline.reward_scale,
        },
    }
    if resume is not None and (run_dir / "run.json").exists():
        old = json.loads((run_dir / "run.json").read_text())
        run_info["started"] = old.get("started", run_info["started"])
        run_info["resumed"] = old.get("resumed", 0) + 1
    write_json_atomic(run_dir / "run.json", run_info)
    try:
        if trainer not in TRAINERS:
            raise ValueError(f"--trainer must be one of {', '.join(TRAINERS)}, not {trainer!r}")
        module, name = TRAINERS[trainer]
        run_trainer = getattr(importlib.import_module(module), name)  # each imports its own stack lazily
        summary = run_trainer(
            compiled,
            exp,
            run_dir,
            baseline,
            monitor,
            shield_factory=shield_factory,
            resume=Path(resume) if resume else None,
            on_progress=on_progress,
            stop_after_checkpoints=stop_after_checkpoints,
            log=log,
        )
    except BaseException:
        run_info["status"] = "failed"
        write_json_atomic(run_dir / "run.json", run_info)
        monitor.close()
        raise
    run_info["status"] = "stopped" if summary.get("stopped") else "done"
    run_info["summary"] = summary
    run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    run_info["roles"] = sorted(p.stem for p in (run_dir / "policies").glob("*.pt"))
    write_json_atomic(run_dir / "run.json", run_info)
    monitor.close()
    from restock.training.curves import plot_learning_curve

    plot_learning_curve(run_dir)
    return run_dir
