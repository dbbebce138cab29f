"""Echelon base-stock policy: echelon positions on trees, order quantities, levels and covers."""

from __future__ import annotations

import numpy as np
import pytest
from restock.agents.base import Policy
from restock.agents.echelon import EchelonBaseStock
from restock.agents.optimal import echelon_path_oracle, serial_from_scenario
from restock.envs.array_env import ArrayEnv
from restock.eval.rollout import rollout

TREE = {
    # supplier -> regional -> {local_a, local_b} -> 2 stores each; one more store right under regional
    "name": "tree",
    "horizon": 12,
    "skus": {
        "count": 2,
        "holding_cost": [1.0, 2.0],
        "stockout_cost": [5.0, 9.0],
        "lot_size": [1, 3],
        "moq": [0, 6],
    },
    "network": {
        "suppliers": [{"id": "sup"}],
        "dcs": [
            {"id": "regional", "parent": "sup", "lead_time": 2},
            {"id": "local_a", "parent": "regional", "lead_time": 1},
            {"id": "local_b", "parent": "regional", "lead_time": 0},
        ],
        "stores": [
            {"count": 4, "parent": ["local_a", "local_b"], "lead_time": 1, "unmet": "backlog"},
            {"count": 1, "parent": "regional", "lead_time": 2, "unmet": "lost"},
        ],
    },
    "demand": {"model": "poisson", "mean": [4.0, 2.0], "weekly": [1, 1, 1, 1, 1.2, 1.5, 0.8]},
}


