"""Exact optimal policies for one stocking point by dynamic programming (lost sales or backlog).

The model is the kernel's period contract (`envs.kernel`) for a single store fed by an uncapacitated
supplier over a lane with a fixed lead time L, one SKU, stationary i.i.d. demand with pmf ``pmf`` on
0, 1, 2, .... The state at a decision point is exact: ``x`` (on hand, or net inventory on hand minus
backlog when unmet demand is backlogged) after this period's arrivals, and the pipeline
``p_1 .. p_{L-1}`` (``p_i`` arrives at the start of period t + i). Each period:

1. the agent orders ``q`` (from the actions the scenario's action levels allow at the inventory
   position ``x + sum p``: ``envs.kernel.level_quantity`` for every level, so the DP is optimal over
   exactly the policies restock can execute); with L = 0 it goes on hand at once;
2. demand D; with lost sales the end stock is ``y = max(x - D, 0)`` and ``max(D - x, 0)`` is lost,
   with backlog ``y = x - D``;
3. cost ``h max(y, 0) + p (units lost, or backlogged at the end) + c q + K [q > 0] +
   r (units in transit at the end: p_1 + ... + p_{L-1} + q)``;
4. next state ``(y + p_1, p_2, ..., p_{L-1}, q)`` (L >= 2), ``(y + q)`` (L = 1), ``(y)`` (L = 0).

States are those with inventory position at most ``Smax`` (the top action level in units): no
policy can raise the position above it, so the set is closed. With backlog the net inventory is
bounded below by ``x_min`` (chosen so that reaching it has probability below 1e-12 per period from
any state a sensible policy visits; the solver reports the mass it clamped).

Long-run average cost (discount 1) is solved by relative value iteration with modified policy
iteration steps; the average cost g* is bracketed at every improvement step by the Odoni bounds
``min_s (TV - V)(s) <= g* <= max_s (TV - V)(s)`` and the solver stops when the bracket is narrower
than ``tol`` (relative). Discounted problems use value iteration with MacQueen's bounds. Expected
one-period costs use the untruncated demand law (tails summed exactly), so nothing is cut off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from restock.envs.kernel import level_quantity
from restock.envs.types import MODE_QUANTITY

__all__ = [
    "best_base_stock",
    "DPSolution",
    "SingleNodeSpec",
    "poisson_pmf",
    "negative_binomial_pmf",
    "solve",
    "evaluate_table",
    "base_stock_table",
    "capped_base_stock_table",
]


def poisson_pmf(mean: float, tail: float = 1e-16) -> np.ndarray:
    from scipy.stats import poisson

    hi = int(poisson.isf(tail, mean)) + 2
    pmf = poisson.pmf(np.arange(hi), mean)
    return pmf / pmf.sum()


def negative_binomial_pmf(mean: float, size: float, tail: float = 1e-16) -> np.ndarray:
    """Negative binomial with mean ``mean`` and size r (variance mean + mean^2 / r)."""
    from scipy.stats import nbinom

    dist = nbinom(size, size / (size + mean))
    hi = int(dist.isf(tail)) + 2
    pmf = dist.pmf(np.arange(hi))
    return pmf / pmf.sum()


@dataclass
class SingleNodeSpec:
    """One stocking point. ``levels``/``cover_step``/``forecast``/``mode``/``qstep``/``lot``/``moq`` describe the
    action levels exactly as the kernel maps them (`envs.kernel.level_quantity`)."""

    lead_time: int
    pmf: np.ndarray
    holding: float
    penalty: float
    unmet: str = "lost"  # or "backlog"
    order_cost: float = 0.0
    fixed_cost: float = 0.0
    pipeline_rate: float = 0.0
    discount: float = 1.0
    levels: int = 26
    mode: int = 1  # MODE_ORDER_UP_TO unless MODE_QUANTITY
    cover_step: float = 1.0
    forecast: float = 1.0
    qstep: int = 1
    lot: int = 1
    moq: int = 0
    x_min: int = 0  # lowest net inventory kept (backlog); 0 for lost sales
    initial: tuple[int, ...] = ()  # (x, p_1, ..., p_{L-1}) at the scenario's reset
    name: str = ""

    def __post_init__(self):
        self.pmf = np.asarray(self.pmf, dtype=np.float64)
        if (
            self.pmf.ndim != 1
            or self.pmf.size == 0
            or np.any(self.pmf < 0)
            or not np.all(np.isfinite(self.pmf))
        ):
            raise ValueError("pmf must be a non-empty 1-D array of non-negative finite probabilities")
        s = self.pmf.sum()
        if abs(s - 1.0) > 1e-9:
            raise ValueError(f"pmf must sum to 1 (sums to {s:.12g})")
        if not 0 <= self.lead_time <= 8:
            raise ValueError(f"lead_time must be 0..8 (got {self.lead_time})")
        if self.unmet not in ("lost", "backlog"):
            raise ValueError(f"unmet must be 'lost' or 'backlog' (got {self.unmet!r})")
        if self.unmet == "lost":
            self.x_min = 0
        elif self.x_min > 0:
            raise ValueError("x_min must be <= 0")
        if not 0 < self.discount <= 1:
            raise ValueError("discount must be in (0, 1]")

    @property
    def max_position(self) -> int:
        """Smax: the inventory position the top level orders up to (quantity mode: the top order)."""
        if self.mode == MODE_QUANTITY:
            return int((self.levels - 1) * self.qstep)
        q = level_quantity(
            self.levels - 1, self.mode, self.qstep, self.cover_step, self.forecast, 0, self.lot, self.moq
        )
        return int(q)

    @property
    def mean(self) -> float:
        return float(np.dot(np.arange(self.pmf.size), self.pmf))


@dataclass
class DPSolution:
    spec: SingleNodeSpec
    average_cost: float  # long-run average cost per period of the returned policy (optimal when discount 1)
    bounds: tuple[
        float, float
    ]  # bracket on the optimal value (average cost, or discounted cost at `initial`)
    coords: np.ndarray  # [S, D] states (x, p_1, ...)
    action: np.ndarray  # [S] optimal order quantity per state
    value: np.ndarray  # [S] relative values (average) or discounted values
    lookup: np.ndarray  # dense index: code -> state number or -1
    radix: int
    iterations: int
    seconds: float
    discounted_cost: float | None = None  # discounted cost from `spec.initial` (discount < 1)
    notes: list[str] = field(default_factory=list)

    def index(self, x: int, pipe: tuple[int, ...] | np.ndarray = ()) -> int:
        return _index_of(self, x, pipe)

    def policy_levels(self) -> dict:
        """Compact description for `restock optimum --json`: orders by state in a readable form."""
        D = self.coords.shape[1]
        ip = self.coords.sum(axis=1)
        out = {"state": ["on_hand" if self.spec.unmet == "lost" else "net_inventory"]}
        out["state"] += [f"pipeline_{i}" for i in range(1, D)]
        # order-up-to level implied by the order: IP + q (the policy is not base-stock in general)
        lvl = (ip + self.action)[self.action > 0]
        # the position after ordering, over the states where the policy orders (not base-stock in general)
        out["order_up_to_range"] = [int(lvl.min()), int(lvl.max())] if lvl.size else [0, 0]
        out["states"] = int(self.coords.shape[0])
        return out


def _index_of(sol: DPSolution, x: int, pipe) -> int:
    D = sol.coords.shape[1]
    cs = [int(x) - sol.spec.x_min, *[int(v) for v in pipe][: D - 1]]
    if len(cs) != D or any(c < 0 or c >= sol.radix for c in cs):
        return -1
    code = 0
    for i in range(D - 1, -1, -1):
        code = code * sol.radix + cs[i]
    return int(sol.lookup[code])


# ------------------------------------------------------------------------------------------------
# state space


def state_space(spec: SingleNodeSpec):
    L = spec.lead_time
    D = max(L, 1)
    smax = spec.max_position
    xmin = spec.x_min
    R = smax - xmin + 1
    if R**D > 60_000_000:
        raise ValueError(
            f"the state space is too large for the exact DP: radix {R} ** {D} dimensions "
            f"(lead time {L}, top level {smax} units); use fewer action levels or a shorter lead time"
        )
    grids = np.meshgrid(*[np.arange(R) for _ in range(D)], indexing="ij")
    cs = np.stack([g.ravel(order="F") for g in grids], axis=1)  # code = sum c_i R^i (column-major)
    x = cs[:, 0] + xmin
    ip = x + cs[:, 1:].sum(axis=1)
    ok = ip <= smax
    codes = np.arange(R**D, dtype=np.int64)
    lookup = np.full(R**D, -1, np.int64)
    lookup[codes[ok]] = np.arange(int(ok.sum()))
    coords = cs[ok].copy()
    coords[:, 0] += xmin
    return coords.astype(np.int64), lookup, R, smax


def _actions(spec: SingleNodeSpec, coords: np.ndarray, smax: int):
    """CSR list of the distinct order quantities each state's levels allow."""
    ip = coords.sum(axis=1)
    return _actions_jit(
        ip, spec.levels, spec.mode, spec.qstep, spec.cover_step, spec.forecast, spec.lot, spec.moq, smax
    )


