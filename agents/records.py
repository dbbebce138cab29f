"""Decision records: one hash-chained audit record per executed decision (node x period), and sinks.

Every executed decision can be explained afterwards (docs/design.md#decision-records): which policy proposed
what, which shield configuration ran, what it changed and why, and whether anyone was alerted. The
schema lives in one place, `DecisionRecord`. Records form a chain: each carries the hash of the one
before it, and its own hash is sha256(prev_hash + canonical JSON of its other fields), so editing,
dropping or reordering any record breaks `verify_chain`.

Building a Python object per node and period is too slow for training at scale, so the shield hands
sinks one columnar `StepBatch` per period (arrays over environments, nodes and SKUs). `MemorySink`
keeps the batches, hash-chains the batches as they arrive (a cheap digest of the arrays) and
materialises the per-decision records, with their record-level chain, only when asked. `JsonlSink`
writes chained records as JSON lines as they come (the serving shim extends it to SQLite).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from restock.envs.constraints import CONSTRAINTS
from restock.envs.roles import node_role

SCHEMA = "restock.decision/1"
GENESIS = "0" * 64  # prev_hash of the first record of a chain

# escalation reasons, bit i of the per-node escalation flags
ESCALATION_REASONS = (
    "sanitised_input",  # NaN, infinity, negative or out-of-range proposal replaced
    "demand_anomaly",  # last period's demand far outside the node's recent range
    "non_finite_observation",  # the observation the policy saw holds NaN or infinity
    "verifier_failure",  # the shielded action failed the independent verifier: safe action executed
    "breaker_tripped",  # too many consecutive escalations: the node goes to its fallback policy
)
ESC_SANITISED, ESC_ANOMALY, ESC_OBS, ESC_VERIFIER, ESC_BREAKER = (1 << i for i in range(5))
# per node-SKU change flags: bit c = constraint c (envs.constraints.CONSTRAINTS order) lowered the
# quantity; bit 7 = sanitising replaced or rounded the raw value
CHANGED_SANITISED = 1 << 7
FALLBACKS = (None, "safe_action", "fallback_policy")  # per-node fallback codes 0, 1, 2


def _plain_float(x: Any) -> bool:
    """None, or a float that ``json`` and ``orjson`` write alike: 0 or 1e-4 <= |x| < 1e16 (plain decimal
    notation, shortest round-trip digits in both; NaN fails every comparison)."""
    return x is None or (type(x) is float and (x == 0.0 or 1e-4 <= abs(x) < 1e16))


def _refuse_constant(name: str) -> float:
    raise ValueError(f"decision record holds {name}, which canonical JSON cannot")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"decision record holds {text}, beyond float range")
    return x


# orjson serialises these as JSON; json (what the canonical form is defined by) would refuse them
_SCALARS = (str, int, bool, type(None), list, dict)


def canonical_bytes(payload: dict[str, Any]) -> bytes:
    """A record payload as sorted compact ASCII JSON: exactly
    ``json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()``.

    orjson writes the same bytes ten times faster when every string is ASCII other than DEL (json
    escapes non-ASCII and DEL), every int fits 64 bits, and every float is written in plain decimal
    (json switches to exponents below 1e-4 and from 1e16, orjson at other points; orjson writes NaN
    and infinities as ``null`` where json refuses them). A record's floats are its ``confidence`` and
    ``slack`` values, checked here; any other top-level value that is not a str, int, bool, None,
    list or dict sends the payload to ``json``. Below the top level, records hold the builders' ints
    and strings, and `DecisionRecord.from_json` refuses NaN and infinities in stored text.
    tests/agents/test_records.py compares the two writers on random and edge-case records.
    """
    slack = payload.get("slack")
    if (
        _plain_float(payload.get("confidence"))
        and (slack is None or (type(slack) is dict and all(map(_plain_float, slack.values()))))
        and all(type(v) in _SCALARS for k, v in payload.items() if k != "confidence")
    ):
        try:
            b = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, an unknown type
            b = None
        if b is not None and b.isascii() and b"\x7f" not in b:
            return b
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _num(x: float) -> float | None:
    """JSON-safe float: None for inf/NaN, rounded to 9 significant digits (stable across platforms)."""
    x = float(x)
    if not np.isfinite(x):
        return None
    return float(f"{x:.9g}")


@dataclass
class DecisionRecord:
    """One executed decision of one node in one period (the audit schema)."""

    request_id: str
    timestamp: str  # ISO 8601, UTC
    period: int
    env: int  # environment index within the batch
    node: int
    agent_id: str
    role: str  # "dc" or "store"
    mode: str  # shield mode: "enforce" (executed = shielded) or "monitor" (executed = proposal)
    policy_id: str
    policy_version: str
    shield_config_hash: str  # shield configuration and constraint data, together
    scenario_hash: str
    obs_digest: str | None  # sha256 of the node's observation bytes (float32), when known
    proposed: list[int]  # per SKU, after sanitising
    executed: list[int]  # per SKU
    sanitised: list[int]  # SKUs whose raw proposal was not a whole number in [0, BIG]
    interventions: list[dict[str, Any]]  # {"sku", "proposed", "executed", "constraints"} per changed SKU
    slack: dict[str, float | None]  # per constraint, after execution (None: does not apply)
    binding: list[str]  # constraints that changed the order or have no room for one more order line
    rationale: str
    confidence: float | None  # the policy's probability of its proposal, when it has one
    escalated: bool
    escalation_reasons: list[str]
    fallback: str | None  # None, "safe_action" or "fallback_policy"
    schema: str = SCHEMA
    prev_hash: str = GENESIS
    hash: str = ""

    def payload(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("hash")
        return d

    def canonical(self) -> bytes:
        """The bytes the hash covers: every field but ``hash``, as sorted compact JSON."""
        return canonical_bytes(self.payload())

    def compute_hash(self) -> str:
        return hashlib.sha256(self.prev_hash.encode() + self.canonical()).hexdigest()

    def to_json(self) -> str:
        d = self.payload()
        d["hash"] = self.hash
        return canonical_bytes(d).decode()

    @classmethod
    def from_json(cls, text: str) -> DecisionRecord:
        """A record from its JSON text. NaN, Infinity and floats that overflow are refused: canonical
        JSON cannot hold them, and read back they would hash as ``null`` (`canonical_bytes`)."""
        d = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"decision record has unknown fields {sorted(unknown)}")
        return cls(**d)


def chain(records: Iterable[DecisionRecord], prev_hash: str = GENESIS) -> Iterator[DecisionRecord]:
    """Link records in order: set each prev_hash and hash (in place) and yield them."""
    for r in records:
        r.prev_hash = prev_hash
        r.hash = r.compute_hash()
        prev_hash = r.hash
        yield r


def find_break(records: Iterable[DecisionRecord], prev_hash: str = GENESIS) -> int | None:
    """Index of the first record whose link or hash does not verify, or None when the chain holds."""
    for i, r in enumerate(records):
        if r.prev_hash != prev_hash or r.compute_hash() != r.hash:
            return i
        prev_hash = r.hash
    return None


def verify_chain(records: Iterable[DecisionRecord], prev_hash: str = GENESIS) -> bool:
    """True when every record links to the one before it and its hash matches its content."""
    return find_break(records, prev_hash) is None


# ------------------------------------------------------------------------------------------------
# columnar batches


@dataclass(frozen=True)
class RecordMeta:
    """Names and constraint data that turn a batch's arrays into readable records (fixed per scenario)."""

    agent_ids: tuple[str, ...]
    sku_names: tuple[str, ...]
    n_dcs: int
    scenario_hash: str
    volume: np.ndarray  # [K]
    unit_cost: np.ndarray  # [K]
    lot: np.ndarray  # [K]
    moq: np.ndarray  # [K]


