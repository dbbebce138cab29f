"""The serial system's model for the exact theory in `agents.optimal`: demand on the integer lattice,
parameters, echelon-level helpers and the result types.

The model (stages, lanes, the period contract, echelon base-stock levels ``S``) is described in
`agents.optimal`; `agents.serial_forward` propagates its exact distributions forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

TAIL = 1e-16  # Poisson tail mass cut off (renormalised); also the settling tolerance of starts above S


# demand


class Demand:
    """One period's demand on the integer lattice, with the pmfs of n-period windows."""

    def __init__(self, demand):
        if np.ndim(demand) == 0:
            mu = float(demand)
            if not mu > 0:
                raise ValueError(f"the Poisson mean must be > 0, got {mu}")
            self.poisson_mu: float | None = mu
            self.pmf = None
            self.mean = mu
        else:
            p = np.asarray(demand, dtype=float)
            if p.ndim != 1 or p.size == 0 or np.any(p < 0):
                raise ValueError("a demand pmf must be a 1-D array of non-negative numbers")
            s = p.sum()
            if abs(s - 1.0) > 1e-9:
                raise ValueError(f"the demand pmf sums to {s}, not 1")
            self.poisson_mu = None
            self.pmf = p / s
            self.mean = float(np.arange(p.size) @ self.pmf)
        self._cache: dict[int, np.ndarray] = {}

    def window(self, n: int) -> np.ndarray:
        """pmf on 0, 1, ... of the total demand of n periods."""
        n = int(n)
        if n < 0:
            raise ValueError("negative demand window")
        w = self._cache.get(n)
        if w is not None:
            return w
        if n == 0:
            w = np.array([1.0])
        elif self.poisson_mu is not None:
            m = n * self.poisson_mu
            w = stats.poisson.pmf(np.arange(int(stats.poisson.isf(TAIL, m)) + 3), m)
            w = w / w.sum()
        else:
            w = self.pmf
            for _ in range(n - 1):
                w = np.convolve(w, self.pmf)
        self._cache[n] = w
        return w


def discretized_normal_pmf(mean: float, sd: float, step: float, tail_sd: float = 10.0) -> np.ndarray:
    """pmf of Normal(mean, sd) rounded to the lattice step * {0, 1, ...} (mass below 0 goes to 0).

    Use it with cost rates multiplied by ``step`` and levels read in units of ``step``.
    """
    hi = int(np.ceil((mean + tail_sd * sd) / step)) + 1
    cdf = stats.norm.cdf((np.arange(hi + 2) - 0.5) * step, mean, sd)
    p = np.diff(cdf)
    p[0] += cdf[0]
    return p / p.sum()


# ------------------------------------------------------------------------------------------------
# parameters and level helpers


def serial_params(lead_times, installation_holding, backorder, pipeline_holding):
    L = [int(x) for x in np.atleast_1d(lead_times)]
    H = [float(x) for x in np.atleast_1d(installation_holding)]
    N = len(L)
    if N == 0 or len(H) != N:
        raise ValueError("lead_times and installation_holding need one entry per stage (same length)")
    if any(x < 0 for x in L):
        raise ValueError("lead times must be >= 0")
    Hn = [*H, 0.0]
    h = [Hn[j] - Hn[j + 1] for j in range(N)]
    if isinstance(pipeline_holding, str):
        if pipeline_holding != "upstream":
            raise ValueError("pipeline_holding must be 'upstream', a number or one number per stage")
        P = Hn[1:]
    elif np.ndim(pipeline_holding) == 0:
        P = [float(pipeline_holding)] * N
    else:
        P = [float(x) for x in pipeline_holding]
        if len(P) != N:
            raise ValueError("pipeline_holding needs one rate per stage")
    return N, L, H, h, float(backorder), P


def check_levels(S, N: int) -> list[int]:
    raw = np.atleast_1d(S)
    out = [round(float(x)) for x in raw]
    if any(abs(float(a) - b) > 1e-9 for a, b in zip(raw, out, strict=True)):
        raise ValueError("base-stock levels must be integers (lattice units)")
    if len(out) != N:
        raise ValueError(f"S needs one level per stage ({N}), got {len(out)}")
    return out


def pipeline_constant(L, H, P, mu) -> float:
    """The policy-independent term sum_j (P_j - H_{j+1}) L_j mu."""
    Hn = [*H, 0.0]
    return sum((P[j] - Hn[j + 1]) * L[j] * mu for j in range(len(L)))


def modified_echelon_levels(S: Sequence[int]) -> list[int]:
    """Nested levels S~_j = min_{k>=j} S_k: the same physical paths and cost as S.

    Only the internal owed quantities differ (stage j then carries a constant extra S_j - S~_j owed).
    """
    out = [int(x) for x in S]
    for j in range(len(out) - 2, -1, -1):
        out[j] = min(out[j], out[j + 1])
    return out


def local_from_echelon(S: Sequence[int]) -> list[int]:
    """Installation levels s_j = S~_j - S~_{j-1} (S~_0 = 0).

    The local policy with these levels reproduces the echelon policy only when stages order bottom-up
    within a period (each sees its child's order of the same period); ordered simultaneously from last
    period's positions it is a different, much costlier policy. Prefer echelon positions.
    """
    St = modified_echelon_levels(S)
    return [St[0]] + [St[j] - St[j - 1] for j in range(1, len(St))]


def canonical_initial_state(S: Sequence[int]) -> tuple[list[int], int]:
    """The 'system at rest' start for S: on_hand_j = S~_j - S~_{j-1}, empty pipelines, nothing owed.

    Returns (on_hand per stage, customer backlog). It is what a long run of zero demand leaves, not a
    stationary draw: periods before L_1 + ... + L_N are biased, every later one is exactly stationary.
    """
    oh = local_from_echelon(S)
    backlog = 0
    if oh[0] < 0:
        backlog, oh[0] = -oh[0], 0
    return oh, backlog


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class Evaluation:
    """Exact expectations of END-OF-PERIOD quantities (what costs are charged on) under a policy S."""

    cost: float  # expected cost of the period
    on_hand: np.ndarray  # E[on_hand_j], j = 1..N
    in_transit: np.ndarray  # E[in_transit_j] on the lane into j
    owed: np.ndarray  # E[owed_j] (stage j+1 -> j); owed_N = 0
    backlog: float  # E[customer backlog]
    echelon_level: np.ndarray  # E[echelon inventory level_j]
    holding_cost: float  # sum_j H_j E[on_hand_j]
    pipeline_cost: float  # sum_j P_j E[in_transit_j]
    backorder_cost: float  # b E[backlog]
    prob_stockout: float = float("nan")  # P(IL_1 < 0) at the end of the period
    il1_dist: tuple | None = field(default=None, repr=False)  # (offset, pmf) of stage 1's net inventory


@dataclass
class SerialSolution:
    """Result of `clark_scarf_serial`; unpacks as ``S, cost``."""

    echelon: list[int]  # optimal echelon levels S_1..S_N (smallest minimisers)
    cost: float  # optimal expected cost per period
    local: list[int]  # installation levels
    echelon_modified: list[int]  # nested S~ (same cost)
    evaluation: Evaluation  # steady-state breakdown at the optimum
    C_functions: list = field(default_factory=list, repr=False)  # (lo, C_j on lo, lo+1, ...) per stage

    def __iter__(self):
        return iter((self.echelon, self.cost))


# ------------------------------------------------------------------------------------------------