@njit(cache=True)
def _actions_jit(ip, levels, mode, qstep, cover_step, forecast, lot, moq, smax):
    S = ip.size
    ptr = np.zeros(S + 1, np.int64)
    buf = np.empty(S * levels, np.int64)
    n = 0
    for s in range(S):
        last = np.int64(-1)
        for lv in range(levels):
            q = level_quantity(lv, mode, qstep, cover_step, forecast, ip[s], lot, moq)
            if ip[s] + q > smax and q > 0:  # quantity mode can overshoot Smax: not representable
                continue
            if q != last:
                # quantities grow with the level in order-up-to mode; in quantity mode they are distinct
                dup = False
                for j in range(ptr[s], n):
                    if buf[j] == q:
                        dup = True
                        break
                if not dup:
                    buf[n] = q
                    n += 1
                last = q
        ptr[s + 1] = n
    return ptr, buf[:n].copy()


def _one_period_costs(spec: SingleNodeSpec, lo: int, hi: int) -> np.ndarray:
    """E[h y^+ + p (lost or backlogged)] for stock z = lo..hi available before demand (exact tails)."""
    pmf = spec.pmf
    d = np.arange(pmf.size, dtype=np.float64)
    mu = spec.mean
    z = np.arange(lo, hi + 1, dtype=np.float64)
    # E[(z - D)^+] and E[(D - z)^+] = E[(z - D)^+] - (z - mu)
    over = np.array([np.dot(np.maximum(zz - d, 0.0), pmf) for zz in z])
    under = over - (z - mu)
    return spec.holding * over + spec.penalty * under


