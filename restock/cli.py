"""The `restock` command: one entry point for simulation, tuning, evaluation, training, export and serving."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="restock",
    help="Multi-agent RL for retail inventory control: simulate, tune, evaluate, train, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def load_or_fail(scenario: str, **overrides):
    from restock.envs.compile import compile_scenario
    from restock.envs.config import ConfigError, load_scenario

    try:
        return compile_scenario(load_scenario(scenario, **overrides))
    except ConfigError as exc:
        fail(str(exc))


def progress_bar(total: int, description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal and total < 0,
    )
    task = prog.add_task(description, total=total)
    return prog, task


# ------------------------------------------------------------------------------------------------
@app.command()
def scenarios(
    check: Annotated[
        Path | None, typer.Option("--check", help="Validate a scenario file and exit (2 if invalid).")
    ] = None,
) -> None:
    """List the shipped scenarios, or validate a scenario file with --check."""
    from restock.envs.config import shipped_scenarios

    if check is not None:
        c = load_or_fail(str(check))
        console.print(
            f"[green]ok[/]: {check} is a valid scenario ({c.config.name}: {c.M} DCs, {c.S} stores, "
            f"{c.K} SKUs, horizon {c.horizon})"
        )
        return
    table = Table(title="shipped scenarios")
    for col in ("name", "DCs", "stores", "SKUs", "horizon", "description"):
        table.add_column(col)
    for name in shipped_scenarios():
        c = load_or_fail(name)
        table.add_row(name, str(c.M), str(c.S), str(c.K), str(c.horizon), c.config.description)
    console.print(table)


@app.command()
def optimum(
    scenario: Annotated[
        str, typer.Argument(help="Shipped scenario name (e.g. lost_sales/ls_L2_p9) or YAML path.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a summary.")
    ] = False,
) -> None:
    """Solve a scenario exactly where theory covers it, and print the optimal cost.

    Methods: `dp` (value iteration on the exact state of one store: lost sales or backlog, lead time
    0-8, i.i.d. demand), `clark_scarf` (serial chains with backorders, Poisson demand) and `newsvendor`
    (its one-stage case). Exits 2 naming why when no exact method covers the scenario.
    """
    from restock.agents.exact import exact_optimum
    from restock.agents.single_node_dp import NotCovered

    c = load_or_fail(scenario)
    try:
        res = exact_optimum(c)
    except NotCovered as exc:
        fail(f"no exact method covers {c.config.name!r}: {exc}")
    except ValueError as exc:  # e.g. a state space too large for the DP
        fail(f"{c.config.name}: {exc}")
    if as_json:
        print(json.dumps(res))
        return
    console.print(
        f"{res['scenario']}: optimal long-run average cost [bold]{res['average_cost']:.6f}[/] per period "
        f"({res['method']}, {res['seconds']:.1f} s)",
        highlight=False,
    )
    for key in ("average_cost_bounds", "discounted_cost_from_initial_state", "levels", "criterion", "notes"):
        if res.get(key) is not None:
            console.print(f"  {key}: {res[key]}", highlight=False)


# ------------------------------------------------------------------------------------------------
def kpi_table(title: str, summaries: dict[str, dict[str, dict]], keys: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("policy")
    for k in keys:
        table.add_column(k, justify="right")
    from rich.text import Text

    for pol, summ in summaries.items():
        row = [Text(pol)]  # plain text: a run's label holds [...]
        for k in keys:
            if k not in summ:
                row.append("-")
                continue
            m, (lo, hi) = summ[k]["mean"], summ[k]["ci95"]
            row.append(_fmt(m) + f" ±{_fmt((hi - lo) / 2)}")
        table.add_row(*row)
    return table


def _fmt(x: float) -> str:
    if x != x:
        return "nan"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


@app.command()
def simulate(
    scenario: Annotated[
        str, typer.Argument(help="Shipped scenario name or path to a YAML file.")
    ] = "default",
    policy: Annotated[
        str, typer.Option(help="Policy: zero or random (tuned heuristics: see `restock eval`).")
    ] = "zero",
    episodes: Annotated[int, typer.Option(min=1, max=100_000, help="Sample paths to simulate.")] = 10,
    seed: Annotated[int, typer.Option(help="Demand seed (paths 0..episodes-1 of this seed).")] = 0,
    horizon: Annotated[int | None, typer.Option(help="Override the scenario's horizon.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the KPIs as JSON.")] = False,
) -> None:
    """Simulate a scenario under a simple policy and print its KPIs (mean and 95% interval)."""
    from restock.agents.heuristics import RandomPolicy, ZeroPolicy
    from restock.eval.kpis import episode_kpis, summarise
    from restock.eval.rollout import rollout

    over = {"horizon": horizon} if horizon else {}
    c = load_or_fail(scenario, **over)
    pols = {"zero": ZeroPolicy, "random": lambda: RandomPolicy(seed)}
    if policy not in pols:
        fail(f"--policy: unknown policy {policy!r} (choose from {', '.join(pols)})")
    prog, task = progress_bar(episodes * c.horizon, f"simulating {c.config.name}")
    with prog:
        res = rollout(
            c,
            pols[policy](),
            episodes=episodes,
            seed=seed,
            progress=lambda n: prog.advance(task, n / 1.0 * 1),
        )
    summ = summarise(episode_kpis(res, c))
    if json_out:
        print(
            json.dumps(
                {policy: {k: {"mean": v["mean"], "ci95": v["ci95"]} for k, v in summ.items()}}, indent=2
            )
        )
        return
    keys = [
        "total_cost",
        "fill_rate",
        "cycle_service_level",
        "stockout_days",
        "inventory_turns",
        "avg_on_hand",
    ]
    console.print(
        kpi_table(
            f"{c.config.name}: {episodes} episodes x {c.horizon} periods, seed {seed}", {policy: summ}, keys
        )
    )
    console.print(f"[dim]{res.seconds:.1f} s[/]")


# ------------------------------------------------------------------------------------------------
@app.command()
def tune(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or path to a YAML file.")],
    policy: Annotated[
        str,
        typer.Option(help="Heuristic to tune: base_stock, capped_base_stock, s_S, r_Q, echelon_base_stock."),
    ] = "base_stock",
    out: Annotated[Path, typer.Option(help="Parameter file to write (added to when it exists).")] = Path(
        "params.json"
    ),
    episodes: Annotated[int, typer.Option(min=2, help="Sample paths per candidate (common to all).")] = 16,
    eval_episodes: Annotated[int, typer.Option(min=2, help="Held-out paths for the reported cost.")] = 32,
    seed: Annotated[
        int, typer.Option(help="Seed of the tuning paths (held-out paths use seed + 1000).")
    ] = 1000,
    rounds: Annotated[
        int, typer.Option(min=1, help="Coordinate-search rounds (the grid halves each round).")
    ] = 4,
    max_episodes: Annotated[
        int,
        typer.Option(
            min=2,
            help="Adaptive precision: double the common paths of a grid (racing) while the best two "
            "candidates' paired 95% interval includes zero, up to this many (= --episodes: no racing).",
        ),
    ] = 256,
    per_node: Annotated[
        bool,
        typer.Option("--per-node", help="One set of knobs per node (small networks) instead of per role."),
    ] = False,
    discounted: Annotated[
        bool,
        typer.Option(
            "--discounted",
            help="Minimise the cost discounted by the scenario's `discount` (default: undiscounted cost "
            "per period, what `restock eval` reports).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    no_shield: Annotated[
        bool,
        typer.Option(
            "--no-shield",
            help="Tune without the shield (policies normally run behind it, so tuning does too).",
        ),
    ] = False,
) -> None:
    """Tune a heuristic's knobs by simulation on common random numbers and save them.

    Every candidate runs on the same sample paths in one batched simulation; each grid is a race that
    adds paths while the leader and runner-up are not separated; the tuned knobs are then evaluated on
    held-out paths, and that cost (mean and 95% interval per period) is reported. The objective is the
    cost, minus the revenue when the scenario's reward includes revenue, discounted with --discounted.
    """
    from restock.agents.catalogue import save_params
    from restock.agents.tuning import TUNABLE, tune_work
    from restock.agents.tuning import tune as run_tune

    if policy not in TUNABLE:
        fail(f"--policy: {policy!r} cannot be tuned (choose from {', '.join(TUNABLE)})")
    c = load_or_fail(scenario)
    max_episodes = max(max_episodes, episodes)
    work = tune_work(c, policy, episodes, eval_episodes, rounds, 5, max_episodes, per_node)
    prog, task = progress_bar(work, f"tuning {policy}")
    with prog:
        res = run_tune(
            c,
            policy,
            episodes=episodes,
            seed=seed,
            eval_episodes=eval_episodes,
            eval_seed=seed + 1000,
            rounds=rounds,
            shield=None if no_shield else _shield_factory(False),
            progress=lambda n: prog.advance(task, n),
            max_episodes=max_episodes,
            per_node=per_node,
            discount=c.config.discount if discounted else None,
        )
        prog.update(task, completed=work)
    save_params(out, res)
    if json_out:
        print(json.dumps({"policy": policy, **res.to_json()}, indent=2))
        return
    m, (lo, hi) = res.cost_per_period["mean"], res.cost_per_period["ci95"]
    console.print(f"[bold]{policy}[/] on [bold]{c.config.name}[/]: knobs {json.dumps(res.knobs)}")
    crit = res.objective["criterion"]
    if not discounted and c.config.discount < 1:
        crit += f" (the scenario's discount {c.config.discount} is not applied: --discounted applies it)"
    console.print(f"objective: {crit}")
    if res.objective["revenue"] or res.objective["discount"] is not None:
        held = res.objective["held_out_per_period"]
        olo, ohi = held["ci95"]
        console.print(
            f"objective per period on held-out paths: {held['mean']:,.3f} (95% CI {olo:,.3f} .. {ohi:,.3f})"
        )
    fc = res.final_comparison
    if fc is None:
        console.print("final comparison: every candidate of the last grids behaved alike")
    else:
        clo, chi = fc["ci95"]
        console.print(
            f"final comparison ({fc['knob']} {fc['best']:.4g} vs runner-up {fc['runner_up']:.4g}, "
            f"{fc['paths']} common paths): runner-up - best = {fc['runner_up_minus_best']:+.4f} a period "
            f"(paired 95% CI {clo:+.4f} .. {chi:+.4f}; {'separated' if fc['separated'] else 'not separated'})"
        )
    console.print(
        f"cost per period on {eval_episodes} held-out paths: [bold]{m:,.3f}[/] (95% CI {lo:,.3f} .. {hi:,.3f}); "
        f"tuning took {res.seconds:.1f} s over {res.evaluations} candidate evaluations"
    )
    console.print(f"saved to {out}")


@app.command(name="eval")
def eval_cmd(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or path to a YAML file.")],
    policies: Annotated[
        str,
        typer.Option(
            help="Comma-separated: zero, random, base_stock, capped_base_stock, s_S, "
            "r_Q, echelon_base_stock, clark_scarf, oracle, or run directories."
        ),
    ] = "zero,base_stock,oracle",
    params: Annotated[
        Path | None, typer.Option(help="Parameter file from `restock tune` (tuned knobs).")
    ] = None,
    episodes: Annotated[
        int, typer.Option(min=2, max=100_000, help="Sample paths (every policy gets the same ones).")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Demand seed of the evaluation paths.")] = 0,
    out: Annotated[Path, typer.Option(help="Report folder (report.md, kpis.json, kpis.csv, plots).")] = Path(
        "out/eval"
    ),
    baseline: Annotated[
        str | None, typer.Option(help="Policy for paired differences (default: the first).")
    ] = None,
    stress: Annotated[
        str | None, typer.Option(help="Also run stress scenarios: all, or a comma-separated list.")
    ] = None,
    oracle_episodes: Annotated[
        int | None, typer.Option(help="Solve the oracle LP on only the first N paths.")
    ] = None,
    no_shield: Annotated[
        bool,
        typer.Option(
            "--no-shield",
            help="Run policies unshielded (simulation only) to measure the violations they would make.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print kpis.json to stdout.")] = False,
) -> None:
    """Evaluate policies on identical sample paths: KPIs with 95% intervals, paired differences,
    the gap to the perfect-information bound, optional stress tests, and a report with plots."""
    from restock.agents.catalogue import load_params
    from restock.eval.evaluate import evaluate, parse_policies, resolve_name
    from restock.eval.report import markdown_table, write_report
    from restock.eval.stress import STRESSES, parse_stress

    c = load_or_fail(scenario)
    try:
        pdata = load_params(params) if params else None
        specs, notes = parse_policies(policies, c, pdata)
        stresses = parse_stress(stress)
    except ValueError as exc:
        fail(str(exc))
    names = [s.name for s in specs]
    if baseline is not None:  # a run directory's name or path also names its (labelled) policy
        resolved = resolve_name(specs, baseline)
        if resolved is None:
            fail(f"--baseline: {baseline!r} is not among the evaluated policies ({', '.join(names)})")
        baseline = resolved
    base = baseline or next((n for n in names if n != "oracle"), None)
    shield_factory = _shield_factory(no_shield)
    runs = [("none", c)] + [(s, None) for s in stresses]
    n_or = episodes if oracle_episodes is None else min(oracle_episodes, episodes)
    per_run = sum(c.horizon * episodes for s in specs if s.name != "oracle") + n_or * ("oracle" in names)
    prog, task = progress_bar(per_run * len(runs), f"evaluating {c.config.name}")
    results = {}
    with prog:
        for sname, comp in runs:
            if comp is None:
                from restock.envs.compile import compile_scenario

                comp = compile_scenario(STRESSES[sname](c.config))
            prog.update(
                task, description=f"evaluating {c.config.name}" + ("" if sname == "none" else f" [{sname}]")
            )
            results[sname] = evaluate(
                comp,
                specs,
                episodes=episodes,
                seed=seed,
                baseline=base,
                shield_factory=shield_factory,
                oracle_episodes=oracle_episodes,
                progress=lambda n: prog.advance(task, n),
                notes=notes,
            )
    main = results.pop("none")
    files = write_report(main, out, stress=results or None)
    if json_out:
        print(json.dumps(main.kpis_json(), indent=2))
        return
    console.print(markdown_table(main), highlight=False, markup=False)  # labels hold [...]
    for n in main.notes:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    console.print(f"report: {files['report.md']}  ({main.seconds:.1f} s)")


def _shield_factory(no_shield: bool):
    """The shield every evaluated policy runs behind (monitor mode with --no-shield), when available."""
    try:
        from restock.agents.shield import Shield
    except ImportError:
        return None
    mode = "monitor" if no_shield else "enforce"
    return lambda compiled: Shield(compiled, mode=mode)


# ------------------------------------------------------------------------------------------------
@app.command()
def train(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or path to a YAML file.")],
    trainer: Annotated[
        str,
        typer.Option(
            help="sb3 (MaskablePPO on the array env), rllib (multi-agent PPO) or dcl (approximate policy "
            "iteration with rollout labels, one-store one-SKU scenarios: training/dcl_train.py)."
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

    if trainer not in ("sb3", "rllib", "dcl"):
        fail(f"--trainer: must be sb3, rllib or dcl, not {trainer!r}")
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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = (exp.steps or 0) * len(exp.roles)
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    task = prog.add_task(f"training ({trainer})", total=total or None, stats="")
    done_before: dict[str, int] = {}

    def on_progress(d: dict) -> None:
        role = d.get("role", "")
        done_before.setdefault(role, len(done_before))
        completed = (exp.steps or 0) * done_before[role] + d["env_steps"]
        stats = f"{role} steps {d['env_steps']:,} | SPS {d.get('charts/SPS', 0):,.0f}"
        if "inventory/fill_rate" in d:
            stats += f" | cost {d['charts/episodic_cost']:,.0f} | fill {d.get('inventory/fill_rate', 0):.3f}"
        prog.update(task, completed=completed, stats=stats)

    try:
        with prog:
            run_dir = run_train(
                c,
                exp,
                trainer,
                out_root=out,
                resume=resume,
                on_progress=on_progress,
                log=lambda s: prog.console.print(s, highlight=False),
            )
    except ValueError as exc:
        fail(str(exc))
    console.print(f"[green]done[/]: {run_dir}")
    quick = run_dir / "baseline_params.json"  # written only when the baseline had to be tuned here
    params = quick if quick.exists() else exp.baseline_params
    if params and "{scenario}" in str(params):
        params = str(params).replace("{scenario}", c.config.name)
    console.print(
        f"evaluate: restock eval {scenario} --policies {exp.baseline},{run_dir}"
        + (f" --params {params}" if params else "")
    )
    console.print(f"tensorboard --logdir {out}")


# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
@app.command()
def bench(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated suites: kernel,demand,pettingzoo,array_env,large.")
    ] = None,
    training: Annotated[
        bool, typer.Option("--training", help="Add trainer throughput (SB3, RLlib on default).")
    ] = False,
    serving: Annotated[
        bool, typer.Option("--serving", help="Add the serving benchmark (latency under load).")
    ] = False,
    serving_artifact: Annotated[
        Path | None,
        typer.Option(
            help="Serve this exported artifact in the serving benchmark (default: base-stock with default knobs)."
        ),
    ] = None,
) -> None:
    """Measure simulator speed and memory on this machine (all figures from this one run).

    With --training or --serving alone, only those suites run (add --only to combine them with others).
    """
    from restock.eval.bench import SUITES, run_all

    suites = only.split(",") if only else None
    if suites:
        bad = [s for s in suites if s not in SUITES]
        if bad:
            fail(f"--only: unknown suite(s) {bad} (choose from {', '.join(SUITES)})")
    if (training or serving) and only is None:
        suites = []
    res = run_all(suites, progress=lambda name: err.print(f"[dim]bench: {name}...[/]"))
    if training:
        err.print("[dim]bench: training...[/]")
        from restock.training.bench import run_training_bench

        res.update(run_training_bench())
    if serving:
        err.print("[dim]bench: serving...[/]")
        from restock.serving.bench import run_serving_bench

        sres = run_serving_bench(artifact=serving_artifact)
        res["targets_met"].update(sres.pop("targets_met", {}))
        res.update(sres)
    if json_out:
        print(json.dumps(res, indent=2))
        return
    table = Table(title="restock bench")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target met", justify="center")
    for k, v in res.items():
        if k in ("machine", "targets_met"):
            continue
        met = res["targets_met"].get(k)
        table.add_row(
            k,
            f"{v:,.3f}" if isinstance(v, float) else str(v),
            "" if met is None else ("yes" if met else "no"),
        )
    console.print(table)
    console.print(res["machine"])


# ------------------------------------------------------------------------------------------------
@app.command()
def export(
    run_dir: Annotated[
        Path | None, typer.Argument(help="Run directory from `restock train` (omit with --heuristic).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Artifact folder to write (manifest.json, <role>.onnx, scenario.yaml).")
    ] = Path("artifacts/latest"),
    heuristic: Annotated[
        str | None, typer.Option(help="Export a heuristic instead of a run: base_stock, s_S, r_Q, ...")
    ] = None,
    params: Annotated[
        Path | None, typer.Option(help="With --heuristic: parameter file from `restock tune`.")
    ] = None,
    scenario: Annotated[str, typer.Option(help="With --heuristic: scenario name or YAML path.")] = "default",
    parity: Annotated[int, typer.Option(min=1, help="Observations for the ONNX parity check.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the rollouts that sample parity observations.")] = 0,
    atol: Annotated[float, typer.Option(help="Parity: allowed absolute logit difference.")] = 1e-5,
    rtol: Annotated[float, typer.Option(help="Parity: allowed extra difference relative to |logit|.")] = 0.0,
    strict: Annotated[
        bool, typer.Option("--strict", help="Parity: refuse greedy mismatches even at numerical ties.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Export a trained run (one ONNX model per trained role, parity-checked) or a tuned heuristic as a
    serving artifact with a manifest (layout, action mapping, scenario, metrics, sha256 of every file)."""
    from restock.serving.artifact import ArtifactError, export_heuristic

    if (run_dir is None) == (heuristic is None):
        fail("give a RUN_DIR, or --heuristic NAME (with --params and --scenario), not both")
    try:
        if heuristic is not None:
            from restock.agents.catalogue import load_params, make_policy

            c = load_or_fail(scenario)
            knobs, source = None, {"params": None}
            if params is not None:
                data = load_params(params)
                if data.get("scenario") not in (None, c.config.name):
                    fail(
                        f"--params: tuned on scenario {data.get('scenario')!r}, exporting for {c.config.name!r}"
                    )
                if data.get("config_hash") not in (None, c.config_hash):
                    fail(f"--params: tuned on another version of {c.config.name!r} (config hash differs)")
                pol = data["policies"].get(heuristic)
                if pol is None:
                    fail(
                        f"--params: {params} has no {heuristic!r} (it has {', '.join(data['policies']) or 'none'})"
                    )
                knobs = pol["knobs"]
                source = {"params": str(params), "cost_per_period": pol.get("cost_per_period")}
            else:
                make_policy(heuristic)
                err.print(
                    f"[yellow]note:[/] {heuristic} exported with default knobs (give --params for tuned ones)"
                )
            m = export_heuristic(heuristic, knobs, c, out, source=source, overwrite=force)
        else:
            from restock.agents.export import export_run

            m = export_run(
                run_dir,
                out,
                n_parity=parity,
                seed=seed,
                atol=atol,
                rtol=rtol,
                overwrite=force,
                allow_ties=not strict,
                log=lambda s: err.print(s, highlight=False),
            )
    except (ArtifactError, ValueError) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(m, indent=2))
        return
    roles = ", ".join(
        f"{r}: {v['policy']}" + (f" ({v['file']})" if v.get("file") else f" ({v.get('heuristic')})")
        for r, v in m["roles"].items()
    )
    console.print(f"[green]exported[/] {m['kind']} artifact {m['name']!r} to {out}: {roles}")
    console.print(f"register it: restock registry register REGISTRY_DIR {out}")


