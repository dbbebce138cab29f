"""An experiment's ``baseline_entry``: the baseline's knobs from a tuned variant in the parameter file
(``s_S_per_sku`` from `restock tune --per-sku`), for the warm start, the untrained roles and the reward
scale."""

from __future__ import annotations

import numpy as np
import pytest
from restock.agents.catalogue import save_params
from restock.agents.tuning import evaluate_candidates, tune
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.training.common import prepare_baseline
from restock.training.experiment import ExperimentConfig


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    c = compile_scenario(load_scenario("tiny"))
    path = tmp_path_factory.mktemp("params") / "p.json"
    kw = dict(episodes=4, max_episodes=4, eval_episodes=4, rounds=1, progress=False)
    save_params(path, tune(c, "s_S", **kw))
    res = tune(c, "s_S", per_sku=True, sku_episodes=4, **kw)
    save_params(path, res)
    return c, path, res


def test_baseline_entry_reads_the_per_sku_knobs(tuned, tmp_path):
    c, path, res = tuned
    exp = ExperimentConfig(baseline="s_S", baseline_params=str(path), baseline_entry="s_S_per_sku")
    base = prepare_baseline(c, exp, tmp_path, log=lambda s: None)
    assert base.policy == "s_S" and base.knobs == res.knobs
    assert len(base.knobs["store"]["z_by_sku"]) == c.K
    plain = prepare_baseline(
        c, ExperimentConfig(baseline="s_S", baseline_params=str(path)), tmp_path, log=print
    )
    assert "z_by_sku" not in plain.knobs["store"]
    # the baseline plays what the variant plays: its cost on common paths differs from the per-role knobs'
    paths = np.arange(8, dtype=np.int64)
    a = evaluate_candidates(c, "s_S", [base.knobs], paths, seed=1)[0]
    b = evaluate_candidates(c, "s_S", [plain.knobs], paths, seed=1)[0]
    assert not np.array_equal(a, b)


def test_baseline_entry_missing_or_of_another_policy_names_the_field(tuned, tmp_path):
    c, path, _ = tuned
    exp = ExperimentConfig(baseline="s_S", baseline_params=str(path), baseline_entry="s_S_per_skU")
    with pytest.raises(ValueError, match="baseline_entry: 's_S_per_skU' is not in"):
        prepare_baseline(c, exp, tmp_path, log=lambda s: None)
    exp = ExperimentConfig(baseline="r_Q", baseline_params=str(path), baseline_entry="s_S_per_sku")
    with pytest.raises(ValueError, match="holds knobs of 's_S', not of the baseline 'r_Q'"):
        prepare_baseline(c, exp, tmp_path, log=lambda s: None)