# ------------------------------------------------------------------------------------------------
# the Bellman operator (numba)


@njit(cache=True)
def _q_value(
    s, q, coords, lookup, R, D, L, xmin, pmf, tail, ecost, ecost_lo, V, gamma, c_order, c_fixed, c_pipe
):
    x = coords[s, 0]
    pipe_sum = np.int64(0)
    for i in range(1, D):
        pipe_sum += coords[s, i]
    cost = c_order * q + (c_fixed if q > 0 else 0.0)
    if L == 0:
        z = x + q  # goes on hand at once
        cost += ecost[z - ecost_lo]
        rest = np.int64(0)
        add = np.int64(0)
    else:
        z = x
        cost += ecost[z - ecost_lo] + c_pipe * (pipe_sum + q)
        # next state (y + p_1, p_2, ..., p_{L-1}, q): first coordinate varies with the demand
        if L == 1:
            add = q
            rest = np.int64(0)
        else:
            add = coords[s, 1]
            rest = np.int64(0)
            mult = np.int64(R)
            for i in range(2, D):
                rest += coords[s, i] * mult
                mult *= R
            rest += q * mult
    # demand d < z - xmin: y = z - d; d >= z - xmin: y = xmin (lost sales: xmin = 0)
    span = z - xmin
    ev = 0.0
    npmf = pmf.size
    for d in range(min(span, npmf)):
        nxt = lookup[(z - d + add - xmin) + rest]
        ev += pmf[d] * V[nxt]
    tl = tail[span] if span < npmf else 0.0
    if tl > 0.0:
        ev += tl * V[lookup[(add) + rest]]  # y = xmin: coordinate xmin + add - xmin
    return cost + gamma * ev


