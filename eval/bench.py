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
from numba import njit
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


def _pz_steps_per_s(scenario: str, seconds: float) -> float:
    """PettingZoo env steps per second of wall-clock time inside ``env.step`` (strict mode, default
    options): a uniformly random allowed level per SKU, drawn outside the timed call, resets not timed."""
    from restock.agents.heuristics import sample_masked_levels
    from restock.envs.pz_env import parallel_env

    env = parallel_env(scenario, mode="strict")
    env.reset(seed=0)
    agents = env.possible_agents
    core = env.array_env
    nodes = np.arange(len(agents))
    lv = np.zeros((1, len(agents), env.compiled.K), np.int64)

    def actions():
        sample_masked_levels(core.mask, nodes, np.uint64(7), int(core.state.t[0]), lv)
        return {a: lv[0, i].copy() for i, a in enumerate(agents)}

    for _ in range(50):  # warm up
        env.step(actions())
        if not env.agents:
            env.reset()
    steps = 0
    inside = 0.0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        acts = actions()
        t1 = time.perf_counter()
        env.step(acts)
        inside += time.perf_counter() - t1
        steps += 1
        if not env.agents:
            env.reset()
    return steps / inside


class NumpySerialReference:
    """An OR-Gym-shaped 3-stage serial inventory env in pure NumPy (the comparison for small problems).

    Written the way the common Python environments are (OR-Gym's ``InvManagement``-v0, with its
    defaults: 30 periods, lead times 3/5/10, capacities, prices and costs): per-period arrays of the
    whole episode, one demand draw per period (NumPy's Poisson, faster than the ``scipy.stats`` draw
    OR-Gym makes: a generous reference), per-stage Python arithmetic for receipts, capacity and
    upstream-stock clipping, sales, backlog and profit, and a state of on-hand plus the last orders.
    The same period as the test-verified port ``tests/envs/orgym_ref.py`` (which replays given demand
    and is not installed with the package), plus the draw and the state vector a learner would see.
    """

    def __init__(self, horizon: int = 30, seed: int = 0):
        self.m = 3  # stages 0 (retailer) .. 2; stage 3 is the unlimited raw-material source
        self.lead = np.array([3, 5, 10])
        self.cap = np.array([100.0, 90.0, 80.0])
        self.price = np.array([2.0, 1.5, 1.0, 0.75])
        self.order_cost = np.array([1.5, 1.0, 0.75, 0.5])
        self.backlog_cost = np.array([0.10, 0.075, 0.05, 0.025])
        self.hold = np.array([0.15, 0.10, 0.05, 0.0])  # the source holds nothing
        self.alpha = 0.97
        self.horizon = horizon
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self):
        T, m = self.horizon, self.m
        self.period = 0
        self.I = np.zeros((T + 1, m))
        self.T = np.zeros((T + 1, m))
        self.R = np.zeros((T, m))
        self.D = np.zeros(T)
        self.S = np.zeros((T, m + 1))
        self.B = np.zeros((T, m + 1))
        self.P = np.zeros(T)
        self.I[0] = [100.0, 100.0, 200.0]
        self._update_state()
        return self.state

    def _update_state(self):
        n, m = self.period, self.m
        lmax = int(self.lead.max())
        hist = np.zeros(m * lmax)
        if n >= 1:
            t = min(n, lmax)
            hist[-t * m :] = self.R[n - t : n].flatten()
        self.state = np.append(self.I[n], hist)

    def step(self, action):
        R = np.maximum(action, 0).astype(float)
        n, m = self.period, self.m
        I = self.I[n].copy()
        T = self.T[n].copy()
        up = np.append(I[1:], np.inf)  # stock upstream (the source is unlimited)
        if n >= 1:
            R = R + self.B[n - 1, 1:]  # backlogged replenishment orders are requested again
        Rcopy = R.copy()
        R = np.minimum(np.minimum(R, self.cap), up)
        self.R[n] = R
        RnL = np.zeros(m)
        for i in range(m):  # receipts of orders placed lead-time periods ago
            if n - self.lead[i] >= 0:
                RnL[i] = self.R[n - self.lead[i], i]
                I[i] = I[i] + RnL[i]
        D0 = self.rng.poisson(20)
        self.D[n] = D0
        D = D0 + (self.B[n - 1, 0] if n >= 1 else 0.0)
        S0 = min(I[0], D)
        S = np.append(S0, R)
        self.S[n] = S
        I = I - S[:-1]
        T = T - RnL + R
        self.I[n + 1] = I
        self.T[n + 1] = T
        U = np.append(D, Rcopy) - S
        self.B[n] = U
        II = np.append(I, 0.0)
        RR = np.append(R, S[-1])
        P = self.alpha**n * np.sum(
            self.price * S - (self.order_cost * RR + self.backlog_cost * U + self.hold * II)
        )
        self.P[n] = P
        self.period += 1
        self._update_state()
        done = self.period >= self.horizon
        return self.state, P, done, {}


