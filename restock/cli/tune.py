"""`restock optimum` (exact optima) and `restock tune` (heuristic knobs by simulation on common paths)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from restock.cli.common import app, console, fail, load_or_fail, progress_bar, shield_factory


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
    from restock.agents.single_node_scenario import NotCovered

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


@app.command()
def tune(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or path to a YAML file.")],
    policy: Annotated[
        str,
        typer.Option(
            help="Heuristic to tune: base_stock, capped_base_stock, s_S, r_Q, echelon_base_stock, "
            "base_stock_cutoff."
        ),
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
    per_sku: Annotated[
        bool,
        typer.Option(
            "--per-sku",
            help="Then one value of each knob per role and SKU, refined from the per-role result: every SKU "
            "scored by its own cost in one batch per knob, a move kept only if it lowers the total cost "
            "on fresh paths. Saved as <policy>_per_sku (evaluate it as --policies <policy>_per_sku).",
        ),
    ] = False,
    sku_episodes: Annotated[
        int, typer.Option(min=2, help="Common paths per per-SKU batch (and per acceptance check).")
    ] = 64,
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
    from restock.agents.heuristics import TUNABLE
    from restock.agents.tuning import tune as run_tune
    from restock.agents.tuning import tune_work

    if policy not in TUNABLE:
        fail(f"--policy: {policy!r} cannot be tuned (choose from {', '.join(TUNABLE)})")
    if per_sku and per_node:
        fail("--per-sku and --per-node: per-SKU knobs are per role; choose one")
    c = load_or_fail(scenario)
    max_episodes = max(max_episodes, episodes)
    work = tune_work(c, policy, episodes, eval_episodes, rounds, 5, max_episodes, per_node, per_sku)
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
            shield=None if no_shield else shield_factory(False),
            progress=lambda n: prog.advance(task, n),
            max_episodes=max_episodes,
            per_node=per_node,
            discount=c.config.discount if discounted else None,
            per_sku=per_sku,
            sku_episodes=sku_episodes,
        )
        prog.update(task, completed=work)
    save_params(out, res)
    if json_out:
        print(json.dumps({"name": res.label, **res.to_json()}, indent=2))
        return
    m, (lo, hi) = res.cost_per_period["mean"], res.cost_per_period["ci95"]
    if per_sku:
        roles = {u: {k: v for k, v in d.items() if not isinstance(v, list)} for u, d in res.knobs.items()}
        moves = [h for h in res.history if h.get("stage") == "sku"]
        kept = sum(h["accepted"] for h in moves)
        console.print(
            f"[bold]{res.label}[/] on [bold]{c.config.name}[/]: per-role knobs {json.dumps(roles)}, then "
            f"per SKU: {kept} of {len(moves)} per-SKU moves kept (each checked on {sku_episodes} fresh paths)"
        )
    else:
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
    if per_sku:
        pass  # the per-SKU moves and their checks are summarised above (history in the parameter file)
    elif fc is None:
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
    console.print(f"saved to {out} as {res.label}")
