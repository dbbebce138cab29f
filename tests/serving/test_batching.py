"""Concurrent POST /v1/decisions are decided together (one engine batch) and committed before any of
them is answered; the answers equal one-at-a-time decisions; repeats and conflicts inside a burst."""

from __future__ import annotations

import asyncio
import json

import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.serving.app import FastPathApp, create_app
from restock.serving.schema import request_from_state
from serving_helpers import simulate


@pytest.fixture
def tiny_env():
    return simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=4)


async def post(app, body: bytes) -> tuple[int, dict, bytes]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/decisions",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    out: dict = {}

    async def send(msg):
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in msg["headers"]}
        else:
            out["body"] = msg["body"]

    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


async def burst(registry, bodies: list[bytes], check=None):
    fast = create_app(registry)
    app = FastPathApp(fast)
    async with fast.router.lifespan_context(fast):
        state = fast.state.service

        async def one(b):
            res = await post(app, b)
            if check is not None:
                check(state, res)
            return res

        res = await asyncio.gather(*(one(b) for b in bodies))
        return res, state["batcher"].batches, state["svc"].store.verify(), state["svc"].store.count()


def requests_of(env, n_nodes):
    return [request_from_state(env.compiled, env.state, 0, n, f"b-{n}") for n in range(n_nodes)]


def test_batching__a_burst_is_one_batch_committed_before_answers(
    tiny_env, tiny_heuristic_artifact, registry_of
):
    reg = registry_of(tiny_heuristic_artifact)
    reqs = requests_of(tiny_env, tiny_env.compiled.N)
    bodies = [json.dumps(r).encode() for r in reqs]
    bodies.append(bodies[0])  # the same request again, while the first is in flight
    other = dict(reqs[1], on_hand=[x + 1 for x in reqs[1]["on_hand"]])
    bodies.append(json.dumps(other).encode())  # the same request_id with another body

    def committed(state, res):  # when an answer arrives, its decision is in the audit store
        status, _, body = res
        if status == 200:
            assert state["svc"].store.get(json.loads(body)["request_id"]) is not None

    res, batches, report, rows = asyncio.run(burst(reg, bodies, committed))
    n = len(reqs)
    assert [s for s, _, _ in res[:n]] == [200] * n
    assert batches == 1
    assert res[n][0] == 200 and res[n][2] == res[0][2] and res[n][1].get("idempotent-replay") == "true"
    assert res[n + 1][0] == 409
    assert report["ok"] and rows == n

    # one at a time (a fresh registry and store): the same orders and shielded proposals
    reg2 = registry_of(tiny_heuristic_artifact)
    for i, b in enumerate(bodies[:n]):
        (single,), _, _, _ = asyncio.run(burst(reg2, [b]))
        a, s = json.loads(res[i][2]), json.loads(single[2])
        assert a["orders"] == s["orders"]
        assert a["record"]["proposed"] == s["record"]["proposed"]
        assert a["record"]["binding"] == s["record"]["binding"]


def test_batching__store_failure_answers_503_to_the_whole_batch(
    tiny_env, tiny_heuristic_artifact, registry_of, monkeypatch
):
    from restock.serving.audit import SqliteStore

    def fail(self, entries):
        raise OSError("disk full")

    monkeypatch.setattr(SqliteStore, "append", fail)
    reqs = requests_of(tiny_env, tiny_env.compiled.N)
    res, _, _, rows = asyncio.run(
        burst(registry_of(tiny_heuristic_artifact), [json.dumps(r).encode() for r in reqs])
    )
    assert [s for s, _, _ in res] == [503] * len(reqs)
    assert all(b"do not execute" in body for _, _, body in res)