def bench_numpy_serial_reference(seconds: float = 2.0) -> float:
    """Steps per second of `NumpySerialReference` (time inside ``step`` only, like `_pz_steps_per_s`)."""
    env = NumpySerialReference()
    rng = np.random.default_rng(1)
    acts = rng.integers(0, 40, size=(256, 3))
    steps = 0
    inside = 0.0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = acts[steps % 256]
        t1 = time.perf_counter()
        _, _, done, _ = env.step(a)
        inside += time.perf_counter() - t1
        steps += 1
        if done:
            env.reset()
    return steps / inside


@njit(cache=True)
def _noop_params(p, lv):
    return lv[0, 0, 0] + p.horizon


@njit(cache=True)
def _noop_bound(b, lv):
    return lv[0, 0, 0]


def _us_per_call(fn, calls: int = 20_000, repeats: int = 3) -> float:
    """Microseconds per call of fn: the best of ``repeats`` runs of ``calls`` calls (after a warm up)."""
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def bench_dispatch() -> dict[str, float]:
    """The cost of crossing into compiled code on `serial_3` (3 nodes, 1 SKU).

    ``dispatch_us``: a compiled no-op taking a `kernel.Bound` (what `kernel.period` takes: one object
    for all parameters and buffers) and the levels; ``dispatch_params_us``: the same no-op taking the
    `Params` NamedTuple instead (what each of the separate kernel calls pays for its parameters);
    ``period_serial_3_us``: one whole `kernel.period` (mask check, quantities, step, observation).
    """
    env = ArrayEnv("serial_3", num_envs=1, mode="clip")
    env.reset()
    b = env.bound()
    lv = np.zeros((1, env.N, env.K), np.int64)
    dem = env.demand.get(0)
    p, s = env.params, env.state
    res = {
        "dispatch_us": _us_per_call(lambda: _noop_bound(b, lv)),
        "dispatch_params_us": _us_per_call(lambda: _noop_params(p, lv)),
    }

    def one_period():
        s.t[0] = 10  # stay mid-horizon
        kn.period(b, lv, True, True, dem)

    res["period_serial_3_us"] = _us_per_call(one_period)
    return res


def bench_pettingzoo(seconds: float = 2.0) -> dict[str, float]:
    """PettingZoo steps per second on `serial_3`, `tiny`, `default` and OR-Gym InvManagement-v0 (the
    shipped ``benchmarks/orgym_invmgmt_v0``), and the NumPy serial reference in the same run, with the
    ratios (``pettingzoo_serial_3_vs_numpy_reference``, ``pettingzoo_orgym_v0_vs_numpy_reference``)."""
    res = bench_dispatch()
    res["pettingzoo_serial_3_steps_per_s"] = _pz_steps_per_s("serial_3", seconds)
    res["pettingzoo_tiny_steps_per_s"] = _pz_steps_per_s("tiny", seconds)
    res["pettingzoo_default_steps_per_s"] = _pz_steps_per_s("default", seconds)
    res["numpy_serial_reference_steps_per_s"] = bench_numpy_serial_reference(seconds)
    res["pettingzoo_serial_3_vs_numpy_reference"] = (
        res["pettingzoo_serial_3_steps_per_s"] / res["numpy_serial_reference_steps_per_s"]
    )
    # the very problem the reference simulates (OR-Gym InvManagement-v0 as a restock scenario)
    res["pettingzoo_orgym_v0_steps_per_s"] = _pz_steps_per_s("benchmarks/orgym_invmgmt_v0", seconds)
    res["pettingzoo_orgym_v0_vs_numpy_reference"] = (
        res["pettingzoo_orgym_v0_steps_per_s"] / res["numpy_serial_reference_steps_per_s"]
    )
    return res


def _interleaved(fns: dict, seconds: float) -> dict[str, float]:
    """Seconds per call of each fn, timed in alternating rounds (the same machine load for all of them)."""
    for fn in fns.values():
        fn()  # warm up
    tot = dict.fromkeys(fns, 0.0)
    reps = 0
    while reps < 3 or min(tot.values()) < seconds:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            tot[name] += time.perf_counter() - t0
        reps += 1
    return {name: v / reps for name, v in tot.items()}


