"""Forward evaluation of echelon base-stock policies in the serial system of `agents.optimal`: exact
distributions of the echelon stocks from a start state, stationary and transient.

The recursion (Y_j, W_j, X_j) and why it is exact are in `agents.optimal`'s docstring; the model's
types and helpers are in `agents.serial_model`.
"""

from __future__ import annotations

import numpy as np
from restock.agents.serial_model import (
    TAIL,
    Demand,
    Evaluation,
    canonical_initial_state,
    check_levels,
    serial_params,
)

# forward evaluation: exact distributions from a start state, stationary and transient.
# A joint distribution is (offset, P[v, c]): value offset + v and c = min(D[0, t-1], cmax), the demand
# so far lumped at cmax (beyond which every echelon position has come down to its level S).


class Initial:
    """A start state: on hand per stage, customer backlog, pipeline contents, nothing owed.

    pipeline[j][k] = units on lane j arriving in step 1 of period k (k < L_j).
    """

    def __init__(self, N, L, S, on_hand=None, backlog=0, pipeline=None):
        if on_hand is None:
            if pipeline is not None:
                raise ValueError("give initial_on_hand together with initial_pipeline")
            on_hand, backlog = canonical_initial_state(S)
        self.on_hand = [int(x) for x in on_hand]
        self.backlog = int(backlog)
        if pipeline is None:
            pipeline = [[0] * L[j] for j in range(N)]
        if len(pipeline) != N:
            raise ValueError(f"initial_pipeline needs one list per stage ({N})")
        self.pipeline = [[int(x) for x in pipeline[j]] for j in range(N)]
        if len(self.on_hand) != N or min(self.on_hand) < 0 or self.backlog < 0:
            raise ValueError("initial on hand must list N non-negative numbers; the backlog must be >= 0")
        for j in range(N):
            if len(self.pipeline[j]) != L[j] or any(x < 0 for x in self.pipeline[j]):
                raise ValueError(
                    f"initial_pipeline[{j}] must list {L[j]} non-negative arrivals (one per period < L_j)"
                )
        pipe = [sum(p) for p in self.pipeline]
        self.E0 = [int(x) for x in np.cumsum(np.add(self.on_hand, pipe)) - self.backlog]
        self.E0ex = [self.E0[j] - pipe[j] for j in range(N)]  # without lane j's own pipeline

    def base(self, j: int, t: int) -> int:
        """W_j(t) for t < L_j before demand: the echelon stock without lane j, plus its arrivals so far."""
        return self.E0ex[j] + sum(self.pipeline[j][: t + 1])


def _jminus(J, w, cmax):
    """(V - D, min(C + D, cmax)) for (V, C) ~ J and an independent D ~ w on 0, 1, ..."""
    off, P = J
    nv = P.shape[0]
    dmax = w.size - 1
    if cmax == 0:
        return off - dmax, np.convolve(P[:, 0], w[::-1])[:, None]
    out = np.zeros((nv + dmax, cmax + 1))
    for d in range(min(cmax, w.size)):
        rows = slice(dmax - d, dmax - d + nv)
        out[rows, d:cmax] += w[d] * P[:, : cmax - d]
        out[rows, cmax] += w[d] * P[:, cmax - d :].sum(axis=1)
    if w.size > cmax:
        tail = w.copy()
        tail[:cmax] = 0.0
        out[:, cmax] += np.convolve(P.sum(axis=1), tail[::-1])
    return off - dmax, out


def _jcap(J, X):
    """min(X[C], V) for (V, C) ~ J: each column c capped at its own level X[c]."""
    off, P = J
    nv, nc = P.shape
    top = off + nv - 1
    lo = min(off, int(X.min()))
    hi = min(top, int(X.max()))
    out = np.zeros((hi - lo + 1, nc))
    for c in range(nc):
        x, col = int(X[c]), P[:, c]
        if x >= top:
            out[off - lo : off - lo + nv, c] = col
        elif x < off:
            out[x - lo, c] = col.sum()
        else:
            k = x - off
            out[off - lo : off - lo + k, c] = col[:k]
            out[x - lo, c] = col[k:].sum()
    return lo, out


def _marg(J):
    return J[0], J[1].sum(axis=1)


def _mean(dist) -> float:
    off, p = dist
    return float((off + np.arange(p.size)) @ p)


def _minus(dist, w):
    off, p = dist
    return off - (w.size - 1), np.convolve(p, w[::-1])


