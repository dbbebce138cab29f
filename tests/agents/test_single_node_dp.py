"""The exact single-node DP (`agents.single_node_dp`) and `restock optimum`.

Checked against: a case solved by hand, the published optima of Zipkin (2008) for Poisson(5) lost-sales
systems, the newsvendor / Clark-Scarf optimum where the models coincide (backlog), complete enumeration
of (capped) base-stock policies, and the kernel itself: the DP's transition and cost model replayed step
by step beside the kernel on the same demand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from restock.agents.optimal import newsvendor_base_stock
from restock.agents.single_node_dp import SingleNodeSpec, best_base_stock, poisson_pmf, solve
from restock.agents.single_node_scenario import DPOptimalPolicy, NotCovered, spec_from_scenario
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.types import C_HOLD, K_DEMAND, N_COST
from typer.testing import CliRunner


def _ls(L: int, p: float, levels: int = 41, **kw) -> SingleNodeSpec:
    return SingleNodeSpec(lead_time=L, pmf=poisson_pmf(5.0), holding=1.0, penalty=p, levels=levels, **kw)


def test_hand_checked_tiny_case():
    """L = 0, D in {0, 1} with probability 1/2 each, h = 1, p = 3, c = 1, levels up to 2 units.

    Stock z after ordering costs h E(z-D)^+ + p E(D-z)^+: 1.5, 0.5, 1.5 for z = 0, 1, 2, so keeping z = 1
    (ordering what was sold, 1/2 a unit a period at c = 1) costs 0.5 + 0.5 = 1.0; never ordering costs
    1.5. Any other policy mixes these and z = 2, so g* = 1.0 and from x = 0 the DP orders 1 unit.
    """
    spec = SingleNodeSpec(
        lead_time=0,
        pmf=np.array([0.5, 0.5]),
        holding=1.0,
        penalty=3.0,
        order_cost=1.0,
        levels=3,
        cover_step=1.0,
    )
    sol = solve(spec)
    assert sol.average_cost == pytest.approx(1.0, abs=1e-9)
    assert sol.action[sol.index(0)] == 1
    assert sol.action[sol.index(1)] == 0
    # without the ordering cost keeping z = 1 costs 0.5
    spec.order_cost = 0.0
    assert solve(spec).average_cost == pytest.approx(0.5, abs=1e-9)


# Zipkin (2008), "Old and new methods for lost-sales inventory systems", Table: optimal average cost,
# Poisson(5) demand, h = 1, two decimals as published.
ZIPKIN = {
    1: {4: 4.04, 9: 5.44, 19: 6.68, 39: 7.84},
    2: {4: 4.40, 9: 6.09, 19: 7.66, 39: 9.11},
    3: {4: 4.60, 9: 6.53, 19: 8.36, 39: 10.04},
}


@pytest.mark.parametrize("L", [1, 2, 3])
def test_matches_zipkin_published_optima(L):
    for p, published in ZIPKIN[L].items():
        sol = solve(_ls(L, float(p)))
        lo, hi = sol.bounds
        assert hi - lo < 1e-6
        assert round(sol.average_cost, 2) == pytest.approx(published, abs=1e-9), (L, p, sol.average_cost)


def test_top_level_does_not_bind_in_the_shipped_family():
    # more action levels than the scenarios give do not lower the optimum
    for L, p in ((3, 39.0), (2, 19.0)):
        a, b = solve(_ls(L, p, levels=41)), solve(_ls(L, p, levels=56))
        assert a.average_cost == pytest.approx(b.average_cost, rel=1e-9)


@pytest.mark.parametrize("L", [0, 2])
def test_backlog_dp_equals_newsvendor(L):
    """With backorders, no ordering costs and a base-stock-optimal model the DP gives the newsvendor cost."""
    spec = SingleNodeSpec(
        lead_time=L, pmf=poisson_pmf(4.0), holding=1.0, penalty=9.0, unmet="backlog", levels=36
    )
    spec.x_min = -25
    sol = solve(spec)
    S, cost = newsvendor_base_stock(4.0, L, 1.0, 9.0)
    assert sol.average_cost == pytest.approx(cost, rel=1e-7)
    # and the DP's policy is base-stock at S* in the states it visits from the empty system
    assert sol.action[sol.index(0, [0] * max(L - 1, 0))] == S


@pytest.mark.parametrize("L,p", [(1, 9.0), (2, 4.0), (2, 39.0)])
def test_dp_beats_every_base_stock_level(L, p):
    spec = _ls(L, p)
    sol = solve(spec)
    S, best, rows = best_base_stock(spec)
    assert len(rows) == spec.max_position + 1
    assert sol.average_cost <= best + 1e-9
    Sc, best_capped, _ = best_base_stock(spec, cap=8)
    assert sol.average_cost <= best_capped + 1e-9
    # lost sales with a lead time: base-stock is strictly suboptimal (Zipkin: ~1-5% here)
    assert best > sol.average_cost * 1.001


def _variant(L, unmet="lost", extra=None, **over):
    """The shipped ls_L2_p9 with the store's lane and unmet rule changed (and other overrides)."""
    cfg = load_scenario("lost_sales/ls_L2_p9").model_dump(mode="python")
    extra = dict(extra or {})
    store = cfg["network"]["stores"][0]
    store.update(lead_time=L, unmet=unmet)
    if "pipeline_holding" in extra:
        store["pipeline_holding"] = extra.pop("pipeline_holding")
    cfg.pop("source", None)
    return load_scenario(cfg, horizon=120, **extra, **over)


