"""Held-out evaluation (and keep_best) minimise the scenario's objective: net cost where revenue counts."""

from __future__ import annotations

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.types import K_DISCOUNTED_PROFIT
from restock.eval.rollout import rollout
from restock.training.common import episodic_objective


def test_a_profit_scenario_is_judged_on_cost_minus_revenue():
    c = compile_scenario(load_scenario("benchmarks/orgym_invmgmt_v1", reward__discounted=False))
    assert c.params.include_revenue
    res = rollout(c, JointPolicy(make_policy("base_stock", {})), episodes=3, seed=5, trace_sku=None)
    got = episodic_objective(c, res)["episodic_cost"]
    cost, revenue = res.cost.sum(axis=(1, 2)), res.revenue.sum(axis=1)
    assert revenue.min() > 0
    assert np.isclose(got, float((cost - revenue).mean()))
    # selling nothing is the cheapest policy by cost alone, and the worst by this objective
    zero = rollout(c, JointPolicy(make_policy("zero", {})), episodes=3, seed=5, trace_sku=None)
    assert zero.cost.sum(axis=(1, 2)).mean() < cost.mean()
    assert episodic_objective(c, zero)["episodic_cost"] > got


def test_a_cost_scenario_is_judged_on_total_cost():
    c = compile_scenario(load_scenario("tiny", horizon=10))
    assert not c.params.include_revenue
    res = rollout(c, JointPolicy(make_policy("base_stock", {})), episodes=2, seed=1, trace_sku=None)
    assert np.isclose(episodic_objective(c, res)["episodic_cost"], float(res.cost.sum(axis=(1, 2)).mean()))


def test_a_discounted_reward_is_judged_on_the_discounted_objective():
    """OR-Gym v1 weights period t's reward by 0.97^t (reward.discounted): keep_best selects on minus the
    discounted profit, the kernel's own discounted_profit KPI summed over nodes, not the plain net cost."""
    c = compile_scenario(load_scenario("benchmarks/orgym_invmgmt_v1"))
    assert c.params.include_revenue and c.params.reward_disc[1] < 1.0
    res = rollout(c, JointPolicy(make_policy("base_stock", {})), episodes=3, seed=5, trace_sku=None)
    got = episodic_objective(c, res)
    discounted_profit = res.kpi[:, :, K_DISCOUNTED_PROFIT].sum(axis=1)
    assert np.isclose(got["episodic_cost"], float(-discounted_profit.mean()))
    assert np.isclose(got["episodic_cost_std"], float(discounted_profit.std()))
    net = float((res.cost.sum(axis=(1, 2)) - res.revenue.sum(axis=1)).mean())
    assert not np.isclose(got["episodic_cost"], net, rtol=1e-3)  # the discount changes the objective
