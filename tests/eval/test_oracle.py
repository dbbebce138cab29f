"""The perfect-information oracle: a lower bound on every policy, exact where hindsight is hand-computable."""

from __future__ import annotations

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.heuristics import RandomPolicy, ZeroPolicy
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.demand import sample_paths
from restock.envs.types import COST_NAMES
from restock.eval.oracle import _build, _serve_bound, coupled, oracle, oracle_paths, path_lead_times
from restock.eval.rollout import rollout

SEED = 11
PATHS = np.arange(3)


class OrderUpTo:
    """Order max(0, S - inventory position) with S = cover x mean demand, unshielded and unrounded."""

    name = "order_up_to"
    version = "1"
    output = "quantities"

    def __init__(self, cover: float = 3.0):
        self.cover = cover

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        E, N, K = ctx.state.on_hand.shape
        ip = np.empty((E, N, K), np.int64)
        kn.inventory_positions(ctx.params, ctx.state, ctx.work, ip)
        target = self.cover * ctx.params.mean[nodes][None]
        return np.maximum(0, np.ceil(target - ip[:, nodes])).astype(np.int64)


class Hindsight:
    """Order, each period, exactly the demand that the order will meet on arrival (one store, fixed lead)."""

    name = "hindsight"
    version = "1"
    output = "quantities"

    def __init__(self, demand: np.ndarray, lead: int):
        self.demand = demand  # [P, T, S, K]
        self.lead = lead

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        t = int(ctx.state.t[0]) + self.lead
        if t >= self.demand.shape[1]:
            return np.zeros((self.demand.shape[0], len(nodes), self.demand.shape[3]), np.int64)
        return self.demand[:, t].astype(np.int64)


def _compiled(scenario, edge_config):
    return compile_scenario(load_scenario(edge_config if scenario == "edge" else scenario))


@pytest.mark.parametrize("scenario", ["tiny", "serial_3", "single_lost_sales", "constrained", "edge"])
def test_oracle__below_every_policy_on_the_same_path(scenario, edge_config):
    c = _compiled(scenario, edge_config)
    bounds = oracle_paths(c, SEED, PATHS)
    assert all(r.status == "optimal" for r in bounds)
    lower = np.array([r.cost for r in bounds])
    for r in bounds:
        assert r.cost == pytest.approx(sum(r.parts.values()))
        assert set(r.parts) == set(COST_NAMES)
        assert min(r.parts.values()) >= -1e-6
    for policy in (ZeroPolicy(), RandomPolicy(seed=4), OrderUpTo(3.0), OrderUpTo(1.0)):
        realised = rollout(c, policy, paths=PATHS, seed=SEED).cost.sum(axis=(1, 2))
        assert np.all(lower <= realised + 1e-6 * (1 + np.abs(realised))), (policy.name, lower, realised)


def _one_store(unmet: str, lead_time: int) -> dict:
    return {
        "name": "hindsight",
        "seed": 0,
        "horizon": 20,
        "skus": {
            "count": 2,
            "unit_cost": 1.0,
            "holding_cost": 0.5,
            "stockout_cost": 10.0,
            "order_cost": [1.0, 2.0],
            "fixed_order_cost": 0.0,
        },
        "network": {
            "suppliers": [{"id": "s"}],
            "stores": {
                "count": 1,
                "parent": "s",
                "lead_time": lead_time,
                "unmet": unmet,
                "pipeline_holding": "own",
            },
        },  # fmt: skip
        "demand": {"model": "poisson", "mean": [4.0, 2.0]},
        "action": {"store": {"mapping": "quantity", "levels": 5}},
        "initial": {"store_cover": 0.0, "pipeline_cover": 0.0},
    }


