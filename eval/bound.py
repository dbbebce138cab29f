"""The tight perfect-information bound: the oracle's MILP per SKU, with the SKU-coupling rows priced.

What it is: on one sample path, the least cost of a planner that knows the path's whole future (every
demand and every lead time) in advance. No policy can reach it; it is a lower bound on the realised cost
of every policy on that path (shielded or not), so a policy's gap to it mixes what the policy could
still gain with the value of knowing the future.

The program is `eval.oracle`'s model (its docstring gives the formulation and the proof that it is a
relaxation of the kernel) with every order line's y in {0, 1}: the fixed cost per order line is charged
exactly, where the LP relaxation (`eval.oracle.oracle`, named "LP" wherever it is reported) lets it fade
to x / B. Lot sizes and MOQ are not imposed: the shield enforces them, not the kernel, and the bound
must hold for unshielded policies too.

Decomposition. Without a constraint that couples SKUs the MILP splits into one MILP per SKU (all nodes
of that SKU: DC, stores, the activation rows between them). Storage with an overflow penalty and lane
caps couple SKUs; they are dualised (Lagrangian relaxation) with multipliers lam >= 0 per node and
period:

    storage:  sum_k vol_k I[n,k,t] - over[n,t] <= cap[n,t],  0 <= lam <= overflow_cost[n]
              (above the penalty the relaxed over[n,t] would be unbounded: min over over >= 0 of
              (overflow_cost - lam) over is 0 for lam <= overflow_cost),
    lanes:    sum_k vol_k x[n,k,t] <= lane_cap[n],           lam >= 0,

    L(lam) = sum_k min_k (cost_k + lam vol_k usage_k) - sum lam cap,

a lower bound on the joint MILP, hence on every policy, for EVERY lam in that box (weak duality); so the
bound stays valid whenever the search stops. Each SKU's term is its MILP solved by HiGHS; a MILP that
hits its time limit contributes its proven dual bound (never its incumbent), and at least the LP
relaxation's value at the same prices (valid cuts included), so a limit only weakens the bound.

Multipliers: projected subgradient, first with the SKUs' LP relaxations (cheap warm re-solves) and then
with their MILPs, steps theta (UB - L) / |g|^2 (Polyak) with UB the cost of the best priced solution
made feasible (over = the excess volume) and theta halved after three steps without improvement.

Exactness: at the reported multipliers, with every SKU MILP optimal, its solutions with over = the
excess volume are a feasible point of the joint MILP whose cost exceeds L(lam) by
sum [overflow_cost max(0, g) - lam g] over storage rows and -lam g over lanes (g: usage minus capacity;
a lane with g > 0 makes it infeasible). When that excess is ~0 (relative 1e-6) the bound IS the joint
MILP's optimum and ``exact`` is True. Otherwise ``model_gap`` is the excess: the bound is within it of
the MILP optimum when every SKU MILP closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import highspy
import numpy as np
from restock.envs.compile import Compiled
from restock.envs.demand import sample_paths
from restock.eval.oracle import _build, _serve_bound, coupled, path_lead_times

__all__ = ["BoundResult", "bound_paths", "tight_bound"]

KIND = "perfect-information MILP bound"  # how reports name it
TOL = 1e-6
_OK = highspy.HighsModelStatus.kOptimal
# the bound needs the dual bound, not good incumbents: HiGHS's primal heuristics (sub-MIPs above all)
# took most of the time on these small MILPs, and so did cut separation below the root
_MIP_OPTIONS = {
    "mip_rel_gap": 1e-7,
    "mip_abs_gap": 1e-7,
    "mip_heuristic_effort": 0.0,
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False,
    "mip_heuristic_run_feasibility_jump": False,
    "mip_allow_cut_separation_at_nodes": False,
}


@dataclass
class BoundResult:
    """The tight bound on one path."""

    cost: float  # best bound found: a lower bound on every policy's cost on the path
    lp_cost: float  # the same Lagrangian with LP subproblems (the plain relaxation's strength), best found
    exact: bool  # cost is the optimum of the oracle's MILP (every SKU optimal, no duality gap)
    status: str  # "exact", "bound" (a time limit or duality gap left: still valid), or a failure
    seconds: float
    iterations: int  # Lagrangian steps (LP and MILP); 0 when nothing couples SKUs
    skus_optimal: int  # SKU MILPs proved optimal at the reported multipliers
    skus: int
    model_gap: float  # feasible joint-MILP cost minus cost at the reported multipliers (inf: none known)
    coupled: bool


class _Sub:
    """One SKU's program in a HiGHS instance kept warm: prices change, integrality is switched on and off."""

    def __init__(self, c: Compiled, dem, L, serve, k: int, rows_s: np.ndarray, rows_l: np.ndarray):
        self.lp = lp = _build(c, dem, L, serve, np.array([k]), couple=False)
        self.h, status = lp.run(None)
        if status != _OK:
            raise RuntimeError(f"SKU {k}: the relaxation is not optimal ({status})")
        self.base = np.concatenate(lp.c)
        vol = float(c.params.volume[k])
        inv, x = lp.ids["inv"][:, 0, :], lp.ids["x"][:, 0, :]
        self.s_ids, self.l_ids = inv[rows_s], x[rows_l]  # columns priced by storage and lane rows
        self.vol = vol
        y = lp.ids["y"]
        self.y = y[y >= 0].astype(np.int32)
        self.all = np.arange(lp.nv, dtype=np.int32)

    def price(self, lam_s: np.ndarray, lam_l: np.ndarray) -> None:
        cost = self.base.copy()
        ok = self.s_ids >= 0
        cost[self.s_ids[ok]] += self.vol * lam_s[ok]
        ok = self.l_ids >= 0
        cost[self.l_ids[ok]] += self.vol * lam_l[ok]
        self.h.changeColsCost(len(cost), self.all, cost)

    def _usage(self) -> tuple[np.ndarray, np.ndarray]:
        sol = np.asarray(self.h.getSolution().col_value)
        us = np.where(self.s_ids >= 0, self.vol * sol[np.maximum(self.s_ids, 0)], 0.0)
        ul = np.where(self.l_ids >= 0, self.vol * sol[np.maximum(self.l_ids, 0)], 0.0)
        return us, ul

    def solve_lp(self):
        """(value, storage usage, lane usage) of the relaxation at the current prices."""
        if len(self.y):
            self.h.changeColsIntegrality(len(self.y), self.y, np.zeros(len(self.y), np.uint8))
        self.h.setOptionValue("time_limit", highspy.kHighsInf)
        self.h.run()
        if self.h.getModelStatus() != _OK:
            raise RuntimeError(f"relaxation not optimal: {self.h.getModelStatus()}")
        return (self.h.getInfo().objective_function_value, *self._usage())

    def solve_mip(self, time_limit: float | None, lp_value: float):
        """(bound, optimal, incumbent value or inf, storage usage, lane usage) at the current prices.

        bound: the proven optimum, or when a limit stops HiGHS its dual bound, and never below
        lp_value (the relaxation at the same prices, also a valid bound)."""
        h = self.h
        if len(self.y):
            h.changeColsIntegrality(len(self.y), self.y, np.ones(len(self.y), np.uint8))
        for name, value in _MIP_OPTIONS.items():
            h.setOptionValue(name, value)
        h.setOptionValue("time_limit", highspy.kHighsInf if time_limit is None else max(time_limit, 1e-3))
        h.run()
        info = h.getInfo()
        status = h.getModelStatus()
        dual = float(info.mip_dual_bound) if len(self.y) else float(info.objective_function_value)
        if not np.isfinite(dual):
            dual = -np.inf
        optimal = status == _OK
        has_sol = info.primal_solution_status == 2  # feasible
        value = float(info.objective_function_value) if has_sol else np.inf
        if optimal:
            dual = min(dual, value) if len(self.y) else value
        us, ul = self._usage() if has_sol else (None, None)
        return max(dual, lp_value), optimal, value, us, ul


