"""`restock bench --serving`: decision latency over HTTP under open-loop load, and in-process throughput.

The workload is a 100-SKU store decision on the `default` scenario, served from a registry holding the
base-stock heuristic as an artifact; request templates are real states from shielded simulations (ten
stores, many periods). The HTTP figures come from a load generator running in its own process
(`serving.loadgen`) against a server process the bench starts on 127.0.0.1; every request has a fresh
request_id, so each one is decided and committed to the audit store before it is answered. The
machine's load average is reported with every figure: on a small shared machine other jobs move them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {
    "serving_p99_ms": ("<=", 10.0),
    "serving_errors": ("<=", 0),
    "serving_in_process_decisions_per_s": (">=", 5000.0),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def heuristic_registry(root: str | Path, scenario: str = "default", policy: str = "base_stock") -> Path:
    """A registry with one heuristic artifact (champion of every role)."""
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.serving.artifact import export_heuristic
    from restock.serving.registry import Registry

    root = Path(root)
    c = compile_scenario(load_scenario(scenario))
    art = root / "artifact"
    export_heuristic(policy, {}, c, art, source={"bench": True}, overwrite=True)
    reg = root / "registry"
    Registry(reg).register(art, note="bench")
    return reg


def request_templates(
    scenario: str = "default", periods: int = 30, seed: int = 11, role: str = "store"
) -> list[dict[str, Any]]:
    """Decision requests from shielded base-stock simulations (one per node of ``role`` and period)."""
    from restock.agents.base import JointPolicy
    from restock.agents.catalogue import make_policy
    from restock.agents.shield import Shield
    from restock.envs.array_env import ArrayEnv
    from restock.envs.roles import role_nodes
    from restock.serving.schema import request_from_state

    env = ArrayEnv(scenario, num_envs=1, seed=seed, shield=Shield())
    env.reset()
    pol = JointPolicy(make_policy("base_stock", {}))
    pol.bind(env.compiled)
    nodes = role_nodes(env.compiled, role)
    out = []
    for t in range(min(periods, env.horizon - 1)):
        for n in nodes:
            out.append(request_from_state(env.compiled, env.state, 0, int(n), f"t{t}-n{n}"))
        env.step_qty(pol.propose(env).qty)
    return out


def start_server(
    registry: str | Path, port: int, durability: str = "full", audit: str | None = None, env=None
):
    """`restock serve` in a child process (returns the Popen); see `wait_ready`. Its stderr goes to a
    temporary file (``proc.log``), never to a pipe nobody drains."""
    # absolute paths: the child runs in the repository root, the caller may be anywhere
    cmd = [sys.executable, "-m", "restock.cli", "serve", str(Path(registry).resolve()), "--port", str(port)]
    cmd += ["--durability", durability]
    if audit:
        cmd += ["--audit", audit if "://" in audit else str(Path(audit).resolve())]
    log = tempfile.NamedTemporaryFile(prefix="restock-serve-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=str(Path(__file__).resolve().parents[1])
    )
    proc.log = log.name
    log.close()
    return proc


def wait_ready(port: int, proc=None, timeout: float = 180.0) -> dict:
    t0 = time.time()
    url = f"http://127.0.0.1:{port}/healthz"
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            log = getattr(proc, "log", None)
            err = Path(log).read_text(errors="replace") if log and Path(log).exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server on port {port} not ready after {timeout:.0f} s")


def stop_server(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = getattr(proc, "log", None)
    if log:
        Path(log).unlink(missing_ok=True)


def run_loadgen(
    port: int, templates_file: Path, rate: float, duration: float, prefix: str, connections: int = 64
):
    """The load generator in its own process; returns its JSON result."""
    out = templates_file.with_name(f"load-{prefix}.json")
    cmd = [
        sys.executable,
        "-m",
        "restock.serving.loadgen",
        "--port",
        str(port),
        "--templates",
        str(templates_file),
    ]
    cmd += ["--rate", str(rate), "--duration", str(duration), "--prefix", prefix, "--out", str(out)]
    cmd += ["--connections", str(connections)]
    subprocess.run(cmd, check=True, cwd=str(Path(__file__).resolve().parents[1]), timeout=duration * 4 + 120)
    return json.loads(out.read_text())


def bench_in_process(registry: Path, templates: list[dict], seconds: float = 5.0) -> dict[str, float]:
    """Decisions per second through `DecisionService`, in this process, on one thread. The service is
    set up as `restock serve` sets it up (loaded, warmed up, then `serving.service.settle_gc`).

    ``serving_in_process_compute_single_per_s``
        `DecisionService.compute` of one already-validated request per call: routing, the state
        written into the kernel, ``observe`` (observation and mask), the policy (ONNX session or
        heuristic), levels to quantities, the shield, the demand-anomaly guard and the unchained
        decision record. No parsing, no hashing of the request, no audit write.
    ``serving_in_process_compute_batched_per_s``
        the same with 64 requests per call (what the HTTP server does with concurrent requests).
    ``serving_in_process_decisions_per_s`` (the target figure)
        the full decision path, `decide_many` with 64 requests of one period (as a replenishment run
        asks for every store at once): JSON-like dicts validated (pydantic, then against the
        scenario), the idempotency lookup, everything ``compute`` does, the request digest, the record
        chained and hashed, the response built, and the rows committed to the SQLite audit store in
        one transaction (synchronous=FULL: one fsync per call) before ``decide_many`` returns.
    ``serving_in_process_single_committed_per_s``
        the full path for one request per call (`decide`): one transaction and fsync per decision.
    """
    from restock.serving.service import DecisionService, settle_gc

    res: dict[str, float] = {}
    by_period: dict[int, list[dict]] = {}
    for t in templates:
        by_period.setdefault(t["period"], []).append(t)
    periods = sorted(by_period)
    db = registry / "inproc.db"
    svc = DecisionService(registry, audit=f"sqlite:///{db}", durability="full")
    counter = [0]

    def batch(size: int = 64) -> list[dict]:
        same = by_period[periods[counter[0] % len(periods)]]
        out = []
        for i in range(size):
            out.append({**same[i % len(same)], "request_id": f"ip-{counter[0]}-{i}"})
        counter[0] += 1
        return out

    def rate(fn, per_call: int) -> float:
        fn()  # warm up (contexts of this batch size)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += per_call
        return n / (time.perf_counter() - t0)

    try:
        parsed = [svc.parse(t) for t in templates]
        fixed = [svc.parse(r) for r in batch()]
        settle_gc()  # after the fixtures too: what a full collection walks is then what the server's would
        i = [0]

        def one() -> None:
            svc.compute([parsed[i[0] % len(parsed)]])
            i[0] += 1

        res["serving_in_process_compute_single_per_s"] = rate(one, 1)
        res["serving_in_process_compute_batched_per_s"] = rate(lambda: svc.compute(fixed), 64)
        res["serving_in_process_decisions_per_s"] = rate(lambda: svc.decide_many(batch()), 64)
        res["serving_in_process_single_committed_per_s"] = rate(lambda: svc.decide(batch(1)[0]), 1)
        res["serving_in_process_audit_chain_ok"] = bool(svc.store.verify()["ok"])
    finally:
        svc.close()
    return res


def run_serving_bench(
    rate: float = 500.0,
    duration: float = 60.0,
    durabilities: tuple[str, ...] = ("full", "normal"),
    in_process_seconds: float = 5.0,
    workdir: str | Path | None = None,
    artifact: str | Path | None = None,
) -> dict[str, Any]:
    """Every serving figure, measured now on this machine (keys prefixed ``serving_``). ``artifact``: serve
    this exported artifact (for example a learned ONNX policy for `default`) instead of base-stock."""
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="restock-serving-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    if artifact is None:
        reg = heuristic_registry(tmp)
        served = "base_stock artifact"
    else:
        from restock.serving.registry import Registry

        reg = tmp / "registry"
        Registry(reg).register(Path(artifact), note="restock bench --serving")
        manifest = json.loads((Path(artifact) / "manifest.json").read_text())
        served = f"artifact {artifact}: " + ", ".join(
            f"{r} {v.get('policy')}" for r, v in manifest.get("roles", {}).items()
        )
    templates = request_templates()
    tfile = tmp / "templates.jsonl"
    tfile.write_text("\n".join(json.dumps(t) for t in templates) + "\n")
    out: dict[str, Any] = {
        "serving_workload": f"default scenario, 100-SKU store decisions ({served}), {len(templates)} "
        f"distinct states; {rate:g} requests/s for {duration:g} s, open loop, separate load process",
        "serving_loadavg_start": list(os.getloadavg()),
    }
    out.update(bench_in_process(reg, templates, in_process_seconds))
    out["serving_loadavg_after_in_process"] = list(os.getloadavg())
    for durability in durabilities:
        port = free_port()
        audit = f"sqlite:///{tmp / f'http-{durability}.db'}"
        proc = start_server(reg, port, durability=durability, audit=audit)
        try:
            wait_ready(port, proc)
            run_loadgen(port, tfile, rate=min(rate, 100.0), duration=3.0, prefix=f"warm-{durability}")
            r = run_loadgen(port, tfile, rate=rate, duration=duration, prefix=f"run-{durability}")
        finally:
            stop_server(proc)
        from restock.serving.audit import open_store

        store = open_store(audit)
        try:
            chain_ok = bool(store.verify()["ok"])
            stored = store.count()
        finally:
            store.close()
        sfx = "" if durability == "full" else f"_{durability}"
        out[f"serving_p50_ms{sfx}"] = r["p50_ms"]
        out[f"serving_p90_ms{sfx}"] = r["p90_ms"]
        out[f"serving_p99_ms{sfx}"] = r["p99_ms"]
        out[f"serving_p999_ms{sfx}"] = r["p999_ms"]
        out[f"serving_max_ms{sfx}"] = r["max_ms"]
        out[f"serving_errors{sfx}"] = r["errors"]
        out[f"serving_requests{sfx}"] = r["requests"]
        out[f"serving_achieved_rps{sfx}"] = r["achieved_rate"]
        out[f"serving_loadavg{sfx}"] = [round(x, 2) for x in r["loadavg_end"]]
        out[f"serving_audit_rows{sfx}"] = stored
        out[f"serving_audit_chain_ok{sfx}"] = chain_ok
    out["targets_met"] = {
        k: (out[k] >= v if op == ">=" else out[k] <= v)
        for k, (op, v) in TARGETS.items()
        if k in out and isinstance(out[k], int | float) and not np.isnan(out[k])
    }
    return out


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--durability", default="full,normal")
    a = ap.parse_args()
    print(json.dumps(run_serving_bench(a.rate, a.duration, tuple(a.durability.split(","))), indent=2))
