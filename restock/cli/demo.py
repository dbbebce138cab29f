"""`restock demo`: the main job (what `make demo` runs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from restock.cli.common import app, console, err, kpi_table, load_or_fail, progress_bar, shield_factory


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
    from restock.envs.kpis import HEADLINE
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
                shield=shield_factory(False),
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
            shield_factory=shield_factory(False),
            oracle_episodes=oracle_episodes,
            progress=lambda n: prog.advance(task, n),
            notes=notes,
        )
    files = write_report(res, out / "report", title="restock demo: default scenario")
    keys = list(HEADLINE)
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
        (Path(__file__).resolve().parents[2] / "configs" / "experiments" / "smoke.yaml").read_text()
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
            from restock.training.export import export_run

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
