"""Serving metrics on ``GET /metrics`` through `prometheus_client`, in the text exposition format 0.0.4.

Each `Metrics` keeps its metrics in its own `prometheus_client.CollectorRegistry` (several services in
one process, as in the tests, do not collide). `render` writes the registry's samples itself for two
reasons: counts print as integers (``1234567``, not ``1.234567e+06``) and the ``*_created`` timestamps
the client adds are left out. Values reset on restart (Prometheus handles resets). Intervention counts
are normalised by exposure in the usual way: divide ``restock_interventions_total`` by
``restock_sku_decisions_total`` (interventions per node-SKU decision, as `restock eval` reports them).
"""

from __future__ import annotations

import math
import threading

import prometheus_client
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(d: dict) -> str:
    if not d:
        return ""
    return (
        "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(d.items(), key=lambda kv: kv[0] == "le")) + "}"
    )


def _value(v: float) -> str:
    """Whole numbers as integers (counts), anything else as Prometheus' Go-style float."""
    if math.isfinite(v) and v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return floatToGoString(v)


class Counter:
    """A labelled counter: ``inc(amount, **labels)``."""

    def __init__(self, registry, name: str, help_: str, labelnames: tuple[str, ...] = ()):
        self.name = name
        self._m = prometheus_client.Counter(name, help_, labelnames=sorted(labelnames), registry=registry)

    def inc(self, amount: float = 1.0, **labels) -> None:
        (self._m.labels(**labels) if labels else self._m).inc(amount)


class Histogram:
    """A labelled histogram: ``observe(x, **labels)``."""

    def __init__(
        self, registry, name: str, help_: str, labelnames: tuple[str, ...] = (), buckets=LATENCY_BUCKETS
    ):
        self.name = name
        self._m = prometheus_client.Histogram(
            name, help_, labelnames=sorted(labelnames), registry=registry, buckets=buckets
        )

    def observe(self, x: float, **labels) -> None:
        (self._m.labels(**labels) if labels else self._m).observe(x)


def render_registry(registry) -> str:
    """The text exposition (0.0.4) of every family in ``registry``: HELP, TYPE, then its samples with
    labels sorted (``le`` last) and counts as integers; ``*_created`` samples are left out."""
    lines: list[str] = []
    for fam in registry.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        lines.append(f"# HELP {name} {fam.documentation}")
        lines.append(f"# TYPE {name} {fam.type}")
        for smp in fam.samples:
            if smp.name.endswith("_created"):
                continue
            labels = dict(sorted(smp.labels.items()))
            lines.append(f"{smp.name}{_labels(labels)} {_value(smp.value)}")
    return "\n".join(lines) + "\n"


class Metrics:
    """Every metric the shim exposes on ``GET /metrics``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.registry = r = prometheus_client.CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            r, "restock_requests_total", "HTTP requests by endpoint and status code.", ("endpoint", "status")
        )
        self.latency = Histogram(
            r,
            "restock_request_latency_seconds",
            "Time from request received to response ready, by endpoint.",
            ("endpoint",),
        )
        self.compute_seconds = Histogram(
            r, "restock_decision_compute_seconds", "Decision computation (observe, policy, shield) per call."
        )
        self.decisions = Counter(
            r,
            "restock_decisions_total",
            "Committed decisions by role, route and policy.",
            ("role", "route", "policy", "version"),
        )
        self.sku_decisions = Counter(
            r, "restock_sku_decisions_total", "Node-SKU decisions by role.", ("role",)
        )
        self.interventions = Counter(
            r,
            "restock_interventions_total",
            "Node-SKUs the shield changed, by role and constraint.",
            ("role", "constraint"),
        )
        self.fallbacks = Counter(
            r,
            "restock_fallbacks_total",
            "Decisions not executed as the policy proposed them: safe_action (verifier) or fallback_policy "
            "(model failure), by role.",
            ("role", "kind"),
        )
        self.escalations = Counter(r, "restock_escalations_total", "Escalated decisions by role.", ("role",))
        self.shadow = Counter(
            r, "restock_shadow_decisions_total", "Shadow decisions by role and agreement.", ("role", "agrees")
        )
        self.replays = Counter(
            r, "restock_idempotent_replays_total", "Requests answered from the audit store."
        )
        self.audit_alarms = Counter(
            r,
            "restock_audit_alarms_total",
            "Stored decisions refused because their audit row does not verify (altered or corrupted), by "
            "where it was read (replay: a repeated request_id; get: GET /v1/decisions/{id}).",
            ("where",),
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
            return render_registry(self.registry)
