"""Exact theory (agents.optimal) and its validation of the kernel: pathwise and in expectation."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import yaml
from restock.agents.echelon import EchelonBaseStock
from restock.agents.optimal import (
    canonical_initial_state,
    clark_scarf_serial,
    discretized_normal_pmf,
    echelon_cost_backward,
    echelon_path_oracle,
    evaluate_echelon_base_stock,
    expected_cost_by_period,
    local_from_echelon,
    modified_echelon_levels,
    newsvendor_base_stock,
    newsvendor_cost,
    serial_from_scenario,
)
from restock.agents.serial_forward import Forward, Initial
from restock.agents.serial_model import Demand
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario, scenario_dir
from restock.envs.types import C_HOLD, C_PIPE, C_STOCKOUT, K_BACKLOG, K_ON_HAND, K_PIPELINE
from restock.eval.rollout import rollout
from scipy import stats

H2 = [2.0, 1.0]
H3 = [3.0, 2.0, 1.0]


# ------------------------------------------------------------------------------------------------
# theory


@pytest.mark.parametrize("mu", [5, 20])
@pytest.mark.parametrize("L", [0, 2, 4])
@pytest.mark.parametrize("b", [10, 40])
def test_newsvendor__closed_form_and_serial_code_agree(mu, L, b):
    h, P = 1.0, 0.5
    S, c = newsvendor_base_stock(mu, L, h, b, pipeline_holding=P)
    m = (L + 1) * mu  # protection interval: L + 1 periods
    assert stats.poisson.cdf(S, m) >= b / (b + h) > stats.poisson.cdf(S - 1, m)
    d = np.arange(int(m + 40 * np.sqrt(m) + 50))
    pm = stats.poisson.pmf(d, m)
    direct = h * np.maximum(S - d, 0) @ pm + b * np.maximum(d - S, 0) @ pm + P * L * mu
    assert c == pytest.approx(direct, rel=1e-12)
    assert newsvendor_cost(mu, L, h, b, S - 1, P) > c < newsvendor_cost(mu, L, h, b, S + 1, P)
    sol = clark_scarf_serial(mu, [L], [h], b, pipeline_holding=P)
    assert sol.echelon == [S] and sol.cost == pytest.approx(c, rel=1e-12)
    assert sol.evaluation.in_transit[0] == pytest.approx(L * mu)


def test_clark_scarf__pmf_input_matches_poisson():
    p = stats.poisson.pmf(np.arange(80), 4.0)
    a = clark_scarf_serial(4.0, [1, 0, 2], H3, 10)
    b = clark_scarf_serial(p / p.sum(), [1, 0, 2], H3, 10)
    assert a.echelon == b.echelon and a.cost == pytest.approx(b.cost, rel=1e-10)


@pytest.mark.parametrize(
    "mu,L,H,b",
    [(5, [1, 1], H2, 10), (5, [2, 0], H2, 10), (20, [2, 0, 3], H3, 40), (5, [0, 0, 0], H3, 10)],
)
def test_clark_scarf__backward_equals_forward(mu, L, H, b):
    sol = clark_scarf_serial(mu, L, H, b)
    assert sol.evaluation.cost == pytest.approx(sol.cost, rel=1e-10)
    rng = np.random.default_rng(0)
    for _ in range(3):
        S = [int(x) for x in np.array(sol.echelon) + rng.integers(-6, 7, len(L))]
        ev = evaluate_echelon_base_stock(mu, L, H, b, S)
        assert echelon_cost_backward(mu, L, H, b, S) == pytest.approx(ev.cost, rel=1e-10)
        ev2 = evaluate_echelon_base_stock(mu, L, H, b, modified_echelon_levels(S))
        assert ev2.cost == pytest.approx(ev.cost, rel=1e-10)


@pytest.mark.parametrize("mu,L,H,b", [(5, [1, 1], H2, 10), (5, [2, 0], H2, 40), (5, [1, 0, 2], H3, 10)])
def test_clark_scarf__optimal_in_a_box_around_it(mu, L, H, b):
    sol = clark_scarf_serial(mu, L, H, b)
    box = [range(s - 3, s + 4) for s in sol.echelon]
    best = min(evaluate_echelon_base_stock(mu, L, H, b, list(S)).cost for S in itertools.product(*box))
    assert best == pytest.approx(sol.cost, rel=1e-10)


def test_clark_scarf__known_non_nested_optimum_and_level_helpers():
    # an L = 0 upstream lane makes stage 2's echelon the real cap: S* = (20, 19) is not nested
    assert clark_scarf_serial(5, [2, 0], H2, 10).echelon == [20, 19]
    assert modified_echelon_levels([20, 19]) == [19, 19]
    assert local_from_echelon([20, 19]) == [19, 0]
    assert local_from_echelon([15, 19, 24]) == [15, 4, 5]
    assert canonical_initial_state([18, 14, 26]) == ([14, 0, 12], 0)


def test_clark_scarf__rejects_holding_that_increases_upstream():
    with pytest.raises(ValueError, match="must not increase upstream"):
        clark_scarf_serial(5, [1, 1], [1.0, 2.0], 10)


def test_clark_scarf__snyder_shen_example_6_1():
    """S&S Example 6.1: Normal(5, 1), installation H = (7, 4, 2), p = 37.12, their lead times (1, 1, 2).

    Published (and stockpyl) optimum S* = (6.49, 12.02, 22.71), cost about 47.66 in their convention;
    ours is theirs with L_1 one less and cost lower by mu (h_2 + h_3) = 20.
    """
    step = 0.01
    sol = clark_scarf_serial(
        discretized_normal_pmf(5, 1, step), [0, 1, 2], np.array([7.0, 4.0, 2.0]) * step, 37.12 * step
    )
    assert np.allclose(np.array(sol.echelon) * step, [6.49, 12.02, 22.71], atol=0.02)
    assert sol.cost + 20.0 == pytest.approx(47.66, abs=0.01)


def test_cost_identity__installation_cost_equals_echelon_form_pathwise():
    """sum H OH + sum P IT + b B = sum h_j E_j + (b + H_1) B + sum (P_j - H_{j+1}) IT_j, every period."""
    rng = np.random.default_rng(3)
    L, S, H, b, P = [1, 0, 2], [14, 17, 30], np.array(H3), 10.0, np.array([0.7, 0.2, 0.4])
    o = echelon_path_oracle(rng.poisson(5, 300), L, S)
    inst = o["on_hand"] @ H + o["in_transit"] @ P + b * o["backlog"]
    h = H - np.append(H[1:], 0.0)
    ech = o["echelon_level"] @ h + (b + H[0]) * o["backlog"] + o["in_transit"] @ (P - np.append(H[1:], 0.0))
    np.testing.assert_allclose(inst, ech)


ENUM_CASES = [
    dict(L=[1, 0, 2], S=[3, 4, 8], init=None),  # canonical start
    dict(L=[1, 1], S=[4, 3], init=None),  # non-nested
    dict(L=[1, 2], S=[4, 9], init=([0, 0], 0)),  # empty start
    dict(L=[2], S=[5], init=([1], 2)),  # backlog start
    dict(L=[2, 1], S=[5, 7], init=([1, 0], 1, [[0, 2], [3]])),  # pipelines
    dict(L=[1, 0, 2], S=[3, 4, 8], init=([5, 2, 3], 0, [[1], [], [2, 0]])),  # above S everywhere
    dict(L=[2, 1], S=[5, 6], init=([9, 0], 0, [[0, 2], [3]])),  # above S at stage 1 only
    dict(L=[0, 0, 1], S=[2, 3, 4], init=([4, 3, 2], 0, [[], [], [1]])),
]


@pytest.mark.parametrize("case", ENUM_CASES)
def test_expected_cost_by_period__equals_complete_enumeration(case):
    """E[cost_t] and E[state_t] over ALL 4^6 demand paths of a 4-point pmf, each run through the pathwise
    oracle, equal `expected_cost_by_period` to 1e-10 (no sampling noise), starts above S included."""
    pmf = np.array([0.3, 0.2, 0.4, 0.1])
    L, S, T = case["L"], case["S"], 6
    N = len(L)
    H, P, b = np.array(H3[-N:]), np.full(N, 0.5), 7.0
    kw = {}
    if case["init"] is not None:
        kw = dict(initial_on_hand=case["init"][0], initial_backlog=case["init"][1])
        if len(case["init"]) > 2:
            kw["initial_pipeline"] = case["init"][2]
    seqs = np.array(list(itertools.product(range(4), repeat=T)))
    w = np.prod(pmf[seqs], axis=1)
    o = echelon_path_oracle(seqs, L, S, **kw)
    exact = w @ (o["on_hand"] @ H + o["in_transit"] @ P + b * o["backlog"])
    theo, evs = expected_cost_by_period(pmf, L, H, b, S, T, pipeline_holding=P, **kw)
    np.testing.assert_allclose(theo, exact, rtol=1e-10, atol=1e-10)
    for key in ("on_hand", "in_transit", "owed"):
        np.testing.assert_allclose(
            np.array([getattr(e, key) for e in evs]), np.einsum("r,rtn->tn", w, o[key]), atol=1e-10
        )
    if case["init"] is None:
        assert theo[-1] == pytest.approx(evaluate_echelon_base_stock(pmf, L, H, b, S, P).cost, rel=1e-12)


@pytest.mark.parametrize("init", [([0, 0, 0], 0, None), ([30, 9, 12], 0, [[4], [4, 4], [9]])])
def test_expected_cost_by_period__settles_exactly_on_the_stationary_cost(init):
    """From an empty start or one above S, the periods the function copies (after it detects settling)
    equal a full computation, and the tail is the steady-state cost."""
    mu, L, S = 5.0, [1, 2, 1], [16, 28, 33]
    costs, _ = expected_cost_by_period(
        mu, L, H3, 10.0, S, 40, initial_on_hand=init[0], initial_backlog=init[1], initial_pipeline=init[2]
    )
    fw = Forward(Demand(mu), L, S, Initial(3, L, S, init[0], init[1], init[2]))
    full = [fw.moments(t, H3, 10.0, [2.0, 1.0, 0.0]).cost for t in range(40)]
    np.testing.assert_allclose(costs, full, rtol=1e-12)
    assert costs[-1] == pytest.approx(evaluate_echelon_base_stock(mu, L, H3, 10.0, S).cost, rel=1e-12)
    assert abs(costs[0] - costs[-1]) > 1.0  # a real transient


# ------------------------------------------------------------------------------------------------
# scenarios


def test_serial_from_scenario__reads_serial_3_in_theory_order():
    spec = serial_from_scenario(compile_scenario(load_scenario("serial_3")))
    assert spec.mu == 5.0 and spec.backorder == 10.0
    assert spec.lead_times == (1, 1, 2) and spec.nodes == (2, 1, 0)  # store_0, stage_2, stage_3
    assert spec.holding == (1.0, 0.5, 0.2)
    assert spec.pipeline_holding == (0.5, 0.2, 0.0) and spec.pipeline_convention == "upstream"
    assert spec.initial_on_hand == (10, 10, 10) and spec.initial_pipeline == ((0,), (0,), (0, 5))
    sol = spec.solve()
    assert sol.echelon == [16, 21, 34]
    assert sol.cost == pytest.approx(11.575155041164965, rel=1e-10)


@pytest.mark.parametrize(
    "override,message",
    [
        (dict(network__stores__unmet="lost"), "unmet: backlog"),
        (dict(skus__order_cost=0.1), "ordering costs"),
        (dict(demand__model="negative_binomial"), "Poisson"),
        (dict(demand__weekly=[1, 1, 1, 1, 1, 1.5, 0.5]), "stationary"),
        (dict(network__stores__lead_time={"values": [1, 2], "probs": [0.5, 0.5]}), "lead times"),
        (dict(skus__count=2), "one SKU"),
    ],
)
def test_serial_from_scenario__rejects_what_the_theory_does_not_model(override, message):
    with pytest.raises(ValueError, match=message):
        serial_from_scenario(compile_scenario(load_scenario("serial_3", **override)))


def test_serial_from_scenario__rejects_distribution_networks():
    with pytest.raises(ValueError, match="one store"):
        serial_from_scenario(compile_scenario(load_scenario("tiny")))


# ------------------------------------------------------------------------------------------------
# the kernel against the theory

SERIAL_3 = yaml.safe_load((scenario_dir() / "serial_3.yaml").read_text())

NEWSVENDOR = {
    "name": "newsvendor",
    "horizon": 200,
    "skus": {
        "count": 1,
        "holding_cost": 1.0,
        "stockout_cost": 9.0,
        "order_cost": 0.0,
        "fixed_order_cost": 0.0,
    },
    "network": {
        "suppliers": [{"id": "supplier"}],
        "stores": {"count": 1, "parent": "supplier", "lead_time": 2, "unmet": "backlog"},
    },
    "demand": {"model": "poisson", "mean": 5.0},
    "initial": {"store_cover": 2.0, "pipeline_cover": 1.0},
}


def _serial(lead_times, initial=None, horizon=60):
    """serial_3 with lead times (store, stage_2, stage_3) and optionally another initial state."""
    d = copy.deepcopy(SERIAL_3)
    d["horizon"] = horizon
    d["network"]["stores"]["lead_time"] = lead_times[0]
    d["network"]["dcs"][1]["lead_time"] = lead_times[1]
    d["network"]["dcs"][0]["lead_time"] = lead_times[2]
    if initial is not None:
        d["initial"] = initial
    return compile_scenario(load_scenario(d))


def _oracle_for(spec, S, demand):
    return echelon_path_oracle(
        demand,
        spec.lead_times,
        S,
        initial_on_hand=list(spec.initial_on_hand),
        initial_pipeline=[list(p) for p in spec.initial_pipeline],
    )


@pytest.mark.parametrize(
    "compiled",
    [
        pytest.param(compile_scenario(load_scenario("serial_3")), id="serial_3"),
        pytest.param(_serial((2, 0, 3)), id="L=2,0,3"),
        pytest.param(_serial((0, 1, 2), {"store_cover": 0, "dc_cover": 0, "pipeline_cover": 0}), id="empty"),
        pytest.param(
            _serial((0, 0, 1), {"store_cover": 5, "dc_cover": 6, "pipeline_cover": 2}), id="above-S"
        ),
        pytest.param(compile_scenario(load_scenario(NEWSVENDOR)), id="newsvendor"),
    ],
)
def test_kernel__clark_scarf_policy_follows_the_theory_pathwise(compiled):
    """On every sample path, the kernel's orders per period, end-of-period on hand, in transit, backlog
    (owed at DCs) and every cost component equal the closed-form paths of the theory for the same
    demand: no noise, so any convention mismatch (lead-time timing, top-down shipping with L = 0, cost
    timing, pipeline charging) shows up exactly."""
    spec = serial_from_scenario(compiled)
    pol = EchelonBaseStock.from_clark_scarf(compiled)
    S = pol.solution.echelon
    res = rollout(compiled, pol, episodes=60, seed=5)
    stages = list(spec.nodes)
    o = _oracle_for(spec, S, res.demand[:, :, stages[0]].astype(np.int64))
    np.testing.assert_array_equal(res.ordered[:, :, stages], o["order"])
    np.testing.assert_array_equal(res.kpi[:, stages, K_ON_HAND], o["on_hand"].sum(axis=1))
    np.testing.assert_array_equal(res.kpi[:, stages, K_PIPELINE], o["in_transit"].sum(axis=1))
    owed_to_child = np.concatenate([o["backlog"].sum(axis=1)[:, None], o["owed"].sum(axis=1)[:, :-1]], axis=1)
    np.testing.assert_array_equal(res.kpi[:, stages, K_BACKLOG], owed_to_child)
    H, P = np.array(spec.holding), np.array(spec.pipeline_holding)
    np.testing.assert_allclose(res.cost[:, stages, C_HOLD], o["on_hand"].sum(axis=1) * H, atol=1e-9)
    np.testing.assert_allclose(res.cost[:, stages, C_PIPE], o["in_transit"].sum(axis=1) * P, atol=1e-9)
    np.testing.assert_allclose(res.cost[:, stages[0], C_STOCKOUT], spec.backorder * o["backlog"].sum(axis=1))
    per_path = (o["on_hand"] @ H + o["in_transit"] @ P + spec.backorder * o["backlog"]).sum(axis=1)
    np.testing.assert_allclose(res.cost.sum(axis=(1, 2)), per_path, atol=1e-9)


def _ci(total_per_path: np.ndarray, horizon: int) -> tuple[float, float, float]:
    x = total_per_path / horizon
    m, se = float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))
    return m, m - 1.96 * se, m + 1.96 * se


def test_kernel__serial_3_optimal_cost_matches_theory_within_ci():
    """Clark-Scarf levels (16, 21, 34) of serial_3 simulated in the kernel (400 paths x 200 periods).

    The theory side is `expected_cost_by_period` from the scenario's OWN initial state (on hand 10 at
    each stage, 5 units arriving at stage 3 in period 1), so the finite horizon carries no warm-up bias.
    That start is above S_3 (echelon position 35 > 34), which the transient formula handles exactly.
    Observed: theory 11.5769 per period (stationary 11.5752); kernel 11.6049, 95% CI [11.510, 11.700].
    """
    compiled = compile_scenario(load_scenario("serial_3"))
    spec = serial_from_scenario(compiled)
    pol = EchelonBaseStock.from_clark_scarf(compiled)
    costs, _ = spec.expected_costs(pol.solution.echelon)
    theory = costs.mean()
    assert theory == pytest.approx(11.57687, abs=1e-4)
    res = rollout(compiled, pol, episodes=400, seed=1)
    m, lo, hi = _ci(res.cost.sum(axis=(1, 2)), compiled.horizon)
    assert lo <= theory <= hi, (theory, m, lo, hi)


def test_kernel__newsvendor_cost_matches_closed_form_within_ci():
    """One store fed by the supplier, lead time 2, Poisson(5), backlog, h = 1, b = 9 (400 x 200).

    S* = 20 by the critical fractile over L + 1 = 3 periods. The episode starts with 10 on hand and 5
    arriving in period 1 (position 15 <= 20), so `expected_cost_by_period` is exact for it; periods 0
    and 1 are cheaper than the steady state, from period 2 on they equal it.
    Observed: closed form 7.1230 steady state, 7.1081 per period over the episode; kernel 7.1080, 95% CI
    [7.038, 7.178].
    """
    compiled = compile_scenario(load_scenario(NEWSVENDOR))
    S, steady = newsvendor_base_stock(5.0, 2, 1.0, 9.0)
    assert S == 20
    spec = serial_from_scenario(compiled)
    assert spec.solve().echelon == [S] and spec.solve().cost == pytest.approx(steady, rel=1e-12)
    costs, _ = spec.expected_costs([S])
    assert costs[-1] == pytest.approx(steady, rel=1e-12)
    res = rollout(compiled, EchelonBaseStock(levels=[S]), episodes=400, seed=2)
    m, lo, hi = _ci(res.cost.sum(axis=(1, 2)), compiled.horizon)
    assert lo <= costs.mean() <= hi, (costs.mean(), m, lo, hi)
