"""Serving metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

Counters and histograms live in process memory and reset on restart (Prometheus handles resets).
Intervention counts are normalised by exposure in the usual way: divide
``restock_interventions_total`` by ``restock_sku_decisions_total`` (docs/design.md#what-is-logged).
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _labels(d: tuple) -> str:
    if not d:
        return ""
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in d)
    return "{" + inner + "}"


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Counter:
    def __init__(self, name: str, help_: str):
        self.name, self.help = name, help_
        self.values: dict[tuple, float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels) -> None:
        self.values[tuple(sorted(labels.items()))] += amount

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for k, v in sorted(self.values.items()):
            out.append(f"{self.name}{_labels(k)} {v:g}")
        return out


class Histogram:
    def __init__(self, name: str, help_: str, buckets=LATENCY_BUCKETS):
        self.name, self.help = name, help_
        self.buckets = tuple(buckets)
        self.counts: dict[tuple, list[int]] = {}
        self.sums: dict[tuple, float] = defaultdict(float)

    def observe(self, x: float, **labels) -> None:
        key = tuple(sorted(labels.items()))
        c = self.counts.get(key)
        if c is None:
            c = self.counts[key] = [0] * (len(self.buckets) + 1)
        i = 0
        for i, b in enumerate(self.buckets):  # noqa: B007 - i is the bucket index after the loop
            if x <= b:
                break
        else:
            i = len(self.buckets)
        c[i] += 1
        self.sums[key] += x

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, c in sorted(self.counts.items()):
            cum = 0
            for b, n in zip(self.buckets, c, strict=False):
                cum += n
                out.append(f"{self.name}_bucket{_labels(key + (('le', f'{b:g}'),))} {cum}")
            cum += c[-1]
            out.append(f"{self.name}_bucket{_labels(key + (('le', '+Inf'),))} {cum}")
            out.append(f"{self.name}_sum{_labels(key)} {self.sums[key]:.9g}")
            out.append(f"{self.name}_count{_labels(key)} {cum}")
        return out


class Metrics:
    """Every metric the shim exposes on ``GET /metrics``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = Counter("restock_requests_total", "HTTP requests by endpoint and status code.")
        self.latency = Histogram(
            "restock_request_latency_seconds", "Time from request received to response ready, by endpoint."
        )
        self.compute_seconds = Histogram(
            "restock_decision_compute_seconds", "Decision computation (observe, policy, shield) per call."
        )
        self.decisions = Counter("restock_decisions_total", "Committed decisions by role, route and policy.")
        self.sku_decisions = Counter("restock_sku_decisions_total", "Node-SKU decisions by role.")
        self.interventions = Counter(
            "restock_interventions_total", "Node-SKUs the shield changed, by role and constraint."
        )
        self.fallbacks = Counter(
            "restock_fallbacks_total",
            "Decisions not executed as the policy proposed them: safe_action (verifier) or fallback_policy "
            "(model failure), by role.",
        )
        self.escalations = Counter("restock_escalations_total", "Escalated decisions by role.")
        self.shadow = Counter("restock_shadow_decisions_total", "Shadow decisions by role and agreement.")
        self.replays = Counter("restock_idempotent_replays_total", "Requests answered from the audit store.")
        self.audit_alarms = Counter(
            "restock_audit_alarms_total",
            "Stored decisions refused because their audit row does not verify (altered or corrupted), by "
            "where it was read (replay: a repeated request_id; get: GET /v1/decisions/{id}).",
        )
        self.audit_alarms.inc(0, where="replay")
        self.audit_alarms.inc(0, where="get")

    def alarm(self, where: str) -> None:
        with self.lock:
            self.audit_alarms.inc(where=where)

    def observe_decision(self, o, shadow=None) -> None:
        role = o.job.ns.role
        with self.lock:
            self.decisions.inc(
                role=role, route=o.job.route, policy=o.policy.policy_id, version=o.policy.version
            )
            self.sku_decisions.inc(len(o.executed), role=role)
            for c, n in o.interventions.items():
                self.interventions.inc(n, role=role, constraint=c)
            if o.verifier_fallback:
                self.fallbacks.inc(role=role, kind="safe_action")
            if o.fell_back:
                self.fallbacks.inc(role=role, kind="fallback_policy")
            if o.escalated:
                self.escalations.inc(role=role)
            if shadow is not None:
                agree = bool((shadow.executed == o.executed).all())
                self.shadow.inc(role=role, agrees=str(agree).lower())

    def render(self) -> str:
        with self.lock:
            lines: list[str] = []
            for m in (
                self.requests,
                self.latency,
                self.compute_seconds,
                self.decisions,
                self.sku_decisions,
                self.interventions,
                self.fallbacks,
                self.escalations,
                self.shadow,
                self.replays,
                self.audit_alarms,
            ):
                lines += m.render()
        return "\n".join(lines) + "\n"