@dataclass
class StepBatch:
    """The decisions of every node of E environments in one period, as arrays (what sinks receive)."""

    meta: RecordMeta
    step: int  # the shield's call counter (request ids use it)
    run_id: str
    mode: str
    timestamp: float  # seconds since the epoch
    shield_config_hash: str
    period: np.ndarray  # [E] int
    policy_ids: list[str]  # [N]
    policy_versions: list[str]  # [N]
    proposed: np.ndarray  # [E, N, K] int
    executed: np.ndarray  # [E, N, K] int
    changed: np.ndarray  # [E, N, K] uint8 change flags (bit c: constraint c; bit 7: sanitised)
    slack: np.ndarray  # [E, N, 6] float64 per bound constraint after execution
    escalation: np.ndarray  # [E, N] uint8 (bit i: ESCALATION_REASONS[i])
    fallback: np.ndarray  # [E, N] int8 (FALLBACKS codes)
    confidence: np.ndarray | None = None  # [E, N] (NaN = unknown)
    obs_digest: np.ndarray | None = None  # [E, N, 32] uint8
    request_ids: list[str] | None = None  # E * N ids (env-major); default run_id-step-e-n
    fallback_policy: tuple[str, str] | None = None  # (id, version) of the breaker's fallback policy
    _digest: bytes | None = field(default=None, repr=False)

    @property
    def num_decisions(self) -> int:
        return int(self.executed.shape[0] * self.executed.shape[1])

    def digest(self) -> bytes:
        """sha256 over every array and scalar of the batch (what `MemorySink` chains)."""
        if self._digest is None:
            h = hashlib.sha256()
            head = {
                "step": self.step,
                "run_id": self.run_id,
                "mode": self.mode,
                "timestamp": self.timestamp,
                "shield_config_hash": self.shield_config_hash,
                "policy_ids": self.policy_ids,
                "policy_versions": self.policy_versions,
                "request_ids": self.request_ids,
                "fallback_policy": self.fallback_policy,
                "scenario_hash": self.meta.scenario_hash,
            }
            h.update(json.dumps(head, sort_keys=True).encode())
            arrays = [self.period, self.proposed, self.executed, self.changed, self.slack]
            arrays += [self.escalation, self.fallback]
            if self.confidence is not None:
                arrays.append(self.confidence)
            if self.obs_digest is not None:
                arrays.append(self.obs_digest)
            for a in arrays:
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(memoryview(a).cast("B"))
            self._digest = h.digest()
        return self._digest

    def records(self) -> Iterator[DecisionRecord]:
        """The batch's decisions as (unchained) records, environment-major then node."""
        m = self.meta
        E, N, K = self.executed.shape
        ts = _iso(self.timestamp)
        names = CONSTRAINTS
        for e in range(E):
            for n in range(N):
                prop = self.proposed[e, n]
                exe = self.executed[e, n]
                chg = self.changed[e, n]
                idx = np.flatnonzero((prop != exe) | (chg != 0))
                inter = []
                for k in idx.tolist():
                    cs = [names[c] for c in range(len(names)) if chg[k] & (1 << c)]
                    if chg[k] & CHANGED_SANITISED:
                        cs.insert(0, "sanitise")
                    inter.append(
                        {"sku": k, "proposed": int(prop[k]), "executed": int(exe[k]), "constraints": cs}
                    )
                slack = {names[c]: _num(self.slack[e, n, c]) for c in range(self.slack.shape[2])}
                binding = _binding(m, exe, chg, self.slack[e, n])
                esc = int(self.escalation[e, n])
                reasons = [r for i, r in enumerate(ESCALATION_REASONS) if esc & (1 << i)]
                fb = FALLBACKS[int(self.fallback[e, n])]
                pid, pver = self.policy_ids[n], self.policy_versions[n]
                if fb == "fallback_policy" and self.fallback_policy is not None:
                    pid, pver = self.fallback_policy
                conf = None
                if self.confidence is not None and np.isfinite(self.confidence[e, n]):
                    conf = _num(self.confidence[e, n])
                rid = (
                    self.request_ids[e * N + n]
                    if self.request_ids is not None
                    else f"{self.run_id}-{self.step}-{e}-{n}"
                )
                yield DecisionRecord(
                    request_id=rid,
                    timestamp=ts,
                    period=int(self.period[e]),
                    env=e,
                    node=n,
                    agent_id=m.agent_ids[n],
                    role=node_role(n, m.n_dcs),
                    mode=self.mode,
                    policy_id=pid,
                    policy_version=pver,
                    shield_config_hash=self.shield_config_hash,
                    scenario_hash=m.scenario_hash,
                    obs_digest=None if self.obs_digest is None else bytes(self.obs_digest[e, n]).hex(),
                    proposed=prop.tolist(),
                    executed=exe.tolist(),
                    sanitised=np.flatnonzero(chg & CHANGED_SANITISED).tolist(),
                    interventions=inter,
                    slack=slack,
                    binding=binding,
                    rationale=rationale(m, inter, slack, binding, exe, reasons, fb),
                    confidence=conf,
                    escalated=esc != 0,
                    escalation_reasons=reasons,
                    fallback=fb,
                )