def _rows(c: Compiled) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coupling rows as masks [N, T]: storage rows (penalty nodes with a finite capacity) and lane rows;
    their capacities (0 where absent)."""
    p = c.params
    T = c.horizon
    cap = p.storage_cap[:T].T
    penalty = (p.overflow_dispose == 0) & (p.overflow_cost > 0)
    rows_s = penalty[:, None] & np.isfinite(cap)
    rows_l = np.isfinite(p.lane_cap)[:, None] & np.ones((c.N, T), bool)
    cap_s = np.where(rows_s, cap, 0.0)
    cap_l = np.where(rows_l, np.broadcast_to(p.lane_cap[:, None], (c.N, T)), 0.0)
    return rows_s, rows_l, cap_s, cap_l


def tight_bound(
    compiled: Compiled,
    seed: int,
    path: int,
    *,
    time_limit: float | None = None,
    lp_iterations: int = 30,
    mip_iterations: int = 3,
) -> BoundResult:
    """The perfect-information MILP bound on one sample path (module docstring).

    ``time_limit`` (seconds, None: none) bounds the whole path; when it binds, SKU MILPs contribute their
    dual bounds (or their LP values) and the result is still a valid bound, with ``exact`` False. Without
    a binding limit the result is deterministic.
    """
    t0 = time.perf_counter()
    c = compiled
    T = c.horizon
    p = c.params

    def left() -> float | None:
        return None if time_limit is None else time_limit - (time.perf_counter() - t0)

    dem = sample_paths(c.demand, seed, np.asarray([path], np.int64), 0, T)[0]
    L = path_lead_times(c, seed, path)
    serve = _serve_bound(c, dem)
    rows_s, rows_l, cap_s, cap_l = _rows(c)
    is_coupled = coupled(c)
    pen = np.broadcast_to(p.overflow_cost[:, None], (c.N, T))[rows_s]
    cs, cl = cap_s[rows_s], cap_l[rows_l]
    subs = [_Sub(c, dem, L, serve, k, rows_s, rows_l) for k in range(c.K)]
    lam_s, lam_l = np.zeros(len(cs)), np.zeros(len(cl))

    def dual_terms(ls, ll):
        return float(ls @ cs + ll @ cl)

    def excess(us, ul, ls, ll) -> float:
        """Feasible joint cost minus L at (ls, ll) for priced solutions with these usages."""
        g_s, g_l = us - cs, ul - cl
        if (g_l > TOL * (1 + cl)).any():
            return np.inf
        return float((pen * np.maximum(g_s, 0.0) - ls * g_s).sum() - (ll * g_l).sum())

    def step(ls, ll, us, ul, value, ub, theta):
        g_s, g_l = us - cs, ul - cl
        g_s = np.where(((ls <= 0) & (g_s < 0)) | ((ls >= pen) & (g_s > 0)), 0.0, g_s)
        g_l = np.where((ll <= 0) & (g_l < 0), 0.0, g_l)
        norm = float(g_s @ g_s + g_l @ g_l)
        if norm <= 1e-18:
            return ls, ll, True
        target = ub if np.isfinite(ub) else value + max(0.05 * abs(value), 1.0)
        a = theta * max(target - value, 1e-9) / norm
        return np.clip(ls + a * g_s, 0.0, pen), np.maximum(ll + a * g_l, 0.0), False

    def lp_round(ls, ll):
        vals, us, ul = 0.0, 0.0, 0.0
        for s in subs:
            if is_coupled:
                s.price(ls, ll)
            v, a, b = s.solve_lp()
            vals, us, ul = vals + v, us + a, ul + b
        return vals - dual_terms(ls, ll), us, ul, vals

    # LP phase: the subproblems' relaxations (their values at lam = 0 come from the first solves)
    lp_val, us, ul, _ = lp_round(lam_s, lam_l)
    best_lp, best_lam = lp_val, (lam_s, lam_l)
    iters, ub, theta, stall = 0, lp_val + excess(us, ul, lam_s, lam_l), 1.0, 0
    while is_coupled and iters < lp_iterations:
        rem = left()
        if rem is not None and rem < 0.5 * time_limit:
            break
        lam_s, lam_l, done = step(lam_s, lam_l, us, ul, lp_val, ub, theta)
        if done:
            break
        iters += 1
        lp_val, us, ul, _ = lp_round(lam_s, lam_l)
        ub = min(ub, lp_val + excess(us, ul, lam_s, lam_l))
        if lp_val > best_lp + TOL * (1 + abs(best_lp)):
            best_lp, best_lam, stall = lp_val, (lam_s, lam_l), 0
        else:
            stall += 1
            if stall >= 3:
                theta, stall = theta / 2, 0

    # MILP phase: from the best LP multipliers
    lam_s, lam_l = best_lam
    best = None  # (bound, n_optimal, gap)
    mip_ub, theta, stall, m_iter = np.inf, 1.0, 0, 0
    while True:
        bound_sum, n_opt, us, ul, inc, usable = 0.0, 0, 0.0, 0.0, 0.0, True
        for i, s in enumerate(subs):
            if is_coupled:
                s.price(lam_s, lam_l)
            lp_v, _, _ = s.solve_lp()
            rem = left()
            share = None if rem is None else max(rem, 0.0) / (len(subs) - i)
            if share is not None and share < 0.05:
                b, ok, v, a, d = lp_v, False, np.inf, None, None  # no time left: the LP value
            else:
                b, ok, v, a, d = s.solve_mip(share, lp_v)
            bound_sum += b
            n_opt += ok
            inc += v
            if a is None:
                usable = False
            else:
                us, ul = us + a, ul + d
        val = bound_sum - dual_terms(lam_s, lam_l)
        gap = np.inf
        if usable:
            gap = (inc - bound_sum) + excess(us, ul, lam_s, lam_l)
            mip_ub = min(mip_ub, inc - dual_terms(lam_s, lam_l) + excess(us, ul, lam_s, lam_l))
        if best is None or val > best[0] + TOL * (1 + abs(best[0])):
            best, stall = (val, n_opt, gap), 0
        else:
            stall += 1
            if stall >= 3:
                theta, stall = theta / 2, 0
        exact_now = n_opt == len(subs) and gap <= TOL * (1 + abs(val))
        rem = left()
        if not is_coupled or exact_now or not usable or m_iter >= mip_iterations:
            break
        if rem is not None and rem < 0.2 * time_limit:
            break
        lam_s, lam_l, done = step(lam_s, lam_l, us, ul, val, mip_ub, theta)
        if done:
            break
        m_iter += 1
    val, n_opt, gap = best
    exact = n_opt == len(subs) and gap <= TOL * (1 + abs(val))
    return BoundResult(
        cost=float(val),
        lp_cost=float(best_lp),
        exact=bool(exact),
        status="exact" if exact else "bound",
        seconds=time.perf_counter() - t0,
        iterations=iters + m_iter,
        skus_optimal=int(n_opt),
        skus=len(subs),
        model_gap=float(gap),
        coupled=is_coupled,
    )


def bound_paths(
    compiled: Compiled,
    seed: int,
    paths: Sequence[int] | np.ndarray,
    progress: Callable[[int], None] | None = None,
    **kw,
) -> list[BoundResult]:
    """`tight_bound` on each path in turn; ``progress(1)`` after each one."""
    out = []
    for path in np.asarray(paths, np.int64):
        out.append(tight_bound(compiled, seed, int(path), **kw))
        if progress is not None:
            progress(1)
    return out
