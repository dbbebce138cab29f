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
              exact body; restock.audit/1 stores held the whole body), row_hash)
    shadow_decisions(seq, request_id UNIQUE, ts, node, role, period, policy_id, policy_version,
              record, prev_hash, hash, row_hash)
    meta(key PRIMARY KEY, value)        schema version, created time, legacy rows

The hash chains (records, rows), the anchors and verification are `serving.audit_chain` (re-exported
here): a replay (`get`, `get_many`, a repeated request_id in `append`) checks the row it returns and
raises `AuditIntegrityError` instead of answering a row that does not verify.

Stores written by restock.audit/1 and /2 are migrated when a writer opens them: the ``row_hash``
column is added, and rows written before keep being verified by the rules they were written under
(``meta.legacy_rows``; `verify` says how many); the row chain continues from their record chain.

`verify` recomputes both chains and checks that every stored response embeds the record it was
chained with; `export` writes JSON lines.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any, Protocol

from restock.agents.records import DecisionRecord
from restock.serving.audit_chain import (
    ANCHOR_KIND,
    KEY_ENV,
    LEGACY_RULES,
    LEGACY_SCHEMAS,
    SCHEMA_VERSION,
    TABLES,
    AuditIntegrityError,
    anchor_mac,
    anchor_path,
    audit_key,
    chain_json,
    full_response,
    make_anchor,
    read_anchor,
    response_body,
    row_bytes,
    row_hash,
    verify_store,
)
from restock.serving.audit_sqlite import SqliteStore

__all__ = [
    "Entry",
    "AuditStore",
    "SqliteStore",
    "GroupCommitter",
    "open_store",
    "parse_url",
    # the chains and anchors (serving.audit_chain)
    "ANCHOR_KIND",
    "KEY_ENV",
    "LEGACY_RULES",
    "LEGACY_SCHEMAS",
    "SCHEMA_VERSION",
    "TABLES",
    "AuditIntegrityError",
    "anchor_mac",
    "anchor_path",
    "audit_key",
    "chain_json",
    "full_response",
    "make_anchor",
    "read_anchor",
    "response_body",
    "row_bytes",
    "row_hash",
    "verify_store",
]


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


def open_store(
    url: str, durability: str = "full", readonly: bool = False, anchors: bool = True
) -> SqliteStore:
    """The store at ``url``; ``readonly`` to inspect one (no migration); ``anchors``: a writer keeps
    an anchor beside the store, HMAC'd with RESTOCK_AUDIT_KEY when it is set, else unkeyed (see
    docs/design.md, "Audit anchors")."""
    kind, path = parse_url(url)
    return SqliteStore(
        path, durability=durability, readonly=readonly, anchor_key=audit_key(), anchors=anchors
    )


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
