"""Benchmarks behind `restock bench`: every figure is measured in the same run, on this machine.

Speed targets live here, never in timed tests. Each measurement warms up (compilation) first and then
times a fixed amount of work; numbers are rates over wall-clock time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import numpy as np
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.demand import sample_block
from restock.envs.reference import reference_step
from restock.envs.types import new_step_out, new_work


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
    }


def _timed(fn, min_seconds: float = 1.0, min_reps: int = 3) -> float:
    """Seconds per call of fn, averaged over at least min_reps calls and min_seconds."""
    fn()  # warm up
    reps = 0
    t0 = time.perf_counter()
    while True:
        fn()
        reps += 1
        dt = time.perf_counter() - t0
        if reps >= min_reps and dt >= min_seconds:
            return dt / reps


def _batch(scenario: str, E: int):
    c = compile_scenario(load_scenario(scenario))
    s = c.new_state(E)
    w = new_work(E, c.N, c.M, c.K)
    out = new_step_out(E, c.N)
    keys = np.arange(E, dtype=np.uint64)
    kn.reset_envs(c.params, s, np.ones(E, np.int8), keys, c.init_on_hand, c.init_pipe, out)
    dem = np.zeros((E, 1, c.S, c.K), np.int32)
    sample_block(c.demand, np.uint64(1), np.arange(E), 0, dem)
    # orders: each node's mean demand, a steady flow that keeps every code path busy
    qty = np.broadcast_to(np.round(c.params.mean).astype(np.int32), (E, c.N, c.K)).copy()
    return c, s, w, out, dem[:, 0], qty


def bench_kernel(seconds: float = 1.0) -> dict[str, float]:
    res: dict[str, float] = {}
    # about 1M store-SKU pairs: 1,000 copies of `default` (10 stores x 100 SKUs each)
    c, s, w, out, dem, qty = _batch("default", 1000)
    pairs = 1000 * c.S * c.K
    res["kernel_pairs"] = pairs

    def run_kernel():
        s.t[:] = 10  # stay mid-horizon: the kernel does the same work every period
        kn.step_par(c.params, s, w, qty.copy(), dem, out)

    res["kernel_pair_updates_per_s"] = pairs / _timed(run_kernel, seconds)
    s0 = type(s)(*(a.copy() for a in s))

    def run_ref():
        reference_step(c.params, s0, qty, dem)

    res["numpy_reference_pair_updates_per_s"] = pairs / _timed(run_ref, seconds, min_reps=2)
    res["kernel_vs_numpy"] = res["kernel_pair_updates_per_s"] / res["numpy_reference_pair_updates_per_s"]
    # about 10k pairs: 10 copies, serial
    c2, s2, w2, out2, dem2, qty2 = _batch("default", 10)

    def run_small():
        s2.t[:] = 10
        kn.step(c2.params, s2, w2, qty2.copy(), dem2, out2)

    res["kernel_small_pair_updates_per_s"] = 10 * c2.S * c2.K / _timed(run_small, seconds)
    return res


def bench_demand(seconds: float = 1.0) -> dict[str, float]:
    c = compile_scenario(load_scenario("large"))
    out = np.zeros((1, 16, c.S, c.K), np.int32)
    paths = np.arange(1)

    def run():
        sample_block(c.demand, np.uint64(3), paths, 0, out)

    return {"demand_samples_per_s": out.size / _timed(run, seconds)}


def bench_pettingzoo(seconds: float = 2.0) -> dict[str, float]:
    from restock.agents.heuristics import sample_masked_levels
    from restock.envs.pz_env import parallel_env

    env = parallel_env("default", mode="strict")
    obs, _ = env.reset(seed=0)
    agents = env.possible_agents
    core = env.array_env
    nodes = np.arange(len(agents))
    lv = np.zeros((1, len(agents), env.compiled.K), np.int64)

    def actions():
        sample_masked_levels(core.mask, nodes, np.uint64(7), int(core.state.t[0]), lv)
        return {a: lv[0, i] for i, a in enumerate(agents)}

    for _ in range(50):  # warm up
        env.step(actions())
        if not env.agents:
            env.reset()
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(actions())
        steps += 1
        if not env.agents:
            env.reset()
    return {"pettingzoo_default_steps_per_s": steps / (time.perf_counter() - t0)}


def bench_array_env(seconds: float = 1.0) -> dict[str, float]:
    E = 1000
    env = ArrayEnv("default", num_envs=E, auto_reset=True)
    env.reset()
    lv = np.full((E, env.N, env.K), 4, np.int64)
    pairs = E * env.compiled.S * env.K

    def run():
        env.step(lv)

    return {"array_env_default_pair_updates_per_s": pairs / _timed(run, seconds)}


_LARGE_CHILD = r"""
import json, resource, sys, time, numpy as np
from restock.envs.array_env import ArrayEnv
features = sys.argv[1] == "1"
env = ArrayEnv("large", num_envs=1, features=features)
env.reset()
lv = np.full((1, env.N, env.K), 4, np.int64)
env.step(lv)  # compile (cached after the first run)
env.reset(paths=np.array([1]))
t0 = time.perf_counter()
for t in range(env.horizon):
    env.step(lv)
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"large_episode_seconds": dt, "large_peak_rss_mb": rss}))
"""


def _large_child(features: bool) -> dict[str, float]:
    cmd = [sys.executable, "-c", _LARGE_CHILD, "1" if features else "0"]
    return json.loads(
        subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    )


def bench_large() -> dict[str, float]:
    """One 365-period episode of `large` in a fresh process (demand sampling included): time and peak RSS.

    ``large_episode_seconds`` computes full observations every period (the default env);
    ``large_episode_seconds_bounds_only`` only masks and bounds (``ArrayEnv(features=False)``, enough
    for the constant-level policy stepped here and for the heuristics).
    """
    _large_child(True)  # the first run may only compile
    res = _large_child(True)
    lean = _large_child(False)
    res["large_episode_seconds_bounds_only"] = lean["large_episode_seconds"]
    res["large_peak_rss_mb_bounds_only"] = lean["large_peak_rss_mb"]
    return res


SUITES = {
    "kernel": bench_kernel,
    "demand": bench_demand,
    "pettingzoo": bench_pettingzoo,
    "array_env": bench_array_env,
    "large": bench_large,
}

TARGETS = {
    "kernel_pair_updates_per_s": (">=", 1e9),
    "kernel_vs_numpy": (">=", 5.0),
    "demand_samples_per_s": (">=", 2e8),
    "pettingzoo_default_steps_per_s": (">=", 5e4),
    "array_env_default_pair_updates_per_s": (">=", 3e8),
    "large_episode_seconds": ("<=", 1.0),
    "large_peak_rss_mb": ("<=", 1024.0),
}


def run_all(suites: list[str] | None = None, progress=None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in list(SUITES) if suites is None else suites:
        if progress:
            progress(name)
        out.update(SUITES[name]())
    out["targets_met"] = {
        k: (out[k] >= v if op == ">=" else out[k] <= v) for k, (op, v) in TARGETS.items() if k in out
    }
    out["machine"] = machine()
    return out
