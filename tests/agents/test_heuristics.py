"""Heuristics respect the masks, compute the textbook quantities, and tuning improves them."""

from __future__ import annotations

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import load_params, make_policy, save_params
from restock.agents.heuristics import BaseStockPolicy, CappedBaseStockPolicy, RQPolicy, SSPolicy
from restock.agents.tuning import evaluate_candidates, tune
from restock.envs import ArrayEnv
from restock.envs import kernel as kn
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario

QUANTITY_POLICIES = [BaseStockPolicy, CappedBaseStockPolicy, SSPolicy, RQPolicy]


@pytest.mark.parametrize("cls", QUANTITY_POLICIES)
@pytest.mark.parametrize("scenario", ["default", "edge"])
def test_heuristics__never_propose_above_the_per_sku_bounds(cls, scenario, edge_config):
    c = compile_scenario(load_scenario(edge_config if scenario == "edge" else scenario))
    env = ArrayEnv(c, num_envs=3)
    env.reset()
    pol = JointPolicy(cls(knobs={"store": {"z": 2.5}, "dc": {"z": 3.0}}))  # generous: bounds will bind
    pol.bind(c)
    lot, moq = c.params.lot, c.params.moq
    for _ in range(min(c.horizon, 30)):
        q = pol.propose(env).qty
        assert (q >= 0).all() and (q <= env.ub).all()
        pos = q > 0
        assert (q[pos] % np.broadcast_to(lot, q.shape)[pos] == 0).all()
        assert (q[pos] >= np.broadcast_to(moq, q.shape)[pos]).all()
        env.step_qty(q)


def test_base_stock__orders_up_to_its_level():
    c = compile_scenario(load_scenario("single_lost_sales"))
    env = ArrayEnv(c, num_envs=2)
    env.reset()
    pol = BaseStockPolicy(knobs={"store": {"z": 0.5}})
    pol.bind(c)
    fc, sd = pol.stats.protection(0)
    S = fc + (pol.stats.crit + 0.5) * sd  # [N, K]
    ip = np.empty((2, c.N, c.K), np.int64)
    kn.inventory_positions(c.params, env.state, env.work, ip)
    q = pol.act(env, np.arange(c.N))
    np.testing.assert_array_equal(q, np.maximum(np.ceil(S[None] - ip - 1e-9), 0).astype(np.int64))
    # protection interval: lead time 2 + 1 review period, Poisson(5): mean 15, sd sqrt(15)
    assert fc[0, 0] == pytest.approx(15.0) and sd[0, 0] == pytest.approx(np.sqrt(15.0))


def test_tuning__beats_default_knobs_on_common_paths_and_round_trips(tmp_path):
    c = compile_scenario(load_scenario("single_lost_sales", horizon=100))
    res = tune(c, "capped_base_stock", episodes=8, rounds=2, eval_episodes=16)
    paths = np.arange(16, dtype=np.int64)
    tuned, default = evaluate_candidates(c, "capped_base_stock", [res.knobs, {}], paths, seed=5)
    assert tuned.mean() < default.mean()
    f = tmp_path / "params.json"
    save_params(f, res)
    res2 = tune(c, "base_stock", episodes=8, rounds=1, eval_episodes=8)
    save_params(f, res2)
    data = load_params(f)
    assert set(data["policies"]) == {"capped_base_stock", "base_stock"}
    assert data["policies"]["capped_base_stock"]["knobs"] == res.knobs
    lo, hi = data["policies"]["base_stock"]["cost_per_period"]["ci95"]
    assert lo <= data["policies"]["base_stock"]["cost_per_period"]["mean"] <= hi


def test_make_policy__unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown policy 'magic'.*base_stock"):
        make_policy("magic")


def test_echelon_base_stock__tunes_close_to_the_clark_scarf_optimum():
    """Tuned echelon base-stock (one z per role) gets near the exact optimum; installation base-stock
    (one z per role on local positions) does not: the yardstick learning has to reach."""
    from restock.agents.echelon import EchelonBaseStock

    c = compile_scenario(load_scenario("serial_3"))
    res = tune(c, "echelon_base_stock", episodes=8, rounds=2, eval_episodes=8)
    paths = np.arange(24, dtype=np.int64)
    tuned = evaluate_candidates(c, "echelon_base_stock", [res.knobs], paths, seed=3)[0].mean() / c.horizon
    opt_pol = JointPolicy(EchelonBaseStock.from_clark_scarf(c))
    env = ArrayEnv(c, num_envs=24, seed=3)
    env.reset(paths=paths)
    opt_pol.bind(c)
    for _ in range(c.horizon):
        env.step_qty(opt_pol.propose(env).qty)
    optimum = env.episode_cost.sum(axis=(1, 2)).mean() / c.horizon
    assert tuned < optimum * 1.06  # same paths: within a few percent of the optimum