registry_app = typer.Typer(
    help="Policy registry: versions per role, promote, roll back, canary and shadow.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


def _registry(path: Path):
    from restock.serving.registry import Registry

    return Registry(path)


def _registry_do(fn, *args, **kw):
    from restock.serving.artifact import ArtifactError

    try:
        return fn(*args, **kw)
    except (ArtifactError, ValueError) as exc:
        fail(str(exc))


@registry_app.command("list")
def registry_list(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print registry.json.")] = False,
) -> None:
    """Show the registered versions and what each role serves."""
    d = _registry_do(_registry(registry_dir).describe)
    if json_out:
        print(json.dumps(d, indent=2))
        return
    t = Table(title=f"registry {registry_dir} ({d['scenario'].get('name', 'empty')})")
    for col in ("version", "kind", "name", "roles", "registered"):
        t.add_column(col)
    for v, info in d["versions"].items():
        t.add_row(
            v,
            str(info.get("kind")),
            str(info.get("name")),
            ",".join(info.get("roles", [])),
            info.get("registered", ""),
        )
    console.print(t)
    for role, r in d["roles"].items():
        cand = (
            f", candidate {r['candidate']} ({r['mode']}"
            + (f" {r['fraction']:.0%}" if r["mode"] == "canary" else "")
            + ")"
            if r["candidate"]
            else ""
        )
        console.print(
            f"{role}: champion {r['champion']}{cand}; rollback target {r['history'][-1] if r['history'] else '-'}"
        )


@registry_app.command("register")
def registry_register(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder (created when missing).")],
    artifact: Annotated[Path, typer.Argument(help="Artifact folder from `restock export`.")],
    note: Annotated[str, typer.Option(help="Free text kept with the version.")] = "",
) -> None:
    """Verify an artifact and add it as the next version (champion of roles that have none)."""
    v = _registry_do(_registry(registry_dir).register, artifact, note=note)
    console.print(f"[green]registered[/] {artifact} as {v}")


@registry_app.command("promote")
def registry_promote(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
    version: Annotated[str, typer.Argument(help="Version to serve, e.g. v3.")],
) -> None:
    """Make a version the champion of a role (the current champion becomes the rollback target)."""
    r = _registry_do(_registry(registry_dir).promote, role, version)
    console.print(f"{role}: champion {r.champion} (rollback target {r.history[-1] if r.history else '-'})")


@registry_app.command("rollback")
def registry_rollback(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
) -> None:
    """Restore the previous champion of a role and stop any canary or shadow candidate."""
    r = _registry_do(_registry(registry_dir).rollback, role)
    console.print(f"{role}: champion {r.champion} (rolled back)")


@registry_app.command("candidate")
def registry_candidate(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
    version: Annotated[str, typer.Argument(help="Candidate version.")],
    mode: Annotated[
        str, typer.Option(help="canary (a share of nodes executes it) or shadow (recorded only).")
    ] = "canary",
    fraction: Annotated[
        float, typer.Option(help="Canary share of nodes, by a stable hash of the node id.")
    ] = 0.1,
) -> None:
    """Start a canary or shadow run of a candidate version for a role."""
    r = _registry_do(_registry(registry_dir).set_candidate, role, version, mode, fraction)
    console.print(
        f"{role}: candidate {r.candidate} ({r.mode}{f' {r.fraction:.0%}' if r.mode == 'canary' else ''})"
    )


@registry_app.command("clear")
def registry_clear(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder.")],
    role: Annotated[str, typer.Argument(help="store or dc.")],
) -> None:
    """Stop a role's canary or shadow candidate (the champion serves every node)."""
    _registry_do(_registry(registry_dir).clear_candidate, role)
    console.print(f"{role}: candidate cleared")


@app.command()
def serve(
    registry_dir: Annotated[Path, typer.Argument(help="Registry folder (restock registry register ...).")],
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    audit: Annotated[
        str | None, typer.Option(help="Audit database URL (default sqlite:///REGISTRY_DIR/audit.db).")
    ] = None,
    durability: Annotated[
        str,
        typer.Option(
            help="full: fsync every commit (survives power loss); normal: survives a killed process."
        ),
    ] = "full",
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes (413 above).")] = 256 * 1024,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
) -> None:
    """Serve decisions over HTTP: POST /v1/decisions, GET /v1/decisions/{id}, /healthz, /metrics.

    Admin endpoints (promote, rollback, candidate) need RESTOCK_ADMIN_TOKEN set in this process's
    environment and Authorization: Bearer <token> on each call.
    """
    from restock.serving.registry import Registry

    if (registry_dir / "manifest.json").exists():
        fail(
            f"{registry_dir} is an artifact, not a registry: restock registry register REGISTRY_DIR {registry_dir}"
        )
    if not Registry(registry_dir).snapshot().versions:
        fail(
            f"{registry_dir}: no registered versions (restock registry register {registry_dir} ARTIFACT_DIR)"
        )
    if durability not in ("full", "normal"):
        fail(f"--durability: full or normal, not {durability!r}")
    from restock.serving.app import serve as run_server

    try:
        from restock.serving.audit import parse_url

        parse_url(audit or "sqlite:///x")
    except ValueError as exc:
        fail(f"--audit: {exc}")
    from restock.serving.artifact import ArtifactError
    from restock.serving.audit import AuditIntegrityError
    from restock.serving.decision import DecisionService
    from restock.serving.registry import RegistryError

    try:  # artifacts checked, audit store opened (and matched to its anchor) before anything listens
        svc = DecisionService(registry_dir, audit=audit, durability=durability)
    except (ArtifactError, AuditIntegrityError, RegistryError, ValueError, OSError) as exc:
        msg = " ".join(str(exc).split())
        err.print(
            f"error: refusing to serve {registry_dir}: {msg}", soft_wrap=True, markup=False, highlight=False
        )
        raise typer.Exit(2) from None
    err.print(f"serving {registry_dir} on http://{host}:{port} (docs: /docs)")
    run_server(
        registry_dir,
        host=host,
        port=port,
        audit=audit,
        durability=durability,
        max_body=max_body,
        access_log=access_log,
        service=svc,
    )


audit_app = typer.Typer(
    help="The decision audit store: verify the hash chains, anchor their heads, export JSON lines.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


def _open_audit(db: str):
    from restock.serving.audit import open_store, parse_url

    try:
        _, path = parse_url(db)
    except ValueError as exc:
        fail(str(exc))
    if not Path(path).exists():
        fail(f"{path}: no such audit database")
    try:
        return open_store(db, readonly=True)
    except (ValueError, OSError) as exc:
        fail(str(exc))


def _audit_key() -> bytes:
    from restock.serving.audit import KEY_ENV, audit_key

    key = audit_key()
    if key is None:
        fail(f"anchors are HMAC'd with a key: set {KEY_ENV} (the same key the server runs with)")
    return key


@audit_app.command("verify")
def audit_verify(
    db: Annotated[str, typer.Argument(help="Audit database: a path or sqlite:///PATH.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="Also check this checkpoint (restock audit anchor, or the server's DB.anchor; key in "
            "RESTOCK_AUDIT_KEY): the rows it counted are all there and end in its head.",
        ),
    ] = None,
) -> None:
    """Recompute the decision hash chains; exit 1 when a row was altered, dropped or reordered (dropping
    the newest rows shows against an --anchor)."""
    from restock.serving.audit import AuditIntegrityError, read_anchor

    a = None
    if anchor is not None:
        try:
            a = read_anchor(anchor, _audit_key())
        except AuditIntegrityError as exc:
            err.print(f"[red]broken[/]: {exc}", highlight=False)
            raise typer.Exit(1) from None
    store = _open_audit(db)
    try:
        rep = store.verify(anchor=a)
    finally:
        store.close()
    if json_out:
        print(json.dumps(rep, indent=2))
    else:
        for table in ("decisions", "shadow_decisions"):
            r = rep[table]
            b = r["broken"]
            where = (
                f"at seq {b['seq']} ({b['request_id']})"
                if b and b["seq"] is not None
                else "against the anchor"
            )
            state = "[green]ok[/]" if b is None else f"[red]broken[/] {where}: {b['why']}"
            console.print(f"{table}: {r['records']:,} records, chain {state}", highlight=False)
            if r["legacy_rows"]:
                lg = rep["legacy"]
                console.print(
                    f"  {r['legacy_rows']:,} of them written under {lg['schema']}, verified by its rules "
                    f"({lg['rules']})",
                    highlight=False,
                )
        if a is not None and rep["ok"]:
            counted = ", ".join(f"{t} {a[t]['records']:,}" for t in ("decisions", "shadow_decisions"))
            console.print(f"anchor of {a['at']} ({counted} rows): [green]ok[/]", highlight=False)
    if not rep["ok"]:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    db: Annotated[str, typer.Argument(help="Audit database: a path or sqlite:///PATH.")],
    out: Annotated[
        Path | None, typer.Option(help="Write the checkpoint to this file (default: print it).")
    ] = None,
) -> None:
    """Verify the store, then print an HMAC'd checkpoint of its chain heads (row counts and last row
    hashes; key in RESTOCK_AUDIT_KEY) for audit verify --anchor. Keep it away from the store."""
    from restock.serving.audit import TABLES, make_anchor

    key = _audit_key()
    store = _open_audit(db)
    try:
        rep = store.verify()
        schema = store.schema
    finally:
        store.close()
    if not rep["ok"]:
        for t in TABLES:
            if rep[t]["broken"]:
                b = rep[t]["broken"]
                err.print(
                    f"[red]broken[/] {t} at seq {b['seq']} ({b['request_id']}): {b['why']}", highlight=False
                )
        err.print("no anchor written: the store does not verify")
        raise typer.Exit(1)
    a = make_anchor({t: {"records": rep[t]["records"], "head": rep[t]["head"]} for t in TABLES}, key, schema)
    text = json.dumps(a, indent=1)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {out}")


@audit_app.command("export")
def audit_export(
    db: Annotated[str, typer.Argument(help="Audit database: a path or sqlite:///PATH.")],
    out: Annotated[Path, typer.Option(help="JSON-lines file to write.")] = Path("audit.jsonl"),
) -> None:
    """Write every decision (request, record) and shadow decision as JSON lines."""
    store = _open_audit(db)
    try:
        n = store.export(out)
    finally:
        store.close()
    console.print(f"wrote {n:,} records to {out}")


# ------------------------------------------------------------------------------------------------
@app.command()
def demo(
    episodes: Annotated[int, typer.Option(min=2, help="Sample paths for the evaluation.")] = 20,
    out: Annotated[Path, typer.Option(help="Folder for the parameter file and the report.")] = Path(
        "out/demo"
    ),
    oracle_episodes: Annotated[int, typer.Option(min=0, help="Paths on which to solve the oracle LP.")] = 3,
    train_steps: Annotated[
        int, typer.Option(min=0, help="RLlib env steps for the store agents (0: no training).")
    ] = 2400,
    train_minutes: Annotated[float, typer.Option(min=0.5, help="Wall-clock cap on the RLlib run.")] = 4.0,
) -> None:
    """The main job on the embedded default scenario (what `make demo` runs).

    Tunes base-stock and (s,S) on `default` by simulation, trains the store agents briefly with RLlib
    (PPO, warm-started from the tuned base-stock policy), evaluates zero, the tuned heuristics, the
    learned policy and the perfect-information bound on common sample paths and writes a report; then
    exports the learned policy (ONNX, parity-checked), registers it, starts the serving shim on
    127.0.0.1, asks it for one store decision and prints it.
    """
    from restock.agents.catalogue import load_params, save_params
    from restock.agents.tuning import tune as run_tune
    from restock.agents.tuning import tune_work
    from restock.eval.evaluate import evaluate, parse_policies
    from restock.eval.report import write_report

    console.rule("[bold]restock demo: the default scenario")
    c = load_or_fail("default")
    console.print(f"scenario [bold]default[/]: {c.M} DC, {c.S} stores, {c.K} SKUs, {c.horizon} periods")
    out.mkdir(parents=True, exist_ok=True)
    params = out / "params.json"
    if params.exists():
        params.unlink()
    for pol in ("base_stock", "s_S"):
        prog, task = progress_bar(tune_work(c, pol, 12, 16, 3, 5), f"tuning {pol}")
        with prog:
            res = run_tune(
                c,
                pol,
                episodes=12,
                eval_episodes=16,
                rounds=3,
                shield=_shield_factory(False),
                progress=lambda n, pr=prog, tk=task: pr.advance(tk, n),
            )
        save_params(params, res)
        m, (lo, hi) = res.cost_per_period["mean"], res.cost_per_period["ci95"]
        console.print(
            f"tuned {pol} in {res.seconds:.0f} s: cost per period {m:,.1f} (95% CI {lo:,.1f} .. {hi:,.1f})"
        )
    run_dir = _demo_train(out, params, train_steps, train_minutes) if train_steps > 0 else None
    learned = f",{run_dir}" if run_dir is not None else ""
    pols = "zero,base_stock,s_S" + learned + (",oracle" if oracle_episodes > 0 and _have_oracle() else "")
    specs, notes = parse_policies(pols, c, load_params(params))
    n_work = episodes * c.horizon * (3 + bool(learned)) + (oracle_episodes if "oracle" in pols else 0)
    if learned:
        import torch

        torch.set_num_threads(1)  # small per-SKU network: intra-op threads only contend here
    prog, task = progress_bar(n_work, "evaluating")
    with prog:
        res = evaluate(
            c,
            specs,
            episodes=episodes,
            seed=0,
            baseline="base_stock",
            shield_factory=_shield_factory(False),
            oracle_episodes=oracle_episodes,
            progress=lambda n: prog.advance(task, n),
            notes=notes,
        )
    files = write_report(res, out / "report", title="restock demo: default scenario")
    keys = [
        "total_cost",
        "fill_rate",
        "cycle_service_level",
        "stockout_days",
        "inventory_turns",
        "avg_on_hand",
    ]
    console.print(
        kpi_table(
            f"default: {episodes} paths (common random numbers), per episode of {c.horizon} periods",
            res.summary,
            keys,
        )
    )
    if res.oracle_gap:
        for pol, g in res.oracle_gap.items():
            console.print(
                f"gap to the perfect-information bound, {pol}: {100 * g['mean']:.1f}% "
                f"(95% CI {100 * g['ci95'][0]:.1f}% .. {100 * g['ci95'][1]:.1f}%)"
            )
    console.print(f"report: {files['report.md']}")
    served = _demo_serve(c, out, params, run_dir)
    console.rule("[bold]where things are")
    console.print(f"report:        {files['report.md']}")
    if run_dir is not None:
        console.print(f"training run:  {run_dir}  (tensorboard --logdir {run_dir.parent})")
    console.print(f"artifact:      {out / 'artifact'}  (manifest.json, ONNX, scenario.yaml)")
    console.print(f"registry:      {out / 'registry'}  (restock serve {out / 'registry'})")
    console.print(
        f"audit store:   {out / 'registry' / 'audit.db'}  (restock audit verify {out / 'registry' / 'audit.db'})"
    )
    if (train_steps > 0 and run_dir is None) or not served:
        raise typer.Exit(1)


def _demo_train(out: Path, params: Path, steps: int, minutes: float) -> Path | None:
    """A short RLlib run on `default` (store agents; the DC plays the tuned base-stock policy), in a child
    process so Ray starts and stops cleanly; returns the run directory, or None when it failed."""
    import subprocess

    import yaml

    console.rule("[bold]training the store agents (RLlib, short run)")
    exp = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "configs" / "experiments" / "smoke.yaml").read_text()
    )
    exp.update(name="demo", steps=int(steps), minutes=float(minutes), baseline="base_stock")
    exp["checkpoint_every"] = max(int(steps) // 2, 200)
    exp.setdefault("rllib", {})["train_batch_size"] = 400
    exp.get("ppo", {}).pop("rollout_steps", None)  # the batch is given in env steps instead
    exp["baseline_params"] = str(params.resolve())
    exp_file = out / "demo_experiment.yaml"
    exp_file.write_text(yaml.safe_dump(exp, sort_keys=False))
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    before = set(runs.iterdir())
    cmd = [sys.executable, "-m", "restock.cli", "train", "default", "--trainer", "rllib"]
    cmd += ["--config", str(exp_file), "--out", str(runs)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    # one math thread per process: on a small machine, torch's intra-op threads fighting Ray's workers
    # made behaviour cloning about ten times slower
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    res = subprocess.run(cmd, env=env)
    new = sorted(set(runs.iterdir()) - before)
    run_dir = new[-1] if new else None
    if res.returncode != 0 or run_dir is None or not list((run_dir / "policies").glob("*.pt")):
        err.print(
            f"[red]the RLlib run failed (exit {res.returncode}); the demo goes on with the heuristics[/]"
        )
        return None
    console.print(f"trained: {run_dir}")
    return run_dir


def _demo_serve(c, out: Path, params: Path, run_dir: Path | None) -> bool:
    """Export (the learned run, else tuned base-stock), register, serve on 127.0.0.1, ask for one decision."""
    import shutil
    import time
    import urllib.request
    import uuid

    from restock.agents.base import JointPolicy
    from restock.agents.catalogue import load_params, make_policy
    from restock.agents.shield import Shield
    from restock.envs.array_env import ArrayEnv
    from restock.serving.artifact import ArtifactError, export_heuristic
    from restock.serving.bench import free_port, start_server, stop_server, wait_ready
    from restock.serving.registry import Registry
    from restock.serving.schema import request_from_state

    console.rule("[bold]export and serve")
    art, reg = out / "artifact", out / "registry"
    knobs = load_params(params)["policies"]["base_stock"]["knobs"]
    try:
        if run_dir is not None:
            from restock.agents.export import export_run

            m = export_run(run_dir, art, overwrite=True, log=lambda s: console.print(s, highlight=False))
        else:
            m = export_heuristic("base_stock", knobs, c, art, source={"params": str(params)}, overwrite=True)
    except ArtifactError as exc:
        err.print(f"[red]export failed:[/] {exc}")
        return False
    console.print(
        f"exported {m['kind']} artifact: " + ", ".join(f"{r}: {v['policy']}" for r, v in m["roles"].items())
    )
    from restock.serving.registry import RegistryError

    try:
        version = Registry(reg).register(art, note="restock demo")
    except RegistryError as exc:  # a registry from another version of the scenario: keep it, start afresh
        old = reg.with_name(f"{reg.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(reg), str(old))
        console.print(f"[yellow]note:[/] {exc}; the old registry (and its audit store) moved to {old}")
        version = Registry(reg).register(art, note="restock demo")
    for role, r in Registry(reg).snapshot().roles.items():
        if r.champion != version and role in m["roles"]:
            Registry(reg).promote(role, version, by="demo")
    console.print(f"registered as {version} in {reg} (champion of {', '.join(m['roles'])})")
    # a store's state after ten periods of the tuned base-stock policy, as a retailer would send it
    env = ArrayEnv(c, num_envs=1, seed=123, shield=Shield(c))
    env.reset()
    pol = JointPolicy(make_policy("base_stock", knobs))
    pol.bind(c)
    for _ in range(10):
        env.step_qty(pol.propose(env).qty)
    req = request_from_state(c, env.state, 0, c.M, f"demo-{uuid.uuid4().hex[:12]}")
    port = free_port()
    proc = start_server(reg, port)
    try:
        wait_ready(port, proc)
        console.print(f"serving shim up on http://127.0.0.1:{port} (pid {proc.pid})")
        http = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/decisions",
            data=json.dumps(req).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(http, timeout=60) as r:
            d = json.loads(r.read())
    except (OSError, RuntimeError, TimeoutError) as exc:
        err.print(f"[red]serving failed:[/] {exc}")
        return False
    finally:
        stop_server(proc)
    rec = d["record"]
    q = d["orders"]
    first = ", ".join(f"{k} {v}" for k, v in list(q.items())[:8])
    console.print(
        f"POST /v1/decisions for {d['node']} in period {d['period']}: route {d['route']}, policy "
        f"{d['policy']['id']} {d['policy']['version']} ({d['policy']['kind']})"
    )
    console.print(
        f"  orders: {sum(q.values()):,} units over {sum(v > 0 for v in q.values())} of {len(q)} SKUs; {first}, ..."
    )
    console.print(
        f"  shield: {len(rec['interventions'])} SKUs changed; binding: {', '.join(rec['binding']) or 'none'}"
    )
    console.print(f"  rationale: {rec['rationale'][:200]}", highlight=False)
    conf = rec["confidence"]
    console.print(
        f"  confidence {conf if conf is None else round(conf, 3)}; escalated {rec['escalated']}; "
        f"record hash {rec['hash'][:16]}... (prev {rec['prev_hash'][:16]}...)"
    )
    console.print("server stopped")
    return True


def _have_oracle() -> bool:
    try:
        import restock.eval.oracle  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
