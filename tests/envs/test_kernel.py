"""The kernel against the NumPy reference, conservation of units, hand-computed transitions."""

from __future__ import annotations

import numpy as np
import pytest
from restock.envs import kernel as kn
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario, shipped_scenarios
from restock.envs.demand import sample_paths
from restock.envs.reference import ration, reference_step
from restock.envs.types import (
    C_HOLD,
    C_STOCKOUT,
    K_DEMAND,
    K_DISPOSED,
    K_FILLED,
    K_LOST,
    K_RECEIVED_SHIP,
    K_SHIPPED_OUT,
    copy_state,
    new_step_out,
    new_work,
)

# the top-level scenarios and one member of each family (lost_sales/ differ only in numbers)
SCENARIOS = [n for n in shipped_scenarios() if "/" not in n] + ["lost_sales/ls_L4_p39"]


def _start(c, E, seed=5):
    s = c.new_state(E)
    w = new_work(E, c.N, c.M, c.K)
    out = new_step_out(E, c.N)
    kn.reset_envs(
        c.params,
        s,
        np.ones(E, np.int8),
        np.arange(E, dtype=np.uint64) + seed,
        c.init_on_hand,
        c.init_pipe,
        out,
    )
    return s, w, out


def _random_orders(c, rng, E):
    """Orders that are often zero, sometimes large: they exercise rationing, caps and disposal."""
    base = rng.poisson(c.params.mean * 1.3 + 0.5, size=(E, c.N, c.K))
    big = rng.random((E, c.N, c.K)) < 0.1
    base = np.where(big, base * 5, base) * (rng.random((E, c.N, c.K)) < 0.7)
    return base.astype(np.int32)


def _compare_rollout(c, E=3, T=None, seed=0):
    T = T or c.horizon
    s, w, out = _start(c, E)
    dem = sample_paths(c.demand, seed, np.arange(E), 0, T)
    rng = np.random.default_rng(seed)
    for t in range(T):
        qty = _random_orders(c, rng, E)
        ref_s, cost, rev, kpi, rew = reference_step(c.params, s, qty, dem[:, t])
        kn.step(c.params, s, w, qty.copy(), dem[:, t], out)
        for f in s._fields:
            np.testing.assert_array_equal(getattr(s, f), getattr(ref_s, f), err_msg=f"t={t} state.{f}")
        np.testing.assert_allclose(out.cost, cost, rtol=1e-12, atol=1e-9, err_msg=f"t={t} cost")
        np.testing.assert_allclose(out.revenue, rev, rtol=1e-12, atol=1e-9, err_msg=f"t={t} revenue")
        np.testing.assert_allclose(out.kpi, kpi, rtol=1e-12, atol=1e-9, err_msg=f"t={t} kpi")
        np.testing.assert_allclose(out.reward, rew, rtol=1e-12, atol=1e-9, err_msg=f"t={t} reward")


@pytest.mark.parametrize("name", SCENARIOS)
def test_kernel__matches_reference_on_shipped_scenarios(name):
    over = {"horizon": 8} if name == "large" else {"horizon": 60} if "/" in name else {}
    c = compile_scenario(load_scenario(name, **over))
    _compare_rollout(c, E=1 if name == "large" else 3)


def test_kernel__matches_reference_with_every_feature(edge_config):
    c = compile_scenario(load_scenario(edge_config))
    _compare_rollout(c, E=4, seed=1)
    _compare_rollout(c, E=2, seed=2)


def test_kernel__parallel_equals_serial(edge_config):
    c = compile_scenario(load_scenario(edge_config))
    E = 6
    s1, w1, o1 = _start(c, E)
    s2, w2, o2 = _start(c, E)
    dem = sample_paths(c.demand, 0, np.arange(E), 0, c.horizon)
    rng = np.random.default_rng(0)
    for t in range(c.horizon):
        q = _random_orders(c, rng, E)
        kn.step(c.params, s1, w1, q.copy(), dem[:, t], o1)
        kn.step_par(c.params, s2, w2, q.copy(), dem[:, t], o2)
    for f in s1._fields:
        np.testing.assert_array_equal(getattr(s1, f), getattr(s2, f))


def test_kernel__conserves_units(edge_config):
    """Units in from suppliers = units sold + units disposed + change in stock on hand and in transit."""
    c = compile_scenario(load_scenario(edge_config))
    E = 4
    s, w, out = _start(c, E)
    M = c.M
    stock0 = s.on_hand.sum(axis=(1, 2)) + s.pipe.sum(axis=(1, 2, 3))
    supplied = np.zeros(E)
    sold = np.zeros(E)
    disposed = out.kpi[:, :, K_DISPOSED].sum(axis=1).copy()  # at reset
    fed_by_supplier = np.flatnonzero(c.params.supplier >= 0)
    dem = sample_paths(c.demand, 3, np.arange(E), 0, c.horizon)
    rng = np.random.default_rng(3)
    for t in range(c.horizon):
        kn.step(c.params, s, w, _random_orders(c, rng, E), dem[:, t], out)
        supplied += out.kpi[:, fed_by_supplier, K_RECEIVED_SHIP].sum(axis=1)
        sold += out.kpi[:, M:, K_SHIPPED_OUT].sum(axis=1)
        disposed += out.kpi[:, :, K_DISPOSED].sum(axis=1)
        stock = s.on_hand.sum(axis=(1, 2)) + s.pipe.sum(axis=(1, 2, 3))
        np.testing.assert_array_equal(stock0 + supplied - sold - disposed, stock)
    assert supplied.sum() > 0 and sold.sum() > 0 and disposed.sum() > 0  # the test exercised them


