"""`restock demo`: the main job (what `make demo` runs), in about ten minutes on a small machine.

On a lost-sales store (Zipkin's instance with lead time 2 and penalty 19: `lost_sales/ls_L2_p19`) it
solves the exact optimum, tunes two classical heuristics by simulation, improves the better one with
the dcl trainer (behaviour cloning, then approximate policy iteration with rollouts: the trainer that
gives a real improvement in minutes on this machine, docs/results/lost_sales.md), evaluates every policy
on the same held-out paths with paired intervals, and serves the learned policy: ONNX export, registry,
the HTTP shim on 127.0.0.1, one decision, the audit chain verified. It ends with a table that says what
each row is. (The RLlib network demo of earlier versions trained for four minutes and learned nothing:
`restock train default --trainer rllib` is the command for that scenario.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich import box
from rich.table import Table

from restock.cli.common import app, console, err, load_or_fail, shield_factory

SCENARIO = "lost_sales/ls_L2_p19"
EVAL_SEED = 4242  # held-out paths: tuning uses seeds 1000/2000 and dcl its own, never this one
HEURISTICS = {  # name: (row label, what it is)
    "base_stock": (
        "base-stock",
        "each period, order up to S units in stock and on order (S tuned by simulation)",
    ),
    "capped_base_stock": (
        "capped base-stock",
        "the same, but at most c units an order (S and c tuned by simulation)",
    ),
}


class _Steps:
    """`[i/n] what` lines with the time each step took, so a log shows where the minutes went."""

    def __init__(self, n: int):
        self.n, self.i, self.t0 = n, 0, time.monotonic()
        self._t = self.t0

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        if self.i:
            console.print(f"[dim]  (step {self.i} took {now - self._t:.0f} s)[/]")
        self.i, self._t = self.i + 1, now
        console.rule(f"[bold][{self.i}/{self.n}] {what}[/]", align="left")

    def done(self) -> float:
        now = time.monotonic()
        console.print(f"[dim]  (step {self.i} took {now - self._t:.0f} s)[/]")
        return now - self.t0


@app.command()
def demo(
    episodes: Annotated[
        int, typer.Option(min=2, help="Held-out sample paths for the evaluation (1,000 periods each).")
    ] = 100,
    out: Annotated[
        Path, typer.Option(help="Folder for parameters, the run, the report, the registry.")
    ] = Path("out/demo"),
    oracle_episodes: Annotated[
        int, typer.Option(min=0, help="Paths on which to solve the perfect-information LP (0: none).")
    ] = 2,
    iterations: Annotated[
        int, typer.Option(min=0, help="dcl policy iterations after behaviour cloning (0: no training).")
    ] = 2,
    states: Annotated[int, typer.Option(min=100, help="States sampled per dcl iteration.")] = 1000,
    train_minutes: Annotated[
        float, typer.Option(min=0.5, help="Wall-clock cap on training (checked between iterations).")
    ] = 4.0,
) -> None:
    """The main job (what `make demo` runs): optimum, heuristics, a learned policy that beats them, serving.

    On `lost_sales/ls_L2_p19` (one store, lost sales, lead time 2, Poisson demand): the exact optimum by
    dynamic programming, base-stock and capped base-stock tuned by simulation, the dcl trainer started
    from the tuned capped base-stock, an evaluation of every policy on the same held-out paths (paired
    95% intervals, the perfect-information bound on a few paths), then the learned policy exported to
    ONNX, registered, served on 127.0.0.1, asked for one decision, its audit chain verified. About ten
    minutes on an idle 2-core machine.
    """
    from restock.agents.catalogue import load_params, save_params
    from restock.agents.exact import exact_optimum
    from restock.agents.tuning import tune as run_tune
    from restock.eval.evaluate import evaluate, parse_policies
    from restock.eval.report import write_report

    step = _Steps(6)
    step("the scenario and its exact optimum")
    c = load_or_fail(SCENARIO)
    console.print(f"{SCENARIO}: {c.config.description}", highlight=False)
    opt = exact_optimum(c)
    console.print(
        f"exact optimum ({opt['method']}, restock optimum {SCENARIO}): [bold]{opt['average_cost']:.4f}[/] "
        "per period, long-run average: no policy that does not see the future does better",
        highlight=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    params = out / "params.json"
    if params.exists():
        params.unlink()

    step("tuning two classical heuristics by simulation (common random numbers)")
    for pol in HEURISTICS:
        res = run_tune(
            c, pol, episodes=16, eval_episodes=16, rounds=3, max_episodes=64, shield=shield_factory(False)
        )
        save_params(params, res)
        m, (lo, hi) = res.cost_per_period["mean"], res.cost_per_period["ci95"]
        console.print(
            f"{pol}: knobs {res.knobs['store'] if 'store' in res.knobs else res.knobs}; cost per period "
            f"{m:.3f} (95% CI {lo:.3f} .. {hi:.3f}) on 16 held-out paths, {res.seconds:.0f} s",
            highlight=False,
        )

    run_dir = None
    if iterations > 0:
        step(f"training: dcl from the tuned capped base-stock ({iterations} iterations)")
        run_dir = _demo_train(out, params, iterations, states, train_minutes)
        if run_dir is None:
            err.print("[red]training failed; the demo goes on with the heuristics[/]")
    else:
        step("training skipped (--iterations 0)")

    step(f"evaluating every policy on the same {episodes} held-out paths")
    names = [*HEURISTICS] + ([str(run_dir)] if run_dir else []) + ["dp_optimal"]
    if oracle_episodes > 0 and _have_oracle():
        names.append("oracle")
    specs, notes = parse_policies(",".join(names), c, load_params(params))
    if run_dir is not None:
        import torch  # only here: the learned policy runs as a torch network in evaluation

        torch.set_num_threads(1)  # a small network: extra threads only contend on a small machine
    res = evaluate(
        c,
        specs,
        episodes=episodes,
        seed=EVAL_SEED,
        baseline="capped_base_stock",
        shield_factory=shield_factory(False),
        oracle_episodes=oracle_episodes,
        notes=notes,
    )
    files = write_report(res, out / "report", title=f"restock demo: {SCENARIO}")
    learned = next((s.name for s in specs if s.run), None)
    _print_table(res, opt, learned, c.horizon, SCENARIO)
    console.print(f"full report (every KPI, plots): {files['report.md']}")

    step("export (ONNX), register, serve on 127.0.0.1, one decision, audit")
    served = _demo_serve(c, out, params, run_dir, heuristic="capped_base_stock")

    step("where things are")
    console.print(f"report:        {files['report.md']}")
    if run_dir is not None:
        console.print(f"training run:  {run_dir}  (tensorboard --logdir {run_dir.parent})")
    console.print(f"artifact:      {out / 'artifact'}  (manifest.json, ONNX, scenario.yaml)")
    console.print(f"registry:      {out / 'registry'}  (restock serve {out / 'registry'})")
    console.print(
        f"audit store:   {out / 'registry' / 'audit.db'}  (restock audit verify {out / 'registry' / 'audit.db'})"
    )
    took = step.done()
    console.print(f"demo finished in {took / 60:.1f} minutes")
    if (iterations > 0 and run_dir is None) or not served:
        raise typer.Exit(1)


def _paired_pct(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% interval of the per-path difference a - b, in % of b's mean cost."""
    from restock.envs.kpis import mean_ci

    r = mean_ci((np.asarray(a, float) - np.asarray(b, float)) / float(np.mean(b)) * 100)
    return r["mean"], r["ci95"][0], r["ci95"][1]


