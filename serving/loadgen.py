"""Open-loop HTTP load generator for the serving shim (run as its own process: ``python -m serving.loadgen``).

Request i is due at ``start + i / rate`` whatever happened to the requests before it (open loop: a
slow server does not slow the arrivals down), and its latency is measured from that due time to the
last byte of the response, so time spent waiting for a free connection counts (no coordinated
omission). A small raw-asyncio HTTP/1.1 client with keep-alive connections keeps the generator's own
cost per request to tens of microseconds, which matters when it shares two cores with the server.

Input: a JSON-lines file of request templates (decision requests); request i uses template
i mod T with ``request_id`` replaced by a unique id. Output: one JSON object with counts, status
codes, achieved rate and latency percentiles (milliseconds), written to ``--out`` or stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import numpy as np


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v.strip())
            elif k == b"connection" and v.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            raise ConnectionResetError("server closed the connection")
        return status, data

    def close(self) -> None:
        self.writer.close()


def _templates(path: str) -> list[tuple[bytes, bytes]]:
    """(prefix, suffix) around the request id of each template."""
    out = []
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            d = json.loads(line)
            d["request_id"] = "@@RID@@"
            s = json.dumps(d, separators=(",", ":")).encode()
            a, b = s.split(b"@@RID@@")
            out.append((a, b))
    if not out:
        raise SystemExit(f"{path}: no request templates")
    return out


async def run_load(
    host: str,
    port: int,
    templates: list[tuple[bytes, bytes]],
    rate: float,
    duration: float,
    connections: int = 64,
    prefix: str = "load",
    path: str = "/v1/decisions",
) -> dict[str, Any]:
    """Send ``rate * duration`` requests on a fixed schedule; returns latency statistics."""
    n = int(round(rate * duration))
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        r, w = await asyncio.open_connection(host, port)
        pool.put_nowait(_Conn(r, w))
    lat = np.full(n, np.nan)
    status = np.zeros(n, np.int32)
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    head_fmt = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"

    async def one(i: int, due: float) -> None:
        a, b = templates[i % len(templates)]
        body = a + f"{prefix}-{i}".encode() + b
        head = (head_fmt + f"Content-Length: {len(body)}\r\n\r\n").encode()
        conn = await pool.get()
        try:
            st, _ = await conn.request(head, body)
            status[i] = st
            lat[i] = loop.time() - due
            pool.put_nowait(conn)
        except Exception as exc:  # every failure is counted, the run goes on
            key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
            lat[i] = loop.time() - due
            conn.close()
            try:
                r, w = await asyncio.open_connection(host, port)
                pool.put_nowait(_Conn(r, w))
            except OSError as exc2:
                errors[type(exc2).__name__] = errors.get(type(exc2).__name__, 0) + 1

    tasks = []
    load0 = os.getloadavg()
    start = loop.time() + 0.05
    wall0 = time.time()
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    load1 = os.getloadavg()
    while not pool.empty():
        pool.get_nowait().close()
    ok = status == 200
    ms = lat * 1e3
    codes: dict[str, int] = {}
    for c in np.unique(status):
        codes[str(int(c))] = int((status == c).sum())
    good = ms[ok]

    def pct(q: float) -> float:
        return float(np.percentile(good, q)) if len(good) else float("nan")

    return {
        "requests": n,
        "ok": int(ok.sum()),
        "errors": int(n - ok.sum()),
        "status_codes": codes,
        "exceptions": errors,
        "target_rate": rate,
        "achieved_rate": n / elapsed if elapsed > 0 else float("nan"),
        "duration_s": elapsed,
        "connections": connections,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": float(good.max()) if len(good) else float("nan"),
        "mean_ms": float(good.mean()) if len(good) else float("nan"),
        "loadavg_start": list(load0),
        "loadavg_end": list(load1),
        "started": wall0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--templates", required=True, help="JSON-lines file of decision requests")
    ap.add_argument("--rate", type=float, default=500.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--prefix", default="load", help="request ids are PREFIX-i")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    res = asyncio.run(
        run_load(a.host, a.port, _templates(a.templates), a.rate, a.duration, a.connections, a.prefix)
    )
    text = json.dumps(res, indent=2)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
