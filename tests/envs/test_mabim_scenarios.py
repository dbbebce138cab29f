"""The MABIM-shaped benchmarks (configs/scenarios/benchmarks/mabim_*.yaml) load, compile and simulate.

A few periods of each under tuned-style heuristics behind the shield: no executed violation, the
independent verifier agrees, the shared warehouse capacity is what the files say, and the lead times are
MABIM's vlt + 1 (spot-checked against ReplenishmentEnv's sku2778.store{1,2,3}.info.csv). The kernel
matches the NumPy reference on them under orders that overflow the shared capacity.
"""

from __future__ import annotations

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.shield import Shield
from restock.agents.verifier import Verifier
from restock.envs import ArrayEnv
from restock.envs import kernel as kn
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.demand import sample_paths
from restock.envs.reference import reference_step
from restock.envs.types import C_FIXED, C_OVERFLOW, C_STOCKOUT, K_DISPOSED, K_LOST, new_step_out, new_work

# first SKUs of sku1000.sku_list.csv (SKU0, SKU1, SKU2, SKU3, SKU5, SKU6): MABIM vlt per stage
MABIM_VLT = {
    "store_0": [1, 1, 1, 3, 1, 1],  # MABIM store1
    "store2": [1, 2, 2, 2, 1, 1],
    "store3": [2, 2, 2, 3, 1, 1],
}
# sums of vlt over the 1,000 SKUs, per stage
MABIM_VLT_SUM = {"store_0": 1778, "store2": 1788, "store3": 2494}


@pytest.fixture(scope="module", params=["single", "3echelon"])
def compiled(request):
    return compile_scenario(load_scenario(f"benchmarks/mabim_sku1000_{request.param}"))


def test_mabim__shape_matches_the_benchmark(compiled):
    c = compiled
    assert c.K == 1000 and c.S == 1 and c.horizon == 100
    if c.config.name.endswith("3echelon"):
        assert c.node_names == ["store3", "store2", "store_0"]
    else:
        assert c.node_names == ["store_0"]
    p = c.params
    assert np.all(p.storage_cap[0] == 100_000)
    assert np.all(p.volume == 1.0)
    for n, name in enumerate(c.node_names):
        lt = p.lt_value[n]
        assert lt[:6].tolist() == [v + 1 for v in MABIM_VLT[name]]
        assert int(lt.sum()) == MABIM_VLT_SUM[name] + 1000
        assert p.lt_fixed[n] == 1
    # the lost-sales penalty is 1.1 x the margin (the price): lost margin + MABIM's backlog_ratio 0.1
    store = c.N - 1
    np.testing.assert_allclose(p.stockout[store], 1.1 * p.price[store], rtol=1e-12)
    assert np.all(p.fixed_cost == 10.0)


@pytest.mark.parametrize("policy", ["base_stock", "s_S"])
def test_mabim__heuristics_run_without_violations(compiled, policy):
    c = compiled
    env = ArrayEnv(c, num_envs=2, seed=3, shield=Shield(anomaly=None))
    env.reset(paths=np.array([0, 1]))
    joint = JointPolicy(make_policy(policy))
    joint.bind(c)
    verifier = Verifier(c.params)
    for _ in range(8):
        out = joint.propose(env)
        before = type(env.state)(*(np.copy(x) for x in env.state))
        _, _, _, _, info = env.step_qty(out.qty)
        assert not np.asarray(info["shield_executed_violations"]).any()
        assert verifier.check(before, info["executed"]).ok
        vol = (env.state.on_hand * c.params.volume).sum(axis=2)
        assert np.all(vol <= 100_000)  # disposal keeps on hand within the shared capacity
    assert env.state.t.tolist() == [8, 8]
    cost, kpi = env.episode_cost, env.episode_kpi
    assert np.isfinite(cost).all() and (cost >= 0).all()
    # order lines are charged 10 each: the fixed cost is 10 x the positive order lines
    assert cost[:, :, C_FIXED].sum() > 0 and cost[:, :, C_FIXED].sum() % 10 == 0
    assert kpi[:, :, K_LOST].sum() >= 0 and kpi[:, :, K_DISPOSED].sum() >= 0
    assert np.isclose(
        cost[:, :, C_OVERFLOW].sum(), 13.77 * kpi[:, :, K_DISPOSED].sum()
    )  # one overflow rate per disposed unit (volume 1)
    assert cost[:, :, C_STOCKOUT].sum() >= 0


def test_mabim__kernel_matches_the_numpy_reference_with_overflow(compiled):
    """The compiled kernel and the NumPy reference agree period by period under orders large enough to
    overflow the shared capacity (so pro-rata disposal and its cost run), over 12 periods."""
    c = compiled
    E, T = 2, 12
    s = c.new_state(E)
    w = new_work(E, c.N, c.M, c.K)
    out = new_step_out(E, c.N)
    kn.reset_envs(
        c.params, s, np.ones(E, np.int8), np.arange(E, dtype=np.uint64) + 5, c.init_on_hand, c.init_pipe, out
    )
    dem = sample_paths(c.demand, 0, np.arange(E), 0, T)
    rng = np.random.default_rng(0)
    disposed = 0.0
    for t in range(T):
        # about 8 days of demand per order, on 70% of SKUs: far more than 100,000 units in all
        qty = (
            rng.poisson(c.params.mean * 8.0 + 0.5, size=(E, c.N, c.K)) * (rng.random((E, c.N, c.K)) < 0.7)
        ).astype(np.int32)
        ref_s, cost, rev, kpi, rew = reference_step(c.params, s, qty, dem[:, t])
        kn.step(c.params, s, w, qty.copy(), dem[:, t], out)
        for f in s._fields:
            np.testing.assert_array_equal(getattr(s, f), getattr(ref_s, f), err_msg=f"t={t} state.{f}")
        np.testing.assert_allclose(out.cost, cost, rtol=1e-12, atol=1e-9, err_msg=f"t={t} cost")
        np.testing.assert_allclose(out.revenue, rev, rtol=1e-12, atol=1e-9, err_msg=f"t={t} revenue")
        np.testing.assert_allclose(out.kpi, kpi, rtol=1e-12, atol=1e-9, err_msg=f"t={t} kpi")
        disposed += float(out.kpi[:, :, K_DISPOSED].sum())
        assert np.all((s.on_hand * c.params.volume).sum(axis=2) <= 100_000)
    assert disposed > 0  # the overflow path ran
