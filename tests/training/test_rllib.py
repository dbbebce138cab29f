"""RLlib trainer: a tiny-budget run end to end (local Ray), and joining a Ray head started by the test."""

from __future__ import annotations

import json
import os
import shutil
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


def _metrics(run: Path) -> list[tuple[int, str, float]]:
    rows = []
    for line in (run / "metrics.csv").read_text().splitlines()[1:]:
        s, tag, v = line.split(",")
        rows.append((int(s), tag, float(v)))
    return rows


def _write_exp(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


FAST = """name: fast
num_envs: 4
bc_episodes: 2
bc_epochs: 1
eval_episodes: 2
checkpoint_every: 100000
ppo:
  minibatch_size: 64
  n_epochs: 2
"""


@pytest.mark.slow
def test_rllib__local_run_evaluates_keeps_best_and_logs_rllib_metrics(tmp_path):
    """One learner in the driver (N = 0): held-out greedy evaluation every eval_every env steps (the
    behaviour-cloned start included), the best weights deployed, RLlib's metrics under rllib/, the real
    approx_kl and a positive entropy."""
    exp = _write_exp(tmp_path, FAST + "eval_every: 128\n")
    r = _run_train(["--config", str(exp), "--steps", "384"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    run = _run_dir(tmp_path)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["trainer"] == "rllib"
    assert info["summary"]["learners"] == {"num_learners": 0, "remote": False}
    assert (run / "policies" / "store.pt").exists() and (run / "checkpoints" / "latest.json").exists()
    rows = _metrics(run)
    tags = {t for _, t, _ in rows}
    assert {"charts/SPS", "charts/episodic_cost", "inventory/fill_rate", "losses/policy_loss"} <= tags
    # RLlib's own learner and env-runner results, under rllib/
    assert "rllib/env_runners/episode_return_mean" in tags
    assert "rllib/learners/store_policy/entropy" in tags and "rllib/learners/store_policy/vf_loss" in tags
    assert not any("/agent_" in t for t in tags)  # per-agent entries are left out
    # entropy is the entropy (positive); approx_kl is measured (RLlib's mean_kl_loss is 0 here)
    ent = [v for _, t, v in rows if t == "losses/entropy"]
    kl = [v for _, t, v in rows if t == "losses/approx_kl"]
    assert ent and all(v > 0 for v in ent)
    assert kl and all(v > 0 for v in kl)
    assert all(v == 0 for _, t, v in rows if t == "rllib/learners/store_policy/mean_kl_loss")
    # keep_best: evaluations at 0 (the behaviour-cloned start), every 128 steps and at the end
    evals = [(s, v) for s, t, v in rows if t == "eval/episodic_cost"]
    steps = [s for s, _ in evals]
    assert steps[0] == 0 and len(evals) >= 3 and steps == sorted(steps)
    sel = info["summary"]["roles"]["store"]["selected"]
    assert sel["eval_cost"] == pytest.approx(min(v for _, v in evals))
    assert sel["env_steps"] == min(evals, key=lambda e: e[1])[0]
    import torch

    deployed = torch.load(run / "policies" / "store.pt", weights_only=True)
    best = torch.load(run / "best" / "policies" / "store.pt", weights_only=True)
    assert deployed.keys() == best.keys() and all(torch.equal(deployed[k], best[k]) for k in best)
    from restock.agents.learned import load_learned_policy
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.eval.rollout import rollout

    c = compile_scenario(load_scenario("tiny"))
    res = rollout(c, load_learned_policy(run, c), episodes=2, seed=3)
    assert res.cost.sum() > 0


@pytest.mark.slow
def test_rllib__two_remote_learners(tmp_path):
    """--num-learners 2: two learner actors (weights read back through LearnerGroup.get_weights)."""
    no_kl = FAST.replace("  n_epochs: 2\n", "  n_epochs: 2\n  target_kl: null\n")
    exp = _write_exp(tmp_path, no_kl + "keep_best: false\neval_every: 1000000\n")
    r = _run_train(["--config", str(exp), "--steps", "256", "--num-learners", "2"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    run = _run_dir(tmp_path)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done"
    assert info["summary"]["learners"] == {"num_learners": 2, "remote": True}
    assert any(t == "losses/policy_loss" for _, t, _ in _metrics(run))
    from restock.agents.learned import load_role

    assert load_role(run, "store") is not None


def test_rllib__approx_kl_is_sb3s_kl_estimator():
    """approx_kl estimates KL(old || new) from actions sampled by the old policy (and is 0 when equal)."""
    import torch
    from restock.training.rllib_learner import approx_kl

    g = torch.Generator().manual_seed(0)
    old = torch.log_softmax(torch.randn(6, generator=g), -1)
    new = torch.log_softmax(old + 0.4 * torch.randn(6, generator=g), -1)
    a = torch.multinomial(old.exp(), 400_000, replacement=True, generator=g)
    exact = float((old.exp() * (old - new)).sum())
    assert exact > 0.01
    assert float(approx_kl(new[a], old[a])) == pytest.approx(exact, rel=0.03)
    assert float(approx_kl(old[a], old[a])) == 0.0


@pytest.mark.parametrize(
    ("args", "yaml_text", "field"),
    [
        (["--trainer", "rllib", "--num-learners", "2"], None, "ppo.target_kl"),
        (["--trainer", "sb3", "--num-learners", "2"], None, "rllib.num_learners"),
        (["--trainer", "sb3", "--num-env-runners", "2"], None, "rllib.num_env_runners"),
        (
            ["--trainer", "rllib"],
            "ppo:\n  rollout_steps: 16\nrllib:\n  train_batch_size: 100\n",
            "rollout_steps",
        ),
        (["--trainer", "sb3"], "network:\n  centralised_critic: true\n", "network.centralised_critic"),
        (["--trainer", "rllib", "--num-gpus-per-learner", "1"], None, "num_gpus_per_learner"),
    ],
)
def test_train__fields_a_trainer_cannot_honour_exit_2_naming_them(
    tmp_path, monkeypatch, args, yaml_text, field
):
    from typer.testing import CliRunner

    from restock.cli import app

    monkeypatch.setenv("PYTHONHASHSEED", "0")  # no re-exec of the test process
    import torch

    if "--num-gpus-per-learner" in args and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    extra = []
    if yaml_text is not None:
        extra = ["--config", str(_write_exp(tmp_path, yaml_text))]
    out = tmp_path / "runs"
    r = CliRunner().invoke(app, ["train", "tiny", "--steps", "64", "--out", str(out), *args, *extra])
    assert r.exit_code == 2, r.output
    assert field in r.output
    assert not out.exists() or not any(out.iterdir())  # refused before any run directory


@pytest.mark.slow
def test_rllib__target_kl_stops_the_iteration_like_sb3(tmp_path):
    """With a tiny target_kl the first minibatch steps (its policy is the sampling one) and the KL after it
    stops the rest of the iteration: one optimiser step instead of epochs x minibatches."""
    import ray
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.training.common import net_config, observation_stats, prepare_baseline
    from restock.training.experiment import load_experiment
    from restock.training.rllib_train import _quiet, build_config

    _quiet()
    c = compile_scenario(load_scenario("tiny"))
    steps = {}
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for target in (1e-6, None):
            exp = load_experiment(None, steps=128, bc_episodes=0)
            exp.num_envs = 4
            exp.ppo.learning_rate = 1e-2
            exp.ppo.n_epochs = 3
            exp.ppo.minibatch_size = 32
            exp.ppo.target_kl = target
            exp.rllib.train_batch_size = 128
            base = prepare_baseline(c, exp, tmp_path, log=lambda s: None)
            cfgs = {"store": net_config(c, "store", exp, observation_stats(c, "store", base))}
            algo = build_config(c, exp, base, cfgs, shield=False).build_algo()
            try:
                res = algo.train()

                def adam_steps(learner):
                    st = learner.get_optimizer("store_policy").state_dict()["state"]
                    return int(max(float(s["step"]) for s in st.values()))

                steps[target] = [r.get() for r in algo.learner_group.foreach_learner(adam_steps)][0]
                if target is not None:
                    assert res["learners"]["store_policy"]["kl_early_stopped"] == 1.0
            finally:
                algo.stop()
    finally:
        ray.shutdown()
    assert steps[1e-6] == 1
    assert steps[None] >= 6


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so none is handed out twice)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_start(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "ray"), "start", *args], capture_output=True, text=True, env=env, timeout=180
    )


def _node_args(tmp: Path) -> list[str]:
    """Per-node ports chosen free (two nodes share this machine, and other Ray instances may run)."""
    p = _free_ports(7)
    return [
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        f"--temp-dir={tmp}",
        f"--node-manager-port={p[0]}",
        f"--object-manager-port={p[1]}",
        f"--dashboard-agent-listen-port={p[2]}",
        f"--dashboard-agent-grpc-port={p[3]}",
        f"--metrics-export-port={p[4]}",
        f"--runtime-env-agent-port={p[5]}",
        f"--min-worker-port={20000 + (p[6] % 20000)}",
        f"--max-worker-port={20000 + (p[6] % 20000) + 199}",
        "--disable-usage-stats",
    ]


@pytest.mark.heavy
def test_rllib__trains_on_a_two_node_ray_cluster_started_here(tmp_path):
    """A real cluster on 127.0.0.1: `ray start --head` and one worker node (`ray start --address`), each
    with 1 CPU, token authentication on (RAY_AUTH_MODE=token, a fresh RAY_AUTH_TOKEN for the nodes and
    the driver), then

        restock train tiny --trainer rllib --ray-address 127.0.0.1:PORT --num-env-runners 2 --steps 256

    Two env runners of 1 CPU each fit only on two nodes, so the run needs the worker node (and its
    logs show an env runner). Every process started here is stopped afterwards, even on failure
    (never `ray stop`, which would stop every Ray instance on the machine).

    Run: .venv/bin/python -m pytest -m heavy tests/training/test_rllib.py -k two_node_ray_cluster
    """
    import secrets

    root = Path("/tmp") / f"rs-ray-{os.getpid()}"  # short: Ray's socket paths are limited to 107 chars
    head_tmp, worker_tmp = root / "h", root / "w"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    env = {**os.environ, **auth}
    (port,) = _free_ports(1)
    try:
        head = _ray_start(
            ["--head", f"--port={port}", "--include-dashboard=false", *_node_args(head_tmp)], env
        )
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        worker = _ray_start([f"--address=127.0.0.1:{port}", *_node_args(worker_tmp)], env)
        assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
        # the driver without the token is refused by the cluster
        no_token = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}')"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "none")},
        )
        assert no_token.returncode != 0
        r = _run_train(
            [
                "--ray-address",
                f"127.0.0.1:{port}",
                "--num-env-runners",
                "2",
                "--steps",
                "256",
                "--config",
                str(_write_exp(tmp_path, FAST + "eval_every: 1000000\n")),
            ],
            tmp_path,
            extra_env=auth,
            timeout=900,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        run = _run_dir(tmp_path)
        assert json.loads((run / "run.json").read_text())["status"] == "done"
        cfg = (run / "config.yaml").read_text()
        assert f"ray_address: 127.0.0.1:{port}" in cfg and "num_env_runners: 2" in cfg
        worker_logs = [p for p in worker_tmp.rglob("logs/worker-*") if p.is_file()]
        assert any("EnvRunner" in p.read_text(errors="replace") for p in worker_logs), "no env runner there"
    finally:
        _kill_tree(_pids_mentioning(str(root)))
        deadline = time.monotonic() + 20  # killed processes take a moment to leave /proc
        while (left := _pids_mentioning(str(root))) and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes left running: {left}"


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
