"""The HTTP face of the serving shim (FastAPI): a thin layer over `serving.service.DecisionService`.

Endpoints::

    POST /v1/decisions                   one node's state -> orders per SKU + the decision record (200);
                                         422 malformed or out of range (``detail[].loc`` names the field),
                                         409 request_id reused with a different body, 413 body too large,
                                         503 the audit store could not commit (nothing is executed)
    GET  /v1/decisions/{request_id}      the stored decision (404 when unknown)
    GET  /healthz                        scenario, shield config hash, routes per role, audit store
    GET  /metrics                        Prometheus text: requests, latency histogram, decisions,
                                         interventions, fallbacks, escalations, shadow agreement
    GET  /v1/admin/registry              registry state        (admin: Authorization: Bearer <token>)
    POST /v1/admin/roles/{role}/promote      {"version": "v3"}
    POST /v1/admin/roles/{role}/rollback
    POST /v1/admin/roles/{role}/candidate    {"version": "v3", "mode": "canary"|"shadow", "fraction": 0.1}
    DELETE /v1/admin/roles/{role}/candidate

A decision is committed to the audit store before its response is sent (`serving.audit`); a repeat
of a request_id returns the stored body byte for byte, with ``Idempotent-Replay: true``. The admin
token comes from the environment variable RESTOCK_ADMIN_TOKEN of the server process: without it the
admin endpoints answer 403 (disabled); with it, a missing or malformed header is 401 and a wrong
token 403. Nothing in this module's import graph imports torch, ray or stable-baselines3.

`restock serve` runs `FastPathApp`: POST /v1/decisions is answered directly on ASGI by the same
function the FastAPI route calls (the route stays for the OpenAPI docs and for embedding the app),
which skips the routing and middleware layers. One process serves: the audit chain has one writer
(`serving.audit.GroupCommitter`, which groups the commits of concurrent requests). Requests that
arrive together are also decided together (`Batcher`: one engine batch, one committer group); each
is answered only once the transaction holding its record has committed. The bounds on request
bodies, heads and error lists (413, 408, 415, header deadline) are in `serving.http_limits`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from restock.serving import schema as _schema
from restock.serving.artifact import ArtifactError
from restock.serving.audit import AuditIntegrityError, GroupCommitter
from restock.serving.batcher import Batcher, ComputeFailed
from restock.serving.http_limits import (
    BODY_TIMEOUT,
    DEFAULT_MAX_BODY,
    HEADER_TIMEOUT,
    KEEP_ALIVE,
    LIMIT_CONCURRENCY,
    NOT_JSON,
    BodyLimit,
    BodyTooLarge,
    BodyTooSlow,
    bounded_errors,
    check_limits,
    json_content_type,
    json_error_body,
    read_body,
    timed_protocol,
)
from restock.serving.registry import MODES, RegistryError
from restock.serving.schema import DecisionRequest, RequestInvalid, pydantic_errors
from restock.serving.service import Conflict, DecisionService, request_digest, settle_gc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

ADMIN_TOKEN_ENV = "RESTOCK_ADMIN_TOKEN"
_REF = "#/components/schemas/{model}"
schema_doc = _schema.__doc__
_request_schema = DecisionRequest.model_json_schema(ref_template=_REF)
_request_defs = _request_schema.pop("$defs", {})
RECENT_IDS = 100_000  # request ids (with digests) kept in memory to answer repeats without a database read


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str


class CandidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    mode: str = Field(default="canary", description=f"one of {MODES}")
    fraction: float = Field(default=0.1, ge=0.0, le=1.0, allow_inf_nan=False)


def create_app(
    registry_dir: str | os.PathLike,
    audit: str | None = None,
    durability: str = "full",
    max_body: int = DEFAULT_MAX_BODY,
    admin_token: str | None = None,
    settle: bool = False,
    service: DecisionService | None = None,
    body_timeout: float = BODY_TIMEOUT,
) -> FastAPI:
    """The ASGI app over a registry folder (the service opens when the app starts, unless ``service``
    is one already opened: `serve` opens it first, so a refused artifact or audit store stops it
    before it listens). ``settle``: freeze the objects of the loaded service out of the garbage
    collector's walks (`serving.service.settle_gc`; what `serve` does, for a process that serves and
    nothing else)."""
    token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV) or None
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = (
            service
            if service is not None
            else DecisionService(registry_dir, audit=audit, durability=durability)
        )
        state["svc"] = svc
        state["committer"] = GroupCommitter(svc.store)
        state["batcher"] = Batcher(svc, state["committer"])
        if settle:
            settle_gc()
        state["inflight"] = {}
        state["recent"] = OrderedDict((rid, d) for rid, d in svc.store.recent_ids(RECENT_IDS))
        try:
            yield
        finally:
            state["committer"].close()
            svc.close()

    app = FastAPI(
        title="restock serving shim",
        version="1",
        description=__doc__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_body=max_body, body_timeout=body_timeout)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """As FastAPI answers, except that a 405's Allow lists the methods of every route on the path
        (Starlette names only the first route's)."""
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        methods: set[str] = set()
        for r in app.router.routes:
            if getattr(r, "methods", None) and r.matches(request.scope)[0] != Match.NONE:
                methods |= r.methods
        return JSONResponse(
            {"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(sorted(methods))}
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own validation (path parameters): bounded, and no inputs echoed (NaN-safe)."""
        errs = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": str(e.get("msg"))}
            for e in exc.errors()
        ]
        return JSONResponse(bounded_errors(errs), status_code=422)

    def svc() -> DecisionService:
        return state["svc"]

    def done(endpoint: str, t0: float, status: int) -> None:
        m = svc().metrics
        with m.lock:
            m.requests.inc(endpoint=endpoint, status=str(status))
            m.latency.observe(time.perf_counter() - t0, endpoint=endpoint)

    def problem(status: int, t0: float, detail: Any) -> tuple[int, bytes, dict]:
        done("decisions", t0, status)
        return status, json.dumps({"detail": detail}).encode(), {}

    def refused(t0: float, exc: Exception) -> tuple[int, bytes, dict]:
        """A stored decision that fails audit verification: 503, never replayed (a 409 would invite the
        client to re-decide under a new id; this says: do not execute, the store needs attention)."""
        return problem(503, t0, f"{exc}; the audit store needs attention (restock audit verify)")

    async def decide_body(body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """The whole POST /v1/decisions: (status, JSON body, extra headers). Shared by the FastAPI route
        and the ASGI fast path, so both answer byte for byte the same."""
        t0 = time.perf_counter()
        s = svc()
        try:
            req, ns = s.parse(body)
        except RequestInvalid as exc:
            for e in exc.errors:
                e["loc"] = ["body", *e["loc"]]
            done("decisions", t0, 422)
            return 422, json.dumps(bounded_errors(exc.errors)).encode(), {}
        digest = request_digest(req)
        rid = req.request_id
        inflight: dict = state["inflight"]
        recent: OrderedDict = state["recent"]
        replay = {"Idempotent-Replay": "true"}
        if rid in inflight:  # the same request_id is being decided right now: answer with that decision
            d0, fut = inflight[rid]
            if d0 != digest:
                return problem(409, t0, f"request_id {rid!r} is in use by a different request")
            try:
                res = await asyncio.shield(fut)
            except Exception as exc:  # the first attempt could not commit
                return problem(503, t0, f"audit store could not commit the decision: {exc}")
            done("decisions", t0, 200)
            return 200, res[0][1].encode(), replay
        known = recent.get(rid)
        if known is not None:  # a recent id: the audit store has its decision
            if known != digest:
                return problem(409, t0, f"request_id {rid!r} was already used for a different request")
            try:
                prior = s.get(rid, where="replay")
            except AuditIntegrityError as exc:
                return refused(t0, exc)
            if prior is not None:
                with s.metrics.lock:
                    s.metrics.replays.inc()
                done("decisions", t0, 200)
                return 200, prior.response.encode(), replay
        try:
            s.check_features(ns)  # echelon_position, where the routed policy reads it
        except RequestInvalid as exc:
            try:  # an id decided before (under a policy that did not read it) still replays
                prior = s.lookup(rid, digest)
            except AuditIntegrityError as exc2:
                return refused(t0, exc2)
            except Conflict:
                return problem(409, t0, f"request_id {rid!r} was already used for a different request")
            if prior is None:
                for e in exc.errors:
                    e["loc"] = ["body", *e["loc"]]
                done("decisions", t0, 422)
                return 422, json.dumps(bounded_errors(exc.errors)).encode(), {}
            with s.metrics.lock:
                s.metrics.replays.inc()
            done("decisions", t0, 200)
            return 200, prior.response.encode(), replay
        fut = state["batcher"].submit(req, ns)
        inflight[rid] = (digest, fut)
        try:
            res = await asyncio.shield(fut)
        except ArtifactError as exc:
            return problem(503, t0, f"no policy available: {exc}")
        except ComputeFailed as exc:  # a bug, not the store: answered as it was before batching (500)
            raise exc.__cause__ from None
        except Exception as exc:  # the audit store failed: the decision must not be executed
            return problem(503, t0, f"audit store could not commit the decision; do not execute it: {exc}")
        finally:
            inflight.pop(rid, None)
        _, text, st = res[0]
        if st == "tampered":
            s.metrics.alarm("replay")
            return refused(t0, AuditIntegrityError(text))
        if st == "conflict":  # an id older than the cache, with another body
            return problem(409, t0, f"request_id {rid!r} was already used for a different request")
        recent[rid] = digest
        if len(recent) > RECENT_IDS:
            recent.popitem(last=False)
        done("decisions", t0, 200)
        if st == "replay":
            with s.metrics.lock:
                s.metrics.replays.inc()
            return 200, text.encode(), replay
        return 200, text.encode(), {}

    async def fast_path(scope, receive, send) -> None:
        """POST /v1/decisions straight on ASGI: the same `decide_body`, without the routing and
        middleware layers the other endpoints go through (a third of the HTTP cost per request)."""
        declared = 0
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = 0
        headers: dict[str, str] = {}
        try:
            data = await read_body(receive, max_body, declared, body_timeout)
        except BodyTooLarge:
            status = 413
            body = json_error_body(413, f"request body larger than {max_body} bytes", limit=max_body)
        except BodyTooSlow:
            status, body = 408, json_error_body(408, f"request body not received within {body_timeout:g} s")
            headers = {"Connection": "close"}
        else:
            if not json_content_type(scope.get("headers", ())):
                status, body = 415, json_error_body(415, NOT_JSON)
            else:
                status, body, headers = await decide_body(data)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def err(description: str, extra: dict | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"detail": {}, **(extra or {})},
            "required": ["detail"],
        }
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    e401 = {401: err("admin token missing or malformed (Authorization: Bearer <token>)")}
    e403 = {403: err("admin API disabled (no RESTOCK_ADMIN_TOKEN) or the token is wrong")}
    e409 = {409: err("the registry refused the change (unknown role or version, nothing to roll back)")}
    e408 = {408: err("the request body did not arrive in time")}
    e413 = {413: err("request body too large", {"limit": {"type": "integer"}})}
    e415 = {415: err("the body is not declared as Content-Type: application/json")}
    e422 = {
        422: err(
            "malformed or out-of-range input: the first 20 errors (detail[].loc names the field) and their count",
            {"error_count": {"type": "integer"}},
        )
    }
    e503 = {503: err("the audit store could not commit or verify the decision, or no policy is available")}
    body_errors = {**e408, **e413, **e415, **e422}
    admin_errors = {**e401, **e403}

    def admin_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": required,
                "content": {"application/json": {"schema": model.model_json_schema()}},
            }
        }

    @app.post(
        "/v1/decisions",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _request_schema}},
            }
        },
        description=schema_doc,
        responses={
            200: {
                "description": "the decision (orders per SKU and its record), committed to the audit store"
            },
            409: err("request_id already used for a different request"),
            **body_errors,
            **e503,
        },
    )
    async def post_decision(request: Request) -> Response:
        """Decide orders for one node (see `serving.schema` for the request fields and how they map)."""
        data = await request.body()  # 413 / 408 first, as on the fast path
        if not json_content_type(request.scope.get("headers", ())):
            return JSONResponse({"detail": NOT_JSON}, status_code=415)
        status, body, headers = await decide_body(data)
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.get(
        "/v1/decisions/{request_id}",
        responses={
            200: {"description": "the stored decision, byte for byte as first answered"},
            404: err("no decision with this request_id"),
            503: err("the stored decision fails audit verification: not served"),
        },
    )
    async def get_decision(request_id: str) -> Response:
        t0 = time.perf_counter()
        try:
            d = svc().get(request_id)
        except AuditIntegrityError as exc:
            done("get_decision", t0, 503)
            return JSONResponse(
                {"detail": f"{exc}; the audit store needs attention (restock audit verify)"}, status_code=503
            )
        if d is None:
            done("get_decision", t0, 404)
            return JSONResponse({"detail": f"no decision with request_id {request_id!r}"}, status_code=404)
        done("get_decision", t0, 200)
        return Response(d.response, media_type="application/json")

    @app.get("/healthz", responses={503: err("the service cannot decide (registry or artifact error)")})
    async def healthz() -> Response:
        t0 = time.perf_counter()
        try:
            svc().refresh()
            h = svc().health()
            code = 200
        except Exception as exc:
            h, code = {"status": "error", "detail": str(exc)}, 503
        done("healthz", t0, code)
        return JSONResponse(h, status_code=code)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return PlainTextResponse(
            svc().metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # ---------------------------------------------------------------- admin
    def check_admin(request: Request) -> str:
        """The token, checked before anything else of the request is read (no body is parsed for a
        caller without a valid token, so it learns nothing about the admin schema)."""
        if not token:
            raise HTTPException(403, f"admin API disabled: start the server with {ADMIN_TOKEN_ENV} set")
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise HTTPException(
                401, "admin endpoints need Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
            raise HTTPException(403, "invalid admin token")
        return "api"

    class _Invalid(Exception):
        def __init__(self, status: int, content: dict):
            self.status, self.content = status, content

    @app.exception_handler(_Invalid)
    async def _invalid(request: Request, exc: _Invalid) -> JSONResponse:
        return JSONResponse(exc.content, status_code=exc.status)

    async def parse_admin(request: Request, model: type[BaseModel]) -> Any:
        """An admin body, after `check_admin`: JSON (415 otherwise), validated (422, bounded; NaN and
        infinities are errors, never echoed as numbers)."""
        if not json_content_type(request.scope.get("headers", ())):
            raise _Invalid(415, {"detail": NOT_JSON})
        raw = await request.body()
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            errs = pydantic_errors(exc)
            for e in errs:
                e["loc"] = ["body", *e["loc"]]
            raise _Invalid(422, bounded_errors(errs)) from None

    def registry_call(fn, *args, **kw) -> JSONResponse:
        try:
            new = fn(*args, **kw)
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from None
        svc().refresh()
        return JSONResponse(
            {"role_state": new.__dict__ if new is not None else None, "health": svc().health()}
        )

    @app.get("/v1/admin/registry", responses=admin_errors)
    async def admin_registry(request: Request) -> JSONResponse:
        check_admin(request)
        return JSONResponse(svc().registry.describe())

    @app.post(
        "/v1/admin/roles/{role}/promote",
        openapi_extra=admin_body(PromoteBody),
        responses={**admin_errors, **e409, **body_errors},
    )
    async def admin_promote(role: str, request: Request) -> JSONResponse:
        by = check_admin(request)
        body = await parse_admin(request, PromoteBody)
        return registry_call(svc().registry.promote, role, body.version, by=by)

    @app.post("/v1/admin/roles/{role}/rollback", responses={**admin_errors, **e409, **e408, **e413})
    async def admin_rollback(role: str, request: Request) -> JSONResponse:
        by = check_admin(request)
        return registry_call(svc().registry.rollback, role, by=by)

    @app.post(
        "/v1/admin/roles/{role}/candidate",
        openapi_extra=admin_body(CandidateBody),
        responses={**admin_errors, **e409, **body_errors},
    )
    async def admin_candidate(role: str, request: Request) -> JSONResponse:
        by = check_admin(request)
        body = await parse_admin(request, CandidateBody)
        return registry_call(
            svc().registry.set_candidate, role, body.version, body.mode, body.fraction, by=by
        )

    @app.delete("/v1/admin/roles/{role}/candidate", responses={**admin_errors, **e409, **e408, **e413})
    async def admin_clear(role: str, request: Request) -> JSONResponse:
        by = check_admin(request)
        return registry_call(svc().registry.clear_candidate, role, by=by)

    base_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = base_openapi()
            spec.setdefault("components", {}).setdefault("schemas", {}).update(_request_defs)
        return app.openapi_schema

    app.openapi = openapi
    app.state.service = state
    app.state.fast_path = fast_path
    return app


class FastPathApp:
    """The FastAPI app with POST /v1/decisions answered on the ASGI fast path (everything else,
    lifespan included, goes to FastAPI). ``state``, ``openapi`` and friends are the FastAPI app's."""

    def __init__(self, app: FastAPI):
        self.app = app
        self.fast = app.state.fast_path

    def __getattr__(self, name: str):
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/decisions":
            return await self.fast(scope, receive, send)
        return await self.app(scope, receive, send)


def serve(
    registry_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    audit: str | None = None,
    durability: str = "full",
    max_body: int = DEFAULT_MAX_BODY,
    access_log: bool = False,
    service: DecisionService | None = None,
    limit_concurrency: int = LIMIT_CONCURRENCY,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    keep_alive: float = KEEP_ALIVE,
) -> None:
    """Run the shim on uvicorn (one process: the audit chain has a single writer). ``service``: one
    opened already (`restock serve` opens it before it says it is serving). Bounded: request heads
    must arrive within ``header_timeout`` s, bodies within ``body_timeout`` s, idle keep-alive
    connections close after ``keep_alive`` s, and beyond ``limit_concurrency`` connections uvicorn
    answers 503 (defaults in `serving.http_limits`; `restock serve` has an option for each)."""
    import uvicorn

    check_limits(header_timeout, body_timeout, keep_alive, limit_concurrency, max_body)

    app = FastPathApp(
        create_app(
            Path(registry_dir),
            audit=audit,
            durability=durability,
            max_body=max_body,
            settle=True,
            service=service,
            body_timeout=body_timeout,
        )
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=access_log,
        lifespan="on",
        http=timed_protocol(header_timeout),
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=keep_alive,
    )