@njit(cache=True)
def _bellman(
    coords,
    lookup,
    R,
    D,
    L,
    xmin,
    pmf,
    tail,
    ecost,
    ecost_lo,
    V,
    gamma,
    c_order,
    c_fixed,
    c_pipe,
    aptr,
    aq,
    TV,
    pol,
):
    S = coords.shape[0]
    for s in range(S):
        best = np.inf
        bq = np.int64(0)
        for j in range(aptr[s], aptr[s + 1]):
            q = aq[j]
            v = _q_value(
                s,
                q,
                coords,
                lookup,
                R,
                D,
                L,
                xmin,
                pmf,
                tail,
                ecost,
                ecost_lo,
                V,
                gamma,
                c_order,
                c_fixed,
                c_pipe,
            )
            if v < best - 1e-12:
                best = v
                bq = q
        TV[s] = best
        pol[s] = bq


@njit(cache=True)
def _apply_policy(
    coords, lookup, R, D, L, xmin, pmf, tail, ecost, ecost_lo, V, gamma, c_order, c_fixed, c_pipe, pol, TV
):
    S = coords.shape[0]
    for s in range(S):
        TV[s] = _q_value(
            s,
            pol[s],
            coords,
            lookup,
            R,
            D,
            L,
            xmin,
            pmf,
            tail,
            ecost,
            ecost_lo,
            V,
            gamma,
            c_order,
            c_fixed,
            c_pipe,
        )


class _Model:
    def __init__(self, spec: SingleNodeSpec):
        self.spec = spec
        self.coords, self.lookup, self.R, self.smax = state_space(spec)
        self.D = self.coords.shape[1]
        self.aptr, self.aq = _actions(spec, self.coords, self.smax)
        pmf = np.zeros(max(spec.pmf.size, self.R + 1))
        pmf[: spec.pmf.size] = spec.pmf
        self.pmf = pmf
        self.tail = np.concatenate([[1.0], 1.0 - np.cumsum(pmf)])[: pmf.size + 1]  # tail[k] = P(D >= k)
        self.tail = np.maximum(self.tail, 0.0)
        self.ecost_lo = spec.x_min
        self.ecost = _one_period_costs(spec, spec.x_min, self.smax)
        self.args = (
            self.coords,
            self.lookup,
            np.int64(self.R),
            np.int64(self.D),
            np.int64(spec.lead_time),
            np.int64(spec.x_min),
            self.pmf,
            self.tail,
            self.ecost,
            np.int64(self.ecost_lo),
        )
        self.costs = (float(spec.order_cost), float(spec.fixed_cost), float(spec.pipeline_rate))
        # a reference state for relative values: the empty system
        self.ref = int(self.lookup[-spec.x_min])  # code of (x = 0, empty pipeline)

    def bellman(self, V, gamma):
        S = self.coords.shape[0]
        TV = np.empty(S)
        pol = np.empty(S, np.int64)
        _bellman(*self.args, V, gamma, *self.costs, self.aptr, self.aq, TV, pol)
        return TV, pol

    def apply(self, V, gamma, pol):
        TV = np.empty_like(V)
        _apply_policy(*self.args, V, gamma, *self.costs, pol, TV)
        return TV


def _average(model: _Model, pol_fixed: np.ndarray | None, tol: float, max_iter: int, eval_sweeps: int):
    S = model.coords.shape[0]
    V = np.zeros(S)
    lo = hi = 0.0
    it = 0
    pol = pol_fixed
    aperiodic = model.pmf[0] <= 0.0  # without mass at 0 the chain may be periodic: damp (tau = 1/2)
    tau = 0.5 if aperiodic else 1.0
    while it < max_iter:
        it += 1
        if pol_fixed is None:
            TV, pol = model.bellman(V, 1.0)
        else:
            TV = model.apply(V, 1.0, pol)
        diff = TV - V
        lo, hi = float(diff.min()), float(diff.max())
        if hi - lo <= tol * max(abs(hi), abs(lo), 1e-12):
            break
        V = (1 - tau) * V + tau * TV
        V -= V[model.ref]
        if eval_sweeps and pol_fixed is None:
            for _ in range(eval_sweeps):
                V = (1 - tau) * V + tau * model.apply(V, 1.0, pol)
                V -= V[model.ref]
    return V, pol, (lo, hi), it


def spec_state_index(model: _Model, state: tuple[int, ...]) -> int:
    x, *pipe = state
    D = model.D
    cs = [int(x) - model.spec.x_min, *[int(v) for v in pipe][: D - 1]]
    cs += [0] * (D - len(cs))
    if any(c < 0 or c >= model.R for c in cs):
        return -1
    code = 0
    for i in range(D - 1, -1, -1):
        code = code * model.R + cs[i]
    return int(model.lookup[code])