def _random_state(env: ArrayEnv, seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = env.state
    for a in (s.on_hand, s.transit, s.owed):
        a[:] = rng.integers(0, 30, a.shape)
    s.owed[:, env.params.parent < 0] = 0  # suppliers never owe
    s.backlog[:] = rng.integers(0, 10, s.backlog.shape) * env.params.is_store[None, :, None]


def _brute_force_positions(env: ArrayEnv) -> np.ndarray:
    """The definition, node by node: subtree (on hand + in transit - store backlog) + owed by the parent."""
    p, s = env.params, env.state
    N = env.N
    ip = np.zeros(s.on_hand.shape, np.int64)
    for n in range(N):
        for i in range(N):
            a = i
            while a >= 0 and a != n:
                a = p.parent[a]
            if a == n:  # i is in n's subtree
                ip[:, n] += s.on_hand[:, i].astype(np.int64) + s.transit[:, i] - s.backlog[:, i]
        ip[:, n] += s.owed[:, n]
    return ip


def test_echelon_positions__match_the_definition_on_a_distribution_tree():
    env = ArrayEnv(TREE, num_envs=4)
    env.reset()
    pol = EchelonBaseStock(levels=0)
    for seed in range(3):
        _random_state(env, seed)
        np.testing.assert_array_equal(pol.positions(env), _brute_force_positions(env))


def test_echelon_positions__equal_clark_scarf_positions_on_a_serial_chain():
    """At every decision the position of stage j is sum_{i<=j}(OH_i + IT_i) + owed_j - B, which the theory
    gives as X_j(t-1) - D_{t-1} (X: the position after ordering, E0 at t = 0)."""
    env = ArrayEnv("serial_3", num_envs=8, seed=3, horizon=40)
    env.reset()
    pol = EchelonBaseStock.from_clark_scarf(env.compiled)
    spec, S = pol.spec, pol.solution.echelon
    stages = list(spec.nodes)
    seen, demand = [], []
    for _ in range(40):
        seen.append(pol.positions(env)[:, stages, 0].copy())
        env.step_qty(pol.act(env, np.arange(env.N)))
        demand.append(env.state.last_demand[:, stages[0], 0].copy())
    seen, D = np.stack(seen, axis=1), np.stack(demand, axis=1).astype(np.int64)
    o = echelon_path_oracle(
        D,
        spec.lead_times,
        S,
        initial_on_hand=list(spec.initial_on_hand),
        initial_pipeline=[list(p) for p in spec.initial_pipeline],
    )
    E0 = np.cumsum(np.add(spec.initial_on_hand, [sum(p) for p in spec.initial_pipeline]))
    np.testing.assert_array_equal(seen[:, 0], np.broadcast_to(E0, (8, 3)))
    np.testing.assert_array_equal(seen[:, 1:], o["X"][:, :-1] - D[:, :-1, None])


def test_act__orders_the_gap_to_the_level_for_the_nodes_asked():
    env = ArrayEnv(TREE, num_envs=3, skus__lot_size=1, skus__moq=0)
    env.reset()
    _random_state(env, 7)
    levels = np.arange(env.N * env.K, dtype=float).reshape(env.N, env.K) * 10
    pol = EchelonBaseStock(levels=levels)
    nodes = np.array([4, 0, 2])
    q = pol.act(env, nodes)
    assert q.shape == (3, 3, env.K) and q.dtype == np.int64
    expect = np.maximum(levels[nodes][None] - _brute_force_positions(env)[:, nodes], 0)
    np.testing.assert_array_equal(q, expect)


def test_act__cover_follows_the_echelon_forecast_and_rounds_to_lots_and_moq():
    env = ArrayEnv(TREE, num_envs=2)
    env.reset()
    for _ in range(5):  # move to a period with a seasonal factor != 1
        env.step_qty(np.zeros((2, env.N, env.K), np.int64))
    p, t = env.params, env.t
    assert p.season[t] != 1.0
    cover = np.array([6.0, 3.0, 2.5, 1.5, 1.5, 1.5, 1.5, 2.0])
    q = EchelonBaseStock(cover=cover).act(env, np.arange(env.N))
    gap = cover[:, None] * p.mean * p.season[t] - _brute_force_positions(env)
    lot, moq = p.lot[None, None], p.moq[None, None]
    assert np.all(q % lot == 0)
    assert np.all((q == 0) == (gap <= 0))
    pos = q > 0
    assert np.all(q[pos] >= gap[pos] - 1e-9)
    assert np.all(q[pos] >= np.broadcast_to(moq, q.shape)[pos])
    assert np.all(
        q[pos] < np.maximum(gap, np.broadcast_to(moq, q.shape))[pos] + np.broadcast_to(lot, q.shape)[pos]
    )


def test_policy__runs_a_distribution_network_rollout():
    pol = EchelonBaseStock(cover=[8.0, 4.0, 3.0, 2.0, 2.0, 2.0, 2.0, 3.0])
    assert isinstance(pol, Policy) and pol.output == "quantities"
    res = rollout(TREE, pol, episodes=4, seed=0)
    assert np.isfinite(res.cost).all() and res.ordered.sum() > 0


def test_policy__rejects_bad_levels():
    with pytest.raises(ValueError, match="exactly one"):
        EchelonBaseStock(levels=[1], cover=[1])
    with pytest.raises(ValueError, match="one value per node"):
        rollout(TREE, EchelonBaseStock(levels=[1.0, 2.0]), episodes=1)
    with pytest.raises(ValueError, match="parents listed before"):
        EchelonBaseStock._check_tree(np.array([1, -1]))


def test_from_clark_scarf__puts_the_stage_levels_on_the_kernel_nodes():
    env = ArrayEnv("serial_3", num_envs=1)
    pol = EchelonBaseStock.from_clark_scarf(env.compiled)
    assert pol.name == "clark_scarf"
    assert pol.solution.echelon == [16, 21, 34]
    np.testing.assert_array_equal(pol.levels[:, 0], [34, 21, 16])  # stage_3 (node 0) .. store_0 (node 2)
    assert serial_from_scenario(env.compiled).nodes == (2, 1, 0)
    with pytest.raises(ValueError, match="one store"):
        EchelonBaseStock.from_clark_scarf(ArrayEnv(TREE).compiled)
