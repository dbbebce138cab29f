"""Valid cuts for the oracle's order lines (the fixed cost per order line); notation of `eval.oracle`.

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

import numpy as np
from restock.envs.compile import Compiled
from restock.eval.oracle_lp import _LP

WINDOW = 8  # the (l, S) cuts' windows span 1..WINDOW + 1 periods
ACTIVATION_WINDOW = 0  # the activation cuts' windows span 1..ACTIVATION_WINDOW + 1 periods


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
