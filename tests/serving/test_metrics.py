"""/metrics text: prometheus_client underneath, counts as integers, parseable exposition format."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from restock.serving.metrics import Metrics


def test_metrics__large_counts_print_as_integers_and_the_text_parses():
    m = Metrics()
    m.requests.inc(1_234_567, endpoint="/v1/decisions", status="200")
    m.requests.inc(endpoint="/healthz", status="200")
    m.latency.observe(0.0021, endpoint="/v1/decisions")
    m.latency.observe(2.0, endpoint="/v1/decisions")
    m.compute_seconds.observe(0.004)
    m.alarm("replay")
    text = m.render()
    assert 'restock_requests_total{endpoint="/v1/decisions",status="200"} 1234567\n' in text
    assert 'restock_audit_alarms_total{where="replay"} 1\n' in text
    assert 'restock_audit_alarms_total{where="get"} 0\n' in text  # initialised at zero
    assert 'restock_request_latency_seconds_bucket{endpoint="/v1/decisions",le="0.003"} 1\n' in text
    assert 'restock_request_latency_seconds_bucket{endpoint="/v1/decisions",le="+Inf"} 2\n' in text
    assert 'restock_request_latency_seconds_count{endpoint="/v1/decisions"} 2\n' in text
    assert "_created" not in text and "e+06" not in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["restock_requests"].type == "counter"
    assert fams["restock_request_latency_seconds"].type == "histogram"
    total = sum(s.value for s in fams["restock_requests"].samples if s.name == "restock_requests_total")
    assert total == 1_234_568
    sums = [s.value for s in fams["restock_request_latency_seconds"].samples if s.name.endswith("_sum")]
    assert sums == [pytest.approx(2.0021)]


def test_metrics__two_services_in_one_process_do_not_share_counts():
    a, b = Metrics(), Metrics()
    a.replays.inc()
    assert "restock_idempotent_replays_total 1\n" in a.render()
    assert "restock_idempotent_replays_total 0\n" in b.render()
