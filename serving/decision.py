"""The decision path: request -> one-environment state -> kernel observe -> policy -> shield -> audit record.

`DecisionEngine` is the simulator side. It writes each validated request (`serving.schema.NodeState`)
into one environment of a small batch of kernel `State`s, calls the same ``envs.kernel.observe``
that training and evaluation call (observations, masks, per-SKU bounds), asks the policy (an
exported ONNX network through `OnnxPolicy`, or a heuristic from `agents.catalogue.make_policy`), turns
levels into quantities with ``envs.kernel.levels_to_qty`` and runs the proposal through the same
`agents.shield.Shield` (configured as training configures it, so its ``config_hash`` matches). The
other nodes of the environment hold zero state and propose nothing, so the shared caps (supplier
capacity, DC availability) bound this node's order alone: the request's constraint data is what is
left for this decision.

The shield's runtime guards keep history across periods in training; a request carries its own
history instead, so the shield is reset before every decision (its breaker never trips: a fallback is
a routing decision here, see the registry) and the demand-anomaly guard runs on ``demand_history``
with the shield's own `AnomalyConfig` thresholds.

The decision records are the ones `agents.records.StepBatch.records` writes for a one-node batch,
built for the whole batch at once by `serving.records.RecordBuilder` (tested field for field against it).

`DecisionService` is the in-process API that the HTTP app wraps: validation, idempotency by
``request_id``, routing through the registry (champion, canary, shadow), the engine, and the audit
store (every decision is committed before it is returned).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from restock.agents.catalogue import make_policy
from restock.agents.records import ESC_ANOMALY, MemorySink, StepBatch
from restock.agents.shield import AnomalyConfig, Shield
from restock.envs import kernel as kn
from restock.envs.constraints import CONSTRAINTS as _CONSTRAINTS
from restock.envs.types import new_work
from restock.serving.artifact import ArtifactError, load_manifest, load_scenario_of, manifest_digest
from restock.serving.onnx_policy import OnnxPolicy, PolicyError
from restock.serving.records import RecordBuilder
from restock.serving.schema import (
    Constraints,
    DecisionRequest,
    NodeState,
    RequestInvalid,
    ScenarioInfo,
    pydantic_errors,
)

MAX_BATCH = 64

# ------------------------------------------------------------------------------------------------
# policies of one artifact version


@dataclass
class RolePolicy:
    """The policy serving one role from one artifact version, with the names records carry."""

    policy: Any
    policy_id: str
    version: str
    kind: str  # "onnx" or "heuristic"


@dataclass
class Bundle:
    """One registered artifact version: a policy per role and the baseline heuristic as fallback."""

    version: str
    path: Path
    manifest: dict[str, Any]
    roles: dict[str, RolePolicy]
    fallback: RolePolicy


def _heuristic(name: str, knobs: dict | None, compiled):
    """A heuristic bound to the scenario; its per-period demand statistics are memoised (exactly the
    numbers it would compute again: they depend on the period alone)."""
    pol = make_policy(name, knobs or {})
    if hasattr(pol, "bind"):
        pol.bind(compiled)
        stats = getattr(pol, "stats", None)
        if stats is not None and hasattr(stats, "protection"):
            stats.protection = lru_cache(maxsize=512)(stats.protection)
    return pol


def load_bundle(path: str | Path, version: str, compiled, verify: bool = True) -> Bundle:
    """Load an artifact for serving: verify every hash, check the scenario, open the ONNX sessions."""
    path = Path(path)
    m = load_manifest(path, verify=verify)
    if m["scenario"]["config_hash"] != compiled.config_hash:
        raise ArtifactError(
            f"{path}: exported for scenario {m['scenario']['name']} ({m['scenario']['config_hash']}), the "
            f"registry serves {compiled.config.name} ({compiled.config_hash})"
        )
    tag = f"{version}+{manifest_digest(path)[:12]}"
    base = m["baseline"]
    fb = RolePolicy(_heuristic(base["policy"], base.get("knobs"), compiled), base["policy"], tag, "heuristic")
    roles: dict[str, RolePolicy] = {}
    for role, spec in m["roles"].items():
        if spec["policy"] == "onnx":
            levels = int(spec["action"]["levels"])
            nodes = [i for i, a in enumerate(compiled.agent_ids) if a in spec["action"]["nodes"]]
            if nodes and int(compiled.params.levels[nodes[0]]) != levels:
                raise ArtifactError(f"{path}: {role} model has {levels} levels, the scenario does not")
            pid = f"{m.get('name', 'onnx')}:{role}"
            roles[role] = RolePolicy(OnnxPolicy(path / spec["file"], levels, pid, tag), pid, tag, "onnx")
        elif spec["policy"] == "heuristic":
            name = spec.get("heuristic", base["policy"])
            if name == base["policy"]:
                roles[role] = fb
            else:
                roles[role] = RolePolicy(
                    _heuristic(name, base.get("knobs"), compiled), name, tag, "heuristic"
                )
        else:
            raise ArtifactError(f"{path}: unknown policy kind {spec['policy']!r} for role {role}")
    return Bundle(version=version, path=path, manifest=m, roles=roles, fallback=fb)


# ------------------------------------------------------------------------------------------------
# the engine


class _Capture(MemorySink):
    """A sink that keeps only the shield's last batch (the engine slices its records per request)."""

    def append(self, batch: StepBatch) -> None:
        self.last = batch