def test_kernel__hand_computed_single_store():
    """One store, lost sales, lead time 2: every number of three periods worked out by hand."""
    cfg = {
        "name": "hand",
        "horizon": 10,
        "skus": {
            "count": 1,
            "unit_cost": 2.0,
            "price": 5.0,
            "holding_cost": 0.5,
            "stockout_cost": 3.0,
            "fixed_order_cost": 1.0,
            "order_cost": 0.25,
        },
        "network": {
            "suppliers": [{"id": "s"}],
            "stores": {"count": 1, "parent": "s", "lead_time": 2, "unmet": "lost"},
        },
        "demand": {"mean": 4.0},
        "initial": {"store_cover": 2.5, "pipeline_cover": 0.0},
    }
    c = compile_scenario(load_scenario(cfg))
    s, w, out = _start(c, 1)
    assert s.on_hand[0, 0, 0] == 10  # 2.5 periods x 4
    # t=0: order 6, demand 7 -> sell 7, on hand 3; costs: hold 1.5, fixed 1, variable 6*0.25
    kn.step(c.params, s, w, np.array([[[6]]], np.int32), np.array([[[7]]], np.int32), out)
    assert s.on_hand[0, 0, 0] == 3 and out.kpi[0, 0, K_LOST] == 0
    assert out.cost[0, 0, C_HOLD] == pytest.approx(1.5) and out.cost[0, 0].sum() == pytest.approx(
        1.5 + 1 + 1.5
    )
    assert out.revenue[0, 0] == pytest.approx(35.0)
    # t=1: order 0, demand 5 -> sell 3, lose 2 (penalty 6), end on hand 0 (no holding cost)
    kn.step(c.params, s, w, np.array([[[0]]], np.int32), np.array([[[5]]], np.int32), out)
    assert out.kpi[0, 0, K_LOST] == 2 and out.cost[0, 0, C_STOCKOUT] == 6.0 and out.cost[0, 0, C_HOLD] == 0.0
    assert out.kpi[0, 0, K_FILLED] == 3 and out.kpi[0, 0, K_DEMAND] == 5
    # the state now sits at the decision of t=2, after its arrivals: the t=0 order (lead time 2) is in
    assert s.t[0] == 2 and s.on_hand[0, 0, 0] == 6
    kn.step(c.params, s, w, np.array([[[0]]], np.int32), np.array([[[4]]], np.int32), out)
    assert s.on_hand[0, 0, 0] == 2 and out.cost[0, 0, C_HOLD] == pytest.approx(1.0)


def test_kernel__dc_backlogs_and_serves_debts_first():
    """A backlogging DC short of stock rations proportionally, owes the rest, and pays debts first."""
    cfg = {
        "name": "dc",
        "horizon": 10,
        "skus": {"count": 1, "holding_cost": 0.0, "stockout_cost": 0.0},
        "network": {
            "suppliers": [{"id": "s"}],
            "dcs": [{"id": "d", "parent": "s", "lead_time": 5, "unmet": "backlog"}],
            "stores": {"count": 2, "parent": "d", "lead_time": 1, "unmet": "lost"},
        },
        "demand": {"mean": 1.0},
        "initial": {"store_cover": 0.0, "dc_cover": 5.0},  # DC on hand: 5 x 2 = 10
    }
    c = compile_scenario(load_scenario(cfg))
    s, w, out = _start(c, 1)
    assert s.on_hand[0, 0, 0] == 10
    zero_dem = np.zeros((1, 2, 1), np.int32)
    # stores ask 9 and 6 (15 > 10): shares 6 and 4 (9*10/15=6, 6*10/15=4); owed 3 and 2
    kn.step(c.params, s, w, np.array([[[0], [9], [6]]], np.int32), zero_dem, out)
    assert s.owed[0, 1, 0] == 3 and s.owed[0, 2, 0] == 2 and s.on_hand[0, 0, 0] == 0
    assert s.on_hand[0, 1, 0] == 6 and s.on_hand[0, 2, 0] == 4  # lead time 1: arrived at t=1
    assert out.kpi[0, 0, K_FILLED] == 10 and out.kpi[0, 0, K_DEMAND] == 15


