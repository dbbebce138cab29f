"""The SQLite audit store (`SqliteStore`): WAL journal, one writer and one reader connection, a
checkpointer thread that also writes the anchor. `serving.audit` describes the schema and opens
stores (`open_store`); the chains and their verification are `serving.audit_chain`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restock.agents.records import GENESIS
from restock.serving.artifact import now_iso
from restock.serving.audit_chain import (
    LEGACY_SCHEMAS,
    SCHEMA_VERSION,
    TABLES,
    AuditIntegrityError,
    anchor_path,
    chain_json,
    full_response,
    make_anchor,
    read_anchor,
    row_bytes,
    verify_store,
)
from restock.serving.audit_replay import ReplayChecks, _same

if TYPE_CHECKING:
    from restock.serving.audit import Entry

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
  response TEXT NOT NULL,
  row_hash TEXT
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
  hash TEXT NOT NULL,
  row_hash TEXT
);
"""


_HEX64 = re.compile(r"[0-9a-f]{64}")


class SqliteStore(ReplayChecks):
    """The SQLite audit store (one writer connection, one reader connection; thread-safe).

    ``readonly``: open an existing store to read, verify or export it (no schema change, no migration,
    no checkpointer). ``anchors`` (default: when there is an ``anchor_key``): write a checkpoint of
    the chain heads, HMAC'd with ``anchor_key`` or unkeyed without one, to
    `anchor_path` every few seconds while rows are written, and on close; when that file exists at
    open, the store must still match it (`AuditIntegrityError` otherwise).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        durability: str = "full",
        readonly: bool = False,
        anchor_key: bytes | None = None,
        anchors: bool | None = None,
    ):
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self.readonly = readonly
        self.anchor_key = None if readonly else anchor_key
        # a writer anchors (keyed with anchor_key, else unkeyed) unless told not to
        self.anchoring = not readonly and (anchors if anchors is not None else anchor_key is not None)
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such audit database")
            self._w = None
            self._r = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            con = self._r
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._w = self._connect()
            self._w.executescript(_DDL)
            self._w.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?), ('created', ?)",
                (SCHEMA_VERSION, now_iso()),
            )
            con = self._w
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise ValueError(f"{self.path}: not a restock audit store ({exc})") from None
        self.schema = meta.get("schema")
        if self.schema not in (*LEGACY_SCHEMAS, SCHEMA_VERSION):
            raise ValueError(f"{self.path}: audit schema {self.schema!r} is not one this restock reads")
        if self.schema in LEGACY_SCHEMAS and not readonly:
            meta = self._migrate(self.schema)
            self.schema = SCHEMA_VERSION
        if self.schema in LEGACY_SCHEMAS:  # read-only, not migrated: every row is legacy
            self.legacy_schema: str | None = self.schema
            self.legacy_rows = {t: float("inf") for t in TABLES}
        else:
            self.legacy_schema = meta.get("legacy_schema")
            try:
                lr = json.loads(meta.get("legacy_rows", "{}"))
                self.legacy_rows = {t: int(lr.get(t, 0)) for t in TABLES}
            except (ValueError, TypeError, AttributeError):
                raise ValueError(f"{self.path}: meta.legacy_rows is unreadable") from None
        # trusted row-chain heads: (seq, head) per table, sorted; a replay follows the chain from the
        # row it returns to the first of these at or after it (`_walk`). A writer trusts its head at
        # open (checked against the anchor beside the store when there is one), every row it writes,
        # and every ``TRUST_EVERY``-th row a walk has verified; a read-only store trusts nothing but the
        # chain itself (its walks run to the end of the table).
        self._trusted: dict[str, list[tuple[int, str]]] = {t: [] for t in TABLES}
        self._tlock = threading.Lock()
        if readonly:
            self._wlock = threading.Lock()
            self._rlock = threading.Lock()
            self._ckpt = None
            return
        self._r = self._connect()
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self.last: dict[str, str] = {}  # record chain head per table
        self.row_last: dict[str, str] = {}  # row chain head per table
        self.n: dict[str, int] = {}  # rows per table
        self.next_seq: dict[str, int] = {}
        for t in TABLES:
            row = self._w.execute(f"SELECT seq, hash, row_hash FROM {t} ORDER BY seq DESC LIMIT 1").fetchone()
            self.last[t] = row[1] if row else GENESIS
            # a row written under a legacy schema heads the row chain with its record hash
            self.row_last[t] = (row[1] if row[0] <= self.legacy_rows[t] else row[2]) if row else GENESIS
            self.next_seq[t] = row[0] + 1 if row else 1
            self.n[t] = int(self._w.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
        self._check_newest()
        self.anchors_written = 0
        self._anchored: tuple | None = None
        if self.anchoring:
            if anchor_path(self.path).exists():
                self._check_anchor_file()
            elif meta.get("anchored") and any(self.n.values()):
                raise AuditIntegrityError(
                    f"{self.path}: its anchor {anchor_path(self.path)} is missing (deleted?); check the store "
                    f"(restock audit verify {self.path} --anchor A_COPY_YOU_TRUST), then restock audit anchor "
                    f"{self.path} --out {anchor_path(self.path)}"
                )
            self.write_anchor(force=True)
            if not meta.get("anchored"):
                self._w.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('anchored', '1')")
        for t in TABLES:
            if self.n[t]:
                self._trust(t, self.next_seq[t] - 1, self.row_last[t])
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._unchecked = 0  # bytes committed since the checkpointer was last woken
        self._ckpt = threading.Thread(target=self._checkpoints, name="audit-checkpoint", daemon=True)
        self._ckpt.start()

    def _migrate(self, old: str) -> dict[str, str]:
        """A restock.audit/1 or /2 store to /3: the row_hash columns added; the rows there are now
        are recorded as legacy (verified by ``old``'s rules); rows written from now on are row-chained."""
        con = self._w
        con.execute("BEGIN IMMEDIATE")
        try:
            legacy = {}
            for t in TABLES:
                cols = {r[1] for r in con.execute(f"PRAGMA table_info({t})")}
                if "row_hash" not in cols:
                    con.execute(f"ALTER TABLE {t} ADD COLUMN row_hash TEXT")
                legacy[t] = int(con.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {t}").fetchone()[0])
            con.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [
                    ("schema", SCHEMA_VERSION),
                    ("legacy_schema", old),
                    ("legacy_rows", json.dumps(legacy, sort_keys=True)),
                    ("migrated", now_iso()),
                ],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return dict(con.execute("SELECT key, value FROM meta").fetchall())

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
    ANCHOR_SECONDS = 5.0  # how often the checkpointer writes an anchor (when rows were added)

    def _checkpoints(self) -> None:
        """The checkpointer thread: PASSIVE checkpoints (they never block the writer or readers) on its
        own connection, once ``CHECKPOINT_BYTES`` of WAL have been written or every 5 s; and the
        anchor, when there is a key and rows were added."""
        con = self._connect()
        try:
            while not self._stop.is_set():
                self._wake.wait(self.ANCHOR_SECONDS)
                self._wake.clear()
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or closing: the next round retries
                try:
                    self.write_anchor()
                except OSError:
                    pass  # the next round retries
        finally:
            con.close()

    # ---------------------------------------------------------------- anchors
    def heads(self) -> dict[str, dict[str, Any]]:
        """The committed row count and row chain head of each table (a writer's view)."""
        with self._wlock:
            return {t: {"records": self.n[t], "head": self.row_last[t]} for t in TABLES}

    def write_anchor(self, force: bool = False) -> bool:
        """Write the current heads, HMAC'd, to `anchor_path` (atomically) when they changed."""
        if not self.anchoring:
            return False
        h = self.heads()
        key = tuple((t, h[t]["records"], h[t]["head"]) for t in TABLES)
        if key == self._anchored and not force:
            return False
        a = make_anchor(h, self.anchor_key)
        p = anchor_path(self.path)
        tmp = p.with_name(f".{p.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(a, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
        self._anchored = key
        self.anchors_written += 1
        return True

    def _check_newest(self) -> None:
        """At open: the chain heads the writer continues from (the newest row's row_hash, or its record
        hash for a legacy row) are well-formed digests. A newest row whose content was edited is not
        refused here: replays that reach it refuse (`_walk`), and verify reports it."""
        for t in TABLES:
            for name, v in (("row_hash", self.row_last[t]), ("hash", self.last[t])):
                if not (isinstance(v, str) and _HEX64.fullmatch(v)):
                    raise AuditIntegrityError(
                        f"{self.path}: the newest row of {t} (seq {self.next_seq[t] - 1}) has no usable "
                        f"{name} ({str(v)[:20]!r}...): a writer cannot continue its chain; run restock audit "
                        f"verify {self.path}"
                    )

    def _check_anchor_file(self) -> None:
        """At open: the store still holds the rows the anchor beside it counted, ending in its head."""
        p = anchor_path(self.path)
        a = read_anchor(p, self.anchor_key)
        for t in TABLES:
            n, head = a[t]["records"], a[t]["head"]
            if self.n[t] < n:
                raise AuditIntegrityError(
                    f"{self.path}: {t} holds {self.n[t]} rows, fewer than the {n} its anchor {p} counted "
                    "(rows deleted); run restock audit verify"
                )
            if n:
                row = self._w.execute(
                    f"SELECT seq, CASE WHEN seq <= ? THEN hash ELSE COALESCE(row_hash, hash) END FROM {t} "
                    "ORDER BY seq LIMIT 1 OFFSET ?",
                    (min(self.legacy_rows[t], 2**62), n - 1),
                ).fetchone()
                if row is None or not isinstance(row[1], str) or not _same(row[1], head):
                    raise AuditIntegrityError(
                        f"{self.path}: {t} row {n} does not end in the head its anchor {p} signed; "
                        "run restock audit verify"
                    )
                # the rows written after the anchor (up to 5 s of them) must chain from its head
                self._trust(t, row[0], head)
                why = self._walk(self._w, t, row[0], head, self.next_seq[t] - 1, self.row_last[t])
                if why is not None:
                    raise AuditIntegrityError(
                        f"{self.path}: {t} rows after the one its anchor {p} signed {why}; run restock audit verify"
                    )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "sqlite",
            "path": str(self.path),
            "journal": "wal",
            "synchronous": self.durability,
            "schema": self.schema,
            "anchor": str(anchor_path(self.path)) if self.anchoring else None,
            "anchor_keyed": self.anchoring and self.anchor_key is not None,
        }

    # ---------------------------------------------------------------- writing
    def append(self, entries: list[Entry]) -> list[tuple[str, str, str]]:
        """Chain and commit entries in one transaction; returns (request_id, response body, status) per
        entry, status "new" for a decision written now.

        An entry whose request_id is already stored is not written again: with the same request digest
        its stored response comes back ("replay"), with another one ("conflict") the stored response
        too, for the caller to refuse; a stored row that fails verification comes back as "tampered"
        with the reason instead of a body. This is the authoritative idempotency check (callers may
        keep a cache of recent ids in front of it).
        """
        with self._wlock:
            con = self._w
            con.execute("BEGIN IMMEDIATE")
            try:
                out, state = self._insert(con, entries)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self.last, self.row_last, self.n, self.next_seq = state[:4]
            for t, seq, head in state[4]:
                self._trust(t, seq, head)
            # about what was written: request and response texts, plus ~4 KB a row for the record
            self._unchecked += sum(len(e.request_json) + len(e.head) + 4096 for e in entries)
            if self._unchecked >= self.CHECKPOINT_BYTES:
                self._unchecked = 0
                self._wake.set()
        return out

    def _insert(self, con: sqlite3.Connection, entries: list[Entry]) -> tuple[list, tuple]:
        """Insert inside an open transaction: the ids are looked up in one query, the rows chained in
        order and written with one executemany per table."""
        ids = [e.request_id for e in entries]
        stored: dict[str, tuple[str, str | None]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = "SELECT request_id, request_sha256 FROM decisions WHERE request_id IN (%s)"
            for rid, sha in con.execute(q % ",".join("?" * len(part)), part):
                stored[rid] = (sha, None)
        last, row_last, n, nxt = dict(self.last), dict(self.row_last), dict(self.n), dict(self.next_seq)
        out: list[tuple[str, str, str]] = []
        rows, shadow_rows = [], []
        trusted: list[tuple[str, int, str]] = []
        sha256 = hashlib.sha256

        def link(table: str, seq: int, values: list) -> str:
            """Chain row ``seq`` of ``table`` onto its row head; advance the head, the count and the next seq."""
            rh = sha256(row_last[table].encode() + row_bytes(values)).hexdigest()
            row_last[table] = rh
            if seq % self.TRUST_EVERY == 0:
                trusted.append((table, seq, rh))
            nxt[table] = seq + 1
            n[table] += 1
            return rh

        for e in entries:
            prior = stored.get(e.request_id)
            if prior is not None:
                sha, body = prior
                if body is None:  # a row committed before this transaction: checked before it is replayed
                    try:
                        sha, body = self._checked(con, e.request_id)
                    except AuditIntegrityError as exc:
                        out.append((e.request_id, str(exc), "tampered"))
                        continue
                out.append((e.request_id, body, "replay" if sha == e.request_sha256 else "conflict"))
                continue
            r = e.record
            rj = chain_json(r, last["decisions"])
            last["decisions"] = r.hash
            seq = nxt["decisions"]
            values = [
                seq,
                e.request_id,
                r.timestamp,
                e.node,
                e.role,
                e.period,
                e.route,
                r.policy_id,
                r.policy_version,
                e.request_sha256,
                r.hash,
                e.head,
            ]
            rh = link("decisions", seq, values)
            rows.append((*values[:10], e.request_json, rj, r.prev_hash, r.hash, e.head, rh))
            resp = full_response(e.head, rj)
            stored[e.request_id] = (e.request_sha256, resp)  # a repeat later in this batch replays it
            if e.shadow_record is not None:
                sr = e.shadow_record
                sj = chain_json(sr, last["shadow_decisions"])
                last["shadow_decisions"] = sr.hash
                sseq = nxt["shadow_decisions"]
                sv = [
                    sseq,
                    e.request_id,
                    sr.timestamp,
                    e.node,
                    e.role,
                    e.period,
                    sr.policy_id,
                    sr.policy_version,
                    sr.hash,
                ]
                srh = link("shadow_decisions", sseq, sv)
                shadow_rows.append((*sv[:8], sj, sr.prev_hash, sr.hash, srh))
            out.append((e.request_id, resp, "new"))
        con.executemany(
            "INSERT INTO decisions(seq, request_id, ts, node, role, period, route, policy_id, policy_version, "
            "request_sha256, request, record, prev_hash, hash, response, row_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if shadow_rows:
            con.executemany(
                "INSERT INTO shadow_decisions(seq, request_id, ts, node, role, period, policy_id, "
                "policy_version, record, prev_hash, hash, row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                shadow_rows,
            )
        for t in TABLES:  # the new heads
            if nxt[t] != self.next_seq[t]:
                trusted.append((t, nxt[t] - 1, row_last[t]))
        return out, (last, row_last, n, nxt, trusted)

    def get(self, request_id: str) -> tuple[str, str] | None:
        """(request_sha256, response body) of a committed decision, or None; the row is verified first
        (AuditIntegrityError when it does not)."""
        with self._rlock:
            return self._checked(self._r, request_id)

    def get_many(self, request_ids: list[str]) -> dict[str, tuple[str, str]]:
        """{request_id: (request_sha256, response body)} of the ids that are stored (each verified)."""
        out: dict[str, tuple[str, str]] = {}
        with self._rlock:
            found: list[str] = []
            for i in range(0, len(request_ids), 500):
                part = request_ids[i : i + 500]
                q = "SELECT request_id FROM decisions WHERE request_id IN (%s)"
                found += [rid for (rid,) in self._r.execute(q % ",".join("?" * len(part)), part)]
            for rid in found:
                got = self._checked(self._r, rid)
                if got is not None:
                    out[rid] = got
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

    def verify(self, anchor: dict[str, Any] | None = None) -> dict[str, Any]:
        """Recompute both chains; ``anchor`` (from `read_anchor`) also checked (`audit_chain.verify_store`)."""
        return verify_store(self, anchor)

    def export(self, out: str | os.PathLike) -> int:
        """Write every decision (then every shadow decision) as JSON lines; returns the line count."""
        n = 0
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for table in TABLES:
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
        if self._ckpt is not None:
            self._stop.set()
            self._wake.set()
            self._ckpt.join(timeout=30)
            try:  # copy the rest of the WAL back and truncate it (best effort: a reader may hold it)
                with self._wlock:
                    self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass
            try:
                self.write_anchor()
            except OSError:
                pass
        for con in (self._w, self._r):
            if con is None:
                continue
            try:
                con.close()
            except sqlite3.Error:
                pass
