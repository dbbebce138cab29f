"""HTTP hardening for the serving shim: bounds on what a client can make the server hold or wait for.

Request bodies are capped in size (413) and in arrival time (408) by the ASGI middleware `BodyLimit`
and, on the fast path, by `read_body`; request heads must arrive within ``HEADER_TIMEOUT`` seconds
(`timed_protocol`, a uvicorn protocol); validation errors listed in a 422 are bounded (`bounded_errors`);
bodies must be declared JSON (415 otherwise). `serving.app` wires these into the app and `serve`.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

DEFAULT_MAX_BODY = 256 * 1024
MAX_ERRORS = 20  # validation errors listed in a 422 body (``error_count`` says how many there were)
BODY_TIMEOUT = 15.0  # seconds a request body may take to arrive, from the first read (408 after)
HEADER_TIMEOUT = 10.0  # seconds a connection may take to send a request's headers (closed after)
KEEP_ALIVE = 5  # seconds an idle keep-alive connection is kept
LIMIT_CONCURRENCY = 1000  # connections (or requests in progress) at once; 503 beyond


def check_limits(
    header_timeout: float, body_timeout: float, keep_alive: float, limit_concurrency: int, max_body: int
) -> None:
    """ValueError starting with the parameter's name when a bound is not a positive finite number of
    seconds up to an hour, or a positive integer (a NaN or infinite timeout would be no bound)."""
    for name, v in (
        ("header_timeout", header_timeout),
        ("body_timeout", body_timeout),
        ("keep_alive", keep_alive),
    ):
        if type(v) not in (int, float) or not (math.isfinite(v) and 0 < v <= 3600):
            raise ValueError(f"{name}: a number of seconds in (0, 3600], not {v!r}")
    for name, v in (("limit_concurrency", limit_concurrency), ("max_body", max_body)):
        if type(v) is not int or v < 1:
            raise ValueError(f"{name}: a positive integer, not {v!r}")


def json_content_type(headers) -> bool:
    """Whether ASGI ``headers`` declare ``Content-Type: application/json`` (parameters allowed)."""
    for k, v in headers:
        if k == b"content-type":
            return v.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def bounded_errors(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """A 422 body: the first ``MAX_ERRORS`` errors (long inputs and messages cut) and their count."""
    shown = []
    for e in errors[:MAX_ERRORS]:
        e = dict(e)
        for k in ("msg", "input"):
            if isinstance(e.get(k), str) and len(e[k]) > 200:
                e[k] = e[k][:200] + "..."
        shown.append(e)
    return {"detail": shown, "error_count": len(errors)}


def json_error_body(status: int, detail: Any, **extra: Any) -> bytes:
    return json.dumps({"detail": detail, **extra}).encode()


NOT_JSON = "request bodies must be JSON: send Content-Type: application/json"


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


async def read_body(receive, max_body: int, declared: int = 0, timeout: float = BODY_TIMEOUT) -> bytes:
    """The whole request body from ASGI ``receive``: BodyTooLarge above ``max_body`` bytes (declared or
    streamed), BodyTooSlow when it has not all arrived ``timeout`` seconds after the first read."""
    if declared > max_body:
        raise BodyTooLarge
    chunks, size, more = [], 0, True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while more:
        try:
            msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise BodyTooSlow from None
        if msg["type"] != "http.request":
            raise BodyTooSlow  # the client went away
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise BodyTooLarge
        chunks.append(chunk)
        more = msg.get("more_body", False)
    return b"".join(chunks)


class BodyLimit:
    """Pure ASGI middleware: 413 for request bodies above ``max_body`` bytes (declared or streamed),
    408 for bodies still incomplete ``body_timeout`` seconds after the first read."""

    def __init__(self, app, max_body: int, body_timeout: float = BODY_TIMEOUT):
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    if int(v) > self.max_body:
                        return await self._reject(send)
                except ValueError:
                    pass
        seen = 0
        started = False
        complete = False
        deadline = None

        async def limited():
            nonlocal seen, complete, deadline
            if complete:  # the body is in: later reads wait for a disconnect, untimed
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.body_timeout
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise BodyTooSlow from None
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
                complete = not msg.get("more_body", False)
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)
        except BodyTooSlow:
            if not started:
                await self._reject(send, 408)

    async def _reject(self, send, status: int = 413):
        if status == 413:
            body = json_error_body(
                413, f"request body larger than {self.max_body} bytes", limit=self.max_body
            )
        else:
            body = json_error_body(408, f"request body not received within {self.body_timeout:g} s")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def timed_protocol(header_timeout: float = HEADER_TIMEOUT) -> Any:
    """uvicorn's httptools protocol with a deadline on request headers: a connection that has not sent
    a complete request head ``header_timeout`` seconds after it opened (or after it started sending
    the next request on a kept-alive connection) is closed. uvicorn bounds idle keep-alive time
    (``timeout_keep_alive``) but not a head that trickles in."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools (the serve extra has it): uvicorn's h11, without the deadline
        return "auto"

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _head_timer = None
        timeout = header_timeout  # seconds (what `serve` was given)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self._arm()  # bytes of a new request head (disarmed when the head is complete)
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