def test_ration__largest_remainder_and_priority():
    req = np.array([[[5], [5], [5]]])  # [E=1, C=3, K=1]
    got = ration(np.array([[7]]), req, 0)
    assert got[0, :, 0].tolist() == [3, 2, 2] and got.sum() == 7
    got = ration(np.array([[7]]), req, 1)
    assert got[0, :, 0].tolist() == [5, 2, 0]
    work_req = np.array([5, 5, 5], np.int64)
    ship = np.zeros(3, np.int64)
    kn._ration(7, work_req, ship, np.zeros(3, np.int64), np.arange(3), 0, 3, 0)
    assert ship.tolist() == [3, 2, 2]
    # many requesters, many remainders: the kernel's rationing is the reference's, unit for unit
    rng = np.random.default_rng(3)
    for _ in range(200):
        C = int(rng.integers(1, 60))
        r = rng.integers(0, 10 ** int(rng.integers(1, 7)), C).astype(np.int64)
        avail = int(rng.integers(0, max(1, int(r.sum())) + 2))
        ship = np.zeros(C, np.int64)
        idx = rng.permutation(C)
        kn._ration(avail, r, ship, np.zeros(C, np.int64), idx, 0, C, 0)
        want = ration(np.array([[avail]]), r[idx][None, :, None], 0)[0, :, 0]
        assert ship[idx].tolist() == want.tolist()


def test_kernel__one_compiled_signature_each():
    """Typical use (array env, PettingZoo env, several scenarios) compiles each kernel function at most
    once (the one-call `period` runs the others inside it, so some are never called from Python)."""
    import subprocess
    import sys

    code = """
import numpy as np
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.pz_env import parallel_env
for name, E in (("tiny", 1), ("tiny", 3), ("serial_3", 2)):
    env = ArrayEnv(name, num_envs=E, auto_reset=True)
    env.reset()
    for _ in range(40):
        env.step(np.ones((E, env.N, env.K), np.int64))
        env.step_qty(np.ones((E, env.N, env.K), np.int64))
pz = parallel_env("tiny", mode="clip")
pz.reset(seed=1)
for _ in range(5):
    pz.step({a: pz.action_space(a).sample() for a in pz.agents})
fns = (kn.step, kn.observe, kn.levels_to_qty, kn.check_levels, kn.reset_envs, kn.period, kn.bind)
bad = {f.__name__: len(f.signatures) for f in fns if len(f.signatures) > 1}
bad.update({f.__name__: 0 for f in (kn.step, kn.period) if not f.signatures})
print(bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "{}"


def test_kernel__state_untouched_by_reference():
    c = compile_scenario(load_scenario("tiny"))
    s, w, out = _start(c, 2)
    before = copy_state(s)
    reference_step(c.params, s, np.ones((2, c.N, c.K), np.int32), np.ones((2, c.S, c.K), np.int32))
    for f in s._fields:
        np.testing.assert_array_equal(getattr(s, f), getattr(before, f))


@pytest.mark.parametrize("dc_unmet", ["backlog", "lost"])
def test_kernel__dc_run_dry_matches_reference(dc_unmet):
    """Store orders drain a DC that does not restock: it rations while short, then is out of most
    SKUs (nothing on hand, orders still coming: the fast path of the shipping step); serial and
    parallel builds match the reference."""
    data = load_scenario("default").model_dump(mode="python", exclude_none=False)
    data.pop("source", None)
    data["network"]["dcs"][0]["unmet"] = dc_unmet
    c = compile_scenario(load_scenario(data))
    assert c.params.backlog[0] == (dc_unmet == "backlog")
    E, T = 2, 25
    s, w, out = _start(c, E)
    s2 = copy_state(s)
    w2 = new_work(E, c.N, c.M, c.K)
    out2 = new_step_out(E, c.N)
    dem = sample_paths(c.demand, 4, np.arange(E), 0, T)
    qty0 = np.broadcast_to(np.round(c.params.mean * 1.2).astype(np.int32), (E, c.N, c.K)).copy()
    qty0[:, : c.M] = 0  # the DC does not restock
    dry = 0
    for t in range(T):
        qty = qty0.copy()
        want = (qty[:, c.M :, :] + (s.owed[:, c.M :, :] if dc_unmet == "backlog" else 0)).sum(axis=1)
        dry += int(((s.on_hand[:, 0, :] == 0) & (want > 0)).sum())
        ref_s, cost, rev, kpi, rew = reference_step(c.params, s, qty, dem[:, t])
        kn.step(c.params, s, w, qty.copy(), dem[:, t], out)
        kn.step_par(c.params, s2, w2, qty.copy(), dem[:, t], out2)
        for f in s._fields:
            np.testing.assert_array_equal(getattr(s, f), getattr(ref_s, f), err_msg=f"t={t} state.{f}")
            np.testing.assert_array_equal(getattr(s2, f), getattr(s, f), err_msg=f"t={t} par state.{f}")
        np.testing.assert_allclose(out.cost, cost, rtol=1e-12, atol=1e-9, err_msg=f"t={t} cost")
        np.testing.assert_allclose(out.kpi, kpi, rtol=1e-12, atol=1e-9, err_msg=f"t={t} kpi")
        np.testing.assert_allclose(out.reward, rew, rtol=1e-12, atol=1e-9, err_msg=f"t={t} reward")
        np.testing.assert_array_equal(out2.reward, out.reward)
    assert dry > 100  # the DC really ran dry on many SKUs
