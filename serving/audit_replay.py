"""How the SQLite audit store checks a row before replaying it (`ReplayChecks`, a mixin of
`serving.audit_sqlite.SqliteStore`): the row's own hashes and links, then a walk of the row chain from
it to the newest head this server trusts, so a row edited and re-hashed (alone or with every row after
it) is refused. See docs/design.md's audit section."""

from __future__ import annotations

import bisect
import hmac
import sqlite3

from restock.agents.records import GENESIS
from restock.serving.audit_chain import COVERED, AuditIntegrityError, check_row, row_hash, row_values


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two digests as bytes (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode(), b.encode())


class ReplayChecks:
    """Replay-time verification; the store provides ``legacy_rows``, ``legacy_schema``, ``_tlock``
    (a lock) and ``_trusted`` (per table, sorted ``(seq, head)`` pairs this server trusts)."""

    _CHECKED_SQL = (
        "SELECT d.*, (SELECT p.hash FROM {t} p WHERE p.seq < d.seq ORDER BY p.seq DESC LIMIT 1) AS prev_rec, "
        "(SELECT CASE WHEN p.seq <= ? THEN p.hash ELSE COALESCE(p.row_hash, p.hash) END FROM {t} p "
        "WHERE p.seq < d.seq ORDER BY p.seq DESC LIMIT 1) AS prev_row FROM {t} d WHERE d.request_id = ?"
    )

    # a store read as written by restock.audit/1 or /2 (read-only, not migrated) has no row_hash column
    _LEGACY_SQL = (
        "SELECT d.*, (SELECT p.hash FROM {t} p WHERE p.seq < d.seq ORDER BY p.seq DESC LIMIT 1) AS prev_rec, "
        "? AS prev_row FROM {t} d WHERE d.request_id = ?"
    )

    def _checked(self, con: sqlite3.Connection, request_id: str) -> tuple[str, str] | None:
        """(request_sha256, response body) of a stored decision after checking its row (its record's
        hash and link, its row hash and link, its request digest); AuditIntegrityError when it fails."""
        cur = con.cursor()
        cur.row_factory = sqlite3.Row
        sql = self._CHECKED_SQL if self.legacy_rows["decisions"] != float("inf") else self._LEGACY_SQL
        legacy = self.legacy_rows["decisions"]
        row = cur.execute(
            sql.format(t="decisions"), (min(legacy, 2**62) if legacy != float("inf") else None, request_id)
        ).fetchone()
        if row is None:
            return None
        why, head, body = self.check_row(
            "decisions", row, row["prev_rec"] or GENESIS, row["prev_row"] or GENESIS
        )
        if why is None:
            why = self._walk(con, "decisions", row["seq"], head)
        if why is not None:
            raise AuditIntegrityError(
                f"the stored decision for request_id {request_id!r} (seq {row['seq']}) fails audit "
                f"verification ({why}); it is not replayed"
            )
        return row["request_sha256"], body

    TRUST_EVERY = 256  # a walk verifies at most this many rows past the one it checks (a writer)

    def _trust(self, table: str, seq: int, head: str) -> None:
        with self._tlock:
            lst = self._trusted[table]
            if not lst or seq > lst[-1][0]:
                lst.append((seq, head))
            else:
                i = bisect.bisect_left(lst, (seq,))
                if i == len(lst) or lst[i][0] != seq:
                    lst.insert(i, (seq, head))

    def _walk(
        self,
        con: sqlite3.Connection,
        table: str,
        seq: int,
        head: str,
        target: int | None = None,
        want: str | None = None,
    ) -> str | None:
        """Follow the row chain from row ``seq`` (whose recomputed head is ``head``) to the first trusted
        head at or after it (or to ``target``, expecting ``want``); a read-only store with nothing
        trusted walks to the end of the table. Returns why it fails, or None. Each row's hash is
        recomputed from its columns, so a row edited and re-hashed (alone, or with every row after it)
        does not reach the trusted head. Rows verified on the way become trusted every
        ``TRUST_EVERY`` rows, so later walks stay short."""
        if type(seq) is not int:
            return "the seq column is not an integer"
        if target is None:
            with self._tlock:
                lst = self._trusted[table]
                i = bisect.bisect_left(lst, (seq,))
                if i < len(lst):
                    target, want = lst[i]
        if target is not None and target == seq:
            return None if _same(head, want) else "does not match the chain head this server holds"
        cur = con.cursor()
        cur.row_factory = sqlite3.Row
        cols = "*" if seq < self.legacy_rows[table] else ", ".join((*COVERED[table], "row_hash"))
        q = f"SELECT {cols} FROM {table} WHERE seq > ?" + (" AND seq <= ?" if target is not None else "")
        args = (seq,) if target is None else (seq, target)
        prev_rec = cur.execute(f"SELECT hash FROM {table} WHERE seq = ?", (seq,)).fetchone()
        prev_rec = prev_rec[0] if prev_rec else None
        last, found = seq, []
        for r in cur.execute(q + " ORDER BY seq", args):
            s_ = r["seq"]
            if type(s_) is int and 0 < s_ <= self.legacy_rows[table]:  # the record chain is the row chain
                why, new, _ = self.check_row(table, r, prev_rec, head)
                if why is not None:
                    return f"breaks the chain at seq {s_} after it ({why})"
            else:
                try:
                    new = row_hash(head, row_values(table, r))
                except (TypeError, IndexError):
                    return f"breaks the chain at seq {s_} after it (a column of the wrong type)"
                rh = r["row_hash"]
                if not isinstance(rh, str) or not hmac.compare_digest(rh.encode(), new.encode()):
                    return f"breaks the chain at seq {s_} after it (row_hash does not link)"
            head, prev_rec, last = new, r["hash"], s_
            if type(s_) is int and s_ % self.TRUST_EVERY == 0:
                found.append((s_, head))
        if target is not None:
            if last != target or not _same(head, want):
                return "does not lead to the chain head this server holds (rows edited, re-hashed or removed)"
            for s_, h in found:
                self._trust(table, s_, h)
        return None

    def check_row(self, table: str, row, prev_rec: str, prev_row: str) -> tuple[str | None, str, str | None]:
        """`serving.audit_chain.check_row` under this store's legacy rules."""
        return check_row(table, row, prev_rec, prev_row, self.legacy_schema, self.legacy_rows)
