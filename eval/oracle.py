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
cost all but vanishes. Two families of cuts (`cuts=True`) restore much of it.

Lot-sizing cuts (echelon (l, S) inequalities) hold at every point of the MILP, so they remove no integer
point and the MILP's optimum does not move (tests/eval/test_oracle_cuts.py checks this with HiGHS).
Write, for node n, SKU k and a window of periods a0..l (l - a0 <= WINDOW, l < T):

    E(a0, l) = sum over the subtree of n (n and every node under it) of
               I[m, l] + disposed[m, a0..l] + (shipments into m != n sent in a0..l, still moving at l)
               + (backlog stores) b[m, e] for e in a0-1..l-1 (or only e = a0-1, where noted),
    G(a, l)  = (demand at the stores under n in a..l) - (constant inflow of the subtree in a..l: the
               initial pipeline's arrivals, and its initial stock if a = 0).

Flow balance, summed over the subtree: whatever reaches n by shipments arriving in a..l, together with
the constant inflow, ends at l on hand in the subtree, in transit inside it (sent in a..l), disposed of
in a..l, or sold in a..l; and stores sell in a..l at most the demand of a..l, plus b[a-1] at backlog
stores. So the shipments into n arriving in a..l total at most G(a, l) + E(a, l) (with only e = a-1 for
the backlog), whatever the policy.

- Shipment lines (y on x): with S the lines into n that arrive in a0..l and g_s = max(0, G(a_s, l)),

      sum_{s in S} x_s <= sum_{s in S} g_s y_s + E(a0, l).

  At an integer point the lines with y = 0 ship nothing; if any line of S has y = 1, let a* be the
  earliest arrival among them: all of them arrive in a*..l, so they ship at most G(a*, l) + E(a*, l)
  <= g_{s*} + E(a0, l) (E grows as the window starts earlier, and the backlog sum over a0-1..l-1 holds
  b[a*-1]). Lines arriving together are summed, so random lead times (which can reorder shipments) are
  fine. Windows of one line at a time are weaker; full windows were what moved the bound on `default`.
- Order lines (y on q, children of a backlogging DC), only where owed units cost something: the order
  of period t and the shipment x_t that arrives in a (a + k < T, k <= WINDOW) give

      q_t <= G(a, a+k) y_t + o_t + E(a, a+k)        (backlog term b[a-1] only)

  since q_t = o_t - o_{t-1} + x_t <= o_t + x_t, and q_t = 0 when y_t = 0. An order line's units can
  ship in any later period, so windows of many order lines have no such bound. Where owed units are
  free the LP keeps o large at no cost (one early order feeds every later shipment) and these cuts
  hardly bind: they are skipped there (on `default` they doubled the solve time for 0.02% of bound).

Activation cuts use one more fact of the kernel that the LP above does not encode: a backlogging DC
ships all it can, so it ends a period with stock only when it owes nothing. Let DC n backlog, none of
its children have a lane cap (a lane cap can cut a shipment after rationing and leave n with stock
while it owes), and every shipment into n be a shipment line with a y (n's parent is a supplier or a
lost-sales DC; a line without fixed cost but with B > 0 disables the cut for the periods it reaches n).
For a child c with an order line y^q[c, t], whose shipment x[c, t] arrives in a (a + k < T, k <=
ACTIVATION_WINDOW), with G, E taken over c's subtree and P[n, t] the constant inflow into n in t:

    x[c, t] <= max(0, G(a, a+k)) (y^q[c, t] + sum_{s: s + L[n, s] = t} y[n, s]) + P[n, t] + E(a, a+k).

If n owed nothing at the end of t-1, x[c, t] <= q[c, t], zero unless c ordered in t. Otherwise n had
shipped all its stock, so everything it ships in t arrived in t: at most P[n, t] unless one of the
lines arriving in t was ordered. In the remaining cases x[c, t] <= G + E by flow balance, as above.
On the trimmed trajectory, with y the kernel's order indicators: trimming only removes units, so what n
owes only falls (the first case stays) and shipments only fall (the bound P[n, t] still holds). These
cuts can raise the MILP (their point: on `default` they stop stores from ordering once and being served
for the whole horizon from what the DC owes, while the DC keeps stock and orders rarely).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp
from restock.envs.compile import Compiled
from restock.envs.demand import sample_paths
from restock.envs.rng import episode_key, uniform_at
from restock.envs.types import C_PIPE, C_STOCKOUT, COST_NAMES, N_COST

__all__ = ["OracleResult", "coupled", "oracle", "oracle_paths", "path_lead_times"]

WINDOW = 8  # the (l, S) cuts' windows span 1..WINDOW + 1 periods
ACTIVATION_WINDOW = 0  # the activation cuts' windows span 1..ACTIVATION_WINDOW + 1 periods


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


class _LP:
    """Sparse LP under construction: variable blocks, rows, and linear terms per cost part."""

    def __init__(self) -> None:
        self.nv = 0
        self.c: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.rows = {"eq": 0, "ub": 0}
        self.rhs: dict[str, list[np.ndarray]] = {"eq": [], "ub": []}
        self.ent: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"eq": [], "ub": []}
        self.terms: list[tuple[int, np.ndarray, np.ndarray]] = []  # (part, variable ids, coefficients)
        self.const = np.zeros(N_COST)
        self.ids: dict[str, np.ndarray] = {}  # variable ids by block name (-1 where absent)
        self.stages: list[int] = []  # "ub" row counts that end a stage of the solve

    def var(self, mask: np.ndarray, upper=np.inf, **parts: np.ndarray) -> np.ndarray:
        """Variables where mask holds (ids, -1 elsewhere), bounded by [0, upper]; parts: cost by part name."""
        mask = np.asarray(mask, bool)
        idx = np.full(mask.shape, -1, np.int64)
        n = int(mask.sum())
        idx[mask] = self.nv + np.arange(n)
        self.nv += n
        cost = np.zeros(n)
        for name, coef in parts.items():
            co = np.broadcast_to(coef, mask.shape)[mask].astype(np.float64)
            cost += co
            self.terms.append((COST_NAMES.index(name), idx[mask], co))
        self.c.append(cost)
        self.lo.append(np.zeros(n))
        self.hi.append(np.broadcast_to(upper, mask.shape)[mask].astype(np.float64))
        return idx

    def fix(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Fix variables ids (>= 0) to values: prices a given plan instead of optimising it."""
        lo, hi = np.concatenate(self.lo), np.concatenate(self.hi)
        ok = ids >= 0
        lo[ids[ok]] = hi[ids[ok]] = values[ok]
        self.lo, self.hi = [lo], [hi]

    def row(self, kind: str, mask: np.ndarray, rhs) -> np.ndarray:
        """Rows (== rhs for 'eq', <= rhs for 'ub') where mask holds; ids, -1 elsewhere."""
        mask = np.asarray(mask, bool)
        idx = np.full(mask.shape, -1, np.int64)
        n = int(mask.sum())
        idx[mask] = self.rows[kind] + np.arange(n)
        self.rows[kind] += n
        self.rhs[kind].append(np.broadcast_to(rhs, mask.shape)[mask].astype(np.float64))
        return idx

    def add(self, kind: str, rows: np.ndarray, cols: np.ndarray, vals) -> None:
        """Coefficients vals at (rows, cols), broadcast together; entries with a -1 id are skipped."""
        rows, cols, vals = np.broadcast_arrays(rows, cols, np.asarray(vals, np.float64))
        ok = (rows >= 0) & (cols >= 0)
        self.ent[kind].append((rows[ok], cols[ok], vals[ok]))

    def matrix(self, kind: str):
        if self.rows[kind] == 0:
            return None, None
        r, c, v = (np.concatenate(a) for a in zip(*self.ent[kind], strict=True))
        A = sp.csr_matrix((v, (r, c)), shape=(self.rows[kind], self.nv))
        return A, np.concatenate(self.rhs[kind])

    def stage(self) -> None:
        """Mark the rows so far as a stage: `solve` solves them, then adds each later stage's rows and
        solves again from the last basis (dual simplex from a dual feasible start)."""
        self.stages.append(self.rows["ub"])

    def solve(self, time_limit: float | None) -> tuple[str, np.ndarray, float]:
        t0 = time.perf_counter()
        A_eq, b_eq = self.matrix("eq")
        A_ub, b_ub = self.matrix("ub")
        if A_ub is None:
            A_ub, b_ub = sp.csr_matrix((0, self.nv)), np.zeros(0)
        ends = sorted({*self.stages, self.rows["ub"]})
        first = ends[0]
        A = sp.vstack([A_eq, A_ub[:first]]).tocsc()
        model = highspy.HighsLp()
        model.num_col_, model.num_row_ = self.nv, A.shape[0]
        model.col_cost_ = np.concatenate(self.c)
        model.col_lower_ = np.concatenate(self.lo)
        model.col_upper_ = np.concatenate(self.hi)
        model.row_lower_ = np.concatenate([b_eq, np.full(first, -highspy.kHighsInf)])
        model.row_upper_ = np.concatenate([b_eq, b_ub[:first]])
        model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        model.a_matrix_.start_ = A.indptr.astype(np.int32)
        model.a_matrix_.index_ = A.indices.astype(np.int32)
        model.a_matrix_.value_ = A.data
        h = _highs()
        h.passModel(model)
        status = highspy.HighsModelStatus.kNotset
        for lo, hi in [(first, first), *zip(ends[:-1], ends[1:], strict=True)]:
            if hi > lo:
                R = A_ub[lo:hi]
                h.addRows(hi - lo, np.full(hi - lo, -highspy.kHighsInf), b_ub[lo:hi], R.nnz,
                          R.indptr[:-1].astype(np.int32), R.indices.astype(np.int32), R.data)  # fmt: skip
            if time_limit is not None:
                h.setOptionValue("time_limit", max(float(time_limit) - (time.perf_counter() - t0), 1e-3))
            h.run()
            status = h.getModelStatus()
            if status != highspy.HighsModelStatus.kOptimal:
                break
        parts = np.full(N_COST, np.nan)
        if status == highspy.HighsModelStatus.kOptimal:
            sol = np.asarray(h.getSolution().col_value)
            parts = self.const.copy()
            for j, ids, co in self.terms:
                parts[j] += float(co @ sol[ids])
        return _status(status), parts, self.rows["eq"] + self.rows["ub"]


_QUIET = False


def _highs() -> highspy.Highs:
    """A silent HiGHS instance. The first one in a process prints HiGHS's banner to stdout before any
    option can be set (which would corrupt `restock eval --json`), so it is built with stdout closed."""
    global _QUIET
    h = None
    if not _QUIET:
        _QUIET = True
        try:
            sys.stdout.flush()
            saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):  # no stdout to protect
            saved = null = None
        if saved is not None:
            try:
                os.dup2(null, 1)
                h = highspy.Highs()
                _flush_c_stdout()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(null)
    if h is None:
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def _flush_c_stdout() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to reach (Windows): nothing buffered to lose
        pass


def _status(s) -> str:
    M = highspy.HighsModelStatus
    names = {M.kOptimal: "optimal", M.kTimeLimit: "time_limit", M.kInfeasible: "infeasible",
             M.kUnbounded: "unbounded", M.kUnboundedOrInfeasible: "unbounded_or_infeasible"}  # fmt: skip
    return names.get(s, f"status_{s.name}" if hasattr(s, "name") else f"status_{s}")


def _subtree(c: Compiled) -> np.ndarray:
    """sub[n, m]: node m is n or lies under it."""
    p = c.params
    sub = np.zeros((c.N, c.N), bool)
    for m in range(c.N):
        n = m
        while n >= 0:
            sub[n, m] = True
            n = p.parent[n]
    return sub


class _Echelon:
    """What node n's subtree can absorb in a window of periods a0..l, for the cuts' right-hand sides.

    Units that reach n in a0..l are, at the end of l, on hand in the subtree, in transit inside it
    (shipped in a0..l), disposed of in a0..l, or sold in a0..l at its stores: at most the window's
    demand at lost-sales stores, plus what was owed at the window's start at backlog stores. The
    constant inflow of the subtree in a0..l (initial pipeline, initial stock) arrives there too.
    """

    def __init__(self, lp: _LP, c: Compiled, v: dict, Lk: np.ndarray, d: np.ndarray, inflow: np.ndarray):
        self.lp, self.v, self.Lk, self.M = lp, v, Lk, c.M
        self.backlog = c.params.backlog
        self.sub = _subtree(c)
        dsub = np.einsum("nm,mkt->nkt", self.sub[:, c.M :].astype(np.float64), d)
        csub = np.einsum("nm,mkt->nkt", self.sub.astype(np.float64), inflow)
        self.cum = np.zeros((c.N, Lk.shape[1], c.horizon + 1))
        self.cum[:, :, 1:] = np.cumsum(dsub - csub, axis=2)

    def net_demand(self, n: int, jj: np.ndarray, a0: np.ndarray, ll: np.ndarray) -> np.ndarray:
        """Demand at the stores under n in a0..ll less the subtree's constant inflow then."""
        return self.cum[n, jj, ll + 1] - self.cum[n, jj, a0]

    def absorb(self, n: int, r, jj, a0, ll, first_backlog: bool) -> None:
        """Subtract, in rows r (SKUs jj), the stock of n's subtree at the end of ll, its disposals and
        the shipments inside it in a0..ll still moving at ll, and the backlog at its backlog stores:
        at the end of a0 - 1 (first_backlog) or at every end a0 - 1..ll - 1 (any window start)."""
        lp, v, Lk = self.lp, self.v, self.Lk
        span = int((ll - a0).max()) + 1
        for m in np.flatnonzero(self.sub[n]):
            lp.add("ub", r, v["inv"][m, jj, ll], -1.0)
            for u in range(span):
                inside = a0 + u <= ll
                s = np.where(inside, a0 + u, 0)
                lp.add("ub", r[inside], v["disp"][m, jj[inside], s[inside]], -1.0)
                if m != n:
                    moving = inside & (s + Lk[m, jj, s] > ll)
                    lp.add("ub", r[moving], v["x"][m, jj[moving], s[moving]], -1.0)
            if m >= self.M and self.backlog[m] == 1:
                back = v["back"][m - self.M]
                for u in range(1 if first_backlog else span):
                    e = a0 - 1 + u
                    ok = (e >= 0) & (e < ll)
                    lp.add("ub", r[ok], back[jj[ok], e[ok]], -1.0)


def _lot_sizing_cuts(lp: _LP, ech: _Echelon, v: dict, has_q, owed_rate, Lk, window: int) -> None:
    """Echelon (l, S) cuts on shipment lines (x <= B y) and order lines (q <= B y); module docstring."""
    N, Kc, T = Lk.shape
    tt = np.arange(T)
    x, y = v["x"], v["y"]
    for n in range(N):
        arrive = tt[None, :] + Lk[n]  # [Kc, T]
        lines = (y[n] >= 0) & (arrive < T)
        # shipment lines: every window a0..a0+k, S = the lines arriving in it
        ship = lines & ~has_q[n]
        js, ss = np.nonzero(ship)
        at = arrive[js, ss]
        for k in range(window + 1):
            starts = [at - d0 for d0 in range(k + 1)]  # window starts that hold each line's arrival
            used = np.zeros((Kc, T), bool)
            for a0 in starts:
                ok = (a0 >= 0) & (a0 + k < T)
                used[js[ok], a0[ok]] = True
            if not used.any():
                continue
            rows = lp.row("ub", used, 0.0)
            for a0 in starts:
                ok = (a0 >= 0) & (a0 + k < T)
                j, s, a, a0 = js[ok], ss[ok], at[ok], a0[ok]
                r = rows[j, a0]
                lp.add("ub", r, x[n, j, s], 1.0)
                lp.add("ub", r, y[n, j, s], -np.maximum(ech.net_demand(n, j, a, a0 + k), 0.0))
            jj, a0 = np.nonzero(used)
            ech.absorb(n, rows[jj, a0], jj, a0, a0 + k, first_backlog=False)
        # order lines of a backlogging DC's child, where what is owed costs: one order at a time
        order = lines & has_q[n] & (owed_rate[n] > 0)
        for k in range(window + 1):
            ok = order & (arrive + k < T)
            jj, ts = np.nonzero(ok)
            if len(jj) == 0:
                continue
            r = lp.row("ub", ok, 0.0)[jj, ts]
            a = arrive[jj, ts]
            lp.add("ub", r, v["q"][n, jj, ts], 1.0)
            lp.add("ub", r, v["owed"][n, jj, ts], -1.0)
            lp.add("ub", r, y[n, jj, ts], -ech.net_demand(n, jj, a, a + k))
            ech.absorb(n, r, jj, a, a + k, first_backlog=True)


def _activation_cuts(
    lp: _LP, c: Compiled, ech: _Echelon, v: dict, has_q, Lk, inflow, b_ship, window: int
) -> None:
    """A backlogging DC's shipment to a child needs an order line of the child or an arrival at the DC
    in the same period (module docstring)."""
    p = c.params
    N, Kc, T = Lk.shape
    tt = np.arange(T)
    x, y = v["x"], v["y"]
    js, ss = np.nonzero(np.ones((Kc, T), bool))
    for n in range(c.M):
        kids = np.flatnonzero(p.parent == n)
        par = p.parent[n]
        if p.backlog[n] != 1 or np.isfinite(p.lane_cap[kids]).any() or (par >= 0 and p.backlog[par] == 1):
            continue  # n may keep stock while it owes, or receive without ordering
        at = ss + Lk[n, js, ss]  # arrival period of the DC's shipment (j, s)
        land = at < T
        # periods whose arrivals at the DC all carry an order line (or are forced to zero)
        covered = np.ones((Kc, T), bool)
        loose = land & (y[n, js, ss] < 0) & (b_ship[n, js, ss] > 0)
        covered[js[loose], at[loose]] = False
        lined = land & (y[n, js, ss] >= 0)
        j2, s2, t2 = js[lined], ss[lined], at[lined]
        for ch in kids:
            arrive = tt[None, :] + Lk[ch]
            base = (y[ch] >= 0) & has_q[ch] & (arrive < T) & covered
            for k in range(window + 1):
                ok = base & (arrive + k < T)
                jj, ts = np.nonzero(ok)
                if len(jj) == 0:
                    continue
                rows = lp.row("ub", ok, inflow[n])
                r = rows[jj, ts]
                a = arrive[jj, ts]
                g = np.zeros((Kc, T))
                g[jj, ts] = np.maximum(ech.net_demand(ch, jj, a, a + k), 0.0)
                lp.add("ub", r, x[ch, jj, ts], 1.0)
                lp.add("ub", r, y[ch, jj, ts], -g[jj, ts])
                lp.add("ub", rows[j2, t2], y[n, j2, s2], -g[j2, t2])
                ech.absorb(ch, r, jj, a, a + k, first_backlog=True)


def _build(
    c: Compiled,
    dem: np.ndarray,
    L: np.ndarray,
    serve: np.ndarray,
    ks: np.ndarray,
    cuts: bool = True,
    activation: bool = True,
) -> _LP:
    """The LP of SKUs ks (all of them, or one when decomposed) on one path."""
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
    over = lp.var(penalty[:, None] & np.isfinite(cap), overflow=p.overflow_cost[:, None])
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
    lane = np.isfinite(p.lane_cap)[:, None] & np.ones((N, T), bool)
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
