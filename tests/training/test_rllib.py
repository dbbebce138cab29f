"""RLlib trainer: a tiny-budget run end to end (local Ray), and joining a Ray head started by the test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

VENV_BIN = Path(sys.executable).parent


def _run_train(args: list[str], tmp_path: Path, extra_env: dict | None = None, timeout: int = 420):
    env = {**os.environ, "PYTHONHASHSEED": "0", "RAY_USAGE_STATS_ENABLED": "0", **(extra_env or {})}
    cmd = [
        sys.executable,
        "-m",
        "restock.cli",
        "train",
        "tiny",
        "--trainer",
        "rllib",
        "--steps",
        "400",
        "--out",
        str(tmp_path / "runs"),
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=Path(__file__).parents[2]
    )


def _run_dir(tmp_path: Path) -> Path:
    runs = sorted((tmp_path / "runs").iterdir())
    assert runs, "no run directory"
    return runs[-1]


@pytest.mark.slow
def test_rllib__local_run_writes_weights_that_evaluate(tmp_path):
    r = _run_train([], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    run = _run_dir(tmp_path)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["trainer"] == "rllib"
    assert (run / "policies" / "store.pt").exists() and (run / "checkpoints" / "latest.json").exists()
    tags = {line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {"charts/SPS", "charts/episodic_cost", "inventory/fill_rate", "losses/policy_loss"} <= tags
    from agents.learned import load_learned_policy
    from envs.compile import compile_scenario
    from envs.config import load_scenario
    from eval.rollout import rollout

    c = compile_scenario(load_scenario("tiny"))
    res = rollout(c, load_learned_policy(run, c), episodes=2, seed=3)
    assert res.cost.sum() > 0


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.slow
def test_rllib__joins_a_ray_head_started_here(tmp_path):
    """Start a head on 127.0.0.1, train through --ray-address, then stop only that head's processes."""
    port = _free_port()
    raytmp = Path("/tmp") / f"rs-ray-{os.getpid()}"  # short: Ray's socket paths are limited to 107 chars
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={raytmp}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        r = _run_train(
            ["--ray-address", f"127.0.0.1:{port}"], tmp_path, extra_env={"RAY_AUTH_MODE": "disabled"}
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        run = _run_dir(tmp_path)
        assert json.loads((run / "run.json").read_text())["status"] == "done"
        assert "ray_address" in (run / "config.yaml").read_text()
    finally:
        # stop only this head (never `ray stop`, which would kill every Ray instance on the machine)
        _kill_tree(_pids_mentioning(str(raytmp)))


def _pids_mentioning(text: str) -> set[int]:
    """Processes whose full command line (from /proc, never truncated like `ps` output) contains text."""
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.add(int(d.name))
            except OSError:
                pass
    return pids - {os.getpid()}


def _kill_tree(roots: set[int]) -> None:
    """SIGTERM, then SIGKILL, the given processes and all their descendants (Ray's workers included)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, grew = set(roots), True
    while grew:
        kids = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= kids
        grew = bool(kids)
    for sig in (15, 9):
        for pid in tree:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(2 if sig == 15 else 0)
