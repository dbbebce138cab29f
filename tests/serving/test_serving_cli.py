"""The serving commands: export (run and heuristic), registry admin, serve's checks, bench wiring."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from restock.cli import app

runner = CliRunner()


def flat(text: str) -> str:
    """CLI output without the line wrapping rich adds."""
    return " ".join(text.split())


def test_cli__help_on_serving_commands():
    for cmd in (
        ["export"],
        ["serve"],
        ["audit", "verify"],
        ["audit", "export"],
        ["registry", "list"],
        ["registry", "promote"],
        ["registry", "candidate"],
    ):
        res = runner.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in flat(res.output), cmd


def test_cli__export_heuristic_with_tuned_params(tmp_path):
    params = tmp_path / "params.json"
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario

    c = compile_scenario(load_scenario("tiny"))
    params.write_text(
        json.dumps(
            {
                "format": "restock.params/1",
                "scenario": "tiny",
                "config_hash": c.config_hash,
                "policies": {
                    "base_stock": {"knobs": {"store": {"z": 1.25}}, "cost_per_period": {"mean": 3.0}}
                },
            }
        )
    )
    out = tmp_path / "art"
    res = runner.invoke(
        app,
        [
            "export",
            "--heuristic",
            "base_stock",
            "--params",
            str(params),
            "--scenario",
            "tiny",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["baseline"]["knobs"] == {"store": {"z": 1.25}} and m["scenario"]["name"] == "tiny"
    res = runner.invoke(
        app,
        [
            "export",
            "--heuristic",
            "s_S",
            "--params",
            str(params),
            "--scenario",
            "tiny",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 2 and "has no 's_S'" in flat(res.output)
    res = runner.invoke(
        app,
        [
            "export",
            "--heuristic",
            "base_stock",
            "--params",
            str(params),
            "--scenario",
            "default",
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert res.exit_code == 2 and "tuned on scenario 'tiny'" in flat(res.output)
    res = runner.invoke(app, ["export", "--out", str(tmp_path / "z")])
    assert res.exit_code == 2


def test_cli__export_run_and_registry_commands(tiny_run, tiny_heuristic_artifact, tmp_path):
    out = tmp_path / "learned"
    res = runner.invoke(app, ["export", str(tiny_run), "--out", str(out), "--parity", "200"])
    assert res.exit_code == 0, res.output
    assert (out / "store.onnx").exists() and (out / "dc.onnx").exists()
    res = runner.invoke(app, ["export", str(tiny_run), "--out", str(out), "--parity", "50"])
    assert res.exit_code == 2 and "not empty" in flat(res.output)
    reg = tmp_path / "reg"
    for art in (tiny_heuristic_artifact, out):
        assert runner.invoke(app, ["registry", "register", str(reg), str(art)]).exit_code == 0
    assert (
        runner.invoke(app, ["registry", "candidate", str(reg), "store", "v2", "--fraction", "0.25"]).exit_code
        == 0
    )
    res = runner.invoke(app, ["registry", "list", str(reg), "--json"])
    d = json.loads(res.stdout)
    assert d["roles"]["store"]["candidate"] == "v2" and d["roles"]["store"]["fraction"] == 0.25
    assert runner.invoke(app, ["registry", "promote", str(reg), "store", "v2"]).exit_code == 0
    res = runner.invoke(app, ["registry", "rollback", str(reg), "store"])
    assert res.exit_code == 0 and "champion v1" in flat(res.output)
    res = runner.invoke(app, ["registry", "promote", str(reg), "store", "v9"])
    assert res.exit_code == 2 and "unknown version" in flat(res.output)
    res = runner.invoke(app, ["registry", "list", str(reg)])
    assert res.exit_code == 0 and "v2" in flat(res.output)


def test_cli__serve_refuses_what_it_cannot_serve(tiny_heuristic_artifact, tmp_path):
    res = runner.invoke(app, ["serve", str(tiny_heuristic_artifact)])
    assert res.exit_code == 2 and "is an artifact, not a registry" in flat(res.output)
    res = runner.invoke(app, ["serve", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no registered versions" in flat(res.output)


def test_cli__demo_serving_step_exports_registers_serves_and_answers(tmp_path, capsys):
    """The last step of `restock demo` (without the RLlib run): export, register, serve, one decision."""
    from restock.agents.catalogue import save_params
    from restock.agents.tuning import TuneResult
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.serving.audit import open_store
    from restock.serving.registry import Registry

    from restock.cli import _demo_serve

    c = compile_scenario(load_scenario("default"))
    params = tmp_path / "params.json"
    res = TuneResult(
        "base_stock",
        "default",
        c.config_hash,
        {"store": {"z": 0.2}, "dc": {"z": 0.4}},
        {"mean": 1.0, "ci95": [0.9, 1.1]},
        1.0,
        2,
        2,
        0,
        1,
        0.1,
        1,
    )
    save_params(params, res)
    for _ in range(2):  # a second demo run adds a version; the audit store is kept
        assert _demo_serve(c, tmp_path, params, None)
    out = flat(capsys.readouterr().out)
    assert "POST /v1/decisions for store_0 in period 10" in out and "record hash" in out
    snap = Registry(tmp_path / "registry").snapshot()
    assert list(snap.versions) == ["v1", "v2"] and snap.roles["store"].champion == "v2"
    store = open_store(str(tmp_path / "registry" / "audit.db"))
    rep = store.verify()
    store.close()
    assert rep["ok"] and rep["decisions"]["records"] == 2
