"""Schemathesis against a live `restock serve` (issue 12): every check, bounded examples, with and
without the admin token: no server errors, no conformance failures, no traceback in the server log.

Heavy (a server process and ~1,200 generated requests, ~1 minute):
    .venv/bin/python -m pytest -q -m heavy tests/serving/test_schemathesis.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from restock.serving.bench import free_port, start_server, stop_server, wait_ready

# The decision request's scenario rules (node names, the SKU list, per-SKU array lengths) are beyond
# JSON Schema, so schema-valid bodies may be refused with 422; the admin routes answer 401/403 without
# the token and 409 for what the registry refuses. Everything else is schemathesis' defaults.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


@pytest.mark.heavy
@pytest.mark.timeout(900)
def test_schemathesis__all_checks_pass_with_and_without_the_admin_token(
    tiny_heuristic_artifact, registry_of, tmp_path
):
    pytest.importorskip("schemathesis")
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert st, "schemathesis CLI not found (pip install -e '.[dev]')"
    reg = registry_of(tiny_heuristic_artifact, tiny_heuristic_artifact)
    cfg = tmp_path / "schemathesis.toml"
    cfg.write_text(CONFIG)
    port = free_port()
    env = dict(os.environ, RESTOCK_ADMIN_TOKEN="st-token", RESTOCK_AUDIT_KEY="st-key")
    proc = start_server(reg, port, audit=f"sqlite:///{tmp_path / 'audit.db'}", env=env)
    try:
        wait_ready(port, proc)
        for headers in ([], ["-H", "Authorization: Bearer st-token"]):
            cmd = [st, "--config-file", str(cfg), "run", f"http://127.0.0.1:{port}/openapi.json"]
            cmd += ["--checks", "all", "-n", "25", "-w", "1", "--generation-deterministic", *headers]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
            out = res.stdout + res.stderr
            assert res.returncode == 0, out[-6000:]
            assert "passed" in out and "failures" not in out.split("SUMMARY")[-1], out[-3000:]
        log = Path(proc.log).read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
    finally:
        stop_server(proc)