def _print_table(res, opt: dict, learned: str | None, horizon: int, scenario: str = SCENARIO) -> None:
    """The demo's table: one row per policy, cost per period, paired differences to the best heuristic
    and to the optimal policy; then what each row is and what the learned policy's interval says."""
    cost = {p: np.asarray(v["total_cost"], float) / horizon for p, v in res.per_episode.items()}
    best = min(HEURISTICS, key=lambda p: cost[p].mean())
    n = len(cost[best])
    rows = [(p, HEURISTICS[p][0]) for p in HEURISTICS]
    if learned is not None:
        rows.append((learned, "learned (dcl)"))
    rows.append(("dp_optimal", "optimal policy (DP)"))
    if "oracle" in cost:
        rows.append(("oracle", f"perfect information ({len(cost['oracle'])} p.)"))
    t = Table(
        title=f"{scenario}: cost per period, {n} held-out paths x {horizon} periods",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    t.add_column("policy")
    t.add_column("cost", justify="right")
    t.add_column("vs best heuristic [95% CI]", justify="right", no_wrap=True)
    t.add_column("vs optimal", justify="right")
    for p, label in rows:
        if p not in cost:
            continue
        k = len(cost[p])  # the perfect-information bound: its first k paths
        if p == best:
            vs_best = "(best heuristic)"
        elif p == "oracle":  # a few paths: an interval would say little
            vs_best = f"{_paired_pct(cost[p], cost[best][:k])[0]:+.1f}%"
        else:
            vs_best = _pct(*_paired_pct(cost[p], cost[best][:k]))
        vs_opt = "" if p == "dp_optimal" else f"{_paired_pct(cost[p], cost['dp_optimal'][:k])[0]:+.2f}%"
        t.add_row(label, f"{cost[p].mean():.3f}", vs_best, vs_opt)
    console.print(t)
    say = lambda s: console.print(s, highlight=False)  # noqa: E731
    say(
        "cost: holding plus lost-sales penalty per period, mean over the paths; every row ran on the same "
        "demand (common random numbers), so the 'vs' columns are paired differences per path, in % of "
        "the other policy's cost (negative: cheaper)."
    )
    for p, (label, what) in HEURISTICS.items():
        say(f"- {label}: {what}" + (" (the best heuristic here)" if p == best else ""))
    if learned is not None:
        say(f"- learned (dcl): a network cloned from the tuned {best}, then improved by dcl ({learned})")
    say(
        f"- optimal policy (DP): the exact optimum, `restock optimum {scenario}` (long-run average "
        f"{opt['average_cost']:.4f} a period), simulated on the same paths: no policy that does not see "
        "the future does better on average"
    )
    if "oracle" in cost:
        why = ""
        if cost["oracle"].mean() < 0.05 * opt["average_cost"]:
            why = (
                " (here about 0: knowing the demand, one orders exactly what will sell L periods "
                "later, so nothing is held and no sale is lost)"
            )
        say(
            f"- perfect information ({len(cost['oracle'])} p. = on the first {len(cost['oracle'])} paths "
            "only): on each path, the cheapest orders in hindsight, knowing all future demand (a lower "
            "bound per path: mixed-integer per SKU where it closes, its LP relaxation otherwise). No "
            "policy can reach it: the gap to it is what not knowing the future costs, not a "
            f"shortfall of the policy{why}"
        )
    if learned is not None:
        m, lo, hi = _paired_pct(cost[learned], cost[best])
        if hi < 0:
            verdict = f"cheaper than the best heuristic ({best}): the 95% interval excludes zero"
        elif lo <= 0:
            verdict = f"not told apart from {best} in this run: the 95% interval includes zero"
        else:
            verdict = f"dearer than {best}: the 95% interval excludes zero"
        say(f"learned policy vs the best heuristic: {_pct(m, lo, hi)}, {verdict}.")


def _pct(m: float, lo: float, hi: float) -> str:
    d = 2 if max(abs(lo), abs(hi)) < 10 else 1
    return f"{m:+.{d}f}% [{lo:+.{d}f}, {hi:+.{d}f}]"


def _demo_train(out: Path, params: Path, iterations: int, states: int, minutes: float) -> Path | None:
    """`restock train SCENARIO --trainer dcl` in a child process (its own progress bar and log lines),
    warm-started from the tuned capped base-stock; returns the run directory, or None when it failed."""
    import subprocess

    import yaml

    exp = {  # configs/experiments/lost_sales_dcl.yaml with a demo's budget
        "name": "demo",
        "trainer": "dcl",
        "roles": ["store"],
        "minutes": float(minutes),
        "baseline": "capped_base_stock",
        "baseline_params": str(params.resolve()),
        "eval_episodes": 64,
        "network": {"hidden": [64, 64]},
        "dcl": {
            "iterations": int(iterations),
            "states": int(states),
            "rollouts": 32,
            "rollouts_growth": 1.5,
            "max_rollouts": 64,
            "horizon": 50,
            "window": 4,
            "confidence": 2.0,
        },
    }
    exp_file = out / "demo_experiment.yaml"
    exp_file.write_text(yaml.safe_dump(exp, sort_keys=False))
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    before = set(runs.iterdir())
    cmd = [sys.executable, "-m", "restock.cli", "train", SCENARIO, "--trainer", "dcl"]
    cmd += ["--config", str(exp_file), "--out", str(runs)]
    console.print("$ restock " + " ".join(cmd[3:]), highlight=False)
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")  # small networks: one math thread per process
    env.setdefault("MKL_NUM_THREADS", "1")
    res = subprocess.run(cmd, env=env)
    new = sorted(set(runs.iterdir()) - before)
    run_dir = new[-1] if new else None
    if res.returncode != 0 or run_dir is None or not list((run_dir / "policies").glob("*.pt")):
        err.print(f"[red]the dcl run failed (exit {res.returncode})[/]")
        return None
    try:  # how far dcl got: the time cap is checked between iterations
        summ = json.loads((run_dir / "run.json").read_text())["summary"]
        done = len(summ.get("iterations", []))
        capped = any(r.get("stopped_for_time") for r in summ.get("roles", {}).values())
        console.print(
            f"trained: {run_dir} ({done} of {iterations} iteration(s)"
            + (f"; stopped by the {minutes:g}-minute cap" if capped else "")
            + ")",
            highlight=False,
        )
    except (OSError, KeyError, ValueError):
        console.print(f"trained: {run_dir}", highlight=False)
    return run_dir


def _demo_serve(c, out: Path, params: Path, run_dir: Path | None, heuristic: str = "base_stock") -> bool:
    """Export (the learned run, else the tuned heuristic), register, serve on 127.0.0.1, ask for one
    decision, verify the audit store's hash chain."""
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

    art, reg = out / "artifact", out / "registry"
    knobs = load_params(params)["policies"][heuristic]["knobs"]
    try:
        if run_dir is not None:
            from restock.training.export import export_run

            m = export_run(run_dir, art, overwrite=True, log=lambda s: console.print(s, highlight=False))
        else:
            m = export_heuristic(heuristic, knobs, c, art, source={"params": str(params)}, overwrite=True)
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
    # a store's state after ten periods of the tuned heuristic, as a retailer would send it
    env = ArrayEnv(c, num_envs=1, seed=123, shield=Shield(c))
    env.reset()
    pol = JointPolicy(make_policy(heuristic, knobs))
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
    from restock.serving.audit import open_store

    db = reg / "audit.db"
    store = open_store(str(db), readonly=True)
    try:
        rep = store.verify()
    finally:
        store.close()
    state = "ok" if rep["ok"] else "BROKEN"
    console.print(
        f"audit store {db}: {rep['decisions']['records']:,} decision(s), hash chain {state} "
        f"(restock audit verify {db})",
        highlight=False,
    )
    return bool(rep["ok"])


def _have_oracle() -> bool:
    try:
        import restock.eval.oracle  # noqa: F401
    except ImportError:
        return False
    return True
