"""Audit chains and anchors: what makes the audit store tamper-evident, and how a store is verified.

Two chains run through each table. The record chain (``prev_hash``, ``hash``) is
`agents.records`' own: each record's hash covers its fields and the hash before it. The row chain
(restock.audit/3) covers everything else a reader or a replay uses: ``row_hash`` = sha256(the row
chain head before + `row_bytes` of the row: seq, request_id, ts, node, role, period, route, policy
id and version, the request's sha256 (which the stored request text must hash to), the record's hash
(the stored record text must be its canonical JSON, byte for byte) and the response head). The head
of a table (its last ``row_hash``) with the row count is what an anchor signs (`make_anchor`: an HMAC
with the key in RESTOCK_AUDIT_KEY, written by the server to ``<db>.anchor``; without a key a plain
digest, which catches cut rows but not someone who rewrites the anchor too), so dropping the newest
rows is caught too. A replay (`get`, `get_many`, a repeated request_id in `append`) checks the row it
returns, then follows the row chain from it to a head the writer trusts (`SqliteStore._walk`), and
raises `AuditIntegrityError` instead of answering a row that does not verify.

`check_row` checks one row against the heads before it (a replay checks the row it returns);
`verify_store` recomputes both chains of a whole store and checks it against an anchor. The store
itself (SQLite, writing, reading, export) is `serving.audit`, which re-exports everything here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
from restock.agents.records import GENESIS, DecisionRecord, canonical_bytes
from restock.serving.artifact import now_iso

# /2: the ``response`` column holds the response body without its record (the ``record`` column has
# it; `full_response` joins them), a third fewer bytes per decision. /1 stores hold whole bodies and
# are still read and verified. /3: the row chain (``row_hash``) covers every column; /1 and /2 stores
# are migrated on open by a writer (their old rows keep their old rules).
SCHEMA_VERSION = "restock.audit/3"
LEGACY_SCHEMAS = ("restock.audit/1", "restock.audit/2")
KEY_ENV = "RESTOCK_AUDIT_KEY"  # the HMAC key of audit anchors
ANCHOR_KIND = "restock.audit-anchor/1"
TABLES = ("decisions", "shadow_decisions")
LEGACY_RULES = {
    "restock.audit/1": "record chain only; request, response, node, period and time columns not hashed",
    "restock.audit/2": "record chain only; request, response, node, period and time columns not hashed",
}


class AuditIntegrityError(Exception):
    """A stored row (or the store against its anchor) does not verify: it must not be replayed."""


def audit_key() -> bytes | None:
    """The anchor HMAC key from RESTOCK_AUDIT_KEY (None when unset or empty)."""
    k = os.environ.get(KEY_ENV, "")
    return k.encode() if k else None


def row_values(table: str, row) -> list:
    """What the row chain covers of a row (a mapping of column -> value), in a fixed order."""
    if table == "decisions":
        names = _DECISION_COLS
    else:
        names = _SHADOW_COLS
    return [row[n] for n in names]


_DECISION_COLS = (
    "seq",
    "request_id",
    "ts",
    "node",
    "role",
    "period",
    "route",
    "policy_id",
    "policy_version",
    "request_sha256",
    "hash",
    "response",
)
_SHADOW_COLS = ("seq", "request_id", "ts", "node", "role", "period", "policy_id", "policy_version", "hash")
COVERED = {"decisions": _DECISION_COLS, "shadow_decisions": _SHADOW_COLS}  # what the row chain covers


def row_bytes(values: list) -> bytes:
    """The canonical bytes of a row's covered values: compact JSON of the list (orjson; json for what
    orjson refuses, such as ints beyond 64 bits). A value of the wrong type (bytes where text was)
    raises TypeError."""
    try:
        return orjson.dumps(values)
    except TypeError:
        return json.dumps(values, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def row_hash(prev: str, values: list) -> str:
    return hashlib.sha256(prev.encode() + row_bytes(values)).hexdigest()


def anchor_mac(anchor: dict[str, Any], key: bytes | None) -> str:
    """HMAC-SHA256 of the anchor's body with ``key``; without a key, its plain SHA-256 (an unkeyed
    anchor: it catches rows lost or cut by someone who did not also rewrite the anchor, nothing more)."""
    body = json.dumps({k: v for k, v in anchor.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    if key is None:
        return hashlib.sha256(body.encode()).hexdigest()
    return hmac.new(key, body.encode(), "sha256").hexdigest()


def make_anchor(heads: dict[str, Any], key: bytes | None, schema: str = SCHEMA_VERSION) -> dict[str, Any]:
    """A checkpoint of a store's chain heads: ``heads`` = {table: {"records": n, "head": hash}}; HMAC'd
    with ``key``, or unkeyed (``"keyed": false``, a plain digest) without one."""
    a: dict[str, Any] = {"kind": ANCHOR_KIND, "schema": schema, "at": now_iso(), "keyed": key is not None}
    for t in TABLES:
        a[t] = {"records": int(heads[t]["records"]), "head": str(heads[t]["head"])}
    a["mac"] = anchor_mac(a, key)
    return a


def read_anchor(path: str | os.PathLike, key: bytes | None) -> dict[str, Any]:
    """A checkpoint from its file, its MAC checked; raises AuditIntegrityError when it does not verify.
    With a key only a keyed anchor is accepted (an unkeyed one where a key is set is a downgrade:
    anyone can write one), without a key only an unkeyed one (its MAC cannot be checked)."""
    try:
        a = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise AuditIntegrityError(f"anchor {path}: unreadable ({exc})") from None
    ok = (
        isinstance(a, dict)
        and a.get("kind") == ANCHOR_KIND
        and all(
            isinstance(a.get(t), dict)
            and type(a[t].get("records")) is int
            and a[t]["records"] >= 0
            and isinstance(a[t].get("head"), str)
            for t in TABLES
        )
        and isinstance(a.get("mac"), str)
        and a.get("keyed", True) in (True, False)
    )
    if not ok:
        raise AuditIntegrityError(f"anchor {path}: not a {ANCHOR_KIND} checkpoint")
    keyed = a.get("keyed", True)  # anchors written before unkeyed ones existed were all keyed
    if keyed and key is None:
        raise AuditIntegrityError(f"anchor {path} is HMAC'd: set {KEY_ENV} (the key it was written with)")
    if not keyed and key is not None:
        raise AuditIntegrityError(
            f"anchor {path} is unkeyed but {KEY_ENV} is set: it was replaced, or the store ran without "
            f"the key; verify the store (restock audit verify DB --anchor A_COPY_YOU_TRUST), then "
            f"restock audit anchor DB --out {path}"
        )
    if not hmac.compare_digest(a["mac"].encode(), anchor_mac(a, key).encode()):
        why = f"altered, or another {KEY_ENV}" if keyed else "altered"
        raise AuditIntegrityError(f"anchor {path}: MAC does not verify ({why})")
    return a


def anchor_path(db: str | os.PathLike) -> Path:
    """Where the server keeps the latest anchor of a store: beside it, ``<db>.anchor``."""
    p = Path(db)
    return p.with_name(p.name + ".anchor")


def full_response(head: str, record_json: str) -> str:
    """The response body: its head (a JSON object) with ``"record"`` appended as the last member."""
    return head[:-1] + ',"record":' + record_json + "}"


_FIELDS = tuple(f.name for f in fields(DecisionRecord) if f.name != "hash")


def chain_json(r: DecisionRecord, prev_hash: str) -> str:
    """Link ``r`` after ``prev_hash`` (sets r.prev_hash and r.hash) and return its JSON.

    The hash is `DecisionRecord.compute_hash` exactly (sha256 of prev_hash + the sorted compact JSON of
    every field but ``hash``), built from one shallow dict instead of two deep copies; the JSON is
    that canonical text with ``hash`` appended last.
    """
    r.prev_hash = prev_hash
    payload = {name: getattr(r, name) for name in _FIELDS}
    canon = canonical_bytes(payload)
    r.hash = hashlib.sha256(prev_hash.encode() + canon).hexdigest()
    return canon[:-1].decode() + ',"hash":"' + r.hash + '"}'


def response_body(
    response: str, record: str, seq: int, legacy_schema: str | None, legacy_rows: dict[str, float]
) -> str:
    """The response body from its stored columns (restock.audit/1 rows hold the whole body)."""
    if legacy_schema == "restock.audit/1" and 0 < seq <= legacy_rows["decisions"]:
        return response
    return full_response(response, record)


def check_row(
    table: str,
    row,
    prev_rec: str,
    prev_row: str,
    legacy_schema: str | None = None,
    legacy_rows: dict[str, float] | None = None,
) -> tuple[str | None, str, str | None]:
    """Check one row against the heads before it: (why it fails or None, the row chain head after
    it, the response body of a decision). Rows written under a legacy schema get its rules (``legacy_rows``:
    rows per table written under ``legacy_schema``, `SqliteStore`'s attributes)."""
    legacy_rows = legacy_rows or dict.fromkeys(TABLES, 0)
    seq = row["seq"]
    legacy = type(seq) is int and 0 < seq <= legacy_rows[table]
    text = row["record"]
    if not isinstance(text, str):
        return "the record column is not text", prev_row, None
    try:
        r = DecisionRecord.from_json(text)
        canon = canonical_bytes({name: getattr(r, name) for name in _FIELDS})  # = r.canonical(), no deep copy
    except (ValueError, TypeError, RecursionError) as exc:
        return f"unreadable record: {exc}", prev_row, None
    if r.prev_hash != prev_rec or row["prev_hash"] != prev_rec:
        return "prev_hash does not link to the record before", prev_row, None
    if hashlib.sha256(r.prev_hash.encode() + canon).hexdigest() != r.hash or row["hash"] != r.hash:
        return "hash does not match the record's content", prev_row, None
    if r.request_id != row["request_id"]:
        return "request_id column differs from the record", prev_row, None
    body = None
    if table == "decisions":
        resp = row["response"]
        if not isinstance(resp, str):
            return "the response column is not text", prev_row, None
        body = response_body(resp, text, seq, legacy_schema, legacy_rows)
        try:
            d = json.loads(body)
        except (ValueError, RecursionError):
            d = None
        if not isinstance(d, dict) or d.get("request_id") != r.request_id:
            return "the stored response is not this request's", prev_row, None
        if not isinstance(d.get("record"), dict) or d["record"].get("hash") != r.hash:
            return "the stored response does not carry this record", prev_row, None
    if legacy:
        return None, r.hash, body
    if text != canon[:-1].decode() + ',"hash":"' + r.hash + '"}':
        return "the record text is not its record's canonical JSON", prev_row, None
    mirrors = (
        ("ts", r.timestamp),
        ("node", r.agent_id),
        ("role", r.role),
        ("period", r.period),
        ("policy_id", r.policy_id),
        ("policy_version", r.policy_version),
    )
    for col, v in mirrors:
        if row[col] != v or type(row[col]) is not type(v):
            return f"the {col} column differs from the record", prev_row, None
    if table == "decisions":
        req = row["request"]
        if not isinstance(req, str) or hashlib.sha256(req.encode()).hexdigest() != row["request_sha256"]:
            return "the stored request does not hash to request_sha256", prev_row, None
    rh = row["row_hash"]
    try:
        expect = row_hash(prev_row, row_values(table, row))
    except TypeError:
        return "a column holds a value of the wrong type", prev_row, None
    if not isinstance(rh, str) or not hmac.compare_digest(rh.encode(), expect.encode()):
        return (
            "row_hash does not match the row's columns (request, response, node, period, time, "
            "policy) or does not link to the row before",
            prev_row,
            None,
        )
    return None, rh, body


def verify_store(store: Any, anchor: dict[str, Any] | None = None) -> dict[str, Any]:
    """`SqliteStore.verify`: recompute both chains (records and rows); report the count, the heads and the first broken
    row of each table. ``anchor`` (from `read_anchor`): also check that the store still holds the
    rows it counted, ending in the head it signed."""
    report: dict[str, Any] = {"ok": True, "schema": store.schema}
    if store.legacy_schema is not None:
        report["legacy"] = {"schema": store.legacy_schema, "rules": LEGACY_RULES[store.legacy_schema]}
    for table in TABLES:
        prev, head = GENESIS, GENESIS
        n = legacy = 0
        broken = None
        at_anchor = None
        for row in store.rows(table):
            why, new_head, _ = store.check_row(table, row, prev, head)
            if why is not None:
                broken = {"seq": row["seq"], "request_id": row["request_id"], "why": why}
                break
            n += 1
            if type(row["seq"]) is int and 0 < row["seq"] <= store.legacy_rows[table]:
                legacy += 1
            prev, head = row["hash"], new_head
            if anchor is not None and n == anchor[table]["records"]:
                at_anchor = head
        if broken is None and anchor is not None:
            want = anchor[table]["records"]
            if n < want:
                broken = {
                    "seq": None,
                    "request_id": None,
                    "why": f"the store holds {n} rows, fewer than the {want} its anchor counted (rows deleted)",
                }
            elif want and not hmac.compare_digest(str(at_anchor).encode(), anchor[table]["head"].encode()):
                broken = {
                    "seq": None,
                    "request_id": None,
                    "why": f"the first {want} rows do not end in the head the anchor signed",
                }
        report[table] = {
            "records": n,
            "last_hash": prev,
            "head": head,
            "legacy_rows": legacy,
            "broken": broken,
        }
        if broken is not None:
            report["ok"] = False
    if anchor is not None:
        report["anchor"] = {t: anchor[t] for t in TABLES} | {"at": anchor.get("at")}
    return report
