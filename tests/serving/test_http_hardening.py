"""HTTP hardening (issue 12, item 2): the admin token before any body, NaN and infinities as 422,
JSON content type (415), bounded error bodies, body and header deadlines, uvicorn limits, every status
code in the OpenAPI document, a refused artifact before "serving"."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.serving.app import FastPathApp, create_app
from restock.serving.http_limits import MAX_ERRORS, timed_protocol
from restock.serving.schema import request_from_state
from serving_helpers import simulate
from typer.testing import CliRunner

from restock.cli import app as cli_app

TOKEN = "s3cret-token"
JSON = {"content-type": "application/json"}
AUTH = {"authorization": f"Bearer {TOKEN}", **JSON}


@pytest.fixture(scope="module")
def tiny_req():
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=2)
    return request_from_state(env.compiled, env.state, 0, 1, "h1")


@pytest.fixture(params=["fast_path", "fastapi_route"])
def client(request, tiny_heuristic_artifact, registry_of):
    app = create_app(registry_of(tiny_heuristic_artifact, tiny_heuristic_artifact), admin_token=TOKEN)
    if request.param == "fast_path":
        app = FastPathApp(app)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def no_token_client(tiny_heuristic_artifact, registry_of, monkeypatch):
    monkeypatch.delenv("RESTOCK_ADMIN_TOKEN", raising=False)
    with TestClient(FastPathApp(create_app(registry_of(tiny_heuristic_artifact)))) as c:
        yield c


BAD_BODIES = [
    ("/v1/admin/roles/store/candidate", b'{"version":"v1","fraction":NaN}'),
    ("/v1/admin/roles/store/candidate", b'{"version":"v1","fraction":Infinity}'),
    ("/v1/admin/roles/store/candidate", b'{"version":"v1","fraction":-Infinity}'),
    ("/v1/admin/roles/store/candidate", b'{"version":"v1","fraction":1e999}'),
    ("/v1/admin/roles/store/promote", b'{"version":NaN}'),
    ("/v1/admin/roles/store/promote", b"{not json"),
    ("/v1/admin/roles/store/promote", b"[" * 100_000),
]


def test_hardening__no_token_no_schema_and_never_500(client, no_token_client):
    for path, body in BAD_BODIES:
        for headers, want in (
            (JSON, 401),  # token configured, header missing
            ({"authorization": "Bearer wrong", **JSON}, 403),
            ({"authorization": "Basic abc", **JSON}, 401),
            ({"content-type": "text/plain"}, 401),  # the token comes before the content type
        ):
            r = client.post(path, content=body, headers=headers)
            assert r.status_code == want, (path, body[:40], r.text)
            assert set(r.json()) == {"detail"} and "fraction" not in r.text and "version" not in r.text
        r = no_token_client.post(path, content=body, headers=AUTH)  # admin API off
        assert r.status_code == 403 and "disabled" in r.json()["detail"]


def test_hardening__nan_and_infinity_are_422_with_the_token(client):
    for path, body in BAD_BODIES:
        r = client.post(path, content=body, headers=AUTH)
        assert r.status_code == 422, (path, body[:40], r.text)
        d = r.json()
        assert d["error_count"] >= 1 and len(d["detail"]) <= MAX_ERRORS
    r = client.post("/v1/admin/roles/store/candidate", content=BAD_BODIES[0][1], headers=AUTH)
    assert r.json()["detail"][0]["loc"] == ["body", "fraction"]
    r = client.post("/v1/admin/roles/store/candidate", json={"version": "v2", "fraction": 0.5}, headers=AUTH)
    assert r.status_code == 200 and r.json()["role_state"]["fraction"] == 0.5
    r = client.post("/v1/admin/roles/nosuchrole/promote", json={"version": "v2"}, headers=AUTH)
    assert r.status_code == 409


def test_hardening__decisions_refuse_nan_everywhere(client, tiny_req):
    text = json.dumps(tiny_req)
    for field in ("on_hand", "last_demand", "period", "request_id"):
        for const in ("NaN", "Infinity", "-Infinity", "1e999"):
            d = dict(tiny_req)
            d[field] = "@@"
            body = json.dumps(d).replace('"@@"', const if field in ("period", "request_id") else f"[{const}]")
            r = client.post("/v1/decisions", content=body, headers=JSON)
            assert r.status_code == 422, (field, const, r.text)
            json.loads(r.text)  # a JSON body (no bare NaN in it)
    assert client.post("/v1/decisions", content=text, headers=JSON).status_code == 200


def test_hardening__json_content_type_required(client, tiny_req):
    text = json.dumps(tiny_req | {"request_id": "ct"})
    for headers in (
        {},
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "application/jsonx"},
    ):
        r = client.post("/v1/decisions", content=text, headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["detail"], headers
        r = client.post(
            "/v1/admin/roles/store/promote", content=b'{"version":"v2"}', headers=headers | AUTH_ONLY
        )
        assert r.status_code == 415, headers
    r = client.post("/v1/decisions", files={"f": ("a.json", text, "application/json")})
    assert r.status_code == 415
    r = client.post(
        "/v1/decisions", content=text, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 200


AUTH_ONLY = {"authorization": f"Bearer {TOKEN}"}


def test_hardening__error_bodies_are_bounded(client, tiny_req):
    skus = [f"u{i:05d}" for i in range(20_000)]
    d = tiny_req | {
        "request_id": "big",
        "skus": skus,
        "on_hand": [0] * len(skus),
        "last_demand": [0] * len(skus),
    }
    body = json.dumps(d, separators=(",", ":"))
    assert len(body) < 256 * 1024
    r = client.post("/v1/decisions", content=body, headers=JSON)
    assert r.status_code == 422
    out = r.json()
    assert len(out["detail"]) <= MAX_ERRORS and len(r.content) < 16 * 1024
    assert out["error_count"] >= len(out["detail"])


def test_hardening__stalled_bodies_get_408(tiny_heuristic_artifact, registry_of):
    """A body that stops arriving: 408 after the deadline (fast path and FastAPI routes alike)."""
    api = create_app(registry_of(tiny_heuristic_artifact), admin_token=TOKEN, body_timeout=0.3)

    async def call(app, path):
        sent = []
        first = [True]

        async def receive():
            if first[0]:
                first[0] = False
                return {"type": "http.request", "body": b'{"request_id":', "more_body": True}
            await asyncio.sleep(3600)

        async def send(msg):
            sent.append(msg)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {TOKEN}".encode()),
            ],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "root_path": "",
        }
        t0 = time.perf_counter()
        await asyncio.wait_for(app(scope, receive, send), 5)
        return sent[0]["status"], dict(sent[0]["headers"]), time.perf_counter() - t0

    for app_, path in (
        (FastPathApp(api), "/v1/decisions"),
        (api, "/v1/decisions"),
        (api, "/v1/admin/roles/store/promote"),
    ):
        status, headers, took = asyncio.run(call(app_, path))
        assert status == 408 and headers.get(b"connection") == b"close" and took < 3, (path, status)


def test_hardening__stalled_request_heads_are_closed():
    """uvicorn with `timed_protocol`: a connection that never finishes its request head is closed
    after the deadline; complete requests are answered (also on a kept-alive connection)."""
    import uvicorn

    async def hello(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = uvicorn.Config(
        hello, host="127.0.0.1", port=port, lifespan="off", http=timed_protocol(0.5), log_level="error"
    )
    server = uvicorn.Server(cfg)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.recv(1024).startswith(b"HTTP/1.1 200")
            t0 = time.perf_counter()
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the next head, never finished
            assert c.recv(1024) == b"" and time.perf_counter() - t0 < 3  # closed by the server
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            t0 = time.perf_counter()
            c.sendall(b"GET / HT")
            assert c.recv(1024) == b"" and 0.3 < time.perf_counter() - t0 < 3
    finally:
        server.should_exit = True
        th.join(10)


def test_hardening__serve_runs_uvicorn_bounded(monkeypatch, tiny_heuristic_artifact, registry_of):
    import uvicorn
    from restock.serving import app as app_mod
    from restock.serving import http_limits

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    app_mod.serve(registry_of(tiny_heuristic_artifact), port=1)
    assert seen["host"] == "127.0.0.1" and seen["limit_concurrency"] == http_limits.LIMIT_CONCURRENCY
    assert (
        seen["timeout_keep_alive"] == http_limits.KEEP_ALIVE
        and seen["http"].__name__ == "HeaderTimeoutProtocol"
    )


def test_hardening__every_status_code_is_documented(client):
    spec = client.get("/openapi.json").json()
    want = {
        ("/v1/decisions", "post"): {"200", "408", "409", "413", "415", "422", "503"},
        ("/v1/decisions/{request_id}", "get"): {"200", "404", "503"},
        ("/healthz", "get"): {"200", "503"},
        ("/v1/admin/registry", "get"): {"200", "401", "403"},
        ("/v1/admin/roles/{role}/promote", "post"): {"200", "401", "403", "408", "409", "413", "415", "422"},
        ("/v1/admin/roles/{role}/rollback", "post"): {"200", "401", "403", "408", "409", "413"},
        ("/v1/admin/roles/{role}/candidate", "post"): {
            "200",
            "401",
            "403",
            "408",
            "409",
            "413",
            "415",
            "422",
        },
        ("/v1/admin/roles/{role}/candidate", "delete"): {"200", "401", "403", "408", "409", "413"},
    }
    for (path, method), codes in want.items():
        assert codes <= set(spec["paths"][path][method]["responses"]), (path, method)
    r = client.options("/v1/admin/roles/store/candidate")  # Allow names every route's methods
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"POST", "DELETE"}
    cand = spec["paths"]["/v1/admin/roles/{role}/candidate"]["post"]
    assert "fraction" in json.dumps(cand["requestBody"])
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_hardening__serve_refuses_a_tampered_artifact_in_one_line(tiny_heuristic_artifact, registry_of):
    reg = registry_of(tiny_heuristic_artifact)
    f = reg / "artifacts" / "v1" / "scenario.yaml"
    f.write_text(f.read_text() + "\n# edited\n")
    res = CliRunner().invoke(cli_app, ["serve", str(reg), "--port", "1"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: refusing to serve") and "sha256 of scenario.yaml" in lines[0]
    assert "Traceback" not in res.output


def test_hardening__serve_timeouts_and_connection_limit_come_from_the_command_line(
    monkeypatch, tiny_heuristic_artifact, registry_of
):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    reg = registry_of(tiny_heuristic_artifact)
    args = ["serve", str(reg), "--port", "1", "--header-timeout", "2.5", "--body-timeout", "3"]
    res = CliRunner().invoke(cli_app, [*args, "--keep-alive", "7", "--max-connections", "12"])
    assert res.exit_code == 0, res.output
    assert seen["limit_concurrency"] == 12 and seen["timeout_keep_alive"] == 7
    assert seen["http"].__name__ == "HeaderTimeoutProtocol"
    assert seen["http"].timeout == 2.5
    mw = [m for m in seen["app"].app.user_middleware if m.cls.__name__ == "BodyLimit"]
    assert mw and mw[0].kwargs["body_timeout"] == 3
    for flag, bad in [
        ("--header-timeout", "nan"),
        ("--body-timeout", "inf"),
        ("--keep-alive", "0"),
        ("--body-timeout", "-1"),
        ("--max-connections", "0"),
    ]:
        res = CliRunner().invoke(cli_app, ["serve", str(reg), "--port", "1", flag, bad])
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and flag in out and "serving" not in out, (flag, out)
