"""`restock scenarios` and `restock simulate`: the shipped scenarios, validation, a quick simulation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from restock.cli.common import app, console, fail, kpi_table, load_or_fail, progress_bar


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
    from restock.envs.kpis import HEADLINE
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
    keys = list(HEADLINE)
    console.print(
        kpi_table(
            f"{c.config.name}: {episodes} episodes x {c.horizon} periods, seed {seed}", {policy: summ}, keys
        )
    )
    console.print(f"[dim]{res.seconds:.1f} s[/]")
