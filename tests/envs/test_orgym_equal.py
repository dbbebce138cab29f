"""OR-Gym's InvManagement-v0/v1 as restock scenarios: equal dynamics, and the features they need.

The shipped ``benchmarks/orgym_invmgmt_v0`` and ``_v1`` are driven by the kernel and by a NumPy port of
OR-Gym's step (tests/envs/orgym_ref.py) with the same order sequences and demand paths; every period's
inventories, pipeline, sales, backlogs, lost units and (discounted) profit must be equal. The features
themselves (shipping before arrivals, per-node initial stock, prices and purchase costs, backlogging
and penalised suppliers, discounted rewards) are checked kernel against the NumPy reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from restock.envs import kernel as kn
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.reference import reference_step
from restock.envs.types import (
    C_STOCKOUT,
    K_BACKLOG,
    K_DISCOUNTED_PROFIT,
    K_LOST,
    K_ON_HAND,
    K_ORDERED,
    K_PIPELINE,
    K_RECEIVED_SHIP,
    K_SHIPPED_OUT,
    copy_state,
    new_step_out,
    new_work,
)

from tests.envs.orgym_ref import OrGymInvManagement

EPISODES = 128


def _start(c, E, seed=3):
    s = c.new_state(E)
    w = new_work(E, c.N, c.M, c.K)
    out = new_step_out(E, c.N)
    keys = np.arange(E, dtype=np.uint64) + seed
    kn.reset_envs(c.params, s, np.ones(E, np.int8), keys, c.init_on_hand, c.init_pipe, out)
    return s, w, out


def _orders(rng, E, T):
    """Order sequences [E, T, 3] in OR-Gym's stage order (retailer first): often zero, sometimes beyond
    the capacities (100, 90, 80) and the suppliers' stock, so caps, backlogs and losses all happen."""
    q = rng.integers(0, 130, size=(E, T, 3))
    q = np.where(rng.random((E, T, 3)) < 0.25, 0, q)
    return np.where(rng.random((E, T, 3)) < 0.1, rng.integers(0, 400, size=(E, T, 3)), q)


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_orgym_invmgmt__kernel_equals_orgym_step(version):
    backlog = version == "v0"
    c = compile_scenario(load_scenario(f"benchmarks/orgym_invmgmt_{version}"))
    assert c.node_names == ["stage_2", "stage_1", "store_0"]
    E, T = EPISODES, c.horizon
    assert T == 30
    rng = np.random.default_rng(14 if backlog else 41)
    demand = rng.poisson(20, size=(E, T))
    orders = _orders(rng, E, T)
    refs = [OrGymInvManagement(demand[e], backlog=backlog, periods=T) for e in range(E)]
    s, w, out = _start(c, E)
    stage_of_node = [2, 1, 0]  # restock node n is OR-Gym stage stage_of_node[n]
    lost_seen = backlog_seen = cap_seen = 0
    for t in range(T):
        P = np.array([ref.step(orders[e, t]) for e, ref in enumerate(refs)])
        qty = orders[:, t, :][:, stage_of_node][:, :, None].astype(np.int32)
        kn.step(c.params, s, w, qty, demand[:, t][:, None, None].astype(np.int32), out)
        kpi = out.kpi
        I = np.array([ref.I[t + 1] for ref in refs])  # end-of-period on hand per stage
        Tr = np.array([ref.T[t + 1] for ref in refs])
        S = np.array([ref.S[t] for ref in refs])
        B = np.array([ref.B[t] for ref in refs])
        LS = np.array([ref.LS[t] for ref in refs])
        for n, i in enumerate(stage_of_node):
            np.testing.assert_array_equal(kpi[:, n, K_ON_HAND], I[:, i], err_msg=f"inventory t={t} n={n}")
            np.testing.assert_array_equal(kpi[:, n, K_PIPELINE], Tr[:, i], err_msg=f"pipeline t={t} n={n}")
            # units sold: to customers at the store, to the child at a DC
            np.testing.assert_array_equal(kpi[:, n, K_SHIPPED_OUT], S[:, i], err_msg=f"sales t={t} n={n}")
            # unfilled demand (store) or unfilled orders of the child (DCs)
            key = K_BACKLOG if backlog else K_LOST
            np.testing.assert_array_equal(
                kpi[:, n, key], (B if backlog else LS)[:, i], err_msg=f"t={t} n={n}"
            )
        # the raw-material stage: what it shipped, and what it did not ship of stage 2's request
        np.testing.assert_array_equal(kpi[:, 0, K_RECEIVED_SHIP], S[:, 3])
        if backlog:
            np.testing.assert_array_equal(s.owed[:, 0, 0], B[:, 3])
        else:
            np.testing.assert_array_equal(kpi[:, 0, K_ORDERED] - kpi[:, 0, K_RECEIVED_SHIP], LS[:, 3])
        # discounted profit per period: the KPI and the reward (revenue included, discounted)
        np.testing.assert_allclose(kpi[:, :, K_DISCOUNTED_PROFIT].sum(axis=1), P, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(out.reward.sum(axis=1), P, rtol=1e-12, atol=1e-9)
        lost_seen += int(LS.sum() > 0)
        backlog_seen += int(B[:, 1:].sum() > 0)
        cap_seen += int((S[:, 3] == 80).any() and (S[:, 1] == 100).any())
    # the paths exercised what they should (unfilled orders at every stage, the capacities binding)
    assert (lost_seen if not backlog else backlog_seen) > T // 2
    assert cap_seen > 0


def _featured(supplier_unmet="backlog"):
    """`default` with every feature of this issue switched on (a DC with several stores)."""
    raw = load_scenario("default").model_dump(exclude={"source"})
    net = raw["network"]
    for sup in net["suppliers"]:
        sup.update(unmet=supplier_unmet, shortage_cost=0.3, capacity=6.0)
    for j, dc in enumerate(net["dcs"]):
        dc.update(ship_before_arrivals=True, price=3.0 + j, purchase_cost=1.5, initial_stock=40 + 10 * j)
        if not isinstance(dc["lead_time"], int) or dc["lead_time"] < 1:
            dc["lead_time"] = 2
    net["stores"][0].update(price=7.0, purchase_cost=2.0, initial_stock=5)
    raw["reward"].update(discounted=True, include_revenue=True)
    return compile_scenario(load_scenario(raw))


@pytest.mark.parametrize("supplier_unmet", ["backlog", "lost"])
def test_features__kernel_equals_reference(supplier_unmet):
    c = _featured(supplier_unmet)
    raw_dcs = c.config.network.dcs
    assert all(d.ship_before_arrivals for d in raw_dcs)
    E, T = 4, min(c.horizon, 25)
    s, w, out = _start(c, E)
    rng = np.random.default_rng(7)
    seen_arrival_held = 0
    for t in range(T):
        qty = rng.poisson(c.params.mean * 1.5 + 1.0, size=(E, c.N, c.K)).astype(np.int32)
        qty = np.where(rng.random(qty.shape) < 0.15, qty * 6, qty).astype(np.int32)
        dem = rng.poisson(c.params.mean[c.M :] + 0.5, size=(E, c.S, c.K)).astype(np.int32)
        seen_arrival_held += int((s.arrived[:, : c.M] > 0).any())
        ref_state, cost, revenue, kpi, reward = reference_step(c.params, s, qty, dem)
        s_before = copy_state(s)
        kn.step(c.params, s, w, qty.copy(), dem, out)
        for name in ("on_hand", "backlog", "owed", "pipe", "transit", "arrived"):
            np.testing.assert_array_equal(getattr(s, name), getattr(ref_state, name), err_msg=f"{name} t={t}")
        np.testing.assert_allclose(out.cost, cost, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(out.revenue, revenue, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(out.kpi, kpi, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(out.reward, reward, rtol=1e-12, atol=1e-9)
        # DCs never ship more than they held at the start of the period (before its arrivals)
        shipped_out = out.kpi[:, : c.M, K_SHIPPED_OUT]
        start_stock = (s_before.on_hand - s_before.arrived)[:, : c.M].sum(axis=2)
        assert (shipped_out <= start_stock).all()
    assert seen_arrival_held > 0


def test_features__compiled_values():
    c = _featured()
    p = c.params
    M = c.M
    assert (p.ship_first[:M] == 1).all() and (p.ship_first[M:] == 0).all()
    assert np.allclose(p.price[:M, 0], 3.0 + np.arange(M))
    assert np.allclose(p.price[M], 7.0) and np.allclose(p.order_cost[M], 2.0)
    assert (c.init_on_hand[:M, 0] == 40 + 10 * np.arange(M)).all() and (c.init_on_hand[M] == 5).all()
    assert p.sup_backlog[0] == 1 and p.sup_settle.all() and np.allclose(p.sup_penalty, 0.3)
    assert np.allclose(p.reward_disc, c.config.discount ** np.arange(c.horizon + 1))
    plain = compile_scenario(load_scenario("default"))
    assert (plain.params.ship_first == 0).all() and (plain.params.price[: plain.M] == 0).all()
    assert (plain.params.reward_disc == 1).all() and (plain.params.sup_settle == 0).all()


def test_supplier_penalty_and_backlog_by_hand():
    """One store fed by a supplier capped at 80 that backlogs: an order of 100 ships 80, owes 20 at a
    penalty of 0.025 each; next period an order of 70 ships 80 (the 20 owed first, then 60) and owes 10."""
    c = compile_scenario(load_scenario("benchmarks/orgym_invmgmt_v0"))
    s, w, out = _start(c, 1)
    qty = np.zeros((1, 3, 1), np.int32)
    qty[0, 0, 0] = 100
    dem = np.zeros((1, 1, 1), np.int32)
    kn.step(c.params, s, w, qty, dem, out)
    assert out.kpi[0, 0, K_RECEIVED_SHIP] == 80 and s.owed[0, 0, 0] == 20
    hold = 0.05 * (200 - 0)  # stage_2 shipped nothing (stage_1 ordered nothing)
    assert out.cost[0, 0, C_STOCKOUT] == pytest.approx(0.025 * 20)
    assert out.cost[0, 0].sum() == pytest.approx(hold + 0.025 * 20 + 0.5 * 80)
    qty[0, 0, 0] = 70
    kn.step(c.params, s, w, qty, dem, out)
    assert out.kpi[0, 0, K_RECEIVED_SHIP] == 80 and s.owed[0, 0, 0] == 10
    # discounted: period 1's profit KPI is 0.97 x (revenue - cost)
    net = out.revenue[0].sum() - out.cost[0].sum()
    assert out.kpi[0, :, K_DISCOUNTED_PROFIT].sum() == pytest.approx(0.97 * net)


def test_ship_before_arrivals_needs_a_lead_time():
    raw = load_scenario("benchmarks/orgym_invmgmt_v1").model_dump(exclude={"source"})
    raw["network"]["dcs"][1]["lead_time"] = 0
    with pytest.raises(Exception, match="ship_before_arrivals"):
        load_scenario(raw)
