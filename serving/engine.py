"""The decision engine: request -> one-environment state -> kernel observe -> policy -> shield -> record.

`DecisionEngine` is the simulator side of serving (the pure decision path: no registry, no audit
store, no HTTP). It writes each validated request (`serving.schema.NodeState`) into one environment
of a small batch of kernel `State`s, calls the same ``envs.kernel.observe`` that training and
evaluation call (observations, masks, per-SKU bounds), asks the policy (an exported ONNX network
through `OnnxPolicy`, or a heuristic from `agents.catalogue.make_policy`; see `serving.bundle`), turns
levels into quantities with ``envs.kernel.levels_to_qty`` and runs the proposal through the same
`agents.shield.Shield` (configured as training configures it, so its ``config_hash`` matches). The
other nodes of the environment hold zero state and propose nothing, so the shared caps (supplier
capacity, DC availability) bound this node's order alone: the request's constraint data is what is
left for this decision.

The shield's runtime guards keep history across periods in training; a request carries its own
history instead, so the shield is reset before every decision (its breaker never trips: a fallback is
a routing decision here, see the registry) and the demand-anomaly guard runs on ``demand_history``
with the shield's own `AnomalyConfig` thresholds.

A network whose artifact lists ``extra_sku_features`` (``echelon_position``: `dcl` runs on serial
chains) reads rows of width K*(F+1)+G: the kernel's observation rows with the request's echelon
position appended per SKU (`agents.echelon_features.augment_rows`, divided by the node's demand scale
as in training), and the record's observation digest covers those augmented bytes, the ones the model
read. `DecisionService` refuses (422) a request routed to such a policy without the field; should one
reach the engine anyway (a shadow candidate, or a route changed between validation and the batch),
that policy's baseline heuristic decides it, recorded as a fallback, as when the model fails.
The echelon base-stock heuristic (`agents.echelon.EchelonBaseStock`, the baseline and fallback of
those runs) orders on the request's ``echelon_position`` where one is sent; without it, it sees only
the node's own state (nothing downstream), as before.

The decision records are the ones `agents.records.StepBatch.records` writes for a one-node batch,
built for the whole batch at once by `serving.records.RecordBuilder` (tested field for field against it).

`serving.service.DecisionService` routes requests (registry, canary, shadow) into this engine and
commits its outcomes to the audit store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from restock.agents.echelon import EchelonBaseStock
from restock.agents.echelon_features import augment_rows, demand_scale
from restock.agents.records import ESC_ANOMALY, MemorySink, StepBatch
from restock.agents.shield import AnomalyConfig, Shield
from restock.envs import kernel as kn
from restock.envs.constraints import CONSTRAINTS as _CONSTRAINTS
from restock.envs.types import new_work
from restock.serving.bundle import RolePolicy
from restock.serving.onnx_policy import PolicyError
from restock.serving.records import RecordBuilder
from restock.serving.schema import (
    NodeState,
    ScenarioInfo,
)

MAX_BATCH = 64


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
    from restock.envs.types import NODE_FEATURES

    return compiled.K * len(compiled.sku_features) + len(NODE_FEATURES)


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
        self.scale = demand_scale(p)  # [N, K] what echelon positions are divided by (as in training)
        self.F = len(compiled.sku_features)  # the kernel's per-SKU features (the observation block)

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
        fed: dict[int, np.ndarray] = {}  # env -> the augmented row its model read (extra features)
        for es in groups.values():
            rp = jobs[es[0]].rp
            if rp.kind == "onnx":
                if rp.extra_sku_features:  # echelon_position: from the request (refused there if absent)
                    lacking = [e for e in es if jobs[e].ns.echelon_position is None]
                    if lacking:
                        retry += lacking
                        es = [e for e in es if jobs[e].ns.echelon_position is not None]
                        if not es:
                            continue
                nodes = np.asarray([jobs[e].ns.node for e in es])
                ee = np.asarray(es)
                obs = ctx.obs[ee, nodes]
                if rp.extra_sku_features:
                    eip = np.stack([jobs[e].ns.echelon_position for e in es])
                    obs = augment_rows(obs, eip, self.scale[nodes], c.K, self.F)
                try:
                    lv, cf = rp.policy.act_rows(obs, ctx.mask[ee, nodes])
                except PolicyError:
                    retry += es
                    continue
                if rp.extra_sku_features:
                    fed.update(zip(es, obs, strict=True))
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
        # each row's bytes, no copy; a model that read extra features read (and is digested over) its
        # augmented row [K*(F+1)+G] instead
        digests = [hashlib.sha256(fed[e] if e in fed else row).hexdigest() for e, row in enumerate(obs_rows)]
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
        if isinstance(pol, EchelonBaseStock):  # reads echelon positions: the requests', where sent
            have = [e for e in es if jobs[e].ns.echelon_position is not None]
            if have:
                rest = [e for e in es if jobs[e].ns.echelon_position is None]
                if rest:
                    self._heuristic_into(ctx, pol, jobs, rest, qty)
                ip = np.zeros(ctx.state.on_hand.shape, np.int64)
                for e in have:
                    ip[e, jobs[e].ns.node] = jobs[e].ns.echelon_position
                pol.positions = lambda _ctx: ip  # shadows the method for this call (one caller at a time)
                try:
                    self._heuristic_act(ctx, pol, jobs, have, qty)
                finally:
                    del pol.positions
                return
        self._heuristic_act(ctx, pol, jobs, es, qty)

    def _heuristic_act(self, ctx: _Ctx, pol, jobs: list[Job], es: list[int], qty: np.ndarray) -> None:
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
