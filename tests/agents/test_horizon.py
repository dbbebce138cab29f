"""base_stock_cutoff: base-stock that stops ordering what can no longer sell before the horizon ends."""

from __future__ import annotations

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.heuristics import TUNABLE
from restock.agents.horizon import HorizonBaseStock, reach_to_customer
from restock.agents.shield import Shield
from restock.agents.tuning import tune
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.eval.kpis import episode_kpis
from restock.eval.rollout import rollout

KNOBS = {"store": {"z": 1.0}, "dc": {"z": 1.5}}


@pytest.fixture(scope="module")
def v1():
    return compile_scenario(load_scenario("benchmarks/orgym_invmgmt_v1"))


def test_reach__is_the_lead_times_plus_one_period_per_dc_that_ships_before_arrivals(v1):
    # OR-Gym chain: raw -(10)-> stage_2 -(5)-> stage_1 -(3)-> store; both DCs wait a period
    reach = reach_to_customer(v1)
    lt = v1.params.lt_value[:, 0]
    assert sorted(lt.tolist()) == [3, 5, 10]
    by_lt = {int(lt[n]): int(reach[n]) for n in range(v1.N)}
    assert by_lt == {3: 3, 5: 5 + 1 + 3, 10: 10 + 1 + 5 + 1 + 3}


def test_cutoff__orders_nothing_once_an_order_cannot_sell_and_base_stock_before(v1):
    T = v1.horizon
    cut = rollout(v1, JointPolicy(HorizonBaseStock(knobs=KNOBS)), episodes=8, seed=3, shield=Shield(v1))
    plain = rollout(v1, JointPolicy(make_policy("base_stock", KNOBS)), episodes=8, seed=3, shield=Shield(v1))
    reach = reach_to_customer(v1)
    for n in range(v1.N):
        last = T - 1 - reach[n]  # the last period an order at n can still sell
        assert (cut.ordered[:, last + 1 :, n] == 0).all()
        assert plain.ordered[:, last + 1 :, n].sum() > 0  # plain base-stock keeps ordering
    # before the first cut-off both policies are the same policy on the same paths
    first = T - 1 - int(reach.max())
    np.testing.assert_array_equal(cut.ordered[:, : first + 1], plain.ordered[:, : first + 1])
    prof = lambda r: episode_kpis(r, v1)["discounted_profit"]  # noqa: E731
    assert (prof(cut) - prof(plain)).mean() > 50  # the stranded raw material alone costs more than this


def test_cutoff_knob__shifts_the_last_ordering_period(v1):
    reach = reach_to_customer(v1)
    early = {**KNOBS, "store": {"z": 1.0, "cutoff": -2.0}}
    res = rollout(v1, JointPolicy(HorizonBaseStock(knobs=early)), episodes=4, seed=3, shield=Shield(v1))
    store = v1.M
    last = v1.horizon - 1 - reach[store] - 2
    assert (res.ordered[:, last + 1 :, store] == 0).all() and res.ordered[:, last, store].sum() > 0


def test_tune__finds_a_cutoff_that_beats_ordering_to_the_end(v1):
    assert "base_stock_cutoff" in TUNABLE
    res = tune(
        v1, "base_stock_cutoff", episodes=16, rounds=2, eval_episodes=8, max_episodes=16,
        discount=float(v1.config.discount), progress=False, shield=lambda c: Shield(c),
    )  # fmt: skip
    cuts = [k["cutoff"] for k in res.knobs.values()]
    assert all(-4.0 <= x <= 4.0 for x in cuts)
    never = {r: {**k, "cutoff": float(v1.horizon)} for r, k in res.knobs.items()}  # never cuts off
    prof = {}
    for name, kn_ in (("tuned", res.knobs), ("never", never)):
        r = rollout(v1, JointPolicy(HorizonBaseStock(knobs=kn_)), episodes=32, seed=7, shield=Shield(v1))
        prof[name] = episode_kpis(r, v1)["discounted_profit"]
    assert (prof["tuned"] - prof["never"]).mean() > 50
