"""The tight perfect-information bound (eval.bound): the oracle's MILP per SKU with a Lagrangian for the rows
that couple SKUs. Equal to the exact joint MILP when nothing couples SKUs, never above it when something
does, at least the LP bound, below every policy on the same paths, deterministic, valid under a time limit."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.demand import sample_paths
from restock.eval.bound import bound_paths, tight_bound
from restock.eval.oracle import _build, _serve_bound, coupled, oracle, path_lead_times
from restock.eval.rollout import rollout
from scipy.optimize import Bounds, LinearConstraint, milp

SEED = 11
SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"


from oracle_cases import POLICIES, _store, _yaml  # noqa: E402


def _tiny(horizon: int, storage: str = "penalty", unmet: str = "lost") -> dict:
    cfg = _yaml("tiny")
    cfg["horizon"] = horizon
    cfg["network"]["stores"]["unmet"] = unmet
    for node in [*cfg["network"]["dcs"], cfg["network"]["stores"]]:
        node["overflow"] = storage
    return cfg


def _edge(edge: dict, horizon: int, uncoupled: bool) -> dict:
    edge = copy.deepcopy(edge)
    edge["horizon"] = horizon
    if uncoupled:  # no lane caps, storage only with disposal
        edge["network"]["dcs"][1].pop("lane_capacity")
        edge["network"]["stores"][1].pop("lane_capacity")
        edge["network"]["stores"][1]["overflow"] = "dispose"
    return edge


def _constrained(horizon: int, skus: int) -> dict:
    cfg = _yaml("constrained")
    cfg["horizon"] = horizon
    cfg["skus"]["count"] = skus
    return cfg


def _compiled(name: str, edge: dict):
    builders = {
        "store_lost": lambda: _store("lost"),
        "store_backlog": lambda: _store("backlog"),
        "tiny_dispose": lambda: _tiny(12, "dispose"),
        "tiny_dispose_backlog": lambda: _tiny(12, "dispose", "backlog"),
        "edge_uncoupled": lambda: _edge(edge, 10, True),
        "tiny_short": lambda: _tiny(12),
        "edge_short": lambda: _edge(edge, 10, False),
        "constrained_short": lambda: _constrained(10, 4),
        "edge_mid": lambda: _edge(edge, 14, False),
    }
    return compile_scenario(load_scenario(builders[name]() if name in builders else name))


def _joint_milp(c, path: int) -> float:
    """The oracle's joint program over all SKUs (coupling rows kept) with y in {0, 1}: its exact optimum."""
    dem = sample_paths(c.demand, SEED, np.array([path]), 0, c.horizon)[0]
    lp = _build(c, dem, path_lead_times(c, SEED, path), _serve_bound(c, dem), np.arange(c.K))
    A_eq, b_eq = lp.matrix("eq")
    A_ub, b_ub = lp.matrix("ub")
    cons = [LinearConstraint(A_eq, b_eq, b_eq)]
    if A_ub is not None:
        cons.append(LinearConstraint(A_ub, -np.inf, b_ub))
    integrality = np.zeros(lp.nv)
    y = lp.ids["y"]
    integrality[y[y >= 0]] = 1
    bounds = Bounds(np.concatenate(lp.lo), np.concatenate(lp.hi))
    res = milp(np.concatenate(lp.c), constraints=cons, integrality=integrality, bounds=bounds,
               options={"mip_rel_gap": 1e-9, "time_limit": 300.0})  # fmt: skip
    assert res.status == 0, res.message
    return float(res.fun) + float(lp.const.sum())


def _tol(x: float) -> float:
    return 1e-6 * (1.0 + abs(x))


@pytest.mark.parametrize(
    ("scenario", "path"),
    [
        ("store_lost", 0),
        ("store_backlog", 2),
        ("tiny_dispose", 0),
        ("tiny_dispose_backlog", 1),
        ("edge_uncoupled", 0),
    ],
)
def test_bound__equals_the_exact_milp_when_nothing_couples_skus(scenario, path, edge_config):
    c = _compiled(scenario, edge_config)
    assert not coupled(c)
    r = tight_bound(c, SEED, path)
    exact = _joint_milp(c, path)
    assert r.exact and r.status == "exact" and r.skus_optimal == r.skus == c.K
    assert r.iterations == 0 and not r.coupled
    assert r.cost == pytest.approx(exact, rel=1e-6, abs=1e-6)
    lp = oracle(c, SEED, path).cost
    assert lp <= r.cost + _tol(r.cost)
    assert r.lp_cost == pytest.approx(lp, rel=1e-6, abs=1e-6)  # the LP per SKU is the oracle's LP


@pytest.mark.parametrize(
    ("scenario", "path"), [("tiny_short", 0), ("edge_short", 1), ("constrained_short", 0)]
)
def test_bound__at_most_the_exact_milp_when_skus_are_coupled(scenario, path, edge_config):
    """The Lagrangian bound is below the joint MILP whatever the multipliers; exact means equal."""
    c = _compiled(scenario, edge_config)
    assert coupled(c)
    r = tight_bound(c, SEED, path)
    exact = _joint_milp(c, path)
    assert r.coupled
    assert r.cost <= exact + _tol(exact), (r, exact)
    assert r.lp_cost <= r.cost + _tol(r.cost)
    if r.exact:
        assert r.cost == pytest.approx(exact, rel=1e-6, abs=1e-6)
    else:
        assert r.model_gap >= -_tol(exact)
        if r.skus_optimal == r.skus:
            assert exact <= r.cost + r.model_gap + _tol(exact)  # a feasible point within model_gap
    # the Lagrangian with LP subproblems never passes the joint LP (LP duality)
    assert r.lp_cost <= oracle(c, SEED, path).cost + _tol(r.lp_cost)


@pytest.mark.parametrize("scenario", ["tiny", "store_lost", "store_backlog", "edge_mid", "constrained_short"])
def test_bound__below_every_policy_on_the_same_paths(scenario, edge_config):
    c = _compiled(scenario, edge_config)
    paths = np.arange(2)
    bounds = bound_paths(c, SEED, paths, time_limit=120.0, mip_iterations=1)
    lower = np.array([r.cost for r in bounds])
    assert np.all(np.isfinite(lower))
    for policy in POLICIES:
        realised = rollout(c, policy, paths=paths, seed=SEED).cost.sum(axis=(1, 2))
        assert np.all(lower <= realised + _tol(realised)), (scenario, policy.name, lower, realised)


def test_bound__tighter_than_the_lp_and_deterministic():
    c = _compiled("tiny_short", {})
    a = tight_bound(c, SEED, 0)
    b = tight_bound(c, SEED, 0)
    assert a.cost == b.cost and a.exact == b.exact and a.iterations == b.iterations
    assert a.cost > oracle(c, SEED, 0).cost + 1.0  # the LP lets the fixed cost fade; the MILP does not


def test_bound__stays_valid_when_the_time_limit_binds():
    """With almost no time every SKU falls back to its LP value (or a MILP dual bound): still <= MILP."""
    c = _compiled("tiny_short", {})
    r = tight_bound(c, SEED, 0, time_limit=1e-3)
    full = tight_bound(c, SEED, 0)
    assert not r.exact and r.status == "bound"
    assert r.cost <= full.cost + _tol(full.cost)
    assert r.cost >= r.lp_cost - _tol(r.lp_cost)
    progress = []
    bound_paths(c, SEED, [0, 1], progress=progress.append, time_limit=1e-3)
    assert progress == [1, 1]
