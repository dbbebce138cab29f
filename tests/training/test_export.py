"""Export: ONNX per trained role with a parity check, the manifest, heuristic artifacts, loud failures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from restock.agents.learned import load_learned_policy, load_role
from restock.envs import ENV_VERSION
from restock.envs.array_env import ArrayEnv
from restock.envs.types import NODE_FEATURES, sku_feature_names
from restock.serving.artifact import (
    ArtifactError,
    export_heuristic,
    load_manifest,
    load_scenario_of,
    sha256_file,
)
from restock.serving.onnx_policy import OnnxPolicy
from restock.training.export import ExportError, check_parity, export_run, sample_observations
from serving_helpers import make_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_run(root, roles=("store", "dc"), seed=1)
    out = root / "artifact"
    logs: list[str] = []
    m = export_run(run, out, n_parity=1000, log=logs.append)
    return run, out, m, logs


def test_export__writes_one_onnx_per_role_and_a_complete_manifest(exported):
    run, out, m, _ = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "dc.onnx",
        "manifest.json",
        "scenario.yaml",
        "store.onnx",
    ]
    assert m == load_manifest(out)  # every hash verifies
    assert set(m["files"]) == {"dc.onnx", "scenario.yaml", "store.onnx"}
    for f, h in m["files"].items():
        assert sha256_file(out / f) == h
    c = load_scenario_of(out)
    assert m["scenario"]["config_hash"] == c.config_hash and m["scenario"]["env"]["version"] == ENV_VERSION
    assert m["observation"]["sku_features"] == sku_feature_names(c.W)
    assert m["observation"]["node_features"] == list(NODE_FEATURES)
    assert m["observation"]["dim"] == c.K * m["observation"]["F"] + m["observation"]["G"]
    st = m["roles"]["store"]
    assert st["policy"] == "onnx" and st["action"]["levels"] == int(c.params.levels[c.M])
    assert st["action"]["mode"] == "quantity" and st["action"]["qstep"] == c.params.qstep[c.M].tolist()
    assert m["roles"]["dc"]["action"]["mode"] == "order_up_to"
    assert (
        st["normalisation"]["inside_graph"]
        and len(st["normalisation"]["feat_mean"]) == m["observation"]["F"] + 4
    )
    assert m["baseline"] == {"policy": "base_stock", "knobs": {"store": {"z": 0.5}, "dc": {"z": 0.0}}}
    assert m["training"]["metrics_last"]["charts/episodic_cost"] == 120.0 and m["created"].endswith("Z")


def test_export__parity_on_at_least_1000_observations(exported):
    _, _, m, logs = exported
    for role in ("store", "dc"):
        par = m["roles"][role]["parity"]
        assert par["observations"] >= 1000
        assert par["greedy_mismatches"] == par["greedy_mismatches_at_ties"] <= 1  # ties: see training.export
        assert par["within_tolerance"] and par["masked_exact"]
        assert par["max_abs_diff"] <= 1e-5
    assert any("parity" in s for s in logs)


def test_export__onnx_policy_plays_like_the_torch_policy(exported):
    """Greedy rollouts with the ONNX sessions and with the torch networks execute identical orders."""
    run, out, m, _ = exported
    c = load_scenario_of(out)
    from restock.agents.base import JointPolicy

    torch_pol = load_learned_policy(run, c)
    onnx_pol = JointPolicy(
        {
            r: OnnxPolicy(out / m["roles"][r]["file"], m["roles"][r]["action"]["levels"], f"onnx:{r}")
            for r in ("store", "dc")
        }
    )
    envs = [ArrayEnv(c, num_envs=2, seed=4) for _ in range(2)]
    for env, pol in zip(envs, (torch_pol, onnx_pol), strict=True):
        env.reset()
        pol.bind(c)
    for _ in range(c.horizon):
        qa = torch_pol.propose(envs[0]).qty
        qb = onnx_pol.propose(envs[1]).qty
        np.testing.assert_array_equal(qa, qb)
        for env, q in zip(envs, (qa, qb), strict=True):
            env.step_qty(q)
    np.testing.assert_allclose(envs[0].episode_cost, envs[1].episode_cost)


def test_export__parity_failure_is_loud_and_leaves_nothing(tmp_path, monkeypatch):
    import restock.training.export as ex

    run = make_run(tmp_path, roles=("store",), seed=2)
    real = ex.export_onnx

    def tampered(net, path, n_skus):
        net2 = load_role(run, "store")
        with torch.no_grad():
            net2.logits.bias += 1e-3 * torch.arange(net2.logits.bias.numel())
        return real(net2, path, n_skus)

    monkeypatch.setattr(ex, "export_onnx", tampered)
    out = tmp_path / "bad"
    with pytest.raises(ExportError, match="parity failed"):
        export_run(run, out, n_parity=200, log=lambda s: None)
    assert not out.exists() and not list(tmp_path.glob(".bad.*"))


def test_export__check_parity_counts_greedy_mismatches(exported):
    run, out, m, _ = exported
    c = load_scenario_of(out)
    net = load_role(run, "store")
    obs, mask = sample_observations(run, c, "store", 50)
    ok = check_parity(net, out / "store.onnx", obs, mask, 1e-5, 0.0)
    assert ok["greedy_mismatches"] == ok["greedy_mismatches_at_ties"] and ok["within_tolerance"]
    bad = check_parity(net, out / "store.onnx", obs, mask, -1.0, 0.0)  # nothing can be within -1
    assert not bad["within_tolerance"]


def test_export__a_numerical_tie_is_told_apart_from_a_real_mismatch(tmp_path):
    """Two levels within the logit tolerance in torch: ONNX may pick either (a tie); a clear winner must match."""
    import onnx
    from onnx import TensorProto, helper

    # an "ONNX model" that returns fixed logits, against a torch net whose logits are known
    run = make_run(tmp_path, roles=("store",), seed=5)
    net = load_role(run, "store")
    L = net.cfg.levels

    def set_bias(second: float) -> None:
        with torch.no_grad():
            net.logits.weight.zero_()  # logits = bias, for every SKU
            net.logits.bias.zero_()
            net.logits.bias[1] = 1.0
            net.logits.bias[2] = second

    K = 3
    D = K * net.cfg.sku_features + net.cfg.node_features
    obs = np.zeros((1, D), np.float32)
    mask = np.ones((1, K * L), np.float32)

    def const_model(values: np.ndarray, path: Path) -> Path:
        out = helper.make_tensor("v", TensorProto.FLOAT, values.shape, values.flatten().tolist())
        g = helper.make_graph(
            [
                helper.make_node("Constant", [], ["logits"], value=out),
            ],
            "const",
            [
                helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", D]),
                helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", K * L]),
            ],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", K * L])],
        )
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
        return path

    onnx_logits = np.zeros((1, K * L), np.float32)
    onnx_logits[0, 1::L] = 1.0
    onnx_logits[0, 2] = 1.0 + 1e-6  # SKU 0: ONNX picks level 2, by a hair
    set_bias(1.0 - 4e-6)  # torch: level 1 by 4e-6, within the 1e-5 tolerance: a numerical tie
    onnx_logits[0, 2 + L :: L] = 1.0 - 4e-6  # SKUs 1 and 2: as torch
    path = const_model(onnx_logits, tmp_path / "c.onnx")
    par = check_parity(net, path, obs, mask, 1e-5, 0.0)
    assert par["greedy_mismatches"] == 1 and par["greedy_mismatches_at_ties"] == 1 and par["within_tolerance"]
    set_bias(1.0 - 1e-3)  # torch: level 1 by 1e-3: ONNX's level 2 is a real mismatch
    par = check_parity(net, path, obs, mask, 1e-5, 0.0)
    assert par["greedy_mismatches"] == 1 and par["greedy_mismatches_at_ties"] == 0


def test_export__refuses_an_edited_run(tmp_path):
    run = make_run(tmp_path, roles=("store",), seed=3)
    d = json.loads((run / "run.json").read_text())
    d["scenario_hash"] = "0" * 16
    (run / "run.json").write_text(json.dumps(d))
    with pytest.raises(ExportError, match="edited"):
        export_run(run, tmp_path / "out", log=lambda s: None)
    with pytest.raises(ExportError, match="run.json"):
        export_run(tmp_path, tmp_path / "out2", log=lambda s: None)


def test_export__out_must_be_empty_unless_forced(exported, tmp_path):
    run, *_ = exported
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not empty"):
        export_run(run, out, n_parity=10, log=lambda s: None)
    assert (out / "keep.txt").read_text() == "mine"


def test_export__heuristic_artifact_has_knobs_and_scenario(tmp_path):
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario

    c = compile_scenario(load_scenario("tiny"))
    m = export_heuristic("s_S", {"store": {"z": 1.0, "q": 2.0}}, c, tmp_path / "h")
    assert m["kind"] == "heuristic" and m["baseline"] == {
        "policy": "s_S",
        "knobs": {"store": {"z": 1.0, "q": 2.0}},
    }
    assert {r["policy"] for r in m["roles"].values()} == {"heuristic"}
    assert list(m["files"]) == ["scenario.yaml"] and load_manifest(tmp_path / "h") == m
    with pytest.raises(ValueError, match="unknown policy"):
        export_heuristic("magic", {}, c, tmp_path / "h2")