def _binding(m: RecordMeta, exe: np.ndarray, chg: np.ndarray, slack: np.ndarray) -> list[str]:
    """Constraints that changed the order, or leave no room for one more order line of any SKU.

    Room for one more line of SKU k is one lot (or, from zero, the MOQ rounded up to a lot); storage
    and lane weigh it by volume, budget by unit cost; shared caps and the rate limit count units.
    """
    step = np.where(exe > 0, m.lot, np.maximum(m.lot, -(-m.moq // m.lot) * m.lot))
    out = []
    for c, name in enumerate(CONSTRAINTS[: len(slack)]):
        changed = bool((chg & (1 << c)).any())
        s = float(slack[c])
        if name in ("storage", "lane"):
            need = float((step * m.volume).min())
        elif name == "budget":
            cost = step * m.unit_cost
            need = float(cost[m.unit_cost > 0].min()) if (m.unit_cost > 0).any() else np.inf
        else:
            need = float(step.min())
        if changed or (np.isfinite(s) and s < need):
            out.append(name)
    if (chg & (1 << CONSTRAINTS.index("lot_moq"))).any():
        out.append("lot_moq")
    return out


def rationale(
    m: RecordMeta,
    interventions: list[dict[str, Any]],
    slack: dict[str, float | None],
    binding: list[str],
    executed: np.ndarray,
    reasons: list[str],
    fallback: str | None,
    max_items: int = 4,
) -> str:
    """A short explanation built from the outcome, e.g.
    ``sku_12: proposed 240 -> 180 (storage); binding: storage headroom 412.5 (0.3 left)``."""
    parts = []
    for it in interventions[:max_items]:
        parts.append(
            f"{m.sku_names[it['sku']]}: proposed {it['proposed']} -> {it['executed']} "
            f"({', '.join(it['constraints'])})"
        )
    if len(interventions) > max_items:
        parts.append(f"{len(interventions) - max_items} more SKUs changed")
    if not interventions:
        parts.append("executed as proposed")
    if binding:
        used_vol = float(executed @ m.volume)
        used_cost = float(executed @ m.unit_cost)
        bits = []
        for c in binding:
            s = slack.get(c)
            if c == "storage" and s is not None:
                bits.append(f"storage headroom {s + used_vol:.6g} ({s:.3g} left)")
            elif c == "lane" and s is not None:
                bits.append(f"lane capacity {s + used_vol:.6g} ({s:.3g} left)")
            elif c == "budget" and s is not None:
                bits.append(f"budget {s + used_cost:.6g} ({s:.3g} left)")
            elif s is not None:
                bits.append(f"{c} ({s:.6g} left)")
            else:
                bits.append(c)
        parts.append("binding: " + ", ".join(bits))
    if reasons:
        parts.append("escalated: " + ", ".join(reasons))
    if fallback:
        parts.append(f"fallback: {fallback}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# sinks


class Sink(Protocol):
    """Where decision records go. The shield calls ``append`` once per period."""

    def append(self, batch: StepBatch) -> None: ...

    def records(self) -> Iterator[DecisionRecord]: ...


class MemorySink:
    """Keeps batches in memory (training and evaluation); records are materialised lazily.

    Each appended batch is chained at once by a block hash, sha256(previous block hash + the batch's
    digest), so tampering with stored arrays is detectable (`verify`) without building any records.
    """

    def __init__(self) -> None:
        self.batches: list[StepBatch] = []
        self.block_hashes: list[str] = []

    def append(self, batch: StepBatch) -> None:
        prev = self.block_hashes[-1] if self.block_hashes else GENESIS
        self.batches.append(batch)
        self.block_hashes.append(hashlib.sha256(prev.encode() + batch.digest()).hexdigest())

    def __len__(self) -> int:
        return sum(b.num_decisions for b in self.batches)

    def records(self) -> Iterator[DecisionRecord]:
        """Every decision in order, hash-chained from GENESIS."""

        def unchained() -> Iterator[DecisionRecord]:
            for b in self.batches:
                yield from b.records()

        return chain(unchained())

    def verify(self) -> bool:
        """Recompute the block chain from the stored arrays (False when anything was altered)."""
        prev = GENESIS
        for b, h in zip(self.batches, self.block_hashes, strict=True):
            b._digest = None
            prev = hashlib.sha256(prev.encode() + b.digest()).hexdigest()
            if prev != h:
                return False
        return True

    def clear(self) -> None:
        self.batches.clear()
        self.block_hashes.clear()


class JsonlSink:
    """Appends hash-chained records to a JSON-lines file, one record per line (serving, audits).

    Reopening an existing file continues its chain from the last record. ``fsync=True`` forces each
    batch to disk before `append` returns (records are written before the order executes).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last_hash = GENESIS
        if self.path.exists() and self.path.stat().st_size > 0:
            last = None
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        last = line
            if last is not None:
                self.last_hash = DecisionRecord.from_json(last).hash
        self._f = open(self.path, "a", encoding="utf-8")  # kept open for appends

    def write(self, records: Iterable[DecisionRecord]) -> None:
        """Chain and append records (already materialised ones, e.g. from the serving shim)."""
        lines = []
        for r in chain(records, self.last_hash):
            lines.append(r.to_json())
            self.last_hash = r.hash
        if lines:
            self._f.write("\n".join(lines) + "\n")
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())

    def append(self, batch: StepBatch) -> None:
        self.write(batch.records())

    def records(self) -> Iterator[DecisionRecord]:
        self._f.flush()
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield DecisionRecord.from_json(line)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
