"""The durable audit store: every served decision, hash-chained, committed before its response is sent.

SQLite by default (``sqlite:///path/to/audit.db``, or a plain path): WAL journal and
``synchronous=FULL``, so a decision whose response went out survives a killed process and a power
cut; ``durability="normal"`` (``synchronous=NORMAL``) survives a killed process only, and is faster
on disks with slow fsync. Records are `agents.records.DecisionRecord` objects chained in commit order
(`agents.records.chain`); shadow decisions (candidate computed, not executed) have a chain of their
own. Other databases can implement the same `AuditStore` protocol; `open_store` refuses URL schemes
it does not know.

Schema (one row per decision; ``seq`` is the chain order)::

    decisions(seq INTEGER PRIMARY KEY, request_id TEXT UNIQUE, ts, node, role, period, route,
              policy_id, policy_version, request_sha256, request TEXT (canonical JSON),
              record TEXT (DecisionRecord JSON, with prev_hash and hash), prev_hash, hash,
              response TEXT (the response body without its record: `full_response` rebuilds the
              exact body; restock.audit/1 stores held the whole body))
    shadow_decisions(seq, request_id UNIQUE, ts, node, role, period, policy_id, policy_version,
              record, prev_hash, hash)
    meta(key PRIMARY KEY, value)        schema version, created time

`verify` recomputes both chains and checks that every stored response embeds the record it was
chained with; `export` writes JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, Protocol

from agents.records import GENESIS, DecisionRecord, canonical_bytes
from serving.artifact import now_iso

# /2: the ``response`` column holds the response body without its record (the ``record`` column has
# it; `full_response` joins them), a third fewer bytes per decision. /1 stores hold whole bodies and
# are still read and verified.
SCHEMA_VERSION = "restock.audit/2"


def full_response(head: str, record_json: str) -> str:
    """The response body: its head (a JSON object) with ``"record"`` appended as the last member."""
    return head[:-1] + ',"record":' + record_json + "}"


_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
  seq INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL UNIQUE,
  ts TEXT NOT NULL,
  node TEXT NOT NULL,
  role TEXT NOT NULL,
  period INTEGER NOT NULL,
  route TEXT NOT NULL,
  policy_id TEXT NOT NULL,
  policy_version TEXT NOT NULL,
  request_sha256 TEXT NOT NULL,
  request TEXT NOT NULL,
  record TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  response TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS shadow_decisions (
  seq INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL UNIQUE,
  ts TEXT NOT NULL,
  node TEXT NOT NULL,
  role TEXT NOT NULL,
  period INTEGER NOT NULL,
  policy_id TEXT NOT NULL,
  policy_version TEXT NOT NULL,
  record TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
"""


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


@dataclass
class Entry:
    """A decision waiting to be committed: its record (unchained) and how to build its response."""

    request_id: str
    request_sha256: str
    request_json: str
    node: str
    role: str
    period: int
    route: str
    record: DecisionRecord
    head: str  # the response body without its record (`full_response` adds the chained record)
    shadow_record: DecisionRecord | None = None


