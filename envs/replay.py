"""Replay traces: ``date,store,sku,units`` CSV files read into a [periods, stores, SKUs] demand trace
(column-wise NumPy, no work per row in Python). The replay demand model (`envs.demand`, KIND_REPLAY)
plays such a trace back."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

MAX_REPLAY_BYTES = 64 * 2**20  # a replay CSV file
MAX_REPLAY_TRACE_BYTES = 2 * 2**30  # the [dates, stores, SKUs] float64 trace built from it

# ------------------------------------------------------------------------------------------------
# replay traces


def load_replay_csv(path: str | Path, store_names: list[str], sku_names: list[str]) -> np.ndarray:
    """Read ``date,store,sku,units`` rows into a [periods, stores, SKUs] float64 trace.

    Stores and SKUs may be given by name (``store_3``, a SKU name) or by zero-based index. A missing
    (date, store, SKU) row means zero units, and so does a date with no rows at all: the periods run
    from the first date to the last one. ISO dates (``2024-01-31``) make one period per step of their
    spacing (the greatest common divisor of the gaps: days for daily data, weeks for weekly data);
    whole numbers are period numbers; other labels are sorted as strings, one period per label seen
    (there is then no way to know a label is missing). Rows of one period, store and SKU add up.
    The file is parsed column-wise (no Python work per row).
    """
    import io

    from restock.envs.safeyaml import YamlInputError, decode_utf8, read_regular_file

    path = Path(path)
    where = f"demand.replay.path: {path}"
    try:
        text = decode_utf8(read_regular_file(path, "replay CSV file", MAX_REPLAY_BYTES), str(path))
    except YamlInputError as exc:
        raise ValueError(f"demand.replay.path: {exc}") from None
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ValueError(f"{where}: not valid CSV: {exc}") from None
    need = ("date", "store", "sku", "units")
    header = [h.strip() for h in table[0]] if table else []
    if not set(need).issubset(header):
        raise ValueError(f"{where} needs the columns date,store,sku,units (got {header or None})")
    lines = np.arange(2, len(table) + 1)  # file line of each data row
    body = table[1:]
    keep = np.fromiter((len(r) > 0 for r in body), bool, len(body))  # blank lines are skipped
    body = [r for r, k in zip(body, keep, strict=True) if k]
    lines = lines[keep]
    if not body:
        raise ValueError(f"{where} has no rows")
    width = np.fromiter(map(len, body), np.int64, len(body))
    short = np.flatnonzero(width < len(header))
    if short.size:
        raise ValueError(f"{where} line {lines[short[0]]}: a row needs all four columns")
    cols = {c: [r[header.index(c)] for r in body] for c in need}
    s = _index_column(np.asarray(cols["store"]), store_names, "store", where, lines)
    k = _index_column(np.asarray(cols["sku"]), sku_names, "sku", where, lines)
    units = np.full(len(body), np.nan)
    raw = np.char.strip(np.asarray(cols["units"], dtype=str))
    ok = np.char.str_len(raw) > 0
    try:
        units[ok] = raw[ok].astype(np.float64)
    except ValueError:  # find the first row that does not parse
        for n, v in enumerate(raw):
            try:
                float(v)
            except ValueError:
                raise ValueError(f"{where} line {lines[n]}: units {str(v)!r} is not a number") from None
    bad = np.flatnonzero(~np.isfinite(units) | (units < 0))
    if bad.size:
        raise ValueError(f"{where} line {lines[bad[0]]}: units must be a finite number >= 0")
    d, n_periods = _date_periods(np.asarray(cols["date"], dtype=str), where)
    need_bytes = 8.0 * n_periods * len(store_names) * len(sku_names)
    if need_bytes > MAX_REPLAY_TRACE_BYTES:
        raise ValueError(
            f"{where}: the trace needs dates x stores x SKUs x 8 bytes = {n_periods:,} x "
            f"{len(store_names):,} x {len(sku_names):,} x 8 = {need_bytes / 2**30:,.1f} GiB, over the limit of "
            f"{MAX_REPLAY_TRACE_BYTES / 2**30:g} GiB"
        )
    trace = np.zeros((n_periods, len(store_names), len(sku_names)))
    np.add.at(trace, (d, s, k), units)
    return trace


def _index_column(col: np.ndarray, names: list[str], what: str, where: str, lines: np.ndarray) -> np.ndarray:
    """Each cell's index in ``names`` (a name or a zero-based index), looked up once per distinct value."""
    uniq, inv = np.unique(np.char.strip(col.astype(str)), return_inverse=True)
    idx = {n: i for i, n in enumerate(names)}
    out = np.empty(len(uniq), np.int64)
    for u, v in enumerate(uniq):
        try:
            out[u] = _lookup(str(v), idx, len(names), what)
        except ValueError as exc:
            first = int(np.flatnonzero(inv == u)[0])
            raise ValueError(f"{where} line {lines[first]}: {exc}") from None
    return out[inv]


def _date_periods(col: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """(period of each row, number of periods) from the date column; see `load_replay_csv`."""
    import datetime as dt

    uniq, inv = np.unique(np.char.strip(col), return_inverse=True)
    try:
        ords = np.array([dt.date.fromisoformat(str(v)).toordinal() for v in uniq], np.int64)
    except ValueError:
        try:
            ords = np.array([int(v) for v in uniq], np.int64)
        except ValueError:
            return inv.astype(np.int64), len(uniq)  # labels: sorted as strings, no gaps to see
    gaps = np.diff(np.sort(ords))
    step = int(np.gcd.reduce(gaps)) if gaps.size else 1
    per = (ords - ords.min()) // max(step, 1)
    return per[inv].astype(np.int64), int(per.max()) + 1


def _lookup(v: str, names: dict[str, int], n: int, what: str) -> int:
    if v in names:
        return names[v]
    try:
        i = int(v)
    except ValueError:
        raise ValueError(f"unknown {what} {v!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"{what} index {i} out of range (0..{n - 1})")
    return i
