"""The oracle's cuts: lot-sizing cuts keep every integer point of the LP's model (the exact MILP does not
move), activation cuts hold on kernel trajectories, and with both the bound stays below every policy."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.demand import sample_paths
from restock.envs.types import COST_NAMES
from restock.eval.oracle import _build, _serve_bound, coupled, oracle, path_lead_times
from restock.eval.rollout import rollout
from scipy.optimize import Bounds, LinearConstraint, milp

SEED = 11
SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"


from oracle_cases import POLICIES as _BASE  # noqa: E402
from oracle_cases import Periodic, _store, _yaml  # noqa: E402

POLICIES = (*_BASE[:3], Periodic(1, 1.0), *_BASE[3:])


def _tiny_backlog() -> dict:
    """tiny with backlogging stores, a random DC lead time and an initial pipeline."""
    cfg = _yaml("tiny")
    cfg["network"]["dcs"][0]["lead_time"] = {"values": [1, 2, 4], "probs": [0.3, 0.5, 0.2]}
    cfg["network"]["stores"]["unmet"] = "backlog"
    cfg["initial"]["pipeline_cover"] = 1.0
    return cfg


def _edge_open(edge: dict) -> dict:
    """EDGE without lane caps (so the activation cuts apply at its backlogging regional DC)."""
    edge["network"]["dcs"][1].pop("lane_capacity")
    edge["network"]["stores"][1].pop("lane_capacity")
    return edge


def _exact(edge: dict) -> dict:
    """EDGE without lane caps and with nothing the oracle relaxes but the fixed cost (as in
    test_oracle's repricing test: penalties instead of disposal, no lost-sales DC)."""
    edge = _edge_open(edge)
    edge["network"]["dcs"][0]["overflow"] = "penalty"
    edge["network"]["dcs"][1]["unmet"] = "backlog"
    edge["network"]["stores"][0]["overflow"] = "penalty"
    return edge


def _short(cfg: dict, horizon: int) -> dict:
    cfg["horizon"] = horizon
    return cfg


def _compiled(name: str, edge: dict):
    builders = {
        "tiny_short": lambda: _short(_yaml("tiny"), 14),
        "tiny_backlog_short": lambda: _short(_tiny_backlog(), 14),
        "edge_open_short": lambda: _short(_edge_open(edge), 10),
        "store_lost": lambda: _store("lost"),
        "store_backlog": lambda: _store("backlog"),
        "tiny_backlog": _tiny_backlog,
        "edge": lambda: edge,
        "edge_open": lambda: _edge_open(edge),
        "edge_exact": lambda: _exact(edge),
    }
    return compile_scenario(load_scenario(builders[name]() if name in builders else name))


def _lp(c, path: int, **kw):
    dem = sample_paths(c.demand, SEED, np.array([path]), 0, c.horizon)[0]
    return _build(c, dem, path_lead_times(c, SEED, path), _serve_bound(c, dem), np.arange(c.K), **kw)


def _value(lp, integral: bool) -> float:
    """The LP's optimum, or with every order line's y in {0, 1} (the exact MILP of the LP's model)."""
    A_eq, b_eq = lp.matrix("eq")
    A_ub, b_ub = lp.matrix("ub")
    cons = [LinearConstraint(A_eq, b_eq, b_eq)]
    if A_ub is not None:
        cons.append(LinearConstraint(A_ub, -np.inf, b_ub))
    integrality = np.zeros(lp.nv)
    if integral:
        y = lp.ids["y"]
        integrality[y[y >= 0]] = 1
    bounds = Bounds(np.concatenate(lp.lo), np.concatenate(lp.hi))
    res = milp(np.concatenate(lp.c), constraints=cons, integrality=integrality, bounds=bounds,
               options={"mip_rel_gap": 1e-9, "time_limit": 60.0})  # fmt: skip
    assert res.status == 0, res.message
    return float(res.fun) + float(lp.const.sum())


def _realised(c, paths) -> np.ndarray:
    """[P]: the cheapest of POLICIES on each path."""
    costs = [rollout(c, pol, paths=paths, seed=SEED).cost.sum(axis=(1, 2)) for pol in POLICIES]
    return np.min(costs, axis=0)


@pytest.mark.parametrize(
    ("scenario", "path"),
    [
        ("tiny_short", 0),
        ("tiny_backlog_short", 1),
        ("store_lost", 0),
        ("store_backlog", 2),
        ("edge_open_short", 0),
    ],
)
def test_cuts__exact_milp_unchanged_and_every_bound_below_the_policies(scenario, path, edge_config):
    """LP <= LP + lot-sizing cuts <= MILP, and the MILP is the same with or without those cuts: they
    remove no integer point of the LP's model. Activation cuts may raise the MILP (they use kernel
    physics the model lacks), but never above what a policy pays."""
    c = _compiled(scenario, edge_config)
    plain = _lp(c, path, cuts=False)
    lot = _lp(c, path, activation=False)
    both = _lp(c, path)
    assert lot.rows["ub"] > plain.rows["ub"]
    lp_plain, lp_lot, lp_both = _value(plain, False), _value(lot, False), _value(both, False)
    milp_plain, milp_lot, milp_both = _value(plain, True), _value(lot, True), _value(both, True)
    tol = 1e-6 * (1 + abs(milp_plain))
    assert lp_plain <= lp_lot + tol
    assert lp_lot <= milp_lot + tol
    assert milp_lot == pytest.approx(milp_plain, rel=1e-7, abs=1e-6)
    assert lp_lot <= lp_both + tol <= milp_both + 2 * tol
    assert milp_plain <= milp_both + tol
    realised = _realised(c, np.array([path]))[0]
    assert milp_both <= realised + tol, (milp_both, realised)
    assert oracle(c, SEED, path).cost == pytest.approx(lp_both, rel=1e-7, abs=1e-6)


@pytest.mark.parametrize(
    "scenario", ["tiny_backlog", "store_lost", "store_backlog", "edge_open", "edge_exact", "constrained"]
)
def test_cuts__bound_below_every_policy_on_the_same_path(scenario, edge_config):
    """Lost-sales and backlog stores, lost-sales and backlogging DCs, random lead times, capacities:
    below policies that order every period, rarely, or once (served from a DC's backlog)."""
    c = _compiled(scenario, edge_config)
    paths = np.arange(3)
    lower = np.array([oracle(c, SEED, int(p)).cost for p in paths])
    realised = _realised(c, paths)
    assert np.all(lower <= realised + 1e-6 * (1 + np.abs(realised))), (lower, realised)


def test_cuts__tighten_the_bound():
    """On tiny the lot-sizing cuts and the activation cuts each raise the bound."""
    c = _compiled("tiny", {})
    plain = oracle(c, SEED, 0, cuts=False).cost
    lot = oracle(c, SEED, 0, activation=False).cost
    both = oracle(c, SEED, 0).cost
    assert plain < lot - 1.0
    assert lot < both - 1.0


@pytest.mark.parametrize("scenario", ["tiny", "tiny_backlog", "store_lost", "store_backlog", "edge_exact"])
@pytest.mark.parametrize(
    "policy",
    [
        Periodic(1, 3.0, stop=10),
        Periodic(4, 6.0, offset=1, stop=10),
        # stores order once and are served from what the DC owes them as its stock arrives
        JointPolicy({"store": Periodic(1000, 10.0), "dc": Periodic(1, 1.5, stop=10)}),
    ],
)
def test_cuts__kernel_trajectories_satisfy_every_cut(scenario, policy, edge_config):
    """Fix the LP's shipments, orders and order lines to a kernel trajectory: the LP stays feasible, so
    the trajectory meets every cut, including the activation cuts that the LP's model alone does not
    imply, and every cost part matches the kernel's (the fixed cost too, now that y is exact)."""
    c = _compiled(scenario, edge_config)
    N, K, T = c.N, c.K, c.horizon
    for path in (0, 1):
        env = ArrayEnv(c, num_envs=1, seed=SEED)
        env.reset(paths=np.array([path]))
        joint = policy if isinstance(policy, JointPolicy) else JointPolicy(policy)
        shipped = np.zeros((N, K, T))
        ordered = np.zeros((N, K, T))
        for t in range(T):
            env.step_qty(joint.propose(env).qty)
            shipped[:, :, t] = env.state.shipped[0]
            ordered[:, :, t] = env.state.last_order[0]
        realised = env.episode_cost[0].sum(axis=0)
        assert oracle(c, SEED, path).cost <= realised.sum() + 1e-6
        lp = _lp(c, path)
        lp.fix(lp.ids["x"], shipped)
        lp.fix(lp.ids["q"], ordered)
        y = lp.ids["y"]
        lp.fix(y, (ordered > 0).astype(np.float64))
        status, parts, _ = lp.solve(None)
        assert status == "optimal", (scenario, path)
        # the kernel also charges lines that can ship nothing useful (B = 0: no y), e.g. in an outage
        fixed = COST_NAMES.index("order_fixed")
        realised[fixed] = (c.params.fixed_cost[:, :, None] * ((ordered > 0) & (y >= 0))).sum()
        np.testing.assert_allclose(parts, realised, rtol=1e-7, atol=1e-6, err_msg=str(COST_NAMES))


def test_cuts__activation_skips_lane_capped_children(edge_config):
    """A lane cap can leave a backlogging DC with stock while it owes: no activation cuts there."""
    capped = compile_scenario(load_scenario(copy.deepcopy(edge_config)))
    opened = _compiled("edge_open", copy.deepcopy(edge_config))
    assert coupled(capped)
    for c, grows in ((capped, False), (opened, True)):
        extra = _lp(c, 0).rows["ub"] - _lp(c, 0, activation=False).rows["ub"]
        assert (extra > 0) == grows
