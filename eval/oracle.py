"""The perfect-information oracle: a lower bound on the cost any policy can reach on one sample path.

One linear program per sample path that knows the path's whole future: its customer demand and the
realised lead time of every shipment. It is a relaxation of the kernel's period (`envs.kernel`), so its
optimum is at most the realised cost of ANY policy on that path, shielded or not: variables are
continuous, only physics is modelled (supplier caps and outages, lane volume caps, stock on hand at DCs
and stores, lost sales or backlog), never policy-level rules (budgets, storage at arrival, rate limits,
MOQ and lot sizes) that an unshielded policy may break, and every cost is charged as the kernel charges
it, except that the fixed cost per order line is relaxed (tightened by valid cuts, below) and a
lost-sales DC's cancelled units are free.

Formulation, per node n, SKU k and period t = 0..T-1 (a shipment sent in s with lead time L[n,k,s]
arrives in s + L, L = 0 usable at once; the initial pipeline arrives by offset, offset 0 at reset):

- x[n,k,t] >= 0 units shipped into n; cost: variable ordering per unit and pipeline holding for the
  periods in transit within the horizon;
- I[n,k,t] >= 0 on hand at the period end: I[t] = I[t-1] + arrivals[t] - disposed[t] - out[t], out being
  the shipments to the children (so a DC ships at most what it has after arrivals) or the store's sales;
- stores: sales <= demand (lost sales, stockout cost per unit lost) or a backlog b[t] = b[t-1] + d[t] -
  sales[t] >= 0 (stockout cost per unit backlogged at the period end);
- children of a backlogging DC with a fixed cost or a DC stockout cost: orders q >= 0 and owed units
  o[t] = o[t-1] + q[t] - x[t] >= 0 at the DC's stockout rate, as the kernel charges;
- order lines: y[n,k,t] in [0, 1] at the fixed cost f per line, with q <= B y for the orders above and
  x <= B y for every other shipment (a shipment from a supplier or a lost-sales DC never exceeds the
  order placed in the same period, so x > 0 means a line was ordered);
- overflow: penalty nodes pay per volume unit on hand above capacity at the period end (v >= vol.I - cap);
  dispose nodes may destroy up to the period's pipeline arrivals at the disposal cost (on hand is not
  forced under capacity, as the kernel does not force it);
- supplier caps per SKU and period over the nodes a supplier feeds; lane volume caps per node and period.

The big-M B of a shipment is the demand its units can still serve once they arrive (the rest of the
horizon's demand at descendant lost-sales stores, all of it at descendant backlog stores), capped by the
supplier and lane caps; an order's B counts from the period it is placed. It is valid: removing from any
trajectory the units that are never sold, with the orders FIFO-matched to them (the *trimmed*
trajectory), keeps it feasible and raises no cost, and what is left never ships more than it sells. So
the program with y in {0, 1} (the MILP) is below every policy too. Without a constraint that couples
SKUs (lane caps, finite storage with an overflow penalty) the program splits into one small LP per SKU.

With y continuous, x <= B y alone lets y = x / B, and B is the rest of the horizon's demand: the fixed
cost all but vanishes. Two families of valid cuts (`cuts=True`, `eval.oracle_cuts`, whose docstring
proves them) restore part of it; `eval.bound` solves the MILP itself (y in {0, 1}) per SKU, with a
Lagrangian relaxation of the constraints that couple SKUs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from restock.envs.compile import Compiled
from restock.envs.demand import sample_paths
from restock.envs.rng import episode_key, uniform_at
from restock.envs.types import C_PIPE, C_STOCKOUT, COST_NAMES, N_COST
from restock.eval.oracle_cuts import ACTIVATION_WINDOW, WINDOW, _activation_cuts, _Echelon, _lot_sizing_cuts
from restock.eval.oracle_lp import _LP

__all__ = ["OracleResult", "coupled", "oracle", "oracle_paths", "path_lead_times"]


@dataclass
class OracleResult:
    """The oracle's bound on one path: total cost (NaN unless solved to optimality), its parts, solver facts."""

    cost: float
    parts: dict[str, float]  # by envs.types.COST_NAMES
    status: str  # "optimal", or why not ("time_limit", "numerical", ...)
    seconds: float  # building and solving
    n_vars: int  # summed over the LPs when decomposed
    n_cons: int
    decomposed: bool  # solved as one LP per SKU


