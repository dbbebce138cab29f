"""The in-process decision service that the HTTP app (`serving.app`) wraps.

`DecisionService` orchestrates around the engine (`serving.engine.DecisionEngine`): request
validation, idempotency by ``request_id``, routing through the registry (champion, canary, shadow),
loading artifact versions (`serving.bundle`), metrics, and the audit store (every decision is
committed before it is returned). The response body is written here (`response_head`; the audit
store appends the chained record).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from restock.serving.artifact import ArtifactError, load_scenario_of
from restock.serving.bundle import Bundle, load_bundle
from restock.serving.engine import DecisionEngine, Job, Outcome
from restock.serving.schema import (
    Constraints,
    DecisionRequest,
    NodeState,
    RequestInvalid,
    pydantic_errors,
)


class Conflict(ValueError):
    """A request_id reused with a different request body."""


@dataclass
class Decision:
    """A committed decision as the API returns it."""

    request_id: str
    response: str  # the JSON body (what the HTTP API sends, byte for byte)
    replayed: bool = False
    _data: dict | None = field(default=None, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self.response)
        return self._data

    @property
    def orders(self) -> dict[str, int]:
        return self.data["orders"]

    @property
    def record(self) -> dict[str, Any]:
        return self.data["record"]


def request_digest(req: DecisionRequest) -> str:
    """sha256 of the request's canonical JSON (what idempotency compares; whitespace does not matter);
    computed once per request object."""
    priv = req.__pydantic_private__  # the private attributes' dict (pydantic's attribute hook is slow)
    d = priv["_digest"]
    if d is None:
        d = priv["_digest"] = hashlib.sha256(canonical_json(req).encode()).hexdigest()
    return d


def canonical_json(req: DecisionRequest) -> str:
    """The request as compact JSON in field order (computed once per request object)."""
    priv = req.__pydantic_private__
    c = priv["_canonical"]
    if c is None:
        d = req.__dict__
        if d["echelon_position"] is None:  # left out when absent, as model_dump_json does (`schema`)
            d = {k: v for k, v in d.items() if k != "echelon_position"}
        try:  # the same bytes as model_dump_json (tests/serving/test_decisions.py), five times faster
            c = orjson.dumps(d, default=_fields_of).decode()
        except TypeError:  # an int beyond 64 bits
            c = req.model_dump_json()
        priv["_canonical"] = c
    return c


def _fields_of(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Constraints):
        return obj.__dict__
    raise TypeError(f"{type(obj).__name__} is not part of a request")


def response_head(out: Outcome, sku_names: list[str], route: str, shadow: dict | None) -> str:
    """The response body without its record (`serving.audit.full_response` appends the chained record):
    orders per SKU, who decided, the shadow policy's summary."""
    j = out.job
    first = orjson.dumps(
        {"request_id": j.ns.request_id, "node": j.ns.agent_id, "role": j.ns.role, "period": j.ns.period}
    )
    rest = orjson.dumps(
        {
            "route": route,
            "policy": {
                "id": out.policy.policy_id,
                "version": out.policy.version,
                "kind": "fallback" if out.fell_back else out.policy.kind,
            },
            "shadow": shadow,
        }
    )
    # {request_id, node, role, period, orders, route, policy, shadow}: the orders object is written
    # through a per-scenario template (names escaped once, int64 values by %d)
    orders = _orders_template(tuple(sku_names)) % tuple(out.executed.tolist())
    return first[:-1].decode() + ',"orders":' + orders + "," + rest[1:].decode()


@lru_cache(maxsize=8)
def _orders_template(sku_names: tuple[str, ...]) -> str:
    """``{"sku":%d,...}`` with the names JSON-escaped (and ``%`` doubled) once per scenario."""
    return "{" + ",".join(json.dumps(k).replace("%", "%%") + ":%d" for k in sku_names) + "}"


