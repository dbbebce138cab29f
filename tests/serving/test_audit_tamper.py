"""Tamper evidence of the audit store (restock.audit/3, issue 12): every byte of every column, row
deletions (the newest one against an anchor), replays that refuse rows that do not verify, anchors, and
stores written under restock.audit/1 and /2."""

from __future__ import annotations

import json
import sqlite3

import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.serving.audit import (
    KEY_ENV,
    TABLES,
    AuditIntegrityError,
    anchor_path,
    full_response,
    make_anchor,
    open_store,
    read_anchor,
)
from restock.serving.registry import Registry
from restock.serving.schema import request_from_state
from restock.serving.service import DecisionService
from serving_helpers import simulate
from typer.testing import CliRunner

from restock.cli import app

runner = CliRunner()
KEY = "k" * 32


@pytest.fixture(scope="module")
def env():
    return simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=2)


@pytest.fixture
def shadowed(tiny_heuristic_artifact, registry_of):
    """A registry whose store role has a shadow candidate (so both tables get rows)."""
    reg = registry_of(tiny_heuristic_artifact, tiny_heuristic_artifact)
    Registry(reg).set_candidate("store", "v2", mode="shadow")
    return reg


def fill(reg, db, env, n=3, prefix="a"):
    svc = DecisionService(reg, audit=f"sqlite:///{db}")
    for i in range(n):
        svc.decide(request_from_state(env.compiled, env.state, 0, 1 + i % 2, f"{prefix}{i}"))  # stores
    svc.close()


@pytest.fixture
def small(shadowed, env, tmp_path):
    db = tmp_path / "small.db"
    fill(shadowed, db, env, n=3)
    return db


def _flips(v):
    """Every value ``v`` becomes when one byte of its stored form is changed (bit 0 flipped)."""
    if isinstance(v, int):
        s = str(v)
        for i in range(len(s)):
            yield int(s[:i] + chr(ord(s[i]) ^ 1) + s[i + 1 :])  # a digit stays a digit
        return
    b = v.encode()
    for i in range(len(b)):
        t = b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]
        try:
            yield t.decode()
        except UnicodeDecodeError:
            yield t  # stored as a blob


# the ~5,900 bytes of a two-row store in three parts of about equal cost (each part a test under 30 s)
PARTS = {
    "decisions.record": lambda t, c: (t, c) == ("decisions", "record"),
    "shadow_decisions.record": lambda t, c: (t, c) == ("shadow_decisions", "record"),
    "every other column": lambda t, c: c != "record",
}


@pytest.mark.parametrize("part", sorted(PARTS))
def test_tamper__every_byte_of_every_column_fails_verify_and_is_never_replayed(shadowed, env, tmp_path, part):
    """One byte at a time, in every column of every row of both tables (two rows each, ~5,900 bytes
    over the three parts): `verify` fails on each, and a replay (`get`) of any decision either refuses
    (AuditIntegrityError) or returns the original body."""
    small = tmp_path / "two.db"
    fill(shadowed, small, env, n=2)
    con = sqlite3.connect(small, isolation_level=None)
    # thousands of one-row updates: small pages, no WAL, no fsync (the store's 64 KiB WAL pages would
    # write a gigabyte); the content is the same
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA page_size=4096")
    con.execute("VACUUM")
    con.execute("PRAGMA journal_mode=MEMORY")
    con.execute("PRAGMA synchronous=OFF")
    store = open_store(str(small), readonly=True)
    assert store.verify()["ok"]
    rids = [r["request_id"] for r in store.rows("decisions")]
    orig = {rid: store.get(rid) for rid in rids}
    tried = skipped = 0
    for table in TABLES:
        cols = [c[1] for c in con.execute(f"PRAGMA table_info({table})")]
        rows = con.execute(f"SELECT * FROM {table} ORDER BY seq").fetchall()
        assert len(rows) >= 2
        for row in rows:
            seq = row[0]
            for col, v in zip(cols, row, strict=True):
                assert v is not None, (table, col)  # every column is written (row_hash included)
                if not PARTS[part](table, col):
                    continue
                for bad in _flips(v):
                    key = bad if col == "seq" else seq
                    try:
                        con.execute(f"UPDATE {table} SET {col} = ? WHERE seq = ?", (bad, seq))
                    except sqlite3.IntegrityError:  # a seq or request_id another row has
                        skipped += 1
                        continue
                    tried += 1
                    rep = store.verify()
                    assert not rep["ok"], (table, col, seq, bad)
                    for rid in rids:
                        try:
                            got = store.get(rid)
                        except AuditIntegrityError:
                            continue
                        assert got in (orig[rid], None), (table, col, seq, rid)
                        if table == "decisions" and rid == row[cols.index("request_id")]:
                            assert col == "request_id" and got is None  # the row is no longer found by it
                    if table == "decisions" and col == "request_id" and isinstance(bad, str):
                        with pytest.raises(AuditIntegrityError):
                            store.get(bad)
                    con.execute(f"UPDATE {table} SET {col} = ? WHERE seq = ?", (v, key))
    assert store.verify()["ok"]
    assert tried > 1_500 and skipped < tried / 100
    store.close()


