"""`restock eval`: policies on identical sample paths, paired differences, the bound, stress tests, a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from restock.cli.common import app, console, fail, load_or_fail, progress_bar, shield_factory


@app.command(name="eval")
def eval_cmd(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or path to a YAML file.")],
    policies: Annotated[
        str,
        typer.Option(
            help="Comma-separated: zero, random, base_stock, capped_base_stock, s_S, "
            "r_Q, echelon_base_stock, base_stock_cutoff, clark_scarf, oracle, or run directories."
        ),
    ] = "zero,base_stock,oracle",
    params: Annotated[
        Path | None, typer.Option(help="Parameter file from `restock tune` (tuned knobs).")
    ] = None,
    episodes: Annotated[
        int, typer.Option(min=2, max=100_000, help="Sample paths (every policy gets the same ones).")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Demand seed of the evaluation paths.")] = 0,
    out: Annotated[
        Path,
        typer.Option(
            help="Report folder (report.md, kpis.json, kpis.csv, paired.json, per_episode.csv: KPIs per path, plots)."
        ),
    ] = Path("out/eval"),
    baseline: Annotated[
        str | None, typer.Option(help="Policy for paired differences (default: the first).")
    ] = None,
    stress: Annotated[
        str | None, typer.Option(help="Also run stress scenarios: all, or a comma-separated list.")
    ] = None,
    oracle_episodes: Annotated[
        int | None,
        typer.Option(
            help="Solve the perfect-information bound (per-SKU MILP with Lagrangian coupling; no policy can reach it) on only the first N paths."
        ),
    ] = None,
    no_shield: Annotated[
        bool,
        typer.Option(
            "--no-shield",
            help="Run policies unshielded (simulation only) to measure the violations they would make.",
        ),
    ] = False,
    discounted: Annotated[
        bool,
        typer.Option(
            "--discounted",
            help="Also report the cost discounted by the scenario's `discount` a period "
            "(discounted_cost_per_period: sum_t discount^t cost_t / sum_t discount^t, as `restock tune "
            "--discounted` measures it); default: undiscounted costs only.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print kpis.json to stdout.")] = False,
) -> None:
    """Evaluate policies on identical sample paths: KPIs with 95% intervals, paired differences,
    the gap to the perfect-information bound, optional stress tests, and a report with plots.
    Costs are undiscounted totals per episode; --discounted adds the discounted cost per period."""
    from restock.agents.catalogue import load_params
    from restock.eval.evaluate import evaluate, parse_policies, resolve_name
    from restock.eval.report import text_table, write_report
    from restock.eval.stress import STRESSES, parse_stress

    c = load_or_fail(scenario)
    try:
        pdata = load_params(params) if params else None
        specs, notes = parse_policies(policies, c, pdata)
        stresses = parse_stress(stress)
    except ValueError as exc:
        fail(str(exc))
    if not discounted and c.config.discount < 1:
        notes.append(
            f"costs are undiscounted; the scenario's discount {c.config.discount} is applied with --discounted"
        )
    names = [s.name for s in specs]
    if baseline is not None:  # a run directory's name or path also names its (labelled) policy
        resolved = resolve_name(specs, baseline)
        if resolved is None:
            fail(f"--baseline: {baseline!r} is not among the evaluated policies ({', '.join(names)})")
        baseline = resolved
    base = baseline or next((n for n in names if n != "oracle"), None)
    shields = shield_factory(no_shield)
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
                shield_factory=shields,
                oracle_episodes=oracle_episodes,
                progress=lambda n: prog.advance(task, n),
                notes=notes,
                discount=c.config.discount if discounted else None,
            )
    main = results.pop("none")
    files = write_report(main, out, stress=results or None)
    if json_out:
        print(json.dumps(main.kpis_json(), indent=2))
        return
    console.print(
        text_table(main, width=max(60, console.width)), highlight=False, markup=False
    )  # labels hold [...]
    for n in main.notes:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    console.print(f"report: {files['report.md']}  ({main.seconds:.1f} s)")