class DecisionService:
    """The in-process decision API over a registry: ``decide(request)`` -> `Decision` (committed).

    ``DecisionService(registry_dir, audit="sqlite:///REGISTRY_DIR/audit.db")``. Thread-safe (one
    decision computation at a time; commits are grouped by the caller's batch).
    """

    def __init__(self, registry_dir: str | Path, audit: str | None = None, durability: str = "full"):
        from restock.serving.audit import open_store
        from restock.serving.metrics import Metrics
        from restock.serving.registry import Registry

        self.registry = Registry(registry_dir)
        snap = self.registry.snapshot()
        if not snap.versions:
            raise ArtifactError(f"{registry_dir}: the registry holds no versions (restock registry register)")
        any_version = next(iter(snap.versions))
        self.compiled = load_scenario_of(self.registry.artifact_path(any_version))
        self.engine = DecisionEngine(self.compiled)
        self.info = self.engine.info
        self.sku_names = list(self.compiled.sku_names)
        self.bundles: dict[str, Bundle] = {}
        self.metrics = Metrics()
        self.store = open_store(
            audit or f"sqlite:///{Path(registry_dir) / 'audit.db'}", durability=durability
        )
        self._lock = threading.RLock()
        self._snap = snap
        self._check_routes(snap)
        self.warmup()

    def warmup(self) -> None:
        """Decide one all-zero request per role and route (not committed): compiles and caches
        everything a first real request would otherwise wait for."""
        c = self.compiled
        parsed = []
        for n in {0, c.M} if c.M and c.S else {0}:
            req = {
                "request_id": f"warmup-{n}",
                "node": c.agent_ids[n],
                "period": 0,
                "skus": self.sku_names,
                "on_hand": [0] * c.K,
                "pipeline": [],
                "last_demand": [0] * c.K,
                "last_order": [0] * c.K,
                "echelon_position": [0] * c.K,  # read by echelon policies, ignored by the others
            }
            if self.info.availability_parent(n) >= 0:
                req["constraints"] = {"parent_available": [0] * c.K}
            parsed.append(self.parse(req))
        saved = self.metrics
        from restock.serving.metrics import Metrics

        self.metrics = Metrics()
        try:
            self.compute(parsed)
        finally:
            self.metrics = saved

    # ---------------------------------------------------------------- registry
    def bundle(self, version: str) -> Bundle:
        b = self.bundles.get(version)
        if b is None:
            b = self.bundles[version] = load_bundle(
                self.registry.artifact_path(version), version, self.compiled, verify=True
            )
        return b

    def _check_routes(self, snap) -> None:
        for role, r in snap.roles.items():
            if r.champion:
                self.bundle(r.champion)
            if r.candidate:
                self.bundle(r.candidate)
            if role not in ("store", "dc"):
                raise ArtifactError(f"registry: unknown role {role!r}")

    def refresh(self) -> None:
        """Pick up registry changes (promotions, rollbacks, candidates) made by another process."""
        snap = self.registry.snapshot_if_changed(self._snap)
        if snap is not self._snap:
            with self._lock:
                self._check_routes(snap)
                self._snap = snap

    def routes(self, role: str, agent_id: str) -> tuple[Bundle, str, Bundle | None]:
        """(bundle that executes, route name, shadow bundle or None) for a node of a role."""
        from restock.serving.registry import in_canary

        r = self._snap.roles.get(role)
        if r is None or not r.champion:
            raise ArtifactError(f"registry: no champion for role {role!r}")
        champ = self.bundle(r.champion)
        if r.candidate:
            cand = self.bundle(r.candidate)
            if r.mode == "shadow":
                return champ, "champion", cand
            if in_canary(agent_id, r.fraction):
                return cand, "canary", None
        return champ, "champion", None

    # ---------------------------------------------------------------- validation
    def parse(self, body: bytes | str | dict | DecisionRequest) -> tuple[DecisionRequest, NodeState]:
        """Validate a request (pydantic, then against the scenario); raises RequestInvalid."""
        from pydantic import ValidationError

        try:
            if isinstance(body, DecisionRequest):
                req = body
            elif isinstance(body, dict):
                req = DecisionRequest.model_validate(body)
            else:
                req = DecisionRequest.model_validate_json(body)
        except ValidationError as exc:
            raise RequestInvalid(pydantic_errors(exc)) from None
        return req, self.info.check(req)

    def check_features(self, ns: NodeState) -> None:
        """Refuse (RequestInvalid, 422) a request without ``echelon_position`` when the policy its route
        executes reads it (`serving.bundle`: the role's ``extra_sku_features``). A shadow candidate
        does not refuse it (its baseline decides in its place, recorded as a fallback): a shadow never
        changes what the caller gets. Checked after idempotency (a stored decision still replays)."""
        if ns.echelon_position is not None:
            return
        with self._lock:
            try:
                ex, route, _ = self.routes(ns.role, ns.agent_id)
            except ArtifactError:  # no policy at all: compute answers that (503)
                return
            rp = ex.roles.get(ns.role)
        if rp is not None and "echelon_position" in rp.extra_sku_features:
            raise RequestInvalid(
                [
                    {
                        "type": "missing",
                        "loc": ["echelon_position"],
                        "msg": f"required: the {ns.role} policy serving {ns.agent_id} ({rp.policy_id} "
                        f"{rp.version}, {route}) reads the node's echelon inventory position per SKU",
                        "input": None,
                    }
                ]
            )

    def lookup(self, request_id: str, digest: str) -> Decision | None:
        """The stored decision of a request id, or None; raises Conflict when the body differs."""
        row = self._stored(request_id, "replay")
        if row is None:
            return None
        stored_digest, response = row
        if stored_digest != digest:
            raise Conflict(
                f"request_id {request_id!r} was already used for a different request; use a new request_id"
            )
        return Decision(request_id=request_id, response=response, replayed=True)

    # ---------------------------------------------------------------- deciding
    def compute(self, parsed: list[tuple[DecisionRequest, NodeState]]) -> list[Any]:
        """Decide (not yet committed): returns audit entries for `serving.audit.AuditStore.append`."""
        from restock.serving.audit import Entry

        t0 = time.perf_counter()
        with self._lock:
            jobs: list[Job] = []
            meta = []
            for req, ns in parsed:
                ex, route, shadow = self.routes(ns.role, ns.agent_id)
                jobs.append(Job(ns, ex.roles[ns.role], ex.fallback, route))
                meta.append((req, route, len(jobs) - 1, None))
                if shadow is not None:
                    jobs.append(Job(ns, shadow.roles[ns.role], shadow.fallback, "shadow"))
                    meta[-1] = (req, route, len(jobs) - 2, len(jobs) - 1)
            outs = self.engine.run(jobs)
        entries = []
        for req, route, i, s in meta:
            o = outs[i]
            so = outs[s] if s is not None else None
            self.metrics.observe_decision(o, so)
            shadow_summary = None
            if so is not None:
                shadow_summary = {
                    "policy": {"id": so.policy.policy_id, "version": so.policy.version},
                    "agrees": bool(np.array_equal(so.executed, o.executed)),
                }
            entries.append(
                Entry(
                    request_id=req.request_id,
                    request_sha256=request_digest(req),
                    request_json=canonical_json(req),
                    node=o.job.ns.agent_id,
                    role=o.job.ns.role,
                    period=o.job.ns.period,
                    route=route,
                    record=o.record,
                    head=response_head(o, self.sku_names, route, shadow_summary),
                    shadow_record=None if so is None else so.record,
                )
            )
        self.metrics.compute_seconds.observe(time.perf_counter() - t0)
        return entries

    def decide(self, request: bytes | str | dict | DecisionRequest) -> Decision:
        """Validate, decide, commit and return one decision (a repeat of a request_id returns the stored one)."""
        return self.decide_many([request])[0]

    def decide_many(self, requests: list) -> list[Decision]:
        """Many requests at once (batched through the kernel, one commit); same semantics as `decide`."""
        parsed = [self.parse(r) for r in requests]
        out: list[Decision | None] = [None] * len(parsed)
        todo, where, seen = [], [], {}
        from restock.serving.audit import AuditIntegrityError

        try:
            stored = self.store.get_many([req.request_id for req, _ in parsed])
        except AuditIntegrityError:
            self.metrics.alarm("replay")
            raise
        for i, (req, ns) in enumerate(parsed):
            d = request_digest(req)
            prior = stored.get(req.request_id)
            if prior is not None:
                if prior[0] != d:
                    raise Conflict(
                        f"request_id {req.request_id!r} was already used for a different request; use a new one"
                    )
                out[i] = Decision(request_id=req.request_id, response=prior[1], replayed=True)
            elif req.request_id in seen:
                if seen[req.request_id][1] != d:
                    raise Conflict(f"request_id {req.request_id!r} appears twice with different requests")
                out[i] = seen[req.request_id][0]
            else:
                self.check_features(ns)
                seen[req.request_id] = (i, d)
                todo.append((req, ns))
                where.append(i)
        if todo:
            responses = self.store.append(self.compute(todo))
            for i, (rid, text, status) in zip(where, responses, strict=True):
                if status == "tampered":
                    from restock.serving.audit import AuditIntegrityError

                    self.metrics.alarm("replay")
                    raise AuditIntegrityError(text)
                if status == "conflict":
                    raise Conflict(
                        f"request_id {rid!r} was already used for a different request; use a new one"
                    )
                out[i] = Decision(request_id=rid, response=text, replayed=status == "replay")
        for i, o in enumerate(out):
            if isinstance(o, int):
                out[i] = out[o]
        return out  # type: ignore[return-value]

    def _stored(self, request_id: str, where: str) -> tuple[str, str] | None:
        """The store's verified row (`serving.audit.SqliteStore.get`), counting an audit alarm when it
        does not verify (`serving.audit.AuditIntegrityError` is raised on)."""
        from restock.serving.audit import AuditIntegrityError

        try:
            return self.store.get(request_id)
        except AuditIntegrityError:
            self.metrics.alarm(where)
            raise

    def get(self, request_id: str, where: str = "get") -> Decision | None:
        """The stored decision of ``request_id`` (verified: AuditIntegrityError when its row does not)."""
        row = self._stored(request_id, where)
        return None if row is None else Decision(request_id=request_id, response=row[1], replayed=True)

    def health(self) -> dict[str, Any]:
        snap = self._snap
        return {
            "status": "ok",
            "scenario": {"name": self.compiled.config.name, "config_hash": self.compiled.config_hash},
            "shield_config_hash": self.engine.shield_config_hash,
            "roles": {
                role: {
                    "champion": r.champion,
                    "candidate": r.candidate,
                    "mode": r.mode if r.candidate else None,
                    "fraction": r.fraction if r.candidate else None,
                }
                for role, r in snap.roles.items()
            },
            "audit": self.store.describe(),
        }

    def close(self) -> None:
        self.store.close()


def settle_gc() -> None:
    """Collect once and move every object alive now (modules, the scenario, ONNX sessions, pydantic
    schemas: the ~10^5 objects a loaded service holds) out of the cyclic collector's reach
    (``gc.freeze``). Without it, each full collection walks all of them again, and a decision
    allocates enough small objects (record dicts and lists) to trigger one every few batches: that
    was a third of the CPU time of a batched decision. Call it once a long-lived process has loaded
    its service (`restock serve` does, after startup); objects created later are collected as usual.

    It also raises the youngest generation's threshold to 20,000 allocations (Python's default is
    700): a batch of decisions allocates a few thousand short-lived dicts and lists, and collecting
    them every 700 cost ~8% of in-process throughput here. The setting is process-wide."""
    import gc

    gc.collect()
    gc.freeze()
    g0, g1, g2 = gc.get_threshold()
    gc.set_threshold(max(g0, 20_000), g1, g2)
