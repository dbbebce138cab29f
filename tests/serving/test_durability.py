"""A server killed with SIGKILL under load keeps every decision it had answered, and its chain verifies."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.serving.audit import open_store
from restock.serving.bench import free_port, start_server, stop_server, wait_ready
from restock.serving.schema import request_from_state
from serving_helpers import simulate


def test_durability__sigkill_under_load_loses_no_answered_decision(
    tiny_heuristic_artifact, registry_of, tmp_path
):
    reg = registry_of(tiny_heuristic_artifact)
    db = tmp_path / "audit.db"
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=3)
    templates = [request_from_state(env.compiled, env.state, 0, n, "x") for n in range(env.compiled.N)]
    port = free_port()
    proc = start_server(reg, port, durability="full", audit=f"sqlite:///{db}")
    answered: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop.is_set():
            rid = f"c{k}-{i}"
            body = json.dumps({**templates[i % len(templates)], "request_id": rid})
            try:
                conn.request("POST", "/v1/decisions", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                return  # the server is gone
            if resp.status == 200:
                with lock:
                    answered[rid] = data
            i += 1

    try:
        wait_ready(port, proc)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        t0 = time.time()
        while time.time() - t0 < 30 and len(answered) < 150:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-flight: requests are being decided and committed
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
    finally:
        stop.set()
        stop_server(proc)
    assert len(answered) >= 150

    store = open_store(str(db))
    rep = store.verify()
    assert rep["ok"], rep
    for rid, body in answered.items():  # every answered decision is on disk, byte for byte
        row = store.get(rid)
        assert row is not None, rid
        assert row[1].encode() == body
    n_before = rep["decisions"]["records"]
    last = rep["decisions"]["last_hash"]
    store.close()

    port2 = free_port()
    proc2 = start_server(reg, port2, durability="full", audit=f"sqlite:///{db}")
    try:
        wait_ready(port2, proc2)
        conn = http.client.HTTPConnection("127.0.0.1", port2, timeout=30)
        some = sorted(answered)[:20]
        for rid in some:
            conn.request("GET", f"/v1/decisions/{rid}")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == answered[rid]
        conn.request(
            "POST",
            "/v1/decisions",
            json.dumps({**templates[1], "request_id": "after-restart"}),
            {"Content-Type": "application/json"},
        )
        r = conn.getresponse()
        rec = json.loads(r.read())["record"]
        assert r.status == 200 and rec["prev_hash"] == last  # the chain continues where it stopped
    finally:
        stop_server(proc2)
    store = open_store(str(db))
    rep = store.verify()
    assert rep["ok"] and rep["decisions"]["records"] == n_before + 1
    store.close()
