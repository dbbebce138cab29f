"""Scenario schema: strict pydantic models loaded from YAML, with errors that name the field path.

A scenario describes one supply network (external suppliers -> DCs -> stores, a tree of any depth),
its SKUs, demand, disruptions, costs, action mapping and initial state. `load_scenario` accepts a
shipped scenario name (``configs/scenarios/<name>.yaml``), a path to a YAML file, a mapping or an
already-built `ScenarioConfig`, and applies keyword overrides (``horizon=20``,
``demand__model="poisson"``: double underscores walk into nested sections).

Per-SKU and per-store attributes accept a number, a list (one value per SKU or store) or a
distribution (``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{lognormal: [median, sigma]}``,
``{choice: [a, b, ...]}``) drawn once from the scenario's ``seed`` when the scenario is compiled.

Input is bounded before anything is allocated: files go through `envs.safeyaml` (a regular UTF-8
file of at most 1 MiB, nesting depth, aliases, duplicate and non-string keys); numbers must be finite
and within ``MAX_MAGNITUDE``; integer fields take whole numbers only (never rounded, never booleans);
sizes are capped (`LIMITS`) and the memory the sizes imply is estimated (`estimate_memory`) and
refused, with the product that dominates it, above ``RESTOCK_MAX_SCENARIO_GIB`` (default 4).

This module is the loader (`load_scenario`, `shipped_scenarios`) and the error formatting
(`format_validation_error`); the models are in `envs.scenario_schema` and the limits in `envs.limits`,
and every name of both is re-exported here, so ``from restock.envs.config import ...`` covers all.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from restock.envs import scenario_schema
from restock.envs.limits import (
    LIMITS,
    MAX_COVER,
    MAX_DCS,
    MAX_DISRUPTIONS,
    MAX_EFFECTS,
    MAX_HORIZON,
    MAX_LEAD_TIME,
    MAX_MAGNITUDE,
    MAX_MEMORY_GIB,
    MAX_SKUS,
    MAX_STORES,
    MAX_SUPPLIERS,
    MAX_UNITS,
)
from restock.envs.safeyaml import (
    YamlInputError,
    load_yaml_file,
)
from restock.envs.scenario_schema import (
    ActionSpec,
    ActionsSpec,
    Attr,
    CapacityCut,
    ConfigError,
    DCSpec,
    DemandSpec,
    Disruption,
    Dist,
    Float,
    InitialSpec,
    Int,
    LeadInt,
    LeadTime,
    LeadTimeDist,
    LeadTimePerSku,
    LeadTimeSpike,
    LotAttr,
    MoqAttr,
    NetworkSpec,
    NodeCommon,
    NonNegativeFloat,
    NonNegativeInt,
    ObservationSpec,
    PositiveFloat,
    PositiveInt,
    PositiveUnits,
    Promotion,
    ReplaySpec,
    RewardSpec,
    ScenarioConfig,
    Shock,
    SkuSelect,
    SkusSpec,
    StoreGroup,
    Strict,
    SupplierOutage,
    SupplierSpec,
    Units,
    Yearly,
    _short,
    estimate_memory,
    pipeline_slots,
)

__all__ = [
    "ConfigError",
    "ScenarioConfig",
    "load_scenario",
    "scenario_dir",
    "shipped_scenarios",
    "format_validation_error",
    "LIMITS",
    "estimate_memory",
    "pipeline_slots",
    # the schema and its limits, re-exported (defined in envs/scenario_schema.py and envs/limits.py)
    "ActionSpec",
    "ActionsSpec",
    "Attr",
    "CapacityCut",
    "DCSpec",
    "DemandSpec",
    "Disruption",
    "Dist",
    "Float",
    "InitialSpec",
    "ObservationSpec",
    "Int",
    "LeadInt",
    "LeadTime",
    "LeadTimeDist",
    "LeadTimePerSku",
    "LeadTimeSpike",
    "LotAttr",
    "MoqAttr",
    "NetworkSpec",
    "NodeCommon",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "PositiveUnits",
    "Promotion",
    "ReplaySpec",
    "RewardSpec",
    "Shock",
    "SkuSelect",
    "SkusSpec",
    "StoreGroup",
    "Strict",
    "SupplierOutage",
    "SupplierSpec",
    "Units",
    "Yearly",
    "MAX_COVER",
    "MAX_DCS",
    "MAX_DISRUPTIONS",
    "MAX_EFFECTS",
    "MAX_HORIZON",
    "MAX_LEAD_TIME",
    "MAX_MAGNITUDE",
    "MAX_MEMORY_GIB",
    "MAX_SKUS",
    "MAX_STORES",
    "MAX_SUPPLIERS",
    "MAX_UNITS",
]


# --------------------------------------------------------------------------------------------------
# loading


def scenario_dir() -> Path:
    """Folder of the shipped scenarios (``RESTOCK_CONFIGS`` overrides the configs root)."""
    root = os.environ.get("RESTOCK_CONFIGS")
    if root:
        return Path(root) / "scenarios"
    return Path(__file__).resolve().parent.parent / "configs" / "scenarios"


def shipped_scenarios() -> list[str]:
    """Names of the shipped scenarios; those in sub-folders (families) as ``folder/name``."""
    root = scenario_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


_FORMS = {
    "float": "a number",
    "list[float]": "a list of numbers",
    "Dist": "a distribution such as {uniform: [lo, hi]}",
    "constrained-int": "a whole number >= 0",
    "int": "a whole number",
    "LeadTimeDist": "{values: [...], probs: [...]}",
    "LeadTimePerSku": "{per_sku: [...]}",
    "str": "a string",
    "list[str]": "a list of strings",
}


def _models_in(tp: Any, out: set) -> None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp in out:
            return
        out.add(tp)
        for f in tp.model_fields.values():
            _models_in(f.annotation, out)
        return
    for arg in get_args(tp):
        _models_in(arg, out)


def _field_names(root: type[BaseModel] | None = None) -> set[str]:
    """Every field name of ``root`` and the models nested in it (all models here when None)."""
    models: set = set()
    if root is None:
        for obj in list(vars(scenario_schema).values()):
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
                models.add(obj)
    else:
        _models_in(root, models)
    return {name for m in models for name in m.model_fields}


def _split_loc(loc: tuple, fields: set[str]) -> tuple[str, str | None, str]:
    """(path up to a union, the union member tag or None, path inside the member)."""
    head, tag, tail = "", None, ""
    for part in loc:
        is_field = isinstance(part, int) or part in fields
        if not is_field and tag is None:
            tag = str(part)
            continue
        if not is_field:
            continue  # nested union tags
        seg = f"[{part}]" if isinstance(part, int) else part
        if tag is None:
            head += seg if isinstance(part, int) else ("." if head else "") + seg
        else:
            tail += seg if isinstance(part, int) else "." + seg
    return head, tag, tail


def _member_name(tag: str) -> str:
    if tag.startswith("function-"):  # 'function-after[_check(), LeadTimeDist]' -> LeadTimeDist
        m = re.search(r"(\w+)\]$", tag)
        return m.group(1) if m else tag
    return tag


# union members' errors that only say "not this form"; any other error is about the value itself
_FORM_ERRORS = {
    "float_type",
    "float_parsing",
    "int_type",
    "int_parsing",
    "list_type",
    "tuple_type",
    "dict_type",
    "model_type",
    "model_attributes_type",
    "string_type",
    "bool_type",
    "bool_parsing",
    "literal_error",
    "union_tag_invalid",
    "missing",
    "extra_forbidden",
}


def format_validation_error(
    err: ValidationError, source: str, root: type[BaseModel] | None = None, kind: str = "scenario"
) -> str:
    """One message for all problems, each line naming the field path and the reason.

    ``root`` is the model that was validated (field names come from it and the models inside it).
    """
    fields = _field_names(root or ScenarioConfig)
    groups: dict[str, list[tuple[str | None, str, dict]]] = {}
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        extra = loc[-1] if e.get("type") == "extra_forbidden" and loc else None
        head, tag, tail = _split_loc(loc[:-1] if extra is not None else loc, fields)
        if extra is not None:
            e = {**e, "msg": f"unknown key {extra!r} (not part of the schema; check the spelling)"}
        groups.setdefault(head, []).append((tag, tail, e))
    lines: list[str] = []
    for head, errs in groups.items():
        tagged = [x for x in errs if x[0] is not None]
        if not tagged:
            for _, _, e in errs:
                lines.append(f"  - {head}: {_msg(e)}" if head else f"  - {_msg(e)}")
            continue
        specific = [x for x in tagged if x[2].get("type") == "value_error"]
        if not specific:
            specific = [x for x in tagged if x[2].get("type") not in _FORM_ERRORS]
        if specific:
            said: set[str] = set()
            for _, tail, e in specific:
                line = f"  - {head}{tail}: {_msg(e)}"
                if line not in said:
                    said.add(line)
                    lines.append(line)
            continue
        members = {_member_name(t) for t, _, _ in tagged}
        if len(members) == 1:  # a tagged (discriminated) union: the member is known, report inside it
            for _, tail, e in tagged:
                lines.append(f"  - {head}{tail}: {_msg(e)}")
            continue
        forms = ", ".join(dict.fromkeys(_form(_member_name(t)) for t, _, _ in tagged))
        lines.append(f"  - {head}: expected {forms}; got {_short(tagged[0][2].get('input'))}")
    n = len(lines)
    return "\n".join([f"{source}: invalid {kind} ({n} problem{'s' if n != 1 else ''})", *lines])


def _form(member: str) -> str:
    if member in _FORMS:
        return _FORMS[member]
    inner = re.findall(r"\b(float|int|str|bool)\]*$", member)  # 'function-after[_bounded(), ...float]'
    if member.startswith("list["):
        return "a list of numbers" if "float" in member or "int" in member else "a list"
    if inner:
        return {"float": "a number", "int": "a whole number", "str": "a string", "bool": "true or false"}[
            inner[0]
        ]
    return member


def _msg(e: dict) -> str:
    t = e.get("type")
    if t == "finite_number":
        return f"expected a finite number, got {_short(e.get('input'))} (NaN and infinities are refused)"
    if t in ("less_than_equal", "less_than", "greater_than", "greater_than_equal"):
        return f"{_short(e.get('input'))} is out of range: {str(e.get('msg')).lower()}"
    if t == "too_long":
        return f"{_msg_plain(e)} (a limit on this list)"
    return _msg_plain(e)


def _msg_plain(e: dict) -> str:
    return str(e.get("msg", "invalid")).removeprefix("Value error, ")


def _set_override(data: dict, key: str, value: Any) -> None:
    parts = key.split("__")
    cur = data
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def load_scenario(scenario: str | os.PathLike | dict | ScenarioConfig, **overrides: Any) -> ScenarioConfig:
    """Load a scenario by shipped name, YAML path, mapping or config, then apply overrides.

    Raises `ConfigError` with one message naming every bad field path and the reason.
    """
    source = "<config>"
    if isinstance(scenario, ScenarioConfig):
        if not overrides:
            return scenario
        data = scenario.model_dump(mode="python", exclude_none=False)
        source = scenario.source or scenario.name
    elif isinstance(scenario, dict):
        data = copy.deepcopy(scenario)
    else:
        path = Path(scenario)
        if not path.suffix and not path.exists():
            cand = scenario_dir() / f"{scenario}.yaml"
            if not cand.exists():
                raise ConfigError(
                    f"unknown scenario {str(scenario)!r}: not a file, and not one of the shipped scenarios "
                    f"({', '.join(shipped_scenarios())})"
                )
            path = cand
        source = str(path)
        try:
            data = load_yaml_file(path, "scenario file")
        except YamlInputError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of scenario fields")
        if "source" in data:  # set by the loader (where the scenario came from), never by the file
            raise ConfigError(
                f"{path}: invalid scenario (1 problem)\n  - unknown key 'source' (not part of the schema)"
            )
        # relative replay paths resolve against the scenario file's folder
        rp = data.get("demand", {}).get("replay", {}) if isinstance(data.get("demand"), dict) else {}
        if isinstance(rp, dict) and isinstance(rp.get("path"), str) and not Path(rp["path"]).is_absolute():
            rp["path"] = str((path.parent / rp["path"]).resolve())
        data.setdefault("name", path.stem)
    for k, v in overrides.items():
        _set_override(data, k, v)
    data.pop("source", None)
    try:
        cfg = ScenarioConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    cfg.source = source
    return cfg
