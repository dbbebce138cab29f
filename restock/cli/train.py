"""`restock train` (SB3, RLlib or dcl) and `restock sweep` (Ray Tune). torch, Ray and SB3 are imported
only inside the commands (tens of seconds), after the thread and hash-seed settings that must precede them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from restock.cli.common import app, console, fail, load_or_fail


@app.command()
def train(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or path to a YAML file.")],
    trainer: Annotated[
        str,
        typer.Option(
            help="sb3 (MaskablePPO on the array env), rllib (multi-agent PPO), dcl (approximate policy "
            "iteration with rollout labels, one-store one-SKU scenarios and serial chains: "
            "training/dcl_train.py) or pair_ppo (PPO with a reward and a critic per store-SKU pair, the "
            "store role of many-SKU scenarios: training/pair_ppo.py)."
        ),
    ] = "sb3",
    config: Annotated[
        str | None, typer.Option(help="Experiment YAML (configs/experiments/NAME.yaml or a path).")
    ] = None,
    minutes: Annotated[float | None, typer.Option(help="Wall-clock budget for the whole run.")] = None,
    steps: Annotated[
        int | None, typer.Option(help="Env steps (periods x environments) per trained role.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (overrides the experiment's).")] = None,
    out: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Join an existing Ray cluster (HOST:PORT) instead of a local Ray.")
    ] = None,
    num_env_runners: Annotated[
        int | None, typer.Option(min=0, help="RLlib rollout workers (scale out on a cluster).")
    ] = None,
    num_learners: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="RLlib learner workers (0, the default: one learner in this process; N >= 2: N remote "
            "learners splitting each batch, gradients averaged). rllib trainer only.",
        ),
    ] = None,
    num_gpus_per_learner: Annotated[
        float | None,
        typer.Option(min=0, help="GPUs per RLlib learner (0, the default: CPU). rllib trainer only."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Math threads per process (torch, OpenMP). Default: $OMP_NUM_THREADS, else 1: the per-SKU "
            "networks are small, and on a shared machine extra threads made training 10-50x slower.",
        ),
    ] = None,
) -> None:
    """Train store and DC agents under masks and shields; TensorBoard logs and checkpoints in the run folder."""
    from restock.envs.config import ConfigError
    from restock.training.experiment import load_experiment
    from restock.training.train import train as run_train

    if trainer not in ("sb3", "rllib", "dcl", "pair_ppo"):
        fail(f"--trainer: must be sb3, rllib, dcl or pair_ppo, not {trainer!r}")
    n_threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
    if os.environ.get("OMP_NUM_THREADS") != str(n_threads):  # before torch loads; Ray's workers inherit it
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n_threads)
    if trainer == "rllib" and os.environ.get("PYTHONHASHSEED") is None:
        # RLlib iterates sets of agent ids: fix the hash seed (before Python starts) for reproducibility
        os.execve(
            sys.executable,
            [sys.executable, "-m", "restock.cli", *sys.argv[1:]],
            {**os.environ, "PYTHONHASHSEED": "0"},
        )
    try:
        import torch
    except ImportError:
        fail("restock train needs torch and a trainer: pip install 'restock[sb3]' or 'restock[rllib]'")
    torch.set_num_threads(n_threads)
    if trainer != "dcl":  # dcl's work is numba rollouts on every core, its torch fits are small
        _numba_threads(n_threads)
    try:
        exp = load_experiment(config, minutes=minutes, steps=steps, seed=seed)
    except ConfigError as exc:
        fail(str(exc))
    if exp.steps is None and exp.minutes is None and trainer != "dcl":  # dcl: its iterations bound it
        fail("give a budget: --steps N or --minutes M (or steps/minutes in the experiment file)")
    if ray_address or num_env_runners is not None:
        exp.rllib.ray_address = ray_address or exp.rllib.ray_address
        if num_env_runners is not None:
            exp.rllib.num_env_runners = num_env_runners
    if num_learners is not None:
        exp.rllib.num_learners = num_learners
    if num_gpus_per_learner is not None:
        exp.rllib.num_gpus_per_learner = num_gpus_per_learner
    from restock.training.train import check_for_trainer

    try:
        check_for_trainer(exp, trainer)
    except ValueError as exc:
        fail(str(exc))
    c = load_or_fail(scenario, **exp.scenario_overrides)
    from restock.progress import Progress, jit_notice

    # a bar on a terminal, a line every ~10 s otherwise (RESTOCK_PROGRESS=bar|plain|off), with the stats
    total = (exp.steps or 0) * len(exp.roles)
    head = f"training ({trainer})"
    bar = Progress(total or None, head)
    done_before: dict[str, int] = {}

    def on_progress(d: dict) -> None:
        role = d.get("role", "")
        if "+" in role and exp.steps and bar.total != exp.steps:
            bar.set_total(exp.steps)  # the roles train together (store+dc): one budget, not one per role
        done_before.setdefault(role, len(done_before))
        completed = (exp.steps or 0) * done_before[role] + d["env_steps"]
        stats = f"{role} steps {d['env_steps']:,} | SPS {d.get('charts/SPS', 0):,.0f}"
        if "inventory/fill_rate" in d:
            stats += f" | cost {d['charts/episodic_cost']:,.0f} | fill {d.get('inventory/fill_rate', 0):.3f}"
        bar.describe(f"{head} {stats}")
        if completed > bar.done:
            bar.advance(completed - bar.done)

    jit_notice()
    try:
        with bar:
            run_dir = run_train(
                c,
                exp,
                trainer,
                out_root=out,
                resume=resume,
                on_progress=on_progress,
                log=bar.log if bar.mode != "off" else (lambda m: print(m, file=sys.stderr, flush=True)),
            )
    except ValueError as exc:
        fail(str(exc))
    console.print(f"[green]done[/]: {run_dir}")
    quick = run_dir / "baseline_params.json"  # written only when the baseline had to be tuned here
    params = quick if quick.exists() else exp.baseline_params
    if params and "{scenario}" in str(params):
        params = str(params).replace("{scenario}", c.config.name)
    console.print(
        f"evaluate: restock eval {scenario} --policies {exp.baseline_entry or exp.baseline},{run_dir}"
        + (f" --params {params}" if params else "")
    )
    console.print(f"tensorboard --logdir {out}")


@app.command()
def sweep(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or path to a YAML file.")],
    search: Annotated[
        Path,
        typer.Option(
            help="Search file (YAML): dotted experiment fields, each with one of choice/grid: [..], "
            "uniform/loguniform/randint: [low, high], e.g. 'ppo.learning_rate: {loguniform: [1e-4, 1e-3]}'."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Sweep folder: sweep.csv, sweep.md, best, trials/, tune/.")],
    config: Annotated[
        str | None,
        typer.Option(help="Experiment YAML every trial starts from (configs/experiments/NAME.yaml)."),
    ] = None,
    trainer: Annotated[str, typer.Option(help="sb3 or rllib: the trainer every trial runs.")] = "sb3",
    seeds: Annotated[
        int, typer.Option(min=1, help="Training seeds per configuration (the experiment's seed, +1, ...).")
    ] = 1,
    samples: Annotated[int, typer.Option(min=1, help="Configurations drawn from the search space.")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="asha: stop weak trials early on their training cost (Ray Tune ASHA).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Run the trials on an existing Ray cluster (HOST:PORT); --out must be shared."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Env steps per trial (overrides the experiment's).")
    ] = None,
    minutes: Annotated[float | None, typer.Option(min=0.01, help="Wall-clock budget per trial.")] = None,
    episodes: Annotated[
        int | None,
        typer.Option(min=1, help="Held-out evaluation episodes per trial (default: eval_episodes)."),
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="Trials running at once (default: as many as CPUs allow).")
    ] = None,
) -> None:
    """Hyperparameter search and multi-seed runs on Ray Tune: every trial is a `restock train` run, scored
    by its held-out greedy cost; writes sweep.csv, sweep.md and links the best trial's run directory as
    OUT/best (usable by `restock eval` and `restock export`)."""
    from restock.envs.config import ConfigError
    from restock.training.sweep import run_sweep

    if trainer == "rllib" and os.environ.get("PYTHONHASHSEED") is None:
        os.execve(
            sys.executable,
            [sys.executable, "-m", "restock.cli", *sys.argv[1:]],
            {**os.environ, "PYTHONHASHSEED": "0"},
        )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch  # noqa: F401
    except ImportError:
        fail("restock sweep needs torch, a trainer and Ray Tune: pip install 'restock[sb3,rllib]'")
    load_or_fail(scenario)  # exit 2 naming the field before Ray starts
    try:
        res = run_sweep(
            scenario,
            config,
            search,
            out,
            trainer=trainer,
            seeds=seeds,
            samples=samples,
            scheduler=scheduler,
            ray_address=ray_address,
            steps=steps,
            minutes=minutes,
            episodes=episodes,
            max_concurrent=max_concurrent,
        )
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    done = sum(r["status"] == "done" for r in res["rows"])
    console.print(f"[green]{done}/{len(res['rows'])} trials finished[/]: {out}/sweep.md, {out}/sweep.csv")
    if res["best"] is None:
        fail("no trial finished", code=1)
    b = res["best"]
    console.print(f"best: {out}/best -> {b['run_dir']} (held-out cost {b['eval_cost']:,.1f} per episode)")
    console.print(f"evaluate: restock eval {scenario} --policies base_stock,{out}/best")


def _numba_threads(n: int) -> None:
    """Numba's parallel builds (demand sampling of big batches) use this many threads too. torch and
    numba share one OpenMP runtime: a parallel demand draw on numba's default team (every core) raised
    torch's thread count with it, and the extra OpenMP thread then spun at its barrier through every PPO
    update (measured on `default`: torch.get_num_threads() went from 1 to 2 after the first env step)."""
    # numba.set_num_threads only (not NUMBA_NUM_THREADS: numba re-reads it when it compiles, and a value
    # changed after its threads started makes every later compilation fail)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a core dependency
        pass