@pytest.mark.parametrize(("unmet", "lead"), [("lost", 0), ("backlog", 0), ("lost", 2)])
def test_oracle__exact_when_hindsight_orders_the_demand(unmet, lead):
    c = compile_scenario(load_scenario(_one_store(unmet, lead)))
    T = c.horizon
    dem = sample_paths(c.demand, SEED, PATHS, 0, T)  # [P, T, 1, K]
    order, hold, short = c.params.order_cost[0], c.params.hold[0], c.params.stockout[0]
    # by hand: the first `lead` periods' demand is lost; every later unit costs its order and transit
    by_hand = (dem[:, :lead, 0] * short).sum(axis=(1, 2)) + (dem[:, lead:, 0] * (order + lead * hold)).sum(
        axis=(1, 2)
    )
    realised = rollout(c, Hindsight(dem, lead), paths=PATHS, seed=SEED).cost.sum(axis=(1, 2))
    bounds = oracle_paths(c, SEED, PATHS)
    np.testing.assert_allclose(realised, by_hand, rtol=1e-9)
    np.testing.assert_allclose([r.cost for r in bounds], by_hand, rtol=1e-7)
    assert bounds[0].parts["order_variable"] == pytest.approx((dem[0, lead:, 0] * order).sum(), rel=1e-7)


def _uncoupled(edge: dict) -> dict:
    """EDGE without its SKU-coupling limits: no lane caps, storage only with disposal."""
    edge["network"]["dcs"][1].pop("lane_capacity")
    edge["network"]["stores"][1].pop("lane_capacity")
    edge["network"]["stores"][1]["overflow"] = "dispose"
    return edge


def test_oracle__decomposed_and_joint_agree(edge_config):
    c = compile_scenario(load_scenario(_uncoupled(edge_config)))
    assert not coupled(c)
    for path in (0, 1):
        split = oracle(c, SEED, path)
        joint = oracle(c, SEED, path, decompose=False)
        assert split.decomposed and not joint.decomposed
        assert split.status == joint.status == "optimal"
        assert split.cost == pytest.approx(joint.cost, rel=1e-7, abs=1e-6)
        # the parts are not compared: an optimum's split need not be unique, as with the oracle's cuts
        # holding a unit a little longer can trade exactly against a fraction of an order line


def test_oracle__coupled_scenarios_solve_one_lp(edge_config):
    c = compile_scenario(load_scenario("tiny"))
    assert coupled(c)
    assert not oracle(c, SEED, 0).decomposed
    with pytest.raises(ValueError, match="coupled"):
        oracle(c, SEED, 0, decompose=True)
    seen = []
    oracle_paths(c, SEED, [0, 1], progress=seen.append)
    assert seen == [1, 1]


def _exact_physics(edge: dict) -> dict:
    """EDGE with nothing the oracle relaxes except the fixed cost: penalties instead of disposal and
    a backlogging local DC (so no cancelled-order penalties)."""
    edge["network"]["dcs"][0]["overflow"] = "penalty"
    edge["network"]["dcs"][1]["unmet"] = "backlog"
    edge["network"]["stores"][0]["overflow"] = "penalty"
    return edge


def test_oracle__kernel_trajectory_reprices_exactly(edge_config):
    """Fix the LP's shipments and orders to a kernel trajectory: every cost part but the (relaxed)
    fixed cost matches the kernel's. This checks lead-time draws, arrivals, caps and cost accounting."""
    c = compile_scenario(load_scenario(_exact_physics(edge_config)))
    N, K, T = c.N, c.K, c.horizon
    path = 2
    env = ArrayEnv(c, num_envs=1, seed=SEED)
    env.reset(paths=np.array([path]))
    joint = JointPolicy(OrderUpTo(4.0))
    shipped = np.zeros((N, K, T))
    ordered = np.zeros((N, K, T))
    for t in range(T):
        env.step_qty(joint.propose(env).qty)
        shipped[:, :, t] = env.state.shipped[0]
        ordered[:, :, t] = env.state.last_order[0]
    realised = env.episode_cost[0].sum(axis=0)
    dem = sample_paths(c.demand, SEED, np.array([path]), 0, T)[0]
    lp = _build(c, dem, path_lead_times(c, SEED, path), _serve_bound(c, dem), np.arange(K))
    lp.fix(lp.ids["x"], shipped)
    lp.fix(lp.ids["q"], ordered)
    lp.fix(lp.ids["y"], (ordered > 0).astype(np.float64))
    status, parts, _ = lp.solve(None)
    assert status == "optimal"
    exact = [j for j, name in enumerate(COST_NAMES) if name != "order_fixed"]
    np.testing.assert_allclose(parts[exact], realised[exact], rtol=1e-7, atol=1e-6)
    assert oracle(c, SEED, path).cost <= realised.sum()
