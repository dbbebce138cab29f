"""The policy catalogue: every heuristic by name (`make_policy`) and the parameter files that hold tuned
knobs (`load_params`, `save_params`).

Evaluation, serving, training and the command line build heuristics here; `agents.tuning` tunes their
knobs and writes the results with `save_params`.

Parameter files (``restock tune --out FILE``) are JSON: ``{"format": "restock.params/1", "scenario",
"config_hash", "policies": {name: {"knobs": {role or node id: {knob: value}}, "cost_per_period": {"mean",
"ci95"}, "objective": {...}, "final_comparison": {...}, ...}}}``; tuning another policy into the same
file adds to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restock.agents.heuristics import HEURISTICS

PARAMS_FORMAT = "restock.params/1"


def policy_classes() -> dict[str, type]:
    """Every heuristic by name (the echelon policies where their module imports)."""
    classes = dict(HEURISTICS)
    try:
        from restock.agents.echelon import EchelonBaseStock

        classes["echelon_base_stock"] = EchelonBaseStock
    except ImportError:  # pragma: no cover - optional module
        pass
    return classes


def make_policy(name: str, knobs: dict | None = None, seed: int = 0):
    """A heuristic by name, with tuned knobs when given."""
    classes = policy_classes()
    if name not in classes:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(sorted(classes))})")
    cls = classes[name]
    if name == "random":
        return cls(seed)
    if name == "zero":
        return cls()
    return cls(knobs=knobs or {})


def save_params(path: str | Path, result) -> dict:
    """Write (or add to) a parameter file; atomic replace so a crash never leaves half a file.

    ``result``: a `agents.tuning.TuneResult` (its ``policy``, ``scenario``, ``config_hash`` and
    ``to_json()``)."""
    path = Path(path)
    data: dict[str, Any] = {
        "format": PARAMS_FORMAT,
        "scenario": result.scenario,
        "config_hash": result.config_hash,
        "policies": {},
    }
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("scenario") == result.scenario:
            data["policies"] = old.get("policies", {})
    data["policies"][result.policy] = result.to_json()
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return data


def load_params(path: str | Path) -> dict:
    """A parameter file as a dict; ValueError (naming --params) when it cannot be read or is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--params: cannot read {path}: {exc}") from None
    if data.get("format") != PARAMS_FORMAT or "policies" not in data:
        raise ValueError(f"--params: {path} is not a restock parameter file (format {PARAMS_FORMAT})")
    return data
