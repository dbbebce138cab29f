"""`restock eval --discounted`: the scenario's discount per period, as `restock tune --discounted`."""

from __future__ import annotations

import json

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.tuning import Objective, evaluate_candidates
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.eval.evaluate import evaluate, heuristic_spec
from restock.eval.kpis import DISCOUNTED
from typer.testing import CliRunner

from restock.cli import app

KNOBS = {"store": {"z": 0.3}, "dc": {"z": 0.2}}


def _tiny(discount: float):
    return compile_scenario(load_scenario("tiny", discount=discount))


def test_eval_discounted__hand_computation_and_tune_agree():
    c = _tiny(0.9)
    res = evaluate(c, [heuristic_spec("base_stock", KNOBS)], episodes=3, seed=7, progress=False, discount=0.9)
    got = res.per_episode["base_stock"][DISCOUNTED]
    # by hand: the network's cost of each period of each path, weighted by 0.9^t
    env = ArrayEnv(c, num_envs=3, seed=7)
    env.reset(paths=np.arange(3))
    joint = JointPolicy(make_policy("base_stock", KNOBS))
    joint.bind(c)
    series = [env.episode_cost.sum(axis=(1, 2))]  # anything charged at reset: period 0
    for _ in range(c.horizon):
        env.step_qty(joint.propose(env).qty)
        series.append(env.out.cost.sum(axis=(1, 2)).copy())
    per_period = np.stack(series[1:], axis=1)
    per_period[:, 0] += series[0]
    w = 0.9 ** np.arange(c.horizon)
    np.testing.assert_allclose(got, per_period @ w / w.sum(), rtol=1e-12)
    np.testing.assert_allclose(res.rollouts["base_stock"].period_cost, per_period, rtol=1e-12)
    assert not np.allclose(got, res.per_episode["base_stock"]["total_cost"] / c.horizon)
    # the tuner's discounted objective on the same policy and paths is the same figure
    _, per = evaluate_candidates(c, "base_stock", [KNOBS], np.arange(3), 7, objective=Objective(discount=0.9))
    np.testing.assert_allclose(got, per[0], rtol=1e-12)
    assert "discounted by 0.9 a period" in res.criteria[DISCOUNTED]
    assert res.kpis_json()["base_stock"][DISCOUNTED]["criterion"] == res.criteria[DISCOUNTED]


def test_eval_discounted__discount_one_is_the_undiscounted_cost_per_period():
    c = _tiny(1.0)
    specs = [heuristic_spec("base_stock", KNOBS)]
    plain = evaluate(c, specs, episodes=3, seed=7, progress=False)
    disc = evaluate(c, specs, episodes=3, seed=7, progress=False, discount=1.0)
    for k, v in plain.per_episode["base_stock"].items():
        np.testing.assert_array_equal(disc.per_episode["base_stock"][k], v)
    tot = plain.per_episode["base_stock"]["total_cost"]
    np.testing.assert_allclose(disc.per_episode["base_stock"][DISCOUNTED], tot / c.horizon, rtol=1e-12)
    assert "undiscounted" in disc.criteria[DISCOUNTED]
    # as the tuner's plain objective (undiscounted cost per period)
    plain_tot = evaluate_candidates(c, "base_stock", [KNOBS], np.arange(3), 7)[0]
    np.testing.assert_allclose(disc.per_episode["base_stock"][DISCOUNTED], plain_tot / c.horizon, rtol=1e-12)


def test_eval_cli__discounted_says_which_criterion(tmp_path):
    args = ["eval", "tiny", "--policies", "zero,base_stock", "--episodes", "2"]
    r = CliRunner().invoke(app, args + ["--discounted", "--json", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{") :])
    for pol in ("zero", "base_stock"):
        entry = data[pol][DISCOUNTED]
        assert "discounted by 0.99 a period" in entry["criterion"]
        assert isinstance(entry["mean"], float) and len(entry["ci95"]) == 2
    paired = json.loads((tmp_path / "d" / "paired.json").read_text())
    assert DISCOUNTED in paired["criteria"] and DISCOUNTED in paired["paired"]["base_stock"]  # against zero
    assert DISCOUNTED in (tmp_path / "d" / "report.md").read_text()
    r = CliRunner().invoke(app, args + ["--discounted", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "discounted by 0.99 a period" in text
    r = CliRunner().invoke(app, args + ["--json", "--out", str(tmp_path / "u")])
    assert r.exit_code == 0, r.output
    assert DISCOUNTED not in r.output
    assert "discount 0.99 is applied with --discounted" in (tmp_path / "u" / "report.md").read_text()
