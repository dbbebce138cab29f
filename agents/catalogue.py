"""The policy catalogue: every heuristic by name (`make_policy`) and the parameter files that hold tuned
knobs (`load_params`, `save_params`).

Evaluation, serving, training and the command line build heuristics here; `agents.tuning` tunes their
knobs and writes the results with `save_params`.

Parameter files (``restock tune --out FILE``) are JSON: ``{"format": "restock.params/1", "scenario",
"config_hash", "policies": {name: {"knobs": {role or node id: {knob: value}}, "cost_per_period": {"mean",
"ci95"}, "objective": {...}, "final_comparison": {...}, ...}}}``; tuning another policy into the same
file adds to it. A per-SKU result (``restock tune --per-sku``) is saved under ``<policy>_per_sku`` with
``"policy": "<policy>"`` and, per role, ``<knob>_by_sku``: a list of one value per SKU.
"""

from __future__ import annotations

import json
import math
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
    from restock.agents.horizon import HorizonBaseStock

    classes["base_stock_cutoff"] = HorizonBaseStock
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
    data["policies"][getattr(result, "label", result.policy)] = result.to_json()
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return data


MAX_PARAMS_BYTES = 16 << 20  # a parameter file holds knobs: far less than this


def _not_json_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows (knobs must be finite)")


def _check_knob(v: Any, where: str) -> None:
    finite = lambda x: type(x) in (int, float) and math.isfinite(x)  # noqa: E731 (bool is not a knob)
    if finite(v) or (isinstance(v, list) and v and all(finite(x) for x in v)):
        return
    raise ValueError(
        f"{where}: a knob is a finite number or a non-empty list of them, not {json.dumps(v)[:80]}"
    )


def load_params(path: str | Path) -> dict:
    """A parameter file as a dict; ValueError (naming --params and the field) when it cannot be read or
    is not one: a JSON object in ``PARAMS_FORMAT``, ``policies`` an object of objects whose ``knobs``
    map roles or node ids to objects of finite numbers (or lists of them)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PARAMS_BYTES:
            raise ValueError(
                f"--params: {path} is larger than {MAX_PARAMS_BYTES >> 20} MiB: not a parameter file"
            )
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_not_json_constant)
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"--params: cannot read {path}: {why}") from None
    except ValueError as exc:
        if str(exc).startswith("--params"):
            raise
        raise ValueError(f"--params: {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"--params: {path} is not a JSON object ({type(data).__name__}): not a parameter file"
        )
    if data.get("format") != PARAMS_FORMAT:
        raise ValueError(f"--params: {path}: format is not {PARAMS_FORMAT!r}: not a restock parameter file")
    for key in ("scenario", "config_hash"):
        if not isinstance(data.get(key), str | None):
            raise ValueError(f"--params: {path}: {key} must be a string")
    pols = data.get("policies")
    if not isinstance(pols, dict):
        raise ValueError(f"--params: {path}: policies must be an object of policy name -> tuned result")
    for name, pol in pols.items():
        where = f"--params: {path}: policies.{name}"
        if not isinstance(pol, dict):
            raise ValueError(f"{where} must be an object with knobs")
        knobs = pol.get("knobs", {})
        if not isinstance(knobs, dict):
            raise ValueError(f"{where}.knobs must be an object of role or node id -> knobs")
        for who, ks in knobs.items():
            if not isinstance(ks, dict):
                raise ValueError(f"{where}.knobs.{who} must be an object of knob -> value")
            for k, v in ks.items():
                _check_knob(v, f"{where}.knobs.{who}.{k}")
    return data