def path_lead_times(compiled: Compiled, seed: int, path: int) -> np.ndarray:
    """L[N, K, T]: the lead time of a shipment into node n of SKU k sent in period t, as the kernel draws it."""
    p = compiled.params
    T, W = compiled.horizon, compiled.W
    L = np.repeat(p.lt_value[:, :, None].astype(np.int64), T, axis=2)
    key = episode_key(seed, path)
    for n in np.flatnonzero(p.lt_fixed == 0):
        u = np.array([uniform_at(key, t, int(n)) for t in range(T)])  # [T]
        first = (u[None, :, None] >= p.lt_cdf[n][:, None, :]).sum(axis=2)  # first l with u < cdf[l]
        L[n] = np.minimum(first, W - 1)
    L += p.lt_extra[:T].T[:, None, :].astype(np.int64)
    return np.minimum(L, W - 1)


def coupled(compiled: Compiled) -> bool:
    """Whether some constraint couples SKUs (lane caps, storage capacity with an overflow penalty)."""
    p = compiled.params
    T = compiled.horizon
    penalty = (p.overflow_dispose == 0) & (p.overflow_cost > 0)
    storage = bool((np.isfinite(p.storage_cap[:T]) & penalty[None, :]).any())
    return storage or bool(np.isfinite(p.lane_cap).any())


def _serve_bound(compiled: Compiled, dem: np.ndarray) -> np.ndarray:
    """R[N, K, T+1]: demand that units present in node n's subtree from period t on can still serve.

    Lost-sales stores sell them only to demand from t on; backlog stores also to earlier demand still
    owed. Nothing is served from period T on (R[..., T] = 0).
    """
    p = compiled.params
    M, N, S, T = compiled.M, compiled.N, compiled.S, compiled.horizon
    d = dem.transpose(1, 2, 0).astype(np.float64)  # [S, K, T]
    rest = np.cumsum(d[:, :, ::-1], axis=2)[:, :, ::-1]  # demand in t..T-1
    whole = np.broadcast_to(d.sum(axis=2, keepdims=True), d.shape)
    per_store = np.zeros((S, d.shape[1], T + 1))
    per_store[:, :, :T] = np.where(p.backlog[M:, None, None] == 1, whole, rest)
    below = np.zeros((N, S))  # below[n, s]: store s is n or lies under it
    for s in range(S):
        n = M + s
        while n >= 0:
            below[n, s] = 1.0
            n = p.parent[n]
    return np.einsum("ns,skt->nkt", below, per_store)


