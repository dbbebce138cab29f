"""Exact optimal base-stock policies and exact expected costs for textbook systems the kernel expresses.

Theory for the serial chain supplier -> stage N -> ... -> stage 1 -> customers with backorders, under
the kernel's period contract (`envs.kernel`), so that simulated costs can be compared with exact ones.
Lane j is the lane *into* stage j (from stage j+1, or from the supplier for j = N) with an integer
lead time L_j >= 0. Each period t:

1. shipments due in t arrive;
2. every stage j orders q_j from its upstream;
3. shipping, top-down: the supplier ships q_N in full, then stage j+1 ships min(on_hand_{j+1},
   owed_j + q_j) to stage j (the rest stays owed); a shipment on a lane with L_j >= 1 arrives in step 1
   of t + L_j, with L_j = 0 it goes on hand at once, before stage j ships further down;
4. customer demand D_t hits stage 1; sales = min(on_hand_1, B + D_t), the rest is backlogged (B);
5. end-of-period cost  sum_j H_j on_hand_j + sum_j P_j in_transit_j + b B.

Echelon base-stock policy S (what ``S`` means everywhere here): at step 2 stage j orders
q_j = max(0, S_j - IP_j), IP_j = sum_{i<=j} (on_hand_i + in_transit_i) + owed_j - B, where owed_j is
what stage j+1 owes stage j (owed_N = 0); what stage j owes stage j-1 stays inside echelon j.

Why the numbers are exact: with Y_j(t) the echelon stock secured after shipping and W_j(t) the same
without lane j's pipeline, Y_N = X_N, Y_j(t) = min(X_j(t), W_{j+1}(t)), W_j(t) = Y_j(t - L_j) -
D[t-L_j, t-1], where X_j(t) = max(S_j, E0_j - D[0, t-1]) is the echelon position after ordering (E0_j:
the initial one). The demand windows are independent of the levels they are subtracted from, so the
distributions propagate exactly. Stage 1 protects L_1 + 1 periods (an order of period t is usable for
the demand of t + L_1), each internal lane adds L_j. With echelon rates h_j = H_j - H_{j+1}
(H_{N+1} = 0) the long-run cost is

    sum_j h_j (E[Y_j] - (L_j + 1) mu) + (b + H_1) E[(IL_1)^-] + sum_j (P_j - H_{j+1}) L_j mu,

and Chen and Zheng's recursion on the integer lattice minimises it (optimal over all policies, Clark
and Scarf 1960). The last term vanishes for the 'upstream' pipeline convention P_j = H_{j+1}, which is
the kernel's ``pipeline_holding: parent`` (and none on the supplier lane). Relative to Snyder and Shen
ch. 6 (stockpyl ``ssm_serial``) this is their model with lead times (L_1 + 1, L_2, ..., L_N) and a cost
lower by mu * sum_{j>=2} h_j; the optimal levels are the same.

Demand (argument ``demand``): a positive float is the mean of i.i.d. Poisson demand; a 1-D array is
the pmf of one period's demand on 0, 1, ..., M. For a lattice of step u work in lattice units (cost
rates times u, returned levels times u). Poisson tails are cut at 1e-16 and renormalised.

Layout: the model's demand, parameters, level helpers and result types are in `agents.serial_model`,
the forward evaluation (exact distributions, stationary and transient) in `agents.serial_forward`;
this module holds the backward recursion, the newsvendor, the pathwise oracle and the scenario
adapter, and is the one to import from (``__all__``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from restock.agents.serial_forward import (
    Forward,
    Initial,
    evaluate_echelon_base_stock,
    expected_cost_by_period,
)
from restock.agents.serial_model import (
    Demand,
    Evaluation,
    SerialSolution,
    canonical_initial_state,
    check_levels,
    discretized_normal_pmf,
    local_from_echelon,
    modified_echelon_levels,
    pipeline_constant,
    serial_params,
)

__all__ = [
    "Evaluation",
    "SerialSolution",
    "SerialSpec",
    "canonical_initial_state",
    "clark_scarf_serial",
    "discretized_normal_pmf",
    "echelon_cost_backward",
    "echelon_path_oracle",
    "evaluate_echelon_base_stock",
    "expected_cost_by_period",
    "local_from_echelon",
    "modified_echelon_levels",
    "newsvendor_base_stock",
    "newsvendor_cost",
    "serial_from_scenario",
]


# backward recursion (Clark-Scarf / Chen-Zheng) on the integer lattice


def _backward(dem: Demand, L, h, penalty, S_fixed=None):
    """C_k on a grid [lo, hi] for k = 1..N; returns (S, [(lo, C_k)], C_N(S_N)).

    C_1(y) = E[h_1 (y - D^{L_1+1}) + penalty (y - D^{L_1+1})^-],  penalty = b + H_1
    C_k(y) = h_k (y - (L_k+1) mu) + E[C_{k-1}(min(S_{k-1}, y - D^{L_k}))]
    """
    N, mu = len(L), dem.mean
    hi = dem.window(sum(L) + 1).size + 2
    lo = -2
    if S_fixed is not None:
        hi = max(hi, max(S_fixed) + 2)
        lo = min(lo, min(S_fixed) - 2)
    xs = np.arange(lo, hi + 1)
    S: list[int] = []
    Cs = []
    C = None
    for k in range(N):
        w = dem.window(L[0] + 1) if k == 0 else dem.window(L[k])
        xe = np.arange(lo - (w.size - 1), hi + 1)
        if k == 0:
            g = h[0] * xe + penalty * np.maximum(-xe, 0)
            lin = 0.0
        else:
            idx = np.minimum(S[k - 1], xe) - lo
            ok = idx >= 0
            g = np.empty(xe.size)
            g[ok] = C[idx[ok]]
            # C_{k-1} is exactly linear on (-inf, min(0, S_1..S_{k-2})], which holds lo and lo + 1
            g[~ok] = C[0] + (xe[~ok] - lo) * (C[1] - C[0])
            lin = h[k] * (xs - (L[k] + 1) * mu)
        C = lin + np.convolve(g, w, mode="valid")
        if S_fixed is None:
            cmin = C.min()
            i = int(np.flatnonzero(cmin + 1e-11 * max(1.0, abs(cmin)) >= C)[0])
            if i >= C.size - 2:
                raise RuntimeError("the optimum lies on the grid boundary; enlarge the grid")
            S.append(int(xs[i]))
        else:
            S.append(int(S_fixed[k]))
        Cs.append((lo, C.copy()))
    return S, Cs, float(C[S[-1] - lo])


def clark_scarf_serial(
    demand, lead_times, installation_holding, backorder, pipeline_holding="upstream"
) -> SerialSolution:
    """Exact optimal echelon base-stock levels and cost per period of the serial system.

    lead_times [L_1..L_N] (stage 1 faces customers), installation_holding [H_1..H_N] non-increasing
    upstream (echelon rates >= 0), backorder b > 0 per unit of customer backlog and period,
    pipeline_holding 'upstream' (P_j = H_{j+1}, none on the supplier lane), a number or [P_1..P_N]; any
    P only adds the constant sum_j (P_j - H_{j+1}) L_j mu.
    """
    dem = Demand(demand)
    N, L, H, h, b, P = serial_params(lead_times, installation_holding, backorder, pipeline_holding)
    if any(x < -1e-12 for x in h):
        raise ValueError(
            "installation holding costs must not increase upstream (echelon rates h_j >= 0) "
            f"for the Clark-Scarf decomposition; got H = {H}"
        )
    if not b > 0:
        raise ValueError("the backorder cost must be > 0")
    S, Cs, ech_cost = _backward(dem, L, h, b + H[0])
    ev = Forward(dem, L, S, Initial(N, L, S)).moments(sum(L), H, b, P)
    return SerialSolution(
        echelon=S,
        cost=ech_cost + pipeline_constant(L, H, P, dem.mean),
        local=local_from_echelon(S),
        echelon_modified=modified_echelon_levels(S),
        evaluation=ev,
        C_functions=Cs,
    )


def echelon_cost_backward(
    demand, lead_times, installation_holding, backorder, S, pipeline_holding="upstream"
) -> float:
    """Steady-state cost of a given S by the backward recursion (independent of the forward pass)."""
    dem = Demand(demand)
    N, L, H, h, b, P = serial_params(lead_times, installation_holding, backorder, pipeline_holding)
    S = check_levels(S, N)
    _, _, c = _backward(dem, L, h, b + H[0], S_fixed=S)
    return c + pipeline_constant(L, H, P, dem.mean)


def newsvendor_base_stock(demand, lead_time, holding, backorder, pipeline_holding=0.0) -> tuple[int, float]:
    """Single stage with backorders: the optimal base stock and its expected cost per period.

    An order of period t is usable in t + L, so the end-of-period net inventory is S - D^{(L+1)}: the
    protection interval is L + 1 periods. S* is the smallest S with P(D^{(L+1)} <= S) >= b / (b + h).
    """
    dem = Demand(demand)
    L = int(lead_time)
    cdf = np.cumsum(dem.window(L + 1))
    S = int(np.flatnonzero(cdf >= backorder / (backorder + holding) - 1e-14)[0])
    return S, newsvendor_cost(demand, L, holding, backorder, S, pipeline_holding)


def newsvendor_cost(demand, lead_time, holding, backorder, S, pipeline_holding=0.0) -> float:
    """h E[(S - D^{(L+1)})^+] + b E[(S - D^{(L+1)})^-] + pipeline_holding L mu (steady state)."""
    dem = Demand(demand)
    w = dem.window(int(lead_time) + 1)
    x = S - np.arange(w.size)
    return float(
        holding * (np.maximum(x, 0) @ w)
        + backorder * (np.maximum(-x, 0) @ w)
        + pipeline_holding * int(lead_time) * dem.mean
    )


# ------------------------------------------------------------------------------------------------
# pathwise oracle


def echelon_path_oracle(
    demands, lead_times, S, initial_on_hand=None, initial_backlog=0, initial_pipeline=None
) -> dict[str, np.ndarray]:
    """Exact sample paths of the echelon policy S for given demand sequences, without a simulator.

    ``demands`` is [T] or [R, T]. From the closed form (module docstring): X_j(t) = max(S_j, E0_j -
    D[0, t-1]), Y_N = X_N, Y_j = min(X_j, W_{j+1}), W_j(t) = Y_j(t - L_j) - D[t-L_j, t-1]; then
    ship_j(t) = Y_j(t) - Y_j(t-1) + D_{t-1}, order_j(t) = X_j(t) - X_j(t-1) + D_{t-1} (Y_j(-1) =
    X_j(-1) = E0_j), in_transit_j = Y_j - W_j, echelon level E_j = W_j - D_t, on_hand_1 = E_1^+,
    backlog = E_1^-, on_hand_j = E_j - E_{j-1} - in_transit_{j-1}, owed_j = X_j - Y_j. All values are
    end-of-period, arrays [(R,) T, N] (backlog [(R,) T]). Starts above S are allowed.
    """
    D = np.asarray(demands, dtype=np.int64)
    single = D.ndim == 1
    D = np.atleast_2d(D)
    R, T = D.shape
    L = [int(x) for x in lead_times]
    N = len(L)
    S = [int(x) for x in S]
    init = Initial(N, L, S, initial_on_hand, initial_backlog, initial_pipeline)
    E0 = np.asarray(init.E0, np.int64)
    cD = np.concatenate([np.zeros((R, 1), np.int64), np.cumsum(D, axis=1)], axis=1)  # cD[:, t] = D[0..t-1]
    X = np.maximum(np.asarray(S)[None, None, :], E0[None, None, :] - cD[:, :T, None])
    Y = np.zeros((R, T, N), np.int64)
    W = np.zeros((R, T, N), np.int64)
    for t in range(T):
        for j in range(N - 1, -1, -1):
            Y[:, t, j] = X[:, t, j] if j == N - 1 else np.minimum(X[:, t, j], W[:, t, j + 1])
            Lj = L[j]
            if t >= Lj:
                W[:, t, j] = Y[:, t - Lj, j] - (cD[:, t] - cD[:, t - Lj])
            else:
                W[:, t, j] = init.base(j, t) - cD[:, t]
    Dprev = np.concatenate([np.zeros((R, 1), np.int64), D[:, :-1]], axis=1)[:, :, None]
    E0b = np.broadcast_to(E0[None, None, :], (R, 1, N))
    ship = Y - np.concatenate([E0b, Y[:, :-1]], axis=1) + Dprev
    order = X - np.concatenate([E0b, X[:, :-1]], axis=1) + Dprev
    it = Y - W
    E = W - D[:, :, None]
    oh = np.zeros((R, T, N), np.int64)
    oh[:, :, 0] = np.maximum(E[:, :, 0], 0)
    backlog = np.maximum(-E[:, :, 0], 0)
    for j in range(1, N):
        oh[:, :, j] = E[:, :, j] - E[:, :, j - 1] - it[:, :, j - 1]
    owed = np.zeros((R, T, N), np.int64)
    owed[:, :, :-1] = X[:, :, :-1] - Y[:, :, :-1]
    out = dict(
        X=X,
        Y=Y,
        W=W,
        ship=ship,
        order=order,
        in_transit=it,
        echelon_level=E,
        on_hand=oh,
        backlog=backlog,
        owed=owed,
    )
    if single:
        out = {k: v[0] for k, v in out.items()}
    return out


# ------------------------------------------------------------------------------------------------
# scenarios


@dataclass(frozen=True)
class SerialSpec:
    """A compiled serial scenario in theory order (stage 1 = the store, stage N = fed by the supplier)."""

    mu: float  # Poisson mean demand per period at the store
    lead_times: tuple[int, ...]  # L_j of the lane into stage j
    holding: tuple[float, ...]  # installation holding H_j per unit on hand and period
    backorder: float  # b per unit of customer backlog and period
    pipeline_holding: tuple[float, ...]  # P_j per unit in transit into stage j and period
    nodes: tuple[int, ...]  # kernel node index of stage j
    initial_on_hand: tuple[int, ...]  # at reset, before period 0's arrivals
    initial_pipeline: tuple[tuple[int, ...], ...]  # [j][k]: units on lane j arriving in period k < L_j
    horizon: int
    initial_backlog: int = 0

    @property
    def pipeline_convention(self) -> str:
        """'upstream' when P_j = H_{j+1} (none on the supplier lane): cost = the echelon-cost form."""
        up = (*self.holding[1:], 0.0)
        return "upstream" if np.allclose(self.pipeline_holding, up, rtol=0, atol=1e-12) else "custom"

    def solve(self) -> SerialSolution:
        """The Clark-Scarf optimum of this system."""
        return clark_scarf_serial(
            self.mu, self.lead_times, self.holding, self.backorder, list(self.pipeline_holding)
        )

    def expected_costs(self, S, T: int | None = None) -> tuple[np.ndarray, list[Evaluation]]:
        """`expected_cost_by_period` of levels S from the scenario's own initial state (T = horizon)."""
        return expected_cost_by_period(
            self.mu,
            self.lead_times,
            self.holding,
            self.backorder,
            S,
            self.horizon if T is None else T,
            pipeline_holding=list(self.pipeline_holding),
            initial_on_hand=list(self.initial_on_hand),
            initial_backlog=self.initial_backlog,
            initial_pipeline=[list(p) for p in self.initial_pipeline],
        )