def solve(
    spec: SingleNodeSpec, tol: float = 1e-9, max_iter: int = 100_000, eval_sweeps: int = 20
) -> DPSolution:
    """The optimal policy and its cost (see the module docstring)."""
    t0 = time.perf_counter()
    model = _Model(spec)
    notes: list[str] = []
    disc = None
    if spec.discount >= 1.0:
        V, pol, (lo, hi), it = _average(model, None, tol, max_iter, eval_sweeps)
        g = 0.5 * (lo + hi)
        bounds = (lo, hi)
    else:
        gamma = spec.discount
        S = model.coords.shape[0]
        V = np.zeros(S)
        lo = hi = 0.0
        it = 0
        while it < max_iter:
            it += 1
            TV, pol = model.bellman(V, gamma)
            diff = TV - V
            lo, hi = float(diff.min()), float(diff.max())
            V = TV
            if gamma / (1 - gamma) * (hi - lo) <= tol * max(float(np.abs(V).max()), 1e-12):
                break
        i0 = spec_state_index(model, spec.initial) if spec.initial else model.ref
        if i0 < 0:
            notes.append(
                "the scenario's initial state lies outside the DP's states: discounted cost not reported"
            )
        else:
            # MacQueen: V* lies in V + gamma/(1-gamma) [min, max](TV - V_previous)
            bounds = (float(V[i0]) + gamma / (1 - gamma) * lo, float(V[i0]) + gamma / (1 - gamma) * hi)
            disc = 0.5 * (bounds[0] + bounds[1])
        # the long-run average cost of the discount-optimal policy
        _, _, (glo, ghi), _ = _average(model, pol, tol, max_iter, 0)
        g = 0.5 * (glo + ghi)
        if i0 < 0:
            bounds = (glo, ghi)
    return DPSolution(
        spec=spec,
        average_cost=float(g),
        bounds=(float(bounds[0]), float(bounds[1])),
        coords=model.coords,
        action=pol.astype(np.int64),
        value=V,
        lookup=model.lookup,
        radix=model.R,
        iterations=it,
        seconds=time.perf_counter() - t0,
        discounted_cost=disc,
        notes=notes,
    )


def evaluate_table(
    spec: SingleNodeSpec, action_of, tol: float = 1e-10, max_iter: int = 200_000
) -> tuple[float, float]:
    """Exact long-run average cost bracket (lo, hi) of a stationary policy.

    ``action_of(coords) -> q [S]`` gives the order of each state (clipped to what the levels allow).
    """
    model = _Model(spec)
    q = np.asarray(action_of(model.coords), dtype=np.int64)
    pol = _snap_to_actions(q, model.aptr, model.aq)
    _, _, bounds, _ = _average(model, pol, tol, max_iter, 0)
    return bounds


@njit(cache=True)
def _snap_to_actions(q, aptr, aq):
    """The largest allowed quantity <= q (levels cannot express every quantity in general)."""
    out = np.zeros(q.size, np.int64)
    for s in range(q.size):
        best = np.int64(0)
        for j in range(aptr[s], aptr[s + 1]):
            if aq[j] <= q[s] and aq[j] > best:
                best = aq[j]
        out[s] = best
    return out


def base_stock_table(S: int):
    return lambda coords: np.maximum(S - coords.sum(axis=1), 0)


def capped_base_stock_table(S: int, cap: int):
    return lambda coords: np.minimum(np.maximum(S - coords.sum(axis=1), 0), cap)


def best_base_stock(
    spec: SingleNodeSpec, cap: int | None = None, S_range=None
) -> tuple[int, float, list[tuple[int, float]]]:
    """Enumeration of base-stock levels S = 0..Smax, or S_range (optionally with an order cap)."""
    smax = spec.max_position
    model = _Model(spec)
    rows = []
    for S in range(smax + 1) if S_range is None else S_range:
        q = np.maximum(S - model.coords.sum(axis=1), 0)
        if cap is not None:
            q = np.minimum(q, cap)
        pol = _snap_to_actions(q.astype(np.int64), model.aptr, model.aq)
        _, _, (lo, hi), _ = _average(model, pol, 1e-10, 200_000, 0)
        rows.append((S, 0.5 * (lo + hi)))
    S_best, c_best = min(rows, key=lambda r: r[1])
    return S_best, c_best, rows