def _anchor_file(db, tmp_path):
    store = open_store(str(db), readonly=True)
    rep = store.verify()
    store.close()
    a = make_anchor({t: {"records": rep[t]["records"], "head": rep[t]["head"]} for t in TABLES}, KEY.encode())
    f = tmp_path / "anchor.json"
    f.write_text(json.dumps(a))
    return f


@pytest.mark.parametrize("which", ["first", "middle", "last"])
@pytest.mark.parametrize("table", TABLES)
def test_tamper__deleted_rows_fail_verify_the_newest_against_an_anchor(
    small, tmp_path, monkeypatch, which, table
):
    monkeypatch.setenv(KEY_ENV, KEY)
    anchor = _anchor_file(small, tmp_path)
    con = sqlite3.connect(small)
    seqs = [s for (s,) in con.execute(f"SELECT seq FROM {table} ORDER BY seq")]
    gone = {"first": seqs[0], "middle": seqs[len(seqs) // 2], "last": seqs[-1]}[which]
    con.execute(f"DELETE FROM {table} WHERE seq = ?", (gone,))
    con.commit()
    con.close()
    store = open_store(str(small), readonly=True)
    plain = store.verify()
    anchored = store.verify(anchor=read_anchor(anchor, KEY.encode()))
    store.close()
    assert not anchored["ok"] and anchored[table]["broken"] is not None
    if which == "last":  # a chain cannot tell its own end was cut: the anchor does
        assert plain["ok"] and "fewer than the" in anchored[table]["broken"]["why"]
    else:
        assert not plain["ok"]
    res = runner.invoke(app, ["audit", "verify", str(small), "--anchor", str(anchor)])
    assert res.exit_code == 1 and "broken" in res.output


def test_tamper__anchor_command_and_verify(small, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    res = runner.invoke(app, ["audit", "anchor", str(small)])  # no key: an unkeyed anchor (a digest)
    assert res.exit_code == 0 and json.loads(res.stdout)["keyed"] is False, res.output
    u = tmp_path / "u.json"
    u.write_text(res.stdout)
    res = runner.invoke(app, ["audit", "verify", str(small), "--anchor", str(u)])
    assert res.exit_code == 0 and "unkeyed anchor" in res.output, res.output
    monkeypatch.setenv(KEY_ENV, KEY)  # with a key, an unkeyed anchor is a downgrade: refused
    res = runner.invoke(app, ["audit", "verify", str(small), "--anchor", str(u)])
    assert res.exit_code == 1 and "unkeyed but" in " ".join(res.output.split())
    res = runner.invoke(app, ["audit", "anchor", str(small)])
    assert res.exit_code == 0, res.output
    a = json.loads(res.stdout)
    assert a["decisions"]["records"] == 3 and a["shadow_decisions"]["records"] == 3 and len(a["mac"]) == 64
    f = tmp_path / "a.json"
    f.write_text(res.stdout)
    res = runner.invoke(app, ["audit", "verify", str(small), "--anchor", str(f)])
    assert res.exit_code == 0 and "rows): ok" in " ".join(res.output.split()), res.output
    # a forged anchor (fewer rows counted) or another key does not verify
    forged = dict(a, decisions={"records": 2, "head": a["decisions"]["head"]})
    f.write_text(json.dumps(forged))
    res = runner.invoke(app, ["audit", "verify", str(small), "--anchor", str(f)])
    assert res.exit_code == 1 and "MAC does not verify" in " ".join(res.output.split())
    f.write_text(json.dumps(a))
    monkeypatch.setenv(KEY_ENV, "another key")
    res = runner.invoke(app, ["audit", "verify", str(small), "--anchor", str(f)])
    assert res.exit_code == 1
    # a tampered store is not anchored
    monkeypatch.setenv(KEY_ENV, KEY)
    con = sqlite3.connect(small)
    con.execute("UPDATE decisions SET period = period + 1 WHERE seq = 2")
    con.commit()
    res = runner.invoke(app, ["audit", "anchor", str(small)])
    assert res.exit_code == 1 and "no anchor written" in res.output


def test_tamper__the_server_anchors_beside_the_store_and_refuses_a_cut_store(
    shadowed, env, tmp_path, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, KEY)
    db = tmp_path / "srv.db"
    fill(shadowed, db, env, n=3)
    f = anchor_path(db)
    a = read_anchor(f, KEY.encode())  # written on close (and every few seconds while serving)
    assert a["decisions"]["records"] == 3
    res = runner.invoke(app, ["audit", "verify", str(db), "--anchor", str(f)])
    assert res.exit_code == 0, res.output
    con = sqlite3.connect(db)
    con.execute("DELETE FROM decisions WHERE seq = (SELECT MAX(seq) FROM decisions)")
    con.commit()
    con.close()
    with pytest.raises(AuditIntegrityError, match="fewer than the 3"):
        DecisionService(shadowed, audit=f"sqlite:///{db}")
    res = runner.invoke(app, ["serve", str(shadowed), "--audit", f"sqlite:///{db}"])
    assert res.exit_code == 2 and "serving" not in res.output.replace("refusing to serve", "")
    assert len(res.output.strip().splitlines()) == 1 and "fewer than the 3" in res.output


def _legacy(db, schema):
    """Turn a restock.audit/3 store into what `schema` wrote: no row_hash columns, (/1) whole bodies."""
    con = sqlite3.connect(db)
    for t in TABLES:
        con.execute(f"ALTER TABLE {t} DROP COLUMN row_hash")
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (schema,))
    con.execute("DELETE FROM meta WHERE key = 'anchored'")  # no anchors then
    anchor_path(db).unlink(missing_ok=True)
    if schema == "restock.audit/1":
        for seq, head, rec in con.execute("SELECT seq, response, record FROM decisions").fetchall():
            con.execute("UPDATE decisions SET response = ? WHERE seq = ?", (full_response(head, rec), seq))
    con.commit()
    con.close()


@pytest.mark.parametrize("schema", ["restock.audit/1", "restock.audit/2"])
def test_tamper__legacy_stores_verify_by_their_rules_and_migrate(shadowed, env, tmp_path, schema):
    db = tmp_path / "old.db"
    fill(shadowed, db, env, n=3)
    _legacy(db, schema)
    res = runner.invoke(app, ["audit", "verify", str(db)])  # read-only: not migrated
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and f"3 of them written under {schema}, verified by its rules" in out, out
    assert open_store(str(db), readonly=True).schema == schema
    before = open_store(str(db), readonly=True)
    bodies = {r["request_id"]: before.get(r["request_id"]) for r in before.rows()}
    before.close()

    fill(shadowed, db, env, n=2, prefix="new")  # a writer migrates, then row-chains what it adds
    store = open_store(str(db), readonly=True)
    assert store.schema == "restock.audit/3" and store.legacy_schema == schema
    rep = store.verify()
    assert rep["ok"] and rep["decisions"]["records"] == 5 and rep["decisions"]["legacy_rows"] == 3
    assert {rid: store.get(rid) for rid in bodies} == bodies  # old rows read as before
    store.close()
    con = sqlite3.connect(db)
    con.execute("UPDATE decisions SET node = 'x' || node WHERE request_id = 'new1'")
    con.commit()
    store = open_store(str(db), readonly=True)
    rep = store.verify()
    assert not rep["ok"] and rep["decisions"]["broken"]["request_id"] == "new1"
    with pytest.raises(AuditIntegrityError):
        store.get("new1")
    store.close()


def test_tamper__server_refuses_to_replay_a_tampered_row(shadowed, env, tmp_path):
    """The issue's attack: one byte of a stored response's orders changed. POST replay (from the
    recent-id cache and, after a restart, through the store) and GET answer 503, counted in /metrics."""
    from fastapi.testclient import TestClient
    from restock.serving.app import FastPathApp, create_app

    db = tmp_path / "srv.db"
    body = request_from_state(env.compiled, env.state, 0, 0, "victim")
    with TestClient(FastPathApp(create_app(shadowed, audit=f"sqlite:///{db}"))) as c:
        first = c.post("/v1/decisions", json=body)
        assert first.status_code == 200
        orders = first.json()["orders"]
        sku, q = next(iter(orders.items()))
        con = sqlite3.connect(db)
        head = con.execute("SELECT response FROM decisions WHERE request_id = 'victim'").fetchone()[0]
        needle = f'"{sku}":{q}'
        assert needle in head
        con.execute(
            "UPDATE decisions SET response = ? WHERE request_id = 'victim'",
            (head.replace(needle, f'"{sku}":{q + 5}'),),
        )
        con.commit()
        r = c.post("/v1/decisions", json=body)
        assert r.status_code == 503 and "fails audit verification" in r.json()["detail"]
        r = c.get("/v1/decisions/victim")
        assert r.status_code == 503 and str(q + 5) not in r.text
        m = c.get("/metrics").text
        assert 'restock_audit_alarms_total{where="replay"} 1' in m
        assert 'restock_audit_alarms_total{where="get"} 1' in m
    with TestClient(FastPathApp(create_app(shadowed, audit=f"sqlite:///{db}"))) as c:
        c.app.app.state.service["recent"].clear()  # not in the cache: the committer's lookup refuses it
        r = c.post("/v1/decisions", json=body)
        assert r.status_code == 503 and "fails audit verification" in r.json()["detail"]
        assert 'restock_audit_alarms_total{where="replay"} 1' in c.get("/metrics").text
    res = runner.invoke(app, ["audit", "verify", str(db)])
    assert res.exit_code == 1 and "row_hash does not match" in " ".join(res.output.split())


def test_tamper__in_process_replays_refuse_too(small, shadowed, env):
    con = sqlite3.connect(small)
    con.execute("UPDATE decisions SET request = request || ' ' WHERE seq = 1")
    con.commit()
    svc = DecisionService(shadowed, audit=f"sqlite:///{small}")
    try:
        with pytest.raises(AuditIntegrityError):
            svc.decide(request_from_state(env.compiled, env.state, 0, 0, "a0"))
        with pytest.raises(AuditIntegrityError):
            svc.get("a0")
        assert svc.get("a1") is not None
        assert 'restock_audit_alarms_total{where="replay"} 1' in svc.metrics.render()
    finally:
        svc.close()


def _rehash(db, table, from_seq, only=False):
    """What an attacker without the anchor key can do after editing a row: recompute ``row_hash`` of
    that row (``only``) or of it and every row after it, so each row checks against its neighbours."""
    from restock.agents.records import GENESIS
    from restock.serving.audit import row_hash
    from restock.serving.audit_chain import _DECISION_COLS, _SHADOW_COLS

    cols = _DECISION_COLS if table == "decisions" else _SHADOW_COLS
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    prev = con.execute(f"SELECT row_hash FROM {table} WHERE seq < ? ORDER BY seq DESC LIMIT 1", (from_seq,))
    prev = (prev.fetchone() or [GENESIS])[0]
    for row in con.execute(f"SELECT * FROM {table} WHERE seq >= ? ORDER BY seq", (from_seq,)).fetchall():
        prev = row_hash(prev, [row[c] for c in cols])
        con.execute(f"UPDATE {table} SET row_hash = ? WHERE seq = ?", (prev, row["seq"]))
        if only:
            break
    con.commit()
    con.close()


@pytest.mark.parametrize("which", ["first", "middle", "last"])
@pytest.mark.parametrize("suffix", [False, True], ids=["row_only", "whole_suffix"])
def test_tamper__a_replay_checks_the_chain_up_to_the_head_it_trusts(shadowed, env, tmp_path, which, suffix):
    """A row edited and re-hashed (its own row_hash, or every row_hash from it to the end, as one can
    without the key) checks against its neighbours; a replay by the running server still refuses it,
    because it follows the chain to the head the server holds (or a checkpoint on the way)."""
    db = tmp_path / "srv.db"
    svc = DecisionService(shadowed, audit=f"sqlite:///{db}")
    try:
        reqs = [request_from_state(env.compiled, env.state, 0, 1 + i % 2, f"r{i}") for i in range(5)]
        firsts = [svc.decide(r).response for r in reqs]
        i = {"first": 0, "middle": 2, "last": 4}[which]
        con = sqlite3.connect(db)
        head = con.execute("SELECT response FROM decisions WHERE seq = ?", (i + 1,)).fetchone()[0]
        sku, q = next(iter(json.loads(firsts[i])["orders"].items()))
        con.execute(
            "UPDATE decisions SET response = ? WHERE seq = ?",
            (head.replace(f'"{sku}":{q}', f'"{sku}":{q + 7}'), i + 1),
        )
        con.commit()
        con.close()
        # this row only (the next row no longer links to it, unless it is the last), or the suffix
        _rehash(db, "decisions", i + 1, only=not suffix)
        with pytest.raises(AuditIntegrityError):
            svc.get(f"r{i}")
        with pytest.raises(AuditIntegrityError):
            svc.decide(reqs[i])
        for j in range(i):  # the untouched rows before it still replay
            assert svc.get(f"r{j}").response == firsts[j]
    finally:
        svc.close()


def test_tamper__without_a_key_the_anchor_is_unkeyed_and_still_catches_cut_rows(
    shadowed, env, tmp_path, monkeypatch
):
    """No RESTOCK_AUDIT_KEY: the server still anchors, with a plain digest. Cutting the newest row, or
    deleting the anchor, is caught at open and by `audit verify` (which checks DB.anchor by default);
    someone who rewrites the store and the anchor is not (that needs the key)."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    db = tmp_path / "nokey.db"
    fill(shadowed, db, env, n=3)
    a = json.loads(anchor_path(db).read_text())
    assert a["keyed"] is False and a["decisions"]["records"] == 3
    res = runner.invoke(app, ["audit", "verify", str(db)])
    assert res.exit_code == 0 and "unkeyed anchor" in res.output, res.output
    con = sqlite3.connect(db)
    con.execute("DELETE FROM decisions WHERE seq = (SELECT MAX(seq) FROM decisions)")
    con.commit()
    con.close()
    res = runner.invoke(app, ["audit", "verify", str(db)])
    assert res.exit_code == 1 and "fewer than the 3" in " ".join(res.output.split())
    res = runner.invoke(app, ["audit", "verify", str(db), "--no-anchor"])
    assert res.exit_code == 0 and "no anchor checked" in " ".join(res.output.split())
    with pytest.raises(AuditIntegrityError, match="fewer than the 3"):
        DecisionService(shadowed, audit=f"sqlite:///{db}")
    anchor_path(db).unlink()  # the anchor deleted too
    with pytest.raises(AuditIntegrityError, match="is missing"):
        DecisionService(shadowed, audit=f"sqlite:///{db}")
    # a keyed server does not accept the unkeyed anchor of a store (anyone could have written it)
    db2 = tmp_path / "nokey2.db"
    fill(shadowed, db2, env, n=2)
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(AuditIntegrityError, match="unkeyed but"):
        DecisionService(shadowed, audit=f"sqlite:///{db2}")
    res = runner.invoke(app, ["audit", "anchor", str(db2), "--out", str(anchor_path(db2))])
    assert res.exit_code == 0, res.output  # re-anchored with the key after checking the store
    DecisionService(shadowed, audit=f"sqlite:///{db2}").close()
    assert read_anchor(anchor_path(db2), KEY.encode())["keyed"] is True


@pytest.mark.parametrize("bad", ["é" * 64, "xyz", None, "0" * 64])
def test_tamper__a_bad_newest_row_hash_stops_the_server_at_open_in_one_line(shadowed, env, tmp_path, bad):
    """The newest row's row_hash is what a writer continues the chain from: a non-ASCII, malformed or
    missing one is refused at open (AuditIntegrityError; `restock serve`: one line, exit 2), never a
    TypeError. A well-formed wrong one opens, and no replay that reaches it is answered."""
    db = tmp_path / "head.db"
    fill(shadowed, db, env, n=3)
    anchor_path(db).unlink()
    con = sqlite3.connect(db)
    con.execute("DELETE FROM meta WHERE key = 'anchored'")  # not even the anchor helps here
    con.execute("UPDATE decisions SET row_hash = ? WHERE seq = 3", (bad,))
    con.commit()
    con.close()
    if bad == "0" * 64:
        svc = DecisionService(shadowed, audit=f"sqlite:///{db}")
        try:
            for rid in ("a0", "a1", "a2"):
                with pytest.raises(AuditIntegrityError):
                    svc.get(rid)
        finally:
            svc.close()
        return
    with pytest.raises(AuditIntegrityError, match="newest"):
        DecisionService(shadowed, audit=f"sqlite:///{db}")
    res = runner.invoke(app, ["serve", str(shadowed), "--audit", f"sqlite:///{db}", "--port", "1"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "newest" in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_tamper__export_refuses_a_store_that_does_not_verify(small, tmp_path):
    """`audit export` used to write the edited values of a tampered store without a word."""
    out = tmp_path / "x.jsonl"
    res = runner.invoke(app, ["audit", "export", str(small), "--out", str(out)])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 6, res.output
    out.unlink()
    con = sqlite3.connect(small)
    con.execute("UPDATE decisions SET node = 'x' || node WHERE seq = 2")
    con.commit()
    con.close()
    res = runner.invoke(app, ["audit", "export", str(small), "--out", str(out)])
    assert res.exit_code == 1 and "not exported" in res.output and not out.exists(), res.output
    res = runner.invoke(app, ["audit", "export", str(small), "--out", str(out), "--unverified"])
    assert res.exit_code == 0 and "does not verify" in res.output and out.exists(), res.output
