"""Serving policies that read the echelon feature (issue 11): a `dcl`-style run on serial_3 whose roles
are marked with ``policies/<role>.features.json`` is exported (ONNX obs width K*(F+1)+G) and served;
requests carry ``echelon_position``, the engine appends it (`agents.echelon_features.augment_rows`)
and decides what `EchelonTorchPolicy` decides on the same state; a request routed to such a policy
without the field is refused with 422 naming it; plain artifacts are unchanged."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.echelon_features import augment
from restock.agents.learned import load_learned_policy
from restock.agents.shield import Shield
from restock.serving.artifact import ArtifactError, export_heuristic, finalize, load_manifest
from restock.serving.schema import RequestInvalid, request_from_state
from restock.serving.service import DecisionService, canonical_json
from serving_helpers import make_run, simulate


def make_echelon_run(root: Path, seed: int = 1) -> Path:
    """A serial_3 run directory as the dcl trainer leaves it: every role's network reads F + 1 SKU
    features and is marked with policies/<role>.features.json (random but decisive weights)."""
    import torch
    from restock.agents.echelon_features import write_features
    from restock.agents.learned import save_role
    from restock.agents.networks import NetConfig, PerSkuNet
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.envs.roles import role_nodes
    from restock.envs.types import NODE_FEATURES, sku_feature_names

    run = make_run(root, "serial_3", seed=seed)
    c = compile_scenario(load_scenario("serial_3"))
    F, G = len(sku_feature_names(c.W)) + 1, len(NODE_FEATURES)
    torch.manual_seed(seed)
    for role in ("store", "dc"):
        L = int(c.params.levels[role_nodes(c, role)[0]])
        mean, std = [0.5] * (F + G), [2.0] * (F + G)
        mean[F - 1], std[F - 1] = 2.0, 1.0  # the echelon feature (units / demand scale) weighs in
        net = PerSkuNet(
            NetConfig(n_skus=c.K, sku_features=F, node_features=G, levels=L, feat_mean=mean, feat_std=std)
        )
        torch.nn.init.orthogonal_(net.logits.weight, gain=3.0)
        save_role(run, role, net)
        write_features(run, role)
    return run


@pytest.fixture(scope="module")
def echelon_run(tmp_path_factory) -> Path:
    return make_echelon_run(tmp_path_factory.mktemp("echelon-runs"))


@pytest.fixture(scope="module")
def echelon_artifact(tmp_path_factory, echelon_run) -> Path:
    from restock.training.export import export_run

    out = tmp_path_factory.mktemp("echelon-art") / "serial3-echelon"
    man = export_run(echelon_run, out, n_parity=500, log=lambda s: None)
    for role in ("store", "dc"):
        assert man["roles"][role]["extra_sku_features"] == ["echelon_position"]
    return out


@pytest.fixture(scope="module")
def serial_heuristic_artifact(tmp_path_factory) -> Path:
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario

    out = tmp_path_factory.mktemp("echelon-art") / "serial3-base-stock"
    export_heuristic(
        "base_stock",
        {"store": {"z": 0.5}, "dc": {"z": 0.0}},
        compile_scenario(load_scenario("serial_3")),
        out,
    )
    return out


def orders(d, sku_names) -> np.ndarray:
    return np.asarray([d.orders[s] for s in sku_names], np.int64)


def test_echelon__served_decision_equals_echelon_torch_policy(echelon_run, echelon_artifact, registry_of):
    """Every node of serial_3 over 25 periods: the orders and proposals the service answers are the
    EchelonTorchPolicy's (behind the same shield), and each record's observation digest is the sha256
    of the augmented row the model read."""
    svc = DecisionService(registry_of(echelon_artifact))
    c = svc.compiled
    pol = load_learned_policy(echelon_run, c)
    assert {type(p).__name__ for p in pol.policies.values()} == {"EchelonTorchPolicy"}
    env = simulate("serial_3", pol, periods=0, seed=4)
    seen_levels: set[int] = set()
    first = None
    for t in range(25):
        prop = pol.propose(env).qty
        res = Shield(c).decide(env, prop)
        for n in range(c.N):
            req = request_from_state(c, env.state, 0, n, f"e-{t}-{n}", echelon=True)
            d = svc.decide(req)
            first = first or (req, d)
            np.testing.assert_array_equal(orders(d, c.sku_names), res.executed[0, n])
            assert d.record["proposed"] == res.proposed[0, n].tolist()
            assert d.data["policy"]["kind"] == "onnx" and d.record["fallback"] is None
            row = augment(env, np.array([n]))[0]
            assert d.record["obs_digest"] == hashlib.sha256(row.tobytes()).hexdigest()
            seen_levels.add(int(res.proposed[0, n].sum()))
        env.step_qty(prop)
    assert len(seen_levels) > 2  # the networks do not order one constant amount
    assert svc.store.verify()["ok"]
    # a stored decision replays byte for byte (its request text carries the field)
    again = svc.decide(first[0])
    assert again.replayed and again.response == first[1].response
    svc.close()


def test_echelon__feature_moves_the_decision_and_the_digest(echelon_artifact, registry_of):
    """The same node state with a different echelon position reads a different row (another digest);
    the decision comes from the model, not a fallback."""
    svc = DecisionService(registry_of(echelon_artifact))
    c = svc.compiled
    env = simulate("serial_3", JointPolicy(make_policy("base_stock", {})), periods=6)
    req = request_from_state(c, env.state, 0, 0, "lo", echelon=True)
    lo = svc.decide({**req, "echelon_position": [-40]})
    hi = svc.decide({**req, "request_id": "hi", "echelon_position": [200]})
    assert lo.record["obs_digest"] != hi.record["obs_digest"]
    assert lo.record["proposed"] != hi.record["proposed"]  # this network orders more when far behind
    assert lo.data["policy"]["kind"] == hi.data["policy"]["kind"] == "onnx"
    svc.close()


def test_echelon__missing_field_is_refused_with_422_naming_it(echelon_artifact, registry_of, tmp_path):
    from fastapi.testclient import TestClient
    from restock.serving.app import create_app

    reg = registry_of(echelon_artifact)
    svc = DecisionService(reg, audit=f"sqlite:///{tmp_path / 'direct.db'}")
    c = svc.compiled
    env = simulate("serial_3", JointPolicy(make_policy("base_stock", {})), periods=5)
    for n in range(c.N):
        req = request_from_state(c, env.state, 0, n, f"no-{n}")
        assert "echelon_position" not in req
        with pytest.raises(RequestInvalid) as exc:
            svc.decide(req)
        assert [e["loc"] for e in exc.value.errors] == [["echelon_position"]]
        assert exc.value.errors[0]["type"] == "missing" and "echelon inventory position" in str(exc.value)
    svc.close()

    app = create_app(reg)
    with TestClient(app) as client:
        req = request_from_state(c, env.state, 0, 1, "http-no")
        r = client.post("/v1/decisions", json=req)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert [e["loc"] for e in detail] == [["body", "echelon_position"]], detail
        assert client.get("/v1/decisions/http-no").status_code == 404  # nothing decided, nothing stored
        r = client.post("/v1/decisions", json=request_from_state(c, env.state, 0, 1, "http-no", echelon=True))
        assert r.status_code == 200, r.text
        assert r.json()["policy"]["kind"] == "onnx"
        # the OpenAPI request schema documents the field
        spec = client.get("/openapi.json").json()
        body = spec["paths"]["/v1/decisions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        prop = body["properties"]["echelon_position"]
        assert "echelon inventory position" in prop["description"] and "downstream" in prop["description"]
        assert prop["anyOf"][0]["items"]["minimum"] < 0
        assert "echelon_position" not in body["required"]


def test_echelon__field_is_validated_like_the_other_per_sku_lists(echelon_artifact, registry_of):
    svc = DecisionService(registry_of(echelon_artifact))
    c = svc.compiled
    env = simulate("serial_3", JointPolicy(make_policy("base_stock", {})), periods=5)
    dc = request_from_state(c, env.state, 0, 0, "v", echelon=True)
    store = request_from_state(c, env.state, 0, 2, "vs", echelon=True)

    def refused(body) -> list[dict]:
        with pytest.raises(RequestInvalid) as exc:
            svc.decide(body)
        return exc.value.errors

    errs = refused({**dc, "echelon_position": [-(10**8) - 1]})
    assert errs[0]["loc"] == ["echelon_position", 0] and errs[0]["type"] == "greater_than_equal"
    errs = refused({**dc, "echelon_position": [10**8 + 1]})
    assert errs[0]["loc"] == ["echelon_position", 0] and errs[0]["type"] == "less_than_equal"
    errs = refused({**dc, "echelon_position": [2**70]})  # beyond int64: out of range, not a 500
    assert errs[0]["loc"][0] == "echelon_position"
    errs = refused({**dc, "echelon_position": [1, 2]})
    assert errs[0]["loc"] == ["echelon_position"] and "one per SKU" in errs[0]["msg"]
    errs = refused({**dc, "echelon_position": [1.5]})  # strict: whole units
    assert errs[0]["loc"][0] == "echelon_position"
    errs = refused({**dc, "echelon_position": []})
    assert errs[0]["loc"][0] == "echelon_position"
    errs = refused({**dc, "echelon_position": ["3"]})
    assert errs[0]["loc"][0] == "echelon_position"
    # a store has nothing downstream: its echelon position is its own inventory position
    own = store["echelon_position"][0]
    errs = refused({**store, "echelon_position": [own + 1]})
    assert errs[0]["loc"] == ["echelon_position"] and f"= {own}" in errs[0]["msg"]
    assert svc.decide(store).data["policy"]["kind"] == "onnx"
    # a negative position (backlog beyond stock) is fine at a DC
    assert svc.decide({**dc, "request_id": "neg", "echelon_position": [-25]}).data["policy"]["kind"] == "onnx"
    svc.close()


def test_echelon__plain_artifact_ignores_the_field_and_hashes_requests_as_before(tiny_artifact, registry_of):
    """A model without extra features decides exactly as before with or without the field (same
    orders, same observation digest); a request without it serialises as it did before the field
    existed (no ``echelon_position`` key), so stored request digests keep matching."""
    from restock.serving.schema import DecisionRequest

    svc = DecisionService(registry_of(tiny_artifact))
    c = svc.compiled
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=4)
    for n in range(c.N):
        plain = request_from_state(c, env.state, 0, n, f"p-{n}")
        with_f = request_from_state(c, env.state, 0, n, f"f-{n}", echelon=True)
        a, b = svc.decide(plain), svc.decide(with_f)
        assert a.orders == b.orders and a.record["proposed"] == b.record["proposed"]
        assert a.record["obs_digest"] == b.record["obs_digest"]
        assert a.data["policy"]["kind"] == "onnx"
        req = DecisionRequest.model_validate(plain)
        assert "echelon_position" not in canonical_json(req) and canonical_json(req) == req.model_dump_json()
        req = DecisionRequest.model_validate(with_f)
        assert '"echelon_position":[' in canonical_json(req) and canonical_json(req) == req.model_dump_json()
    svc.close()


def test_echelon__routing_shadow_and_replay(echelon_artifact, serial_heuristic_artifact, registry_of):
    """Plain champion: no field needed. Echelon shadow: no field needed either (the shadow's baseline
    stands in, recorded as a fallback). Echelon champion: required, but a request decided before the
    promotion still replays."""
    from restock.serving.registry import Registry

    reg = registry_of(serial_heuristic_artifact, echelon_artifact)  # v1 heuristic, v2 echelon model
    r = Registry(reg)
    r.set_candidate("dc", "v2", mode="shadow")
    svc = DecisionService(reg)
    c = svc.compiled
    env = simulate("serial_3", JointPolicy(make_policy("base_stock", {})), periods=5)
    old = request_from_state(c, env.state, 0, 0, "before")
    d = svc.decide(old)
    assert d.data["route"] == "champion" and d.data["policy"]["id"] == "base_stock"
    assert d.data["shadow"]["policy"]["id"] == "base_stock"  # the shadow's baseline stood in for it
    with_f = svc.decide(request_from_state(c, env.state, 0, 0, "shadow-f", echelon=True))
    assert with_f.data["shadow"]["policy"]["id"].endswith(":dc")
    r.promote("dc", "v2")
    svc.refresh()
    assert svc.decide(old).replayed  # decided before: replayed, not refused
    with pytest.raises(RequestInvalid) as exc:
        svc.decide({**old, "request_id": "after"})
    assert exc.value.errors[0]["loc"] == ["echelon_position"] and "champion" in exc.value.errors[0]["msg"]
    d = svc.decide(request_from_state(c, env.state, 0, 0, "after", echelon=True))
    assert d.data["policy"]["kind"] == "onnx"
    svc.close()


def test_echelon__shadow_without_the_field_falls_back_in_the_engine(
    echelon_artifact, serial_heuristic_artifact
):
    """The engine never decides an echelon model on a missing feature: that job's baseline decides
    (recorded as a fallback), whatever the route."""
    from restock.serving.artifact import load_scenario_of
    from restock.serving.bundle import load_bundle
    from restock.serving.engine import DecisionEngine, Job

    c = load_scenario_of(echelon_artifact)
    b = load_bundle(echelon_artifact, "v2", c)
    eng = DecisionEngine(c)
    from restock.serving.schema import DecisionRequest, ScenarioInfo

    env = simulate("serial_3", JointPolicy(make_policy("base_stock", {})), periods=5)
    info = ScenarioInfo(c)
    ns = info.check(DecisionRequest.model_validate(request_from_state(c, env.state, 0, 0, "x")))
    ns2 = info.check(
        DecisionRequest.model_validate(request_from_state(c, env.state, 0, 0, "y", echelon=True))
    )
    out = eng.run(
        [Job(ns, b.roles["dc"], b.fallback, "shadow"), Job(ns2, b.roles["dc"], b.fallback, "shadow")]
    )
    assert out[0].fell_back and out[0].policy is b.fallback and out[0].record.fallback == "fallback_policy"
    assert not out[1].fell_back and out[1].policy.kind == "onnx"


def _edit_manifest(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    m = load_manifest(dst)
    edit(m)
    finalize(dst, m)
    return dst


def test_echelon__unknown_or_inconsistent_extra_features_refuse_the_artifact(echelon_artifact, tmp_path):
    from restock.serving.artifact import load_scenario_of
    from restock.serving.bundle import load_bundle

    c = load_scenario_of(echelon_artifact)

    def unknown(m):
        m["roles"]["dc"]["extra_sku_features"] = ["echelon_position", "weather"]

    bad = _edit_manifest(echelon_artifact, tmp_path / "unknown", unknown)
    with pytest.raises(ArtifactError, match=r"dc model reads extra SKU features .*weather.*refusing"):
        load_bundle(bad, "v1", c)

    def dropped(m):
        m["roles"]["store"]["extra_sku_features"] = []

    bad = _edit_manifest(echelon_artifact, tmp_path / "dropped", dropped)
    with pytest.raises(ArtifactError, match="expects observations of width"):
        load_bundle(bad, "v1", c)

    def lying(m):  # the declared width fits no extra features, the ONNX graph reads one more
        m["roles"]["store"]["extra_sku_features"] = []
        m["roles"]["store"]["inputs"]["obs"][1] -= c.K

    bad = _edit_manifest(echelon_artifact, tmp_path / "lying", lying)
    with pytest.raises(ArtifactError, match=r"obs input has shape"):
        load_bundle(bad, "v1", c)
    assert json.loads((echelon_artifact / "manifest.json").read_text())["roles"]["dc"]["extra_sku_features"]


def test_cli__serve_checks_echelon_artifacts(echelon_artifact, tmp_path, monkeypatch):
    """`restock serve` loads an echelon registry (its warm-up decides with the feature) and refuses one
    whose manifest names a feature it cannot feed, with a one-line error (exit 2)."""
    from restock.serving import app as serving_app
    from restock.serving.registry import Registry
    from typer.testing import CliRunner

    from restock.cli import app

    runner = CliRunner()
    served = []
    monkeypatch.setattr(serving_app, "serve", lambda reg, **kw: served.append(reg))
    good = tmp_path / "good"
    Registry(good).register(echelon_artifact)
    res = runner.invoke(app, ["serve", str(good), "--audit", f"sqlite:///{tmp_path / 'a.db'}"])
    assert res.exit_code == 0, res.output
    assert served == [good]

    def unknown(m):
        m["roles"]["store"]["extra_sku_features"] = ["weather"]

    bad_art = _edit_manifest(echelon_artifact, tmp_path / "bad-art", unknown)
    bad = tmp_path / "bad"
    Registry(bad).register(bad_art)
    res = runner.invoke(app, ["serve", str(bad), "--audit", f"sqlite:///{tmp_path / 'b.db'}"])
    out = re.sub(r"\s+", " ", res.output)
    assert res.exit_code == 2 and "refusing to serve" in out and "extra SKU features ['weather']" in out, out
    assert "Traceback" not in res.output


def test_echelon__echelon_base_stock_heuristic_orders_on_the_sent_position(registry_of, tmp_path):
    """The echelon base-stock heuristic (the baseline, hence the fallback, of dcl runs on serial
    chains) decides what it decides in the simulator when the request carries the echelon position;
    without it a DC sees nothing downstream (its position is understated), as before the field."""
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario

    knobs = {"store": {"z": 0.5}, "dc": {"z": 1.0}}
    c = compile_scenario(load_scenario("serial_3"))
    export_heuristic("echelon_base_stock", knobs, c, tmp_path / "ebs")
    svc = DecisionService(registry_of(tmp_path / "ebs"))
    pol = JointPolicy(make_policy("echelon_base_stock", knobs))
    env = simulate("serial_3", pol, periods=0, seed=2)
    differs = 0
    for t in range(15):
        prop = pol.propose(env).qty
        res = Shield(c).decide(env, prop)
        for n in range(c.N):
            d = svc.decide(request_from_state(c, env.state, 0, n, f"ebs-{t}-{n}", echelon=True))
            np.testing.assert_array_equal(orders(d, c.sku_names), res.executed[0, n])
            assert d.record["proposed"] == res.proposed[0, n].tolist()
            if n < c.M:
                plain = svc.decide(request_from_state(c, env.state, 0, n, f"ebs-plain-{t}-{n}"))
                differs += plain.record["proposed"] != d.record["proposed"]
        env.step_qty(prop)
    assert differs > 0
    svc.close()
