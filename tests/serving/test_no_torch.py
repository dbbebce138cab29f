"""The serving import graph pulls in no torch, ray or stable-baselines3, and no plotting (matplotlib), LP
(highspy) or PettingZoo, even while deciding: `pip install restock[serve]` installs none of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import restock.serving.app, restock.serving.bundle, restock.serving.engine, restock.serving.service, restock.serving.registry, restock.serving.audit, restock.serving.onnx_policy, restock.serving.metrics
import restock.serving.schema, restock.serving.artifact, restock.serving.bench, restock.serving.loadgen
from fastapi.testclient import TestClient
from restock.serving.app import create_app
from restock.serving.schema import request_from_state
from restock.envs.array_env import ArrayEnv
import numpy as np

app = create_app(sys.argv[1])
with TestClient(app) as c:
    comp = app.state.service["svc"].compiled
    env = ArrayEnv(comp, num_envs=1, seed=0)
    env.reset()
    codes = [c.post("/v1/decisions", json=request_from_state(comp, env.state, 0, n, f"r{n}")).status_code
             for n in range(comp.N)]
    kinds = c.get("/healthz").json()
heavy = ("torch", "ray", "stable_baselines3", "sb3_contrib", "matplotlib", "highspy", "pettingzoo")
bad = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy})
print(json.dumps({"codes": codes, "bad": bad}))
"""


def test_no_torch__serving_imports_and_decides_without_torch_ray_sb3_plots_lp_pettingzoo(
    tiny_artifact, registry_of
):
    reg = registry_of(tiny_artifact)  # an ONNX artifact: the onnxruntime path is exercised too
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(reg)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["codes"] == [200, 200, 200]
    assert out["bad"] == []
