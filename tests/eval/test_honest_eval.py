"""Evaluating run directories honestly (issue 12, item 4): a run without the weights it claims is
refused, and roles played by the run's baseline heuristic are labelled in the table, kpis.json and
report.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.eval.evaluate import parse_policies, run_label, run_roles
from typer.testing import CliRunner

from restock.cli import app

torch = pytest.importorskip("torch")
runner = CliRunner()


def make_run(
    root: Path,
    scenario: str = "tiny",
    saved=("store",),
    claimed=("store",),
    finished: bool = True,
    baseline: str = "s_S",
) -> Path:
    """A run directory as `restock train` leaves it: weights for ``saved`` roles, ``claimed`` roles in
    run.json when ``finished``, else only in config.yaml (a run killed before it finished)."""
    from restock.agents.learned import save_role
    from restock.agents.networks import NetConfig, PerSkuNet
    from restock.envs.roles import role_nodes
    from restock.envs.types import NODE_FEATURES, sku_feature_names

    c = compile_scenario(load_scenario(scenario))
    run = root / f"{scenario}__test__0"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    F, G = len(sku_feature_names(c.W)), len(NODE_FEATURES)
    for role in saved:
        L = int(c.params.levels[role_nodes(c, role)[0]])
        cfg = NetConfig(n_skus=c.K, sku_features=F, node_features=G, levels=L)
        save_role(run, role, PerSkuNet(cfg))
    (run / "config.yaml").write_text(
        yaml.safe_dump({"trainer": "sb3", "scenario": scenario, "experiment": {"roles": list(claimed)}})
    )
    info = {
        "format": "restock.run/1",
        "scenario": scenario,
        "status": "done" if finished else "running",
        "baseline": {"policy": baseline, "knobs": None},
    }
    if finished:
        info["roles"] = list(claimed)
    (run / "run.json").write_text(json.dumps(info))
    return run


def _eval(run: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        ["eval", "tiny", "--policies", f"base_stock,{run}", "--episodes", "2", "--out", str(out), *extra],
    )


def test_eval__run_killed_before_its_first_save_is_refused(tmp_path):
    run = make_run(tmp_path, saved=(), claimed=("store",), finished=False)
    res = _eval(run, tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert str(run / "policies" / "store.pt") in "".join(res.output.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "out" / "kpis.json").exists()  # nothing evaluated under the run's name


def test_eval__a_claimed_role_without_weights_is_refused(tmp_path):
    run = make_run(tmp_path, saved=("store",), claimed=("store", "dc"))
    c = compile_scenario(load_scenario("tiny"))
    with pytest.raises(ValueError, match=r"claims the dc role but .*policies/dc\.pt is missing"):
        parse_policies(str(run), c)
    (run / "policies" / "store.json").unlink()  # weights without their network config: refused too
    with pytest.raises(ValueError, match=r"store\.json is missing"):
        parse_policies(str(run), c)


def test_eval__a_role_the_experiment_trains_but_never_saved_is_refused(tmp_path):
    """config.yaml (the experiment) trains store and dc; run.json lists the saved store only."""
    run = make_run(tmp_path, saved=("store",), claimed=("store", "dc"))
    info = json.loads((run / "run.json").read_text())
    info.update(roles=["store"], status="stopped")
    (run / "run.json").write_text(json.dumps(info))
    res = _eval(run, tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert str(run / "policies" / "dc.pt") in "".join(res.output.split())


def test_eval__a_run_with_no_learned_role_is_refused(tmp_path):
    run = make_run(tmp_path, saved=(), claimed=())
    with pytest.raises(ValueError, match=r"no learned weights .*store\.pt"):
        run_roles(str(run), compile_scenario(load_scenario("tiny")))


def test_eval__heuristic_roles_are_labelled_everywhere(tmp_path):
    run = make_run(tmp_path, saved=("store",), claimed=("store",), baseline="s_S")
    out = tmp_path / "out"
    res = _eval(run, out)
    assert res.exit_code == 0, res.output
    label = f"{run.name} [store learned; dc: s_S heuristic]"
    assert label in " ".join(res.output.split())  # the printed table (rich wraps long lines)
    kpis = json.loads((out / "kpis.json").read_text())
    assert label in kpis and run.name not in kpis  # never the bare run name
    report = (out / "report.md").read_text()
    assert label in report and "dc: s_S heuristic" in report
    paired = json.loads((out / "paired.json").read_text())
    assert paired["roles"][label] == {"dc": "s_S heuristic", "store": "learned"}
    # the run directory still names it for --baseline
    res = _eval(run, tmp_path / "out2", "--baseline", str(run))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out2" / "paired.json").read_text())["baseline"] == label


def test_eval__fully_learned_run_keeps_its_name(tmp_path):
    run = make_run(tmp_path, saved=("store", "dc"), claimed=("store", "dc"))
    c = compile_scenario(load_scenario("tiny"))
    specs, notes = parse_policies(str(run), c)
    assert specs[0].name == run.name and specs[0].roles == {"dc": "learned", "store": "learned"}
    assert not notes


def test_run_label__formats():
    assert run_label("r", {"store": "learned"}) == "r"
    assert (
        run_label("r", {"dc": "s_S heuristic", "store": "learned"}) == "r [store learned; dc: s_S heuristic]"
    )
    assert run_label("r", {"dc": "learned", "store": "base_stock heuristic"}) == (
        "r [dc learned; store: base_stock heuristic]"
    )


def test_eval__weights_that_do_not_fit_the_scenario_exit_2(tmp_path):
    run = make_run(tmp_path, saved=("store",), claimed=("store",))  # tiny: 9 store levels
    res = runner.invoke(
        app,
        [
            "eval",
            "default",
            "--policies",
            f"base_stock,{run}",
            "--episodes",
            "2",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2, res.output
    assert "9 levels" in " ".join(res.output.split()) and "Traceback" not in res.output


def test_eval__a_network_on_another_action_grid_is_refused(tmp_path):
    """Same level count, other max_cover: the levels would map to other quantities, so eval refuses and
    names the field (the run's saved scenario.yaml is the reference); on its own grid it evaluates."""
    run = make_run(tmp_path)
    cfg = load_scenario("tiny").model_dump(mode="json")
    cfg["action"]["store"]["max_cover"] = 2 * cfg["action"]["store"]["max_cover"]
    (run / "scenario.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = _eval(run, tmp_path / "out")
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.split())
    assert "action.store.max_cover" in flat and "Traceback" not in res.output
    assert not (tmp_path / "out" / "kpis.json").exists()
    (run / "scenario.yaml").write_text(yaml.safe_dump(load_scenario("tiny").model_dump(mode="json")))
    res = _eval(run, tmp_path / "ok")
    assert res.exit_code == 0, res.output
