"""The serving benchmark's machinery on a short run (the figures themselves come from `restock bench`)."""

from __future__ import annotations

import json

from restock.serving.bench import (
    TARGETS,
    free_port,
    request_templates,
    run_loadgen,
    start_server,
    stop_server,
    wait_ready,
)


def test_bench__open_loop_load_from_a_separate_process(tiny_heuristic_artifact, registry_of, tmp_path):
    reg = registry_of(tiny_heuristic_artifact)
    templates = request_templates("tiny", periods=5)
    assert {t["node"] for t in templates} == {"store_0", "store_1"}
    tf = tmp_path / "t.jsonl"
    tf.write_text("\n".join(json.dumps(t) for t in templates))
    port = free_port()
    proc = start_server(reg, port, durability="normal", audit=f"sqlite:///{tmp_path / 'b.db'}")
    try:
        wait_ready(port, proc)
        r = run_loadgen(port, tf, rate=40, duration=1.5, prefix="t", connections=4)
    finally:
        stop_server(proc)
    assert r["requests"] == 60 and r["errors"] == 0 and r["status_codes"] == {"200": 60}
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert len(r["loadavg_end"]) == 3
    assert set(TARGETS) == {"serving_p99_ms", "serving_errors", "serving_in_process_decisions_per_s"}