class _Ctx:
    """The decision context policies and the shield read: the attributes of an `envs.ArrayEnv`."""

    def __init__(self, compiled, E: int):
        self.compiled = compiled
        self.params = compiled.params
        self.E = E
        N, K, M = compiled.N, compiled.K, compiled.M
        self.state = compiled.new_state(E)
        self.work = new_work(E, N, M, K)
        Lmax = int(compiled.params.levels.max())
        self.obs = np.zeros((E, N, _obs_dim(compiled)), np.float32)
        self.mask = np.zeros((E, N, K, Lmax), np.int8)
        self.ub = np.zeros((E, N, K), np.int32)
        self.levels = np.zeros((E, N, K), np.int64)
        self.qty32 = np.zeros((E, N, K), np.int32)
        self.qty = np.zeros((E, N, K), np.int64)  # proposals; only the last batch's rows are nonzero
        # the (environment, node) rows the last batch wrote into state, levels and qty: the next batch
        # zeroes those rows instead of whole arrays (every other row is zero already)
        self.dirty: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.intp), np.zeros(0, np.intp))
        self.sink = _Capture()
        # configured as training and evaluation configure it (same config hash); obs digests are
        # taken per request below instead of for every node of every environment
        self.shield = Shield(compiled, mode="enforce", records=self.sink, obs_digest=False, policy="serving")


def _obs_dim(compiled) -> int:
    from restock.envs.types import NODE_FEATURES, sku_feature_names

    return compiled.K * len(sku_feature_names(compiled.W)) + len(NODE_FEATURES)


@dataclass
class Job:
    """One decision to compute: a node state and the policy asked for it."""

    ns: NodeState
    rp: RolePolicy
    fallback: RolePolicy
    route: str = "champion"


@dataclass
class Outcome:
    job: Job
    proposed: np.ndarray  # [K] int64
    executed: np.ndarray  # [K] int64
    record: Any  # agents.records.DecisionRecord (not yet chained)
    policy: RolePolicy  # the policy whose proposal was shielded (the fallback when the model failed)
    fell_back: bool
    interventions: dict[str, int]
    escalated: bool
    verifier_fallback: bool


def anomalous(history: np.ndarray | None, last: np.ndarray, cfg: AnomalyConfig | None) -> bool:
    """The shield's demand-anomaly rule on a request's own history: exponentially weighted mean and
    variance over ``history`` rows (oldest first), then is ``last`` above max(mu + z sd, ratio mu) +
    margin for some SKU, once ``warmup`` periods have been seen (`agents.shield.AnomalyConfig`)."""
    if cfg is None or history is None or len(history) < cfg.warmup:
        return False
    x0 = history[0].astype(np.float64)
    mu = x0.copy()
    var = np.maximum(x0, 1.0)
    for i in range(1, len(history) + 1):
        x = (history[i] if i < len(history) else last).astype(np.float64)
        if i >= cfg.warmup:
            thr = np.maximum(mu + cfg.z * np.sqrt(var), cfg.ratio * mu) + cfg.margin
            hit = x > thr
            if i == len(history):
                return bool(hit.any())
            x = np.where(hit, thr, x)
        d = x - mu
        mu = mu + cfg.alpha * d
        var = (1.0 - cfg.alpha) * (var + cfg.alpha * d * d)
    return False


