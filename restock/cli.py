"""The `restock` command: one entry point for simulation, tuning, evaluation, training, export and serving."""

from __future__ import annotations

import json
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
    from envs.compile import compile_scenario
    from envs.config import ConfigError, load_scenario

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
    from envs.config import shipped_scenarios

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


# ------------------------------------------------------------------------------------------------
def kpi_table(title: str, summaries: dict[str, dict[str, dict]], keys: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("policy")
    for k in keys:
        table.add_column(k, justify="right")
    for pol, summ in summaries.items():
        row = [pol]
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
    episodes: Annotated[int, typer.Option(min=1, help="Sample paths to simulate.")] = 10,
    seed: Annotated[int, typer.Option(help="Demand seed (paths 0..episodes-1 of this seed).")] = 0,
    horizon: Annotated[int | None, typer.Option(help="Override the scenario's horizon.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the KPIs as JSON.")] = False,
) -> None:
    """Simulate a scenario under a simple policy and print its KPIs (mean and 95% interval)."""
    from agents.heuristics import RandomPolicy, ZeroPolicy
    from eval.kpis import episode_kpis, summarise
    from eval.rollout import rollout

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
def bench(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated suites: kernel,demand,pettingzoo,array_env,large.")
    ] = None,
) -> None:
    """Measure simulator speed and memory on this machine (all figures from this one run)."""
    from eval.bench import SUITES, run_all

    suites = only.split(",") if only else None
    if suites:
        bad = [s for s in suites if s not in SUITES]
        if bad:
            fail(f"--only: unknown suite(s) {bad} (choose from {', '.join(SUITES)})")
    res = run_all(suites, progress=lambda name: err.print(f"[dim]bench: {name}...[/]"))
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
def demo(
    episodes: Annotated[int, typer.Option(min=1, help="Sample paths for the evaluation.")] = 20,
) -> None:
    """The main job on the embedded default scenario (what `make demo` runs)."""
    console.rule("[bold]restock demo: the default scenario")
    c = load_or_fail("default")
    console.print(f"scenario [bold]default[/]: {c.M} DC, {c.S} stores, {c.K} SKUs, {c.horizon} periods")
    from agents.heuristics import ZeroPolicy
    from eval.kpis import episode_kpis, summarise
    from eval.rollout import rollout

    res = rollout(c, ZeroPolicy(), episodes=episodes, seed=0)
    summ = summarise(episode_kpis(res, c))
    keys = [
        "total_cost",
        "fill_rate",
        "cycle_service_level",
        "stockout_days",
        "inventory_turns",
        "avg_on_hand",
    ]
    console.print(kpi_table(f"default: {episodes} episodes", {"zero": summ}, keys))


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
