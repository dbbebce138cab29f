"""`restock export`: a trained run (ONNX per role, parity-checked) or a tuned heuristic as a serving artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from restock.cli.common import app, console, err, fail, load_or_fail


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
            from restock.training.export import export_run

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