def serial_from_scenario(compiled) -> SerialSpec:
    """Read a compiled scenario (`envs.compile.Compiled`) as a serial system the theory solves exactly.

    Checks that it is a chain supplier -> DC ... -> one store with one SKU, stationary Poisson demand,
    fixed lead times, backorders everywhere and no cost or limit the theory does not model; raises a
    ValueError listing every violation otherwise. Kernel nodes are DCs first (parents first), then
    stores; ``lt_value[n]`` is the lead time of the lane into node n.
    """
    from restock.envs.demand import KIND_POISSON

    p, dm = compiled.params, compiled.demand
    N, M, K = compiled.N, compiled.M, compiled.K
    bad: list[str] = []
    if K != 1:
        bad.append(f"one SKU expected, found {K}")
    if N - M != 1:
        bad.append(f"one store expected, found {N - M}")
    if bad:
        raise ValueError(f"{compiled.config.name}: not a serial single-SKU system: " + "; ".join(bad))
    chain = [N - 1]  # stage 1 = the store, then up the parents
    while p.parent[chain[-1]] >= 0:
        chain.append(int(p.parent[chain[-1]]))
    if len(chain) != N:
        bad.append(f"nodes {sorted(set(range(N)) - set(chain))} are not on the store's supply chain")
    if len(p.sup_idx) != 1:
        bad.append("exactly one node must be fed by an external supplier")
    if p.sup_capped.any():
        bad.append("supplier capacities are not modelled")
    if dm.kind != KIND_POISSON:
        bad.append("demand must be Poisson")
    if not np.all(p.season == 1.0) or dm.eff_start.size:
        bad.append("demand must be stationary (no seasonality, trend, promotions or shocks)")
    mu = float(dm.base[0, 0])
    if not mu > 0:
        bad.append("mean demand must be > 0")
    if not p.lt_fixed[chain].all() or p.lt_extra.any():
        bad.append("lead times must be fixed (no distributions or spikes)")
    if not p.backlog[chain].all():
        bad.append("every node must backlog (unmet: backlog)")
    if (p.order_cost != 0).any() or (p.fixed_cost != 0).any():
        bad.append("ordering costs (variable or fixed) are not modelled")
    if (p.stockout[:M] != 0).any():
        bad.append("DC stockout costs on owed units are not modelled (stockout_factor: 0 at DCs)")
    if p.include_revenue:
        bad.append("revenue is not modelled")
    for what, arr in (
        ("storage capacities", p.storage_cap),
        ("lane capacities", p.lane_cap),
        ("budgets", p.budget),
        ("order-increase limits", p.max_increase),
    ):
        if np.isfinite(arr).any():
            bad.append(f"{what} are not modelled")
    if int(p.lot[0]) != 1 or int(p.moq[0]) != 0:
        bad.append("lot sizes and MOQs are not modelled")
    L = tuple(int(p.lt_value[n, 0]) for n in chain)
    pipes = []
    on_hand = [int(compiled.init_on_hand[n, 0]) for n in chain]
    for j, n in enumerate(chain):
        arr = [int(x) for x in compiled.init_pipe[n, 0]]
        if L[j] == 0:
            on_hand[j] += arr[0]  # arrives at reset: the same as on hand
            arr[0] = 0
        if any(arr[L[j] :]):
            bad.append(f"initial pipeline of node {n} arrives after its lead time")
        pipes.append(tuple(arr[: L[j]]))
    if bad:
        raise ValueError(f"{compiled.config.name}: not a textbook serial system: " + "; ".join(bad))
    return SerialSpec(
        mu=mu,
        lead_times=L,
        holding=tuple(float(p.hold[n, 0]) for n in chain),
        backorder=float(p.stockout[N - 1, 0]),
        pipeline_holding=tuple(float(p.pipe_hold[n, 0]) for n in chain),
        nodes=tuple(chain),
        initial_on_hand=tuple(on_hand),
        initial_pipeline=tuple(pipes),
        horizon=int(p.horizon),
    )
