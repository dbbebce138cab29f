"""The audit store: hash chain in commit order, tamper evidence, export, URLs, the CLI commands."""

from __future__ import annotations

import json
import sqlite3

import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.records import DecisionRecord
from restock.serving.audit import AuditIntegrityError, chain_json, open_store, parse_url
from restock.serving.schema import request_from_state
from restock.serving.service import DecisionService
from serving_helpers import simulate
from typer.testing import CliRunner

from restock.cli import app

runner = CliRunner()


@pytest.fixture
def filled(tiny_heuristic_artifact, registry_of, tmp_path):
    db = tmp_path / "audit.db"
    svc = DecisionService(registry_of(tiny_heuristic_artifact), audit=f"sqlite:///{db}")
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=2)
    for i in range(6):
        svc.decide(request_from_state(env.compiled, env.state, 0, i % 3, f"a{i}"))
    svc.close()
    return db


def test_audit__chain_json_hash_is_the_records_own_hash(filled):
    con = sqlite3.connect(filled)
    for (text,) in con.execute("SELECT record FROM decisions"):
        r = DecisionRecord.from_json(text)
        assert r.compute_hash() == r.hash  # the agents.records definition
        again = DecisionRecord.from_json(text)
        assert chain_json(again, r.prev_hash) and again.hash == r.hash


def test_audit__sqlite_settings_and_order(filled):
    store = open_store(str(filled))
    con = store._w
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    rep = store.verify()
    assert rep["ok"] and rep["decisions"]["records"] == 6
    ids = [r["request_id"] for r in store.rows()]
    assert ids == [f"a{i}" for i in range(6)]
    store.close()


def test_audit__tampering_is_detected(filled):
    con = sqlite3.connect(filled)
    text = con.execute("SELECT record FROM decisions WHERE request_id = 'a2'").fetchone()[0]
    d = json.loads(text)
    d["executed"][0] += 1
    con.execute("UPDATE decisions SET record = ? WHERE request_id = 'a2'", (json.dumps(d),))
    con.commit()
    rep = open_store(str(filled)).verify()
    assert not rep["ok"] and rep["decisions"]["broken"]["request_id"] == "a2"
    res = runner.invoke(app, ["audit", "verify", str(filled)])
    assert res.exit_code == 1 and "broken" in res.output


def test_audit__a_dropped_row_breaks_the_chain(filled):
    con = sqlite3.connect(filled)
    con.execute("DELETE FROM decisions WHERE request_id = 'a3'")
    con.commit()
    rep = open_store(f"sqlite:///{filled}", readonly=True).verify()
    assert not rep["ok"] and rep["decisions"]["broken"]["request_id"] == "a4"
    with pytest.raises(AuditIntegrityError, match="fewer than the 6"):  # against the unkeyed anchor
        open_store(f"sqlite:///{filled}")


def test_audit__cli_verify_and_export(filled, tmp_path):
    res = runner.invoke(app, ["audit", "verify", f"sqlite:///{filled}", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["decisions"]["records"] == 6
    out = tmp_path / "audit.jsonl"
    res = runner.invoke(app, ["audit", "export", str(filled), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and lines[0]["table"] == "decisions" and lines[0]["request"]["request_id"] == "a0"
    assert lines[-1]["record"]["prev_hash"] == lines[-2]["record"]["hash"]
    res = runner.invoke(app, ["audit", "verify", str(tmp_path / "missing.db")])
    assert res.exit_code == 2 and "no such audit database" in " ".join(res.output.split())


def test_audit__database_urls():
    assert parse_url("sqlite:///rel/a.db") == ("sqlite", "rel/a.db")
    assert parse_url("sqlite:////abs/a.db") == ("sqlite", "/abs/a.db")
    assert parse_url("plain.db") == ("sqlite", "plain.db")
    with pytest.raises(ValueError, match="unsupported audit database URL scheme 'postgresql'"):
        parse_url("postgresql://db/restock")
    res = runner.invoke(app, ["audit", "verify", "postgresql://db/x"])
    assert res.exit_code == 2


def test_audit__responses_are_stored_without_their_record_and_served_whole(filled, tmp_path):
    """restock.audit/2 keeps each response's head in ``response`` and its record once, in ``record``;
    reading joins them into the exact body. A restock.audit/1 store (whole bodies) still reads and
    verifies, and a response that is not its row's request's fails verification."""
    import shutil

    from restock.serving.audit import full_response

    con = sqlite3.connect(filled)
    rows = con.execute("SELECT request_id, response, record FROM decisions ORDER BY seq").fetchall()
    store = open_store(str(filled))
    assert store.schema == "restock.audit/3"
    for rid, head, rec in rows:
        assert '"record"' not in head
        sha, body = store.get(rid)
        assert body == full_response(head, rec)
        d = json.loads(body)
        assert d["record"] == json.loads(rec) and d["request_id"] == rid and d["orders"]
    assert store.get_many([r[0] for r in rows])[rows[2][0]][1] == full_response(rows[2][1], rows[2][2])
    store.close()

    old = tmp_path / "v1.db"
    shutil.copy(filled, old)
    c1 = sqlite3.connect(old)
    c1.execute("UPDATE meta SET value = 'restock.audit/1' WHERE key = 'schema'")
    c1.execute("DELETE FROM meta WHERE key = 'anchored'")  # as restock.audit/1 wrote it: no anchors
    for rid, head, rec in rows:
        c1.execute("UPDATE decisions SET response = ? WHERE request_id = ?", (full_response(head, rec), rid))
    c1.commit()
    s1 = open_store(str(old))
    assert s1.verify()["ok"] and s1.get(rows[1][0])[1] == full_response(rows[1][1], rows[1][2])
    s1.close()

    swapped = json.loads(rows[3][1])
    swapped["request_id"] = rows[4][0]
    con.execute("UPDATE decisions SET response = ? WHERE request_id = ?", (json.dumps(swapped), rows[3][0]))
    con.commit()
    store = open_store(str(filled))
    rep = store.verify()
    assert not rep["ok"] and rep["decisions"]["broken"]["request_id"] == rows[3][0]
    store.close()


def test_audit__checkpoints_run_beside_the_writer_and_close_truncates_the_wal(
    tiny_heuristic_artifact, registry_of, tmp_path
):
    """Commits never checkpoint (wal_autocheckpoint=0); the checkpointer thread copies the WAL back
    once enough is written, and closing the store truncates it, with every decision in the database."""
    import time
    from pathlib import Path

    db = tmp_path / "ck.db"
    svc = DecisionService(registry_of(tiny_heuristic_artifact), audit=f"sqlite:///{db}")
    assert svc.store._w.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    svc.store.CHECKPOINT_BYTES = 1  # wake the checkpointer after every commit
    size0 = db.stat().st_size  # the schema only: decisions reach this file by checkpoints
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=2)
    for i in range(5):
        svc.decide(request_from_state(env.compiled, env.state, 0, i % 3, f"ck{i}"))
    wal = Path(f"{db}-wal")
    deadline = time.time() + 10
    while time.time() < deadline and db.stat().st_size <= size0:  # rows reach the main file: a checkpoint
        time.sleep(0.05)
    assert db.stat().st_size > size0
    assert wal.exists()
    svc.close()
    assert not wal.exists() or wal.stat().st_size == 0
    store = open_store(str(db))
    rep = store.verify()
    assert rep["ok"] and rep["decisions"]["records"] == 5
    store.close()