def _big_m(c: Compiled, L: np.ndarray, serve: np.ndarray, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid upper bounds [N, Kc, T] on a shipment (sold no earlier than it arrives, within the supplier
    and lane caps) and on an order to a backlogging DC (shipped, so sold, no earlier than it is placed)."""
    p = c.params
    N, T = c.N, c.horizon
    Lk = L[:, ks, :]
    tt = np.arange(T)
    arrive = np.minimum(tt + Lk, T)
    sv = serve[:, ks, :]
    b_ship = np.take_along_axis(sv, arrive, axis=2)
    b_order = sv[:, :, :T]
    fed = np.flatnonzero(p.supplier >= 0)
    scap = p.sup_cap[:T][:, p.supplier[fed]][:, :, ks].transpose(1, 2, 0)  # [F, Kc, T]
    b_ship[fed] = np.minimum(b_ship[fed], scap)
    lane = p.lane_cap[:, None, None] / p.volume[ks][None, :, None]
    b_ship = np.minimum(b_ship, np.broadcast_to(lane, (N, len(ks), T)))
    return b_ship, b_order


def _build(
    c: Compiled,
    dem: np.ndarray,
    L: np.ndarray,
    serve: np.ndarray,
    ks: np.ndarray,
    cuts: bool = True,
    activation: bool = True,
    couple: bool = True,
) -> _LP:
    """The LP of SKUs ks (all of them, or one when decomposed) on one path. ``couple`` False leaves out
    the rows that couple SKUs (storage with an overflow penalty, lane caps): `eval.bound` prices them."""
    p = c.params
    M, N, S, T, W = c.M, c.N, c.S, c.horizon, c.W
    Kc = len(ks)
    lp = _LP()
    tt = np.arange(T)
    full = np.ones((N, Kc, T), bool)
    f = p.fixed_cost[:, ks][:, :, None]  # [N, Kc, 1]
    vol = p.volume[ks]
    Lk = L[:, ks, :]
    b_ship, b_order = _big_m(c, L, serve, ks)
    d = dem[:, :, ks].transpose(1, 2, 0).astype(np.float64)  # [S, Kc, T]
    init_pipe = np.zeros((N, Kc, T))
    w = min(W, T)
    init_pipe[:, :, :w] = c.init_pipe[:, ks, :w]
    par = p.parent
    bl_parent = np.array([par[n] >= 0 and p.backlog[par[n]] == 1 for n in range(N)])
    owed_rate = p.stockout[np.maximum(par, 0)][:, ks, None]  # the parent's stockout rate (roots unused)
    has_q = bl_parent[:, None, None] & ((f > 0) | (owed_rate > 0)) & full

    # variables
    x = lp.var(
        full,
        upper=b_ship,
        order_variable=p.order_cost[:, ks, None],
        pipeline_holding=p.pipe_hold[:, ks, None] * np.minimum(Lk, T - tt),
    )
    inv = lp.var(full, holding=p.hold[:, ks, None])
    lost_store = (p.backlog[M:] == 0)[:, None, None]
    stock_s = p.stockout[M:, ks, None]
    sales = lp.var(np.ones((S, Kc, T), bool), upper=np.where(lost_store, d, np.inf),
                   stockout=np.where(lost_store, -stock_s, 0.0))  # fmt: skip
    back = lp.var(~lost_store & np.ones((S, Kc, T), bool), stockout=stock_s)
    cap = p.storage_cap[:T].T  # [N, T]
    disp = lp.var(
        (p.overflow_dispose == 1)[:, None, None] & np.isfinite(cap)[:, None, :] & full,
        overflow=p.overflow_cost[:, None, None] * vol[None, :, None],
    )
    penalty = (p.overflow_dispose == 0) & (p.overflow_cost > 0)
    over = lp.var(couple & penalty[:, None] & np.isfinite(cap), overflow=p.overflow_cost[:, None])
    q = lp.var(has_q, upper=b_order)
    owed = lp.var(has_q, stockout=owed_rate)
    lp.const[C_STOCKOUT] += float((np.where(lost_store, stock_s, 0.0) * d).sum())
    lp.const[C_PIPE] += float(
        (p.pipe_hold[:, ks, None] * c.init_pipe[:, ks, 1:] * np.minimum(np.arange(1, W), T)).sum()
    )

    nn, jj, ss = np.meshgrid(np.arange(N), np.arange(Kc), tt, indexing="ij")
    arr = ss + Lk  # arrival period of x[n, j, s]
    lands = arr < T
    a_n, a_j, a_s, a_t = nn[lands], jj[lands], ss[lands], arr[lands]
    piped = Lk[lands] > 0

    # on-hand balance: I[t] - I[t-1] - arrivals + disposed + out = initial pipeline (+ initial on hand)
    rhs = init_pipe.copy()
    rhs[:, :, 0] += c.init_on_hand[:, ks]
    bal = lp.row("eq", full, rhs)
    lp.add("eq", bal, inv, 1.0)
    lp.add("eq", bal[:, :, 1:], inv[:, :, :-1], -1.0)
    lp.add("eq", bal[a_n, a_j, a_t], x[a_n, a_j, a_s], -1.0)
    lp.add("eq", bal, disp, 1.0)
    kids = np.flatnonzero(par >= 0)
    lp.add("eq", bal[par[kids]], x[kids], 1.0)
    lp.add("eq", bal[M:], sales, 1.0)

    # store backlog: b[t] - b[t-1] + s[t] = d[t]
    brow = lp.row("eq", back >= 0, d)
    lp.add("eq", brow, back, 1.0)
    lp.add("eq", brow[:, :, 1:], back[:, :, :-1], -1.0)
    lp.add("eq", brow, sales, 1.0)

    # owed by a backlogging parent: o[t] - o[t-1] - q[t] + x[t] = 0
    orow = lp.row("eq", has_q, 0.0)
    lp.add("eq", orow, owed, 1.0)
    lp.add("eq", orow[:, :, 1:], owed[:, :, :-1], -1.0)
    lp.add("eq", orow, q, -1.0)
    lp.add("eq", orow, x, 1.0)

    # disposal only of pipeline arrivals: disposed[t] - piped arrivals[t] <= initial pipeline[t]
    drow = lp.row("ub", disp >= 0, init_pipe)
    lp.add("ub", drow, disp, 1.0)
    lp.add("ub", drow[a_n[piped], a_j[piped], a_t[piped]], x[a_n[piped], a_j[piped], a_s[piped]], -1.0)

    # overflow penalty: sum_k vol I[n, k, t] - v[n, t] <= cap[n, t]
    vrow = lp.row("ub", over >= 0, np.where(np.isfinite(cap), cap, 0.0))
    lp.add("ub", vrow[:, None, :], inv, vol[None, :, None])
    lp.add("ub", vrow, over, -1.0)

    # supplier caps per SKU: sum of shipments of the nodes a supplier feeds <= cap
    scap = p.sup_cap[:T][:, :, ks].transpose(1, 2, 0)  # [U, Kc, T]
    srow = lp.row("ub", np.isfinite(scap), np.where(np.isfinite(scap), scap, 0.0))
    fed = np.flatnonzero(p.supplier >= 0)
    lp.add("ub", srow[p.supplier[fed]], x[fed], 1.0)

    # lane caps: inbound volume per node and period
    lane = couple & np.isfinite(p.lane_cap)[:, None] & np.ones((N, T), bool)
    lrow = lp.row("ub", lane, np.where(np.isfinite(p.lane_cap), p.lane_cap, 0.0)[:, None])
    lp.add("ub", lrow[:, None, :], x, vol[None, :, None])
    # order lines: y in [0, 1] carries the fixed cost, with (order or shipment) <= B y
    big = np.where(has_q, b_order, b_ship)
    lines = (f > 0) & (big > 0) & full
    line_var = np.where(has_q, q, x)  # what the fixed cost is charged on
    y = lp.var(lines, upper=1.0, order_fixed=f)
    yrow = lp.row("ub", lines, 0.0)
    lp.add("ub", yrow, line_var, 1.0)
    lp.add("ub", yrow, y, -big)
    v = dict(x=x, inv=inv, sales=sales, back=back, disp=disp, over=over, q=q, owed=owed, y=y)
    if cuts:  # solved in stages: the plain LP, then with each family of cuts, from the last basis
        ech = _Echelon(lp, c, v, Lk, d, rhs)
        lp.stage()
        _lot_sizing_cuts(lp, ech, v, has_q, owed_rate, Lk, WINDOW)
        if activation:
            lp.stage()
            _activation_cuts(lp, c, ech, v, has_q, Lk, rhs, b_ship, ACTIVATION_WINDOW)
    lp.ids = v
    return lp


def oracle(
    compiled: Compiled,
    seed: int,
    path: int,
    *,
    time_limit: float | None = None,
    decompose: bool | None = None,
    cuts: bool = True,
    activation: bool = True,
) -> OracleResult:
    """Solve the perfect-information LP of one sample path (seed, path): a lower bound on any policy's cost.

    ``decompose`` None splits per SKU when nothing couples SKUs; False forces one joint LP (True on a
    coupled scenario raises). ``time_limit`` (seconds) bounds the whole solve; a bound that is not
    optimal is no bound, so its cost and parts are NaN. ``cuts`` adds the lot-sizing cuts and, with
    ``activation``, the activation cuts (module docstring); without cuts it is the plain relaxation.
    """
    t0 = time.perf_counter()
    c = compiled
    K, T = c.K, c.horizon
    is_coupled = coupled(c)
    if decompose and is_coupled:
        raise ValueError(
            f"scenario {c.config.name!r}: SKUs are coupled (lane or storage caps); cannot decompose"
        )
    split = (not is_coupled if decompose is None else bool(decompose)) and K > 1
    dem = sample_paths(c.demand, seed, np.asarray([path], np.int64), 0, T)[0]  # [T, S, K]
    L = path_lead_times(c, seed, path)
    serve = _serve_bound(c, dem)
    groups = [np.array([k]) for k in range(K)] if split else [np.arange(K)]
    parts = np.zeros(N_COST)
    n_vars = n_cons = 0
    status = "optimal"
    for ks in groups:
        left = None if time_limit is None else time_limit - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            status, parts = "time_limit", np.full(N_COST, np.nan)
            break
        lp = _build(c, dem, L, serve, ks, cuts, activation)
        st, pk, nc = lp.solve(left)
        n_vars += lp.nv
        n_cons += nc
        parts += pk
        if st != "optimal":
            status = st
            break
    names = dict(zip(COST_NAMES, (float(v) for v in parts), strict=True))
    return OracleResult(
        cost=float(parts.sum()),
        parts=names,
        status=status,
        seconds=time.perf_counter() - t0,
        n_vars=n_vars,
        n_cons=n_cons,
        decomposed=split,
    )


def oracle_paths(
    compiled: Compiled,
    seed: int,
    paths: Sequence[int] | np.ndarray,
    progress: Callable[[int], None] | None = None,
    **kw,
) -> list[OracleResult]:
    """`oracle` on each path in turn; ``progress(1)`` after each one."""
    out = []
    for path in np.asarray(paths, np.int64):
        out.append(oracle(compiled, seed, int(path), **kw))
        if progress is not None:
            progress(1)
    return out