class AuditStore(Protocol):
    """What the serving shim needs from an audit database."""

    def append(self, entries: list[Entry]) -> list[tuple[str, str, str]]: ...

    def get(self, request_id: str) -> tuple[str, str] | None: ...

    def verify(self) -> dict[str, Any]: ...

    def export(self, out: str | os.PathLike) -> int: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def parse_url(url: str) -> tuple[str, str]:
    """('sqlite', path) from ``sqlite:///rel/path.db``, ``sqlite:////abs/path.db`` or a plain path."""
    if "://" not in url:
        return "sqlite", url
    scheme, rest = url.split("://", 1)
    if scheme != "sqlite":
        raise ValueError(
            f"unsupported audit database URL scheme {scheme!r}: only sqlite:///PATH for now (a server database "
            "plugs in by implementing serving.audit.AuditStore)"
        )
    if not rest.startswith("/"):
        raise ValueError(f"audit URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return "sqlite", rest[1:]


def open_store(url: str, durability: str = "full") -> SqliteStore:
    kind, path = parse_url(url)
    return SqliteStore(path, durability=durability)


class SqliteStore:
    """The SQLite audit store (one writer connection, one reader connection; thread-safe)."""

    def __init__(self, path: str | os.PathLike, durability: str = "full"):
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durability = durability
        self._w = self._connect()
        self._w.executescript(_DDL)
        self._w.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?), ('created', ?)",
            (SCHEMA_VERSION, now_iso()),
        )
        self._w.commit()
        self.schema = self._w.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        if self.schema not in ("restock.audit/1", SCHEMA_VERSION):
            raise ValueError(f"{self.path}: audit schema {self.schema!r} is newer than this restock reads")
        self._heads = self.schema != "restock.audit/1"  # responses stored without their record
        self._r = self._connect()
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self.last = {t: self._last_hash(t) for t in ("decisions", "shadow_decisions")}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._unchecked = 0  # bytes committed since the checkpointer was last woken
        self._ckpt = threading.Thread(target=self._checkpoints, name="audit-checkpoint", daemon=True)
        self._ckpt.start()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        # 64 KiB pages for a new database (no effect on an existing one): a decision row is ~7 KB of
        # JSON, which 4 KiB pages split into overflow chains; measured here, a 64-row commit of such
        # rows took 25 us a row with 4 KiB pages and 14 us with 64 KiB (WAL, synchronous=FULL)
        con.execute("PRAGMA page_size=65536")
        con.execute("PRAGMA journal_mode=WAL")
        # no checkpoint inside a commit: `_checkpoints` copies the WAL back on its own thread (a
        # commit that checkpointed copied megabytes and stalled the requests behind it)
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute(f"PRAGMA synchronous={self.durability.upper()}")
        return con

    CHECKPOINT_BYTES = 8 << 20  # WAL growth that wakes the checkpointer

    def _checkpoints(self) -> None:
        """The checkpointer thread: PASSIVE checkpoints (they never block the writer or readers) on its
        own connection, once ``CHECKPOINT_BYTES`` of WAL have been written or every 5 s."""
        con = self._connect()
        try:
            while not self._stop.is_set():
                self._wake.wait(5.0)
                self._wake.clear()
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or closing: the next round retries
        finally:
            con.close()

    def _last_hash(self, table: str) -> str:
        row = self._w.execute(f"SELECT hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
        return row[0] if row else GENESIS

    def describe(self) -> dict[str, Any]:
        return {"backend": "sqlite", "path": str(self.path), "journal": "wal", "synchronous": self.durability}

    # ---------------------------------------------------------------- writing
    def append(self, entries: list[Entry]) -> list[tuple[str, str, str]]:
        """Chain and commit entries in one transaction; returns (request_id, response body, status) per
        entry, status "new" for a decision written now.

        An entry whose request_id is already stored is not written again: with the same request digest
        its stored response comes back ("replay"), with another one ("conflict") the stored response
        too, for the caller to refuse. This is the authoritative idempotency check (callers may keep a
        cache of recent ids in front of it).
        """
        with self._wlock:
            con = self._w
            con.execute("BEGIN IMMEDIATE")
            try:
                out, last = self._insert(con, entries)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self.last = last
            # about what was written: request and response texts, plus ~4 KB a row for the record
            self._unchecked += sum(len(e.request_json) + len(e.head) + 4096 for e in entries)
            if self._unchecked >= self.CHECKPOINT_BYTES:
                self._unchecked = 0
                self._wake.set()
        return out

    def _insert(self, con: sqlite3.Connection, entries: list[Entry]) -> tuple[list, dict]:
        """Insert inside an open transaction: the ids are looked up in one query, the rows chained in
        order and written with one executemany per table."""
        ids = [e.request_id for e in entries]
        stored: dict[str, tuple[str, str]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = "SELECT request_id, request_sha256, response, record FROM decisions WHERE request_id IN (%s)"
            for rid, sha, resp, rec in con.execute(q % ",".join("?" * len(part)), part):
                stored[rid] = (sha, self._body(resp, rec))
        last = dict(self.last)
        out: list[tuple[str, str, str]] = []
        rows, shadow_rows = [], []
        for e in entries:
            prior = stored.get(e.request_id)
            if prior is not None:
                out.append((e.request_id, prior[1], "replay" if prior[0] == e.request_sha256 else "conflict"))
                continue
            r = e.record
            rj = chain_json(r, last["decisions"])
            last["decisions"] = r.hash
            resp = full_response(e.head, rj)
            rows.append(
                (
                    e.request_id,
                    r.timestamp,
                    e.node,
                    e.role,
                    e.period,
                    e.route,
                    r.policy_id,
                    r.policy_version,
                    e.request_sha256,
                    e.request_json,
                    rj,
                    r.prev_hash,
                    r.hash,
                    e.head if self._heads else resp,
                )
            )
            stored[e.request_id] = (e.request_sha256, resp)  # a repeat later in this batch replays it
            if e.shadow_record is not None:
                sr = e.shadow_record
                sj = chain_json(sr, last["shadow_decisions"])
                last["shadow_decisions"] = sr.hash
                shadow_rows.append(
                    (
                        e.request_id,
                        sr.timestamp,
                        e.node,
                        e.role,
                        e.period,
                        sr.policy_id,
                        sr.policy_version,
                        sj,
                    )
                    + (sr.prev_hash, sr.hash)
                )
            out.append((e.request_id, resp, "new"))
        con.executemany(
            "INSERT INTO decisions(request_id, ts, node, role, period, route, policy_id, policy_version, "
            "request_sha256, request, record, prev_hash, hash, response) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if shadow_rows:
            con.executemany(
                "INSERT INTO shadow_decisions(request_id, ts, node, role, period, policy_id, "
                "policy_version, record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                shadow_rows,
            )
        return out, last

    # ---------------------------------------------------------------- reading
    def _body(self, response: str, record: str) -> str:
        """The response body from its stored columns."""
        return full_response(response, record) if self._heads else response

    def get(self, request_id: str) -> tuple[str, str] | None:
        """(request_sha256, response body) of a committed decision, or None."""
        with self._rlock:
            row = self._r.execute(
                "SELECT request_sha256, response, record FROM decisions WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else (row[0], self._body(row[1], row[2]))

    def get_many(self, request_ids: list[str]) -> dict[str, tuple[str, str]]:
        """{request_id: (request_sha256, response body)} of the ids that are stored."""
        out: dict[str, tuple[str, str]] = {}
        with self._rlock:
            for i in range(0, len(request_ids), 500):
                part = request_ids[i : i + 500]
                q = (
                    "SELECT request_id, request_sha256, response, record FROM decisions "
                    "WHERE request_id IN (%s)"
                )
                for rid, sha, resp, rec in self._r.execute(q % ",".join("?" * len(part)), part):
                    out[rid] = (sha, self._body(resp, rec))
        return out

    def recent_ids(self, n: int) -> list[tuple[str, str]]:
        """(request_id, request_sha256) of the last ``n`` decisions, oldest first (to warm a cache)."""
        with self._rlock:
            rows = self._r.execute(
                "SELECT request_id, request_sha256 FROM decisions ORDER BY seq DESC LIMIT ?", (n,)
            ).fetchall()
        return rows[::-1]

    def count(self, table: str = "decisions") -> int:
        with self._rlock:
            return int(self._r.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def rows(self, table: str = "decisions") -> Iterator[sqlite3.Row]:
        con = sqlite3.connect(self.path, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            yield from con.execute(f"SELECT * FROM {table} ORDER BY seq")
        finally:
            con.close()

    def verify(self) -> dict[str, Any]:
        """Recompute both hash chains; report the count and the first broken row of each."""
        report: dict[str, Any] = {"ok": True}
        for table in ("decisions", "shadow_decisions"):
            prev = GENESIS
            n = 0
            broken = None
            for row in self.rows(table):
                n += 1
                why = None
                try:
                    r = DecisionRecord.from_json(row["record"])
                except (ValueError, TypeError) as exc:
                    why = f"unreadable record: {exc}"
                else:
                    if r.prev_hash != prev or row["prev_hash"] != prev:
                        why = "prev_hash does not link to the record before"
                    elif r.compute_hash() != r.hash or row["hash"] != r.hash:
                        why = "hash does not match the record's content"
                    elif r.request_id != row["request_id"]:
                        why = "request_id column differs from the record"
                    elif table == "decisions":
                        try:
                            resp = json.loads(self._body(row["response"], row["record"]))
                        except json.JSONDecodeError:
                            resp = {}
                        if not isinstance(resp, dict) or resp.get("request_id") != r.request_id:
                            why = "the stored response is not this request's"
                        elif resp.get("record", {}).get("hash") != r.hash:
                            why = "the stored response does not carry this record"
                if why is not None:
                    broken = {"seq": row["seq"], "request_id": row["request_id"], "why": why}
                    break
                prev = r.hash
            report[table] = {"records": n, "last_hash": prev, "broken": broken}
            if broken is not None:
                report["ok"] = False
        return report

    def export(self, out: str | os.PathLike) -> int:
        """Write every decision (then every shadow decision) as JSON lines; returns the line count."""
        n = 0
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for table in ("decisions", "shadow_decisions"):
                for row in self.rows(table):
                    d = {
                        "table": table,
                        "seq": row["seq"],
                        "request_id": row["request_id"],
                        "node": row["node"],
                        "role": row["role"],
                        "period": row["period"],
                        "route": row["route"] if table == "decisions" else "shadow",
                        "record": json.loads(row["record"]),
                    }
                    if table == "decisions":
                        d["request"] = json.loads(row["request"])
                    fh.write(json.dumps(d, separators=(",", ":")) + "\n")
                    n += 1
        os.replace(tmp, out)
        return n

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._ckpt.join(timeout=30)
        try:  # copy the rest of the WAL back and truncate it (best effort: a reader may hold it)
            with self._wlock:
                self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass
        for con in (self._w, self._r):
            try:
                con.close()
            except sqlite3.Error:
                pass


class GroupCommitter:
    """Commits entries from many concurrent requests in shared transactions, on one writer thread.

    ``submit(entries)`` returns a Future of the responses; whatever is queued while a commit runs goes
    into the next one, so one fsync covers many requests under load and a lone request waits for one.
    """

    def __init__(self, store: SqliteStore, max_batch: int = 256):
        self.store = store
        self.max_batch = max_batch
        self._q: SimpleQueue = SimpleQueue()
        self._stop = False
        self._t = threading.Thread(target=self._loop, name="audit-writer", daemon=True)
        self._t.start()
        self.commits = 0

    def submit(self, entries: list[Entry]) -> Future:
        f: Future = Future()
        self._q.put((entries, f))
        return f

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            items = [item]
            n = len(item[0])
            while n < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                items.append(nxt)
                n += len(nxt[0])
            flat = [e for es, _ in items for e in es]
            try:
                res = self.store.append(flat)
            except BaseException as exc:
                for _, f in items:
                    f.set_exception(exc)
                continue
            self.commits += 1
            i = 0
            for es, f in items:
                f.set_result(res[i : i + len(es)])
                i += len(es)

    def close(self) -> None:
        self._q.put(None)
        self._t.join(timeout=10)
