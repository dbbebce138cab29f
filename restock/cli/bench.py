"""`restock bench`: simulator, training and serving speed and memory, measured in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from restock.cli.common import app, console, fail


@app.command()
def bench(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated suites: kernel,demand,pettingzoo,array_env,large.")
    ] = None,
    training: Annotated[
        bool,
        typer.Option(
            "--training",
            help="Add trainer throughput on default (SB3, RLlib): rollouts alone, and whole training "
            "iterations (rollout + PPO update) end to end.",
        ),
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
    from restock.progress import heartbeat

    res = run_all(suites, progress=lambda name: heartbeat(f"bench: {name}"))
    if training:
        from restock.training.bench import run_training_bench

        with heartbeat("bench: training"):
            res.update(run_training_bench())
    if serving:
        from restock.serving.bench import run_serving_bench

        with heartbeat("bench: serving"):
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