def bench_array_env(seconds: float = 1.0) -> dict[str, float]:
    """`default` x 1,000 environments: the full observation and the lean one (scenario
    ``observation: {features: compact}``), stepped in alternating rounds of the same run."""
    E = 1000
    full = ArrayEnv("default", num_envs=E, auto_reset=True)
    lean = ArrayEnv("default", num_envs=E, auto_reset=True, observation__features="compact")
    lv = np.full((E, full.N, full.K), 4, np.int64)
    for env in (full, lean):
        env.reset()
    pairs = E * full.compiled.S * full.K
    dt = _interleaved({"full": lambda: full.step(lv), "lean": lambda: lean.step(lv)}, seconds)
    return {
        "array_env_default_pair_updates_per_s": pairs / dt["full"],
        "array_env_default_lean_pair_updates_per_s": pairs / dt["lean"],
        "array_env_default_obs_mb_per_step": full.obs.nbytes / 1e6,
        "array_env_default_lean_obs_mb_per_step": lean.obs.nbytes / 1e6,
    }


_LARGE_CHILD = r"""
import json, resource, sys, time, numpy as np
from restock.envs.array_env import ArrayEnv
what, par = sys.argv[1], {"auto": None, "1": True, "0": False}[sys.argv[2]]
kw = {"observation__features": "compact"} if what == "lean" else {}
env = ArrayEnv("large", num_envs=1, features=what != "bounds", parallel=par, **kw)
env.reset()
lv = np.full((1, env.N, env.K), 4, np.int64)
env.step(lv)  # compile (cached after the first run)
env.reset(paths=np.array([1]))
t0 = time.perf_counter()
for t in range(env.horizon):
    env.step(lv)
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"large_episode_seconds": dt, "large_peak_rss_mb": rss, "parallel": env._parallel}))
"""


def _large_child(what: str = "full", parallel: str = "auto") -> dict:
    cmd = [sys.executable, "-c", _LARGE_CHILD, what, parallel]
    return json.loads(
        subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    )


def bench_large() -> dict[str, float]:
    """One 365-period episode of `large` in a fresh process (demand sampling included): time and peak RSS.

    ``large_episode_seconds`` computes full observations every period (the default env, which picks
    the serial or parallel builds by the machine's load: ``large_parallel_build``);
    ``large_episode_seconds_lean`` the compact observation (``observation: {features: compact}``);
    ``large_episode_seconds_bounds_only`` only masks and bounds (``ArrayEnv(features=False)``, enough
    for the constant-level policy stepped here and for the heuristics); ``_serial`` and ``_parallel``
    force one build (full observations). The episodes run one after another, so their load may differ:
    the machine's load average is reported beside them.
    """
    _large_child("full", "0")  # the first runs may only compile
    _large_child("full", "1")
    res = _large_child("full")
    res["large_parallel_build"] = bool(res.pop("parallel"))
    for key, what, par in (
        ("lean", "lean", "auto"),
        ("bounds_only", "bounds", "auto"),
        ("serial", "full", "0"),
        ("parallel", "full", "1"),
    ):
        r = _large_child(what, par)
        res[f"large_episode_seconds_{key}"] = r["large_episode_seconds"]
        if key in ("lean", "bounds_only"):
            res[f"large_peak_rss_mb_{key}"] = r["large_peak_rss_mb"]
    res["large_load_average"] = list(os.getloadavg())
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
    "pettingzoo_default_steps_per_s": (">=", 2.5e4),
    "pettingzoo_serial_3_steps_per_s": (">=", 1e5),
    "pettingzoo_serial_3_vs_numpy_reference": (">=", 10.0),
    "array_env_default_pair_updates_per_s": (">=", 1e8),
    "large_episode_seconds": ("<=", 1.0),
    "large_peak_rss_mb": ("<=", 1024.0),
}


def run_all(suites: list[str] | None = None, progress=None) -> dict[str, Any]:
    """Run the suites; ``progress(name)``, when given, is a context manager around each one."""
    out: dict[str, Any] = {}
    for name in list(SUITES) if suites is None else suites:
        if progress:
            with progress(name):
                out.update(SUITES[name]())
        else:
            out.update(SUITES[name]())
    out["targets_met"] = {
        k: (out[k] >= v if op == ">=" else out[k] <= v) for k, (op, v) in TARGETS.items() if k in out
    }
    out["machine"] = machine()
    return out