class Forward:
    """Exact distributions of the closed-form recursion (0-based stages k), from a start state:

    W_k(t) = Y_k(t - L_k) - D[t-L_k, t-1]  (t >= L_k),  base_k(t) - D[0, t-1]  (t < L_k)
    Y_{N-1}(t) = X_{N-1}(t),  Y_k(t) = min(X_k(t), W_{k+1}(t)),  X_k(t) = max(S_k, E0_k - D[0, t-1]).
    Starts above S (E0_k > S_k) are tracked exactly through the lumped demand-so-far coordinate.
    """

    def __init__(self, dem: Demand, L, S, init: Initial):
        self.dem, self.L, self.S, self.init = dem, list(L), list(S), init
        self.N = len(L)
        self.cmax = max(0, *(init.E0[k] - S[k] for k in range(self.N)))
        c = np.arange(self.cmax + 1)
        self.X = [np.maximum(S[k], init.E0[k] - c) for k in range(self.N)]
        self._Y: dict = {}
        self._W: dict = {}

    def settled_after(self, limit: int) -> int:
        """First t from which every period is stationary (to 1e-16 of probability), at most ``limit``."""
        Tstar = sum(self.L)
        if self.cmax == 0:
            return min(Tstar, limit)
        for t in range(limit + 1):
            if self.dem.window(t)[: self.cmax].sum() <= TAIL:
                return min(t + Tstar, limit)
        return limit

    def C(self, t):
        """pmf of min(D[0, t-1], cmax)."""
        w = self.dem.window(t)
        p = np.zeros(self.cmax + 1)
        n = min(w.size, self.cmax)
        p[:n] = w[:n]
        p[self.cmax] += w[self.cmax :].sum()
        return p

    def Y(self, k, t):
        key = (k, t)
        if key not in self._Y:
            if k == self.N - 1:
                X = self.X[k]
                lo = int(X.min())
                P = np.zeros((int(X.max()) - lo + 1, self.cmax + 1))
                P[X - lo, np.arange(self.cmax + 1)] = self.C(t)
                self._Y[key] = (lo, P)
            else:
                self._Y[key] = _jcap(self.W(k + 1, t), self.X[k])
        return self._Y[key]

    def W(self, k, t):
        key = (k, t)
        if key not in self._W:
            Lk = self.L[k]
            if t >= Lk:
                self._W[key] = _jminus(self.Y(k, t - Lk), self.dem.window(Lk), self.cmax)
            else:
                start = np.zeros((1, self.cmax + 1))
                start[0, 0] = 1.0
                self._W[key] = _jminus((self.init.base(k, t), start), self.dem.window(t), self.cmax)
        return self._W[key]

    def moments(self, t, H, b, P) -> Evaluation:
        N, mu = self.N, self.dem.mean
        EY = np.array([_mean(_marg(self.Y(k, t))) for k in range(N)])
        EW = np.array([_mean(_marg(self.W(k, t))) for k in range(N)])
        it = EY - EW
        ech = EW - mu
        il1 = _minus(_marg(self.W(0, t)), self.dem.window(1))
        off, p = il1
        x = off + np.arange(p.size)
        back = float(np.maximum(-x, 0) @ p)
        oh = np.empty(N)
        oh[0] = ech[0] + back
        for j in range(1, N):
            oh[j] = ech[j] - ech[j - 1] - it[j - 1]
        pc = self.C(t)
        EX = np.array([float(self.X[k] @ pc) for k in range(N)])
        owed = np.zeros(N)
        owed[:-1] = EX[:-1] - EY[:-1]
        hold = float(np.dot(H, oh))
        pipe = float(np.dot(P, it))
        return Evaluation(
            cost=hold + pipe + b * back,
            on_hand=oh,
            in_transit=it,
            owed=owed,
            backlog=back,
            echelon_level=ech,
            holding_cost=hold,
            pipeline_cost=pipe,
            backorder_cost=b * back,
            prob_stockout=float(p[x < 0].sum()),
            il1_dist=il1,
        )


def evaluate_echelon_base_stock(
    demand, lead_times, installation_holding, backorder, S, pipeline_holding="upstream"
) -> Evaluation:
    """Exact steady-state expected cost per period (and its breakdown) of ANY integer echelon vector S.

    S may be non-nested and H need not decrease upstream. Stationary = every period t >= sum(L) from a
    start with empty pipelines, nothing owed and echelon stocks <= S.
    """
    dem = Demand(demand)
    N, L, H, _, b, P = serial_params(lead_times, installation_holding, backorder, pipeline_holding)
    S = check_levels(S, N)
    return Forward(dem, L, S, Initial(N, L, S)).moments(sum(L), H, b, P)


def expected_cost_by_period(
    demand,
    lead_times,
    installation_holding,
    backorder,
    S,
    T: int,
    pipeline_holding="upstream",
    initial_on_hand=None,
    initial_backlog: int = 0,
    initial_pipeline=None,
) -> tuple[np.ndarray, list[Evaluation]]:
    """Exact E[cost_t], t = 0..T-1, of the echelon policy S from a given start state.

    This is what a finite-horizon simulation must match, warm-up included: the episode total's
    expectation is ``costs.sum()``. Start (period 0 begins with its arrivals): on hand
    ``initial_on_hand`` per stage (default `canonical_initial_state`), customer backlog
    ``initial_backlog``, ``initial_pipeline[j][k]`` units on lane j arriving in period k < L_j (default
    empty), nothing owed. Starts above S (the policy idles until demand brings a stage down to S_j) are
    exact too. Returns (costs[T], one `Evaluation` per period).
    """
    dem = Demand(demand)
    N, L, H, _, b, P = serial_params(lead_times, installation_holding, backorder, pipeline_holding)
    S = check_levels(S, N)
    fw = Forward(dem, L, S, Initial(N, L, S, initial_on_hand, initial_backlog, initial_pipeline))
    T = int(T)
    settle = fw.settled_after(max(T - 1, 0))
    evs: list[Evaluation] = []
    for t in range(T):
        evs.append(fw.moments(t, H, b, P) if t <= settle else evs[settle])
    return np.array([e.cost for e in evs]), evs


# ------------------------------------------------------------------------------------------------