def _state_tuple(env, L):
    s = env.state
    t = s.t.astype(np.int64)
    W = s.pipe.shape[2]
    x = s.on_hand[:, 0, 0].astype(np.int64) - s.backlog[:, 0, 0]
    pipe = [s.pipe[np.arange(env.E), 0, (t + i) % W, 0].astype(np.int64) for i in range(1, max(L, 1))]
    return x, pipe


@pytest.mark.parametrize(
    "L,unmet,extra",
    [
        (2, "lost", {}),
        (0, "lost", {"skus__order_cost": 0.5}),
        (3, "lost", {"pipeline_holding": "own", "skus__fixed_order_cost": 2.0}),
        (1, "backlog", {}),
    ],
)
def test_dp_model_is_the_kernel(L, unmet, extra):
    """Replay the DP's transition and one-period cost beside the kernel on the same demand, exactly."""
    c = compile_scenario(_variant(L, unmet, extra))
    spec = spec_from_scenario(c)
    assert spec.lead_time == L and spec.unmet == unmet
    sol = solve(spec)
    pol = DPOptimalPolicy(sol)
    pol.bind(c)
    E = 32
    env = ArrayEnv(c, num_envs=E, seed=5, features=False)
    env.reset()
    x, pipe = _state_tuple(env, L)
    assert (int(x[0]), *[int(v[0]) for v in pipe]) == spec.initial
    for _ in range(120):
        q = pol.act(env, np.array([0]))[:, 0, 0]
        assert np.all(q >= 0)
        _, _, _, _, info = env.step_qty(q.reshape(E, 1, 1))
        d = info["kpi"][:, 0, K_DEMAND].astype(np.int64)
        z = x + q if L == 0 else x
        y = z - d if unmet == "backlog" else np.maximum(z - d, 0)
        transit = (sum(pipe) if pipe else 0) + (q if L >= 1 else 0)
        cost = (
            spec.holding * np.maximum(y, 0)
            + spec.penalty * (np.maximum(d - z, 0) if unmet == "lost" else np.maximum(-y, 0))
            + spec.order_cost * q
            + spec.fixed_cost * (q > 0)
            + spec.pipeline_rate * transit
        )
        np.testing.assert_allclose(info["cost"][:, 0, :N_COST].sum(axis=1), cost, rtol=1e-12, atol=1e-9)
        if L == 0:
            nxt = (y,)
        elif L == 1:
            nxt = (y + q,)
        else:
            nxt = (y + pipe[0], *pipe[1:], q)
        x, pipe = _state_tuple(env, L)
        np.testing.assert_array_equal(x, nxt[0])
        for a, b in zip(pipe, nxt[1:], strict=True):
            np.testing.assert_array_equal(a, b)
    assert info["cost"][:, 0, C_HOLD].sum() > 0


def test_simulated_dp_policy_matches_its_exact_cost():
    """The DP's policy run in the kernel: the per-period mean over 200k periods is within 4 SE."""
    c = compile_scenario(load_scenario("lost_sales/ls_L2_p9", horizon=2000))
    sol = solve(spec_from_scenario(c))
    pol = DPOptimalPolicy(sol)
    pol.bind(c)
    E = 100
    env = ArrayEnv(c, num_envs=E, seed=11, features=False)
    env.reset()
    tot = np.zeros(E)
    for t in range(2000):
        _, _, _, _, info = env.step_qty(pol.act(env, np.array([0])))
        if t >= 100:  # after the start-up transient
            tot += info["cost"][:, 0].sum(axis=1)
    per = tot / 1900
    se = per.std(ddof=1) / np.sqrt(E)
    assert abs(per.mean() - sol.average_cost) < 4 * se + 1e-3, (per.mean(), sol.average_cost, se)


def test_not_covered_names_the_reason():
    with pytest.raises(NotCovered, match="SKUs"):
        spec_from_scenario(compile_scenario(load_scenario("tiny")))
    c = compile_scenario(_variant({"values": [1, 2], "probs": [0.5, 0.5]}))
    with pytest.raises(NotCovered, match="stochastic"):
        spec_from_scenario(c)


def test_optimum_command():
    from restock.cli import app

    r = CliRunner().invoke(app, ["optimum", "lost_sales/ls_L1_p9", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["method"] == "dp" and round(out["average_cost"], 2) == 5.44
    assert set(out) >= {"method", "average_cost", "levels", "seconds"}
    r = CliRunner().invoke(app, ["optimum", "serial_3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["method"] == "clark_scarf"
    r = CliRunner().invoke(app, ["optimum", "tiny", "--json"])
    assert r.exit_code == 2
    assert "no exact method covers" in r.output