class DecisionEngine:
    """Computes shielded decisions for batches of node states of one scenario (not thread-safe: one
    caller at a time; `DecisionService` serialises)."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.info = ScenarioInfo(compiled)
        self.params = compiled.params
        p = self.params
        self._orig = {
            "budget": p.budget.copy(),
            "lane": p.lane_cap.copy(),
            "storage": p.storage_cap.copy(),
            "storage_ahead": p.storage_cap_ahead.copy(),
            "supplier": p.sup_cap.copy(),
        }
        self._ctxs: dict[int, _Ctx] = {}
        self.anomaly = AnomalyConfig()
        self.shield_config_hash = self._ctx(1).shield.config_hash
        self.records = RecordBuilder(compiled)

    def _ctx(self, E: int) -> _Ctx:
        size = 1
        while size < E:
            size *= 2
        ctx = self._ctxs.get(size)
        if ctx is None:
            ctx = self._ctxs[size] = _Ctx(self.compiled, size)
        return ctx

    # ---------------------------------------------------------------- batching
    @staticmethod
    def _override_items(ns: NodeState) -> list[tuple]:
        out = []
        for key in ns.overrides:
            kind = key[0]
            if kind == "budget":
                out.append((key, ns.budget))
            elif kind == "lane":
                out.append((key, ns.lane_capacity))
            elif kind == "storage":
                out.append((key, ns.storage_capacity))
            elif kind == "supplier":
                out.append((key, tuple(ns.supplier_capacity.tolist())))
        return out

    def run(self, jobs: list[Job]) -> list[Outcome]:
        """Decide every job; jobs are batched by period (heuristics read one period per batch) and so
        that no two jobs of a batch set the same shared parameter to different values."""
        out: list[Outcome | None] = [None] * len(jobs)
        by_period: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            by_period.setdefault(j.ns.period, []).append(i)
        for idx in by_period.values():
            batch: list[int] = []
            keys: dict[tuple, Any] = {}
            for i in idx:
                items = self._override_items(jobs[i].ns)
                clash = any(k in keys and keys[k] != v for k, v in items)
                if clash or len(batch) >= MAX_BATCH:
                    self._run_batch([jobs[b] for b in batch], batch, out)
                    batch, keys = [], {}
                batch.append(i)
                keys.update(items)
            if batch:
                self._run_batch([jobs[b] for b in batch], batch, out)
        return out  # type: ignore[return-value]

    def _apply_overrides(self, jobs: list[Job]) -> list[tuple]:
        p = self.params
        touched = []
        for j in jobs:
            ns = j.ns
            tc = min(ns.period, p.horizon)
            for key in ns.overrides:
                kind = key[0]
                if kind == "budget":
                    p.budget[ns.node] = ns.budget
                elif kind == "lane":
                    p.lane_cap[ns.node] = ns.lane_capacity
                elif kind == "storage":
                    p.storage_cap[tc, ns.node] = ns.storage_capacity
                    p.storage_cap_ahead[tc, ns.node] = ns.storage_capacity
                elif kind == "supplier":
                    p.sup_cap[tc, key[2], :] = ns.supplier_capacity
                touched.append(key)
        return touched

    def _restore(self, touched: list[tuple]) -> None:
        p, o = self.params, self._orig
        for key in touched:
            kind = key[0]
            if kind == "budget":
                p.budget[key[1]] = o["budget"][key[1]]
            elif kind == "lane":
                p.lane_cap[key[1]] = o["lane"][key[1]]
            elif kind == "storage":
                t, n = key[1], key[2]
                p.storage_cap[t, n] = o["storage"][t, n]
                p.storage_cap_ahead[t, n] = o["storage_ahead"][t, n]
            elif kind == "supplier":
                p.sup_cap[key[1], key[2], :] = o["supplier"][key[1], key[2], :]

    def _fill(self, ctx: _Ctx, jobs: list[Job], nn: np.ndarray) -> None:
        """Write the jobs' states into environments 0..B-1 (job e's node is nn[e])."""
        s = ctx.state
        W = self.compiled.W
        info = self.info
        de, dn = ctx.dirty
        for a in (
            s.on_hand,
            s.backlog,
            s.owed,
            s.pipe,
            s.transit,
            s.last_order,
            s.last_demand,
            s.shipped,
            s.arrived,
            ctx.levels,
            ctx.qty,
        ):
            a[de, dn] = 0
        t = jobs[0].ns.period
        s.t.fill(t)
        # one job per environment, all of period t: each state array is written for the whole batch
        nss = [j.ns for j in jobs]
        ee = np.arange(len(nss))
        s.on_hand[ee, nn] = np.stack([ns.on_hand for ns in nss])
        s.owed[ee, nn] = np.stack([ns.owed for ns in nss])
        s.last_order[ee, nn] = np.stack([ns.last_order for ns in nss])
        s.last_demand[ee, nn] = np.stack([ns.last_demand for ns in nss])
        s.shipped[ee, nn] = np.stack([ns.last_shipped for ns in nss])
        s.arrived[ee, nn] = np.stack([ns.last_arrived for ns in nss])
        pipes = np.stack([ns.pipeline for ns in nss])  # [B, W-1, K]
        if pipes.shape[1]:
            slots = (t + 1 + np.arange(pipes.shape[1])) % W
            s.pipe[ee[:, None], nn[:, None], slots[None, :]] = pipes
            s.transit[ee, nn] = pipes.sum(axis=1)
        extra_e, extra_n = [], []  # rows besides the requested ones: a DC's child, a parent DC
        for e, ns in enumerate(nss):
            n = ns.node
            if ns.role == "store":
                s.backlog[e, n] = ns.backlog
            elif ns.backlog.any():
                c0 = info.children[n][0]
                s.owed[e, c0] = ns.backlog  # what a DC owes its children
                extra_e.append(e)
                extra_n.append(c0)
            if ns.parent_available is not None:
                d = info.availability_parent(n)
                s.on_hand[e, d] = ns.parent_available + ns.owed
                extra_e.append(e)
                extra_n.append(d)
        ctx.dirty = (
            np.concatenate([ee, np.asarray(extra_e, np.intp)]),
            np.concatenate([nn, np.asarray(extra_n, np.intp)]),
        )

    def _run_batch(self, jobs: list[Job], where: list[int], out: list) -> None:
        ctx = self._ctx(len(jobs))
        touched = self._apply_overrides(jobs)
        try:
            self._decide(ctx, jobs, where, out)
        finally:
            self._restore(touched)

    def _decide(self, ctx: _Ctx, jobs: list[Job], where: list[int], out: list) -> None:
        c = self.compiled
        E, N = ctx.E, c.N
        B = len(jobs)
        nn = np.fromiter((j.ns.node for j in jobs), np.intp, B)
        self._fill(ctx, jobs, nn)
        rows = np.empty((B, 2), np.int64)
        rows[:, 0] = np.arange(B)
        rows[:, 1] = nn
        # only the asked-for (environment, node) rows: the other rows are never read for this batch
        # (the other nodes propose nothing, and the shield computes its own bounds)
        kn.observe_rows(ctx.params, ctx.state, ctx.work, ctx.obs, ctx.mask, ctx.ub, True, rows)
        qty = ctx.qty  # zero but for this batch's rows (`_fill`)
        conf = np.full((E, N), np.nan)
        used: list[RolePolicy] = [j.rp for j in jobs]
        fell = [False] * len(jobs)
        groups: dict[int, list[int]] = {}
        for e, j in enumerate(jobs):
            groups.setdefault(id(j.rp), []).append(e)
        level_envs: list[int] = []
        retry: list[int] = []
        for es in groups.values():
            rp = jobs[es[0]].rp
            if rp.kind == "onnx":
                nodes = np.asarray([jobs[e].ns.node for e in es])
                ee = np.asarray(es)
                try:
                    lv, cf = rp.policy.act_rows(ctx.obs[ee, nodes], ctx.mask[ee, nodes])
                except PolicyError:
                    retry += es
                    continue
                ctx.levels[ee, nodes] = lv
                conf[ee, nodes] = cf
                level_envs += es
            else:
                self._heuristic_into(ctx, rp.policy, jobs, es, qty)
        if retry:  # the model failed: its baseline heuristic decides, still behind the shield
            fb_groups: dict[int, list[int]] = {}
            for e in retry:
                fell[e] = True
                used[e] = jobs[e].fallback
                fb_groups.setdefault(id(jobs[e].fallback), []).append(e)
            for es in fb_groups.values():
                self._heuristic_into(ctx, jobs[es[0]].fallback.policy, jobs, es, qty)
        if level_envs:
            kn.levels_to_qty(ctx.params, ctx.state, ctx.work, ctx.levels, ctx.qty32)
            le = np.asarray(level_envs)
            qty[le, nn[le]] = ctx.qty32[le, nn[le]]
        sh = ctx.shield
        sh.reset()
        res = sh.decide(ctx, qty, confidence=conf, rows=rows)
        batch = ctx.sink.last
        ee = np.arange(B)
        esc = batch.escalation[ee, nn].astype(np.int64)
        fbc = batch.fallback[ee, nn].astype(np.int64)
        for e, j in enumerate(jobs):
            if j.ns.role == "store" and anomalous(j.ns.history, j.ns.last_demand, self.anomaly):
                esc[e] |= ESC_ANOMALY
            if fell[e] and fbc[e] == 0:
                fbc[e] = 2
        obs_rows = ctx.obs[ee, nn]  # [B, D] float32 (a C-contiguous copy): the digests cover these bytes
        digests = [hashlib.sha256(row).hexdigest() for row in obs_rows]  # each row's bytes, no copy
        recs = self.records.build(batch, ee, nn, jobs, used, fell, esc, fbc, digests)
        counts = self.records.last_counts.tolist()
        verifier_fb = (batch.fallback[ee, nn] == 1).tolist()
        executed = res.executed[ee, nn].astype(np.int64)
        proposed = batch.proposed[ee, nn].astype(np.int64)
        for e, j in enumerate(jobs):
            out[where[e]] = Outcome(
                job=j,
                proposed=proposed[e],
                executed=executed[e],
                record=recs[e],
                policy=used[e],
                fell_back=fell[e],
                interventions={name: cnt for name, cnt in zip(_CONSTRAINTS, counts[e], strict=True) if cnt},
                escalated=bool(esc[e] != 0),
                verifier_fallback=verifier_fb[e],
            )

    def _heuristic_into(self, ctx: _Ctx, pol, jobs: list[Job], es: list[int], qty: np.ndarray) -> None:
        nodes = sorted({jobs[e].ns.node for e in es})
        pos = {n: i for i, n in enumerate(nodes)}
        res = np.asarray(pol.act(ctx, np.asarray(nodes)))
        if getattr(pol, "output", "quantities") == "levels":
            full = np.zeros_like(ctx.levels)
            for e in es:
                n = jobs[e].ns.node
                full[e, n] = res[e, pos[n]]
            q = np.zeros_like(ctx.qty32)
            kn.levels_to_qty(ctx.params, ctx.state, ctx.work, full, q)
            for e in es:
                n = jobs[e].ns.node
                qty[e, n] = q[e, n]
        else:
            for e in es:
                n = jobs[e].ns.node
                qty[e, n] = res[e, pos[n]]


# ------------------------------------------------------------------------------------------------
# the in-process service


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
        try:  # the same bytes as model_dump_json (tests/serving/test_decisions.py), five times faster
            c = orjson.dumps(req.__dict__, default=_fields_of).decode()
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


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
