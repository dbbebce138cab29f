"""The tuner's adaptive precision (racing on doubling common paths), per-node knobs, and its objective
(revenue when the reward includes it, discount on request), checked against exact figures where they
exist (`agents.exact.exact_policy_cost`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.exact import exact_policy_cost
from restock.agents.heuristics import _per_node
from restock.agents.tuning import Objective, evaluate_candidates, race, tune
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario


def _exact(c, name, knobs) -> float:
    return exact_policy_cost(c, JointPolicy(make_policy(name, knobs)))[0]


@pytest.fixture(scope="module")
def ls_l1_p9():
    return compile_scenario(load_scenario("lost_sales/ls_L1_p9"))


def test_race__doubles_paths_until_a_small_difference_separates():
    # three candidates on common random numbers: a per-path shock shared by all (cancels in pairs),
    # idiosyncratic noise sd 1, true means 0, +0.3 and +3; candidate 3 duplicates candidate 0
    means = np.array([0.0, 0.3, 3.0, 0.0])
    calls = []

    def evaluate(idx, paths):
        calls.append((list(idx), len(paths)))
        rows = []
        for g in idx:
            r = [np.random.default_rng([int(p), min(g, 3) % 3]).normal() for p in paths]
            shared = np.array([np.random.default_rng([int(p), 99]).normal() * 10 for p in paths])
            rows.append(means[g] + np.array(r) + shared)
        return np.array(rows)

    best, comp, used, evals = race(evaluate, 4, episodes=8, max_episodes=1024)
    assert best == 0 and comp["runner_up"] == 1
    assert comp["separated"] and comp["ci95"][0] > 0
    assert 8 < used <= 1024  # 8 paths cannot separate 0.3 at sd ~1.4 of a difference
    # the far candidate and the duplicate are not simulated again once dropped / merged
    assert all(2 not in idx and 3 not in idx for idx, _ in calls[1:])
    # without racing: the first 8 paths only
    best8, comp8, used8, _ = race(evaluate, 4, episodes=8, max_episodes=None)
    assert used8 == 8 and comp8["paths"] == 8


def test_race__identical_candidates_give_no_comparison():
    best, comp, used, evals = race(lambda idx, p: np.ones((len(idx), len(p))), 3, 4, 64)
    assert best == 0 and comp is None and used == 4 and evals == 3


def test_adaptive_tuner__picks_the_exactly_best_base_stock_where_16_paths_do_not(ls_l1_p9):
    c = ls_l1_p9
    # exact long-run cost of every base-stock level the z knob can reach near the optimum
    exact = sorted(
        {round(_exact(c, "base_stock", {"store": {"z": z}}), 9) for z in np.arange(-1.5, 0.8, 0.1)}
    )
    best, second = exact[0], exact[1]
    assert (second - best) / best < 0.003  # neighbours within 0.3%: the hard case
    old = tune(c, "base_stock", episodes=16, seed=1000, eval_episodes=4)
    new = tune(c, "base_stock", episodes=16, seed=1000, eval_episodes=4, max_episodes=256)
    gap_old = (_exact(c, "base_stock", old.knobs) - best) / best
    gap_new = (_exact(c, "base_stock", new.knobs) - best) / best
    assert gap_old > 0.001  # 16 paths pick the neighbour (0.18% worse)
    assert gap_new < 0.0005
    fc = new.final_comparison
    assert fc["paths"] > 16 and fc["ci95"][0] <= fc["runner_up_minus_best"] <= fc["ci95"][1]
    assert max(h["paths"] for h in new.history) == 256
    assert all(h["paths"] == 16 for h in old.history)


def test_tune_cli__reports_the_final_comparison(tmp_path):
    from typer.testing import CliRunner

    from restock.cli import app

    out = tmp_path / "p.json"
    r = CliRunner().invoke(
        app,
        ["tune", "lost_sales/ls_L1_p9", "--episodes", "8", "--max-episodes", "32", "--rounds", "2"]
        + ["--eval-episodes", "4", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "final comparison" in r.output and "paired 95% CI" in r.output
    assert "undiscounted" in r.output
    pol = json.loads(out.read_text())["policies"]["base_stock"]
    fc = pol["final_comparison"]
    assert set(fc) >= {"knob", "best", "runner_up", "runner_up_minus_best", "ci95", "paths", "separated"}
    assert pol["max_episodes"] == 32 and pol["objective"]["revenue"] is False


# ------------------------------------------------------------------------------------------------
# per-node knobs


def test_per_node_knobs__override_the_role_per_node():
    c = compile_scenario(load_scenario("serial_3"))
    z = _per_node(c, {"dc": {"z": 1.0}, "store": {"z": 2.0}, "dc_1": {"z": -0.5}}, "z", 0.0, 2)
    assert z[:, :, 0].tolist() == [[1.0, -0.5, 2.0]] * 2
    # per-env arrays for one node
    z = _per_node(c, {"dc_0": {"z": np.array([0.1, 0.2])}}, "z", 3.0, 2)
    assert z[:, :, 0].tolist() == [[0.1, 3.0, 3.0], [0.2, 3.0, 3.0]]


def test_per_node_tuning__serial_3_knobs_per_node_load_everywhere(tmp_path):
    from typer.testing import CliRunner

    from restock.cli import app

    c = compile_scenario(load_scenario("serial_3"))
    res = tune(c, "echelon_base_stock", episodes=8, rounds=2, eval_episodes=8, per_node=True)
    assert set(res.knobs) == {"store_0", "dc_1", "dc_0"}
    assert any("node" in h for h in res.history) and any("role" in h for h in res.history)
    # the per-node knobs mean what they say: the same costs as the role knobs they equal
    role = {"store": res.knobs["store_0"], "dc": res.knobs["dc_1"]}
    mixed = dict(role, dc_0=res.knobs["dc_0"])
    paths = np.arange(4)
    a = evaluate_candidates(c, "echelon_base_stock", [res.knobs, mixed], paths, 5)
    assert np.array_equal(a[0], a[1])
    out = tmp_path / "p.json"
    r = CliRunner().invoke(
        app,
        ["tune", "serial_3", "--policy", "echelon_base_stock", "--per-node", "--episodes", "4"]
        + ["--max-episodes", "4", "--rounds", "1", "--eval-episodes", "4", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert set(json.loads(out.read_text())["policies"]["echelon_base_stock"]["knobs"]) == {
        "store_0",
        "dc_1",
        "dc_0",
    }
    r = CliRunner().invoke(
        app,
        ["eval", "serial_3", "--policies", "echelon_base_stock", "--params", str(out), "--episodes", "2"]
        + ["--out", str(tmp_path / "ev"), "--json"],
    )
    assert r.exit_code == 0, r.output
    assert "not tuned" not in r.output


def test_per_node_knobs__a_different_dc_z_changes_only_that_dc():
    c = compile_scenario(load_scenario("serial_3"))
    pol = make_policy("base_stock", {"dc": {"z": 0.0}, "dc_0": {"z": 2.0}})
    env = ArrayEnv(c, num_envs=1, seed=0)
    env.reset()
    joint = JointPolicy(pol)
    joint.bind(c)
    q_node = joint.propose(env).qty.copy()
    joint2 = JointPolicy(make_policy("base_stock", {"dc": {"z": 0.0}}))
    joint2.bind(c)
    q_role = joint2.propose(env).qty
    assert q_node[0, 0, 0] > q_role[0, 0, 0]  # dc_0 orders more with the higher z
    assert np.array_equal(q_node[0, 1:], q_role[0, 1:])


# ------------------------------------------------------------------------------------------------
# objective: revenue, discount


@pytest.fixture(scope="module")
def tiny_revenue():
    return compile_scenario(load_scenario("tiny", reward__include_revenue=True))


def test_revenue_objective__profit_is_what_is_tuned(tiny_revenue):
    c = tiny_revenue
    assert c.params.include_revenue and c.params.price.max() > 0
    cost_only = tune(c, "base_stock", episodes=16, rounds=3, eval_episodes=8, revenue=False)
    profit = tune(c, "base_stock", episodes=16, rounds=3, eval_episodes=8)  # follows the scenario
    assert profit.objective["revenue"] and "revenue" in profit.objective["criterion"]
    assert not cost_only.objective["revenue"]
    # selling more pays: the profit-tuned stores stock more than the cost-tuned ones
    assert profit.knobs["store"]["z"] > cost_only.knobs["store"]["z"]
    # the reported objective is cost - revenue per period, recomputed here on the held-out paths
    env = ArrayEnv(c, num_envs=8, seed=profit.eval_seed)
    env.reset(paths=np.arange(8))
    joint = JointPolicy(make_policy("base_stock", profit.knobs))
    joint.bind(c)
    for _ in range(c.horizon):
        env.step_qty(joint.propose(env).qty)
    net = (env.episode_cost.sum(axis=(1, 2)) - env.episode_revenue.sum(axis=1)) / c.horizon
    assert profit.objective["held_out_per_period"]["mean"] == pytest.approx(net.mean(), rel=1e-9)
    # and the profit-tuned knobs earn more on the tuning paths than the cost-tuned ones
    _, per = evaluate_candidates(
        c,
        "base_stock",
        [profit.knobs, cost_only.knobs],
        np.arange(16),
        1000,
        objective=Objective(revenue=True),
    )
    assert per[0].mean() < per[1].mean()


def test_revenue_objective__off_when_the_reward_has_no_revenue():
    c = compile_scenario(load_scenario("tiny"))
    assert Objective.for_scenario(c).plain


def test_discounted_objective__weights_period_t_by_discount_power_t():
    c = compile_scenario(load_scenario("tiny"))
    obj = Objective.for_scenario(c, discount=c.config.discount)
    assert obj.discount == 0.99 and "discounted by 0.99" in obj.describe()
    knobs = {"store": {"z": 0.3}, "dc": {"z": 0.2}}
    tot, per = evaluate_candidates(c, "base_stock", [knobs], np.arange(3), 7, objective=obj)
    env = ArrayEnv(c, num_envs=3, seed=7)
    env.reset(paths=np.arange(3))
    joint = JointPolicy(make_policy("base_stock", knobs))
    joint.bind(c)
    acc = env.episode_cost.sum(axis=(1, 2)).copy()
    for t in range(c.horizon):
        env.step_qty(joint.propose(env).qty)
        acc += 0.99**t * env.out.cost.sum(axis=(1, 2))
    w = (0.99 ** np.arange(c.horizon)).sum()
    assert per[0] == pytest.approx(acc / w, rel=1e-12)
    assert tot[0] == pytest.approx(env.episode_cost.sum(axis=(1, 2)), rel=1e-12)
    assert not np.allclose(per[0], tot[0] / c.horizon)  # discounting changes the figure
    # discount 1 is the plain objective
    assert Objective.for_scenario(c, discount=1.0).plain


def test_discounted_tune__says_so_and_reports_the_discounted_objective(tmp_path):
    from typer.testing import CliRunner

    from restock.cli import app

    args = ["tune", "tiny", "--episodes", "4", "--max-episodes", "4", "--rounds", "1", "--eval-episodes", "4"]
    r = CliRunner().invoke(app, args + ["--discounted", "--out", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    assert "discounted by 0.99" in " ".join(r.output.split())
    pol = json.loads((tmp_path / "d.json").read_text())["policies"]["base_stock"]
    assert pol["objective"]["discount"] == 0.99
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "u.json")])
    assert r.exit_code == 0, r.output
    assert "discount 0.99 is not applied" in " ".join(r.output.split())
