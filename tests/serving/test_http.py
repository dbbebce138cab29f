"""The HTTP app: round trip, strict validation (422 naming the field), 413, idempotency, admin tokens."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.learned import load_learned_policy
from restock.agents.shield import Shield
from restock.serving.app import FastPathApp, create_app
from restock.serving.schema import request_from_state
from serving_helpers import simulate


@pytest.fixture
def tiny_state():
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=4)
    return env


@pytest.fixture(params=["fast_path", "fastapi_route"])
def client(request, tiny_heuristic_artifact, registry_of):
    """The app as `restock serve` runs it (POST /v1/decisions on the ASGI fast path), and the plain
    FastAPI route: both must answer the same."""
    app = create_app(registry_of(tiny_heuristic_artifact), admin_token="s3cret", max_body=64 * 1024)
    if request.param == "fast_path":
        app = FastPathApp(app)
    with TestClient(app) as c:
        yield c


def req_of(env, n=1, rid="r1"):
    return request_from_state(env.compiled, env.state, 0, n, rid)


def test_http__round_trip_export_serve_equals_policy_plus_shield(tiny_run, tiny_artifact, registry_of):
    app = FastPathApp(create_app(registry_of(tiny_artifact)))
    with TestClient(app) as c:
        comp = app.state.service["svc"].compiled
        pol = load_learned_policy(tiny_run, comp)
        env = simulate("tiny", pol, periods=0, seed=21)
        for t in range(8):
            prop = pol.propose(env).qty
            res = Shield(comp).decide(env, prop)
            for n in range(comp.N):
                r = c.post("/v1/decisions", json=request_from_state(comp, env.state, 0, n, f"rt-{t}-{n}"))
                assert r.status_code == 200, r.text
                body = r.json()
                got = [body["orders"][s] for s in comp.sku_names]
                assert got == res.executed[0, n].tolist()
                assert body["record"]["proposed"] == res.proposed[0, n].tolist()
                assert body["node"] == comp.agent_ids[n] and body["record"]["request_id"] == f"rt-{t}-{n}"
            env.step_qty(prop)


@pytest.mark.parametrize(
    "mutate, loc",
    [
        (lambda r: r.pop("on_hand"), ["body", "on_hand"]),  # missing field
        (lambda r: r.pop("request_id"), ["body", "request_id"]),
        (lambda r: r.update(on_hand=r["on_hand"][:-1]), ["body", "on_hand"]),  # wrong length
        (lambda r: r.update(pipeline=[[1, 2]]), ["body", "pipeline", 0]),  # wrong shape
        (lambda r: r.update(pipeline=[[0, 0, 0]] * 9), ["body", "pipeline"]),  # more rows than lead times
        (lambda r: r["last_demand"].__setitem__(1, -4), ["body", "last_demand", 1]),  # negative
        (lambda r: r["on_hand"].__setitem__(0, -1), ["body", "on_hand", 0]),  # negative stock
        (lambda r: r["on_hand"].__setitem__(2, 1.5), ["body", "on_hand", 2]),  # not whole units
        (lambda r: r["on_hand"].__setitem__(2, 10**12), ["body", "on_hand", 2]),  # out of range
        (lambda r: r["skus"].__setitem__(1, "sku_99"), ["body", "skus", 1]),  # unknown SKU
        (lambda r: r.update(node="store_7"), ["body", "node"]),  # unknown node
        (lambda r: r.update(period=10_000), ["body", "period"]),
        (lambda r: r.update(colour="red"), ["body", "colour"]),  # unknown field
        (lambda r: r.update(backlog=[1, 0, 0]), ["body", "backlog"]),  # lost-sales store
        (lambda r: r.update(constraints={"budget": 5.0}), ["body", "constraints", "budget"]),
        (lambda r: r.update(request_id="no spaces"), ["body", "request_id"]),
    ],
)
def test_http__malformed_requests_get_422_naming_the_field(client, tiny_state, mutate, loc):
    r = req_of(tiny_state)
    mutate(r)
    resp = client.post("/v1/decisions", json=r)
    assert resp.status_code == 422, resp.text
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert loc in locs, locs


def test_http__nan_and_infinity_get_422(client, tiny_state):
    r = req_of(tiny_state)
    text = json.dumps(r)
    nan = text.replace('"on_hand": [', '"on_hand": [NaN, ', 1).replace(
        "[NaN, " + str(r["on_hand"][0]) + ", ", "[NaN, "
    )
    resp = client.post("/v1/decisions", content=nan, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "on_hand", 0]
    r2 = {**r, "constraints": {"storage_capacity": 1.0}}
    inf = json.dumps(r2).replace('"storage_capacity": 1.0', '"storage_capacity": Infinity')
    resp = client.post("/v1/decisions", content=inf, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "constraints", "storage_capacity"]
    resp = client.post("/v1/decisions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422


def test_http__oversized_body_gets_413(client, tiny_state):
    r = req_of(tiny_state)
    r["demand_history"] = [[1, 2, 3]] * 365
    r["skus"] = r["skus"] + ["x" * 200] * 300  # padding far past the 64 KiB limit
    resp = client.post("/v1/decisions", content=json.dumps(r) + " " * 70_000)
    assert resp.status_code == 413 and "limit" in resp.json()

    def gen():  # streamed (chunked) bodies are counted as they arrive
        for _ in range(10):
            yield b" " * 10_000

    resp = client.post("/v1/decisions", content=gen())
    assert resp.status_code == 413


def test_http__request_id_makes_it_idempotent(client, tiny_state):
    r = req_of(tiny_state, rid="idem-1")
    a = client.post("/v1/decisions", json=r)
    b = client.post("/v1/decisions", json=copy.deepcopy(r))
    assert a.status_code == b.status_code == 200
    assert a.content == b.content and b.headers["idempotent-replay"] == "true"
    assert "idempotent-replay" not in a.headers
    g = client.get("/v1/decisions/idem-1")
    assert g.status_code == 200 and g.content == a.content
    assert client.get("/v1/decisions/never").status_code == 404
    r["on_hand"][0] += 5
    c = client.post("/v1/decisions", json=r)
    assert c.status_code == 409 and "different request" in c.json()["detail"]
    m = client.get("/metrics").text
    assert "restock_idempotent_replays_total 1" in m


def test_http__healthz_and_metrics(client, tiny_state):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["scenario"]["name"] == "tiny" and h["roles"]["store"]["champion"] == "v1"
    for i in range(3):
        assert client.post("/v1/decisions", json=req_of(tiny_state, rid=f"m{i}")).status_code == 200
    client.post("/v1/decisions", json={"nope": 1})
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'restock_requests_total{endpoint="decisions",status="200"} 3' in text
    assert 'restock_requests_total{endpoint="decisions",status="422"} 1' in text
    assert 'restock_request_latency_seconds_bucket{endpoint="decisions",le="+Inf"} 4' in text
    assert "# TYPE restock_request_latency_seconds histogram" in text
    assert 'restock_decisions_total{policy="base_stock",role="store",route="champion"' in text
    assert "restock_fallbacks_total" in text and "restock_interventions_total" in text
    for line in text.splitlines():  # every sample line is "name{labels} value"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_http__admin_endpoints_need_the_bearer_token(client, tiny_heuristic_artifact):
    assert client.get("/v1/admin/registry").status_code == 401
    assert client.get("/v1/admin/registry", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.get("/v1/admin/registry", headers={"Authorization": "Bearer nope"}).status_code == 403
    ok = client.get("/v1/admin/registry", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["roles"]["store"]["champion"] == "v1"
    assert client.post("/v1/admin/roles/store/rollback").status_code == 401
    assert client.post("/v1/admin/roles/store/promote", json={"version": "v1"}).status_code == 401


def test_http__admin_disabled_without_the_variable(tiny_heuristic_artifact, registry_of, monkeypatch):
    monkeypatch.delenv("RESTOCK_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(registry_of(tiny_heuristic_artifact))) as c:
        r = c.get("/v1/admin/registry", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "disabled" in r.json()["detail"]


def test_http__admin_promote_candidate_rollback(
    tiny_heuristic_artifact, tiny_artifact, registry_of, monkeypatch
):
    monkeypatch.setenv("RESTOCK_ADMIN_TOKEN", "tok-env")
    reg = registry_of(tiny_heuristic_artifact, tiny_artifact)
    auth = {"Authorization": "Bearer tok-env"}
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=2)
    with TestClient(create_app(reg)) as c:
        r = c.post(
            "/v1/admin/roles/store/candidate",
            json={"version": "v2", "mode": "canary", "fraction": 1.0},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        d = c.post("/v1/decisions", json=req_of(env, rid="c1")).json()
        assert d["route"] == "canary" and d["policy"]["version"].startswith("v2+")
        assert (
            c.post("/v1/admin/roles/store/promote", json={"version": "v2"}, headers=auth).status_code == 200
        )
        d = c.post("/v1/decisions", json=req_of(env, rid="c2")).json()
        assert d["route"] == "champion" and d["policy"]["kind"] == "onnx"
        assert c.post("/v1/admin/roles/store/rollback", headers=auth).status_code == 200
        d = c.post("/v1/decisions", json=req_of(env, rid="c3")).json()
        assert d["policy"]["id"] == "base_stock" and d["policy"]["version"].startswith("v1+")
        bad = c.post("/v1/admin/roles/store/promote", json={"version": "v9"}, headers=auth)
        assert bad.status_code == 409 and "unknown version" in bad.json()["detail"]
        assert (
            c.post(
                "/v1/admin/roles/store/candidate", json={"version": "v2", "fraction": 2}, headers=auth
            ).status_code
            == 422
        )
        events = c.get("/v1/admin/registry", headers=auth).json()["events"]
        assert [e["action"] for e in events][-3:] == ["canary", "promote", "rollback"]
        assert all(e["by"] == "api" for e in events[-3:])


def test_http__decisions_differ_by_node(client, tiny_state):
    a = client.post("/v1/decisions", json=req_of(tiny_state, n=1, rid="n1")).json()
    b = client.post("/v1/decisions", json=req_of(tiny_state, n=0, rid="n0")).json()
    assert a["role"] == "store" and b["role"] == "dc" and a["node"] == "store_0" and b["node"] == "dc_0"
    assert isinstance(np.asarray(list(a["orders"].values())).sum(), np.integer)


def test_http__repeats_older_than_the_id_cache_are_caught_by_the_audit_store(client, tiny_state):
    r = req_of(tiny_state, rid="old-1")
    first = client.post("/v1/decisions", json=r)
    client.app.state.service["recent"].clear()  # as if the id had aged out of the in-memory cache
    again = client.post("/v1/decisions", json=r)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["idempotent-replay"] == "true"
    client.app.state.service["recent"].clear()
    r["on_hand"][0] += 1
    assert client.post("/v1/decisions", json=r).status_code == 409
