"""The policies of one registered artifact version, loaded for serving (`load_bundle`): an exported ONNX
network or a heuristic per role, and the artifact's baseline heuristic as the fallback.

Heuristics come from `agents.catalogue.make_policy`, bound to the scenario; ONNX networks run through
`serving.onnx_policy.OnnxPolicy`. Every file's hash is verified and the artifact must have been exported
for the scenario the registry serves.

A role's manifest entry may list ``extra_sku_features`` (`agents.echelon_features`: a network trained
by ``dcl`` on a serial chain reads ``echelon_position`` after the kernel's per-SKU features); the
role's `RolePolicy` carries them and the engine appends them from the request. A manifest naming a
feature this server does not know, or whose declared observation width does not fit the features it
lists, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from restock.agents.catalogue import make_policy
from restock.agents.echelon_features import EXTRA_SKU_FEATURES
from restock.serving.artifact import ArtifactError, load_manifest, manifest_digest
from restock.serving.onnx_policy import OnnxPolicy


@dataclass
class RolePolicy:
    """The policy serving one role from one artifact version, with the names records carry."""

    policy: Any
    policy_id: str
    version: str
    kind: str  # "onnx" or "heuristic"
    extra_sku_features: tuple[str, ...] = field(default=())  # read from the request after the kernel's F


@dataclass
class Bundle:
    """One registered artifact version: a policy per role and the baseline heuristic as fallback."""

    version: str
    path: Path
    manifest: dict[str, Any]
    roles: dict[str, RolePolicy]
    fallback: RolePolicy


def _heuristic(name: str, knobs: dict | None, compiled):
    """A heuristic bound to the scenario; its per-period demand statistics are memoised (exactly the
    numbers it would compute again: they depend on the period alone)."""
    pol = make_policy(name, knobs or {})
    if hasattr(pol, "bind"):
        pol.bind(compiled)
        stats = getattr(pol, "stats", None)
        if stats is not None and hasattr(stats, "protection"):
            stats.protection = lru_cache(maxsize=512)(stats.protection)
    return pol


def load_bundle(path: str | Path, version: str, compiled, verify: bool = True) -> Bundle:
    """Load an artifact for serving: verify every hash, check the scenario, open the ONNX sessions."""
    path = Path(path)
    m = load_manifest(path, verify=verify)
    if m["scenario"]["config_hash"] != compiled.config_hash:
        raise ArtifactError(
            f"{path}: exported for scenario {m['scenario']['name']} ({m['scenario']['config_hash']}), the "
            f"registry serves {compiled.config.name} ({compiled.config_hash})"
        )
    tag = f"{version}+{manifest_digest(path)[:12]}"
    base = m["baseline"]
    fb = RolePolicy(_heuristic(base["policy"], base.get("knobs"), compiled), base["policy"], tag, "heuristic")
    roles: dict[str, RolePolicy] = {}
    for role, spec in m["roles"].items():
        if spec["policy"] == "onnx":
            levels = int(spec["action"]["levels"])
            nodes = [i for i, a in enumerate(compiled.agent_ids) if a in spec["action"]["nodes"]]
            if nodes and int(compiled.params.levels[nodes[0]]) != levels:
                raise ArtifactError(f"{path}: {role} model has {levels} levels, the scenario does not")
            pid = f"{m.get('name', 'onnx')}:{role}"
            extra, width = _extra_features(path, role, spec, compiled)
            pol = OnnxPolicy(path / spec["file"], levels, pid, tag)
            got = pol.session.get_inputs()[0].shape
            if len(got) != 2 or (isinstance(got[1], int) and got[1] != width):
                raise ArtifactError(
                    f"{path}: the {role} model's obs input has shape {got}, the manifest says [batch, {width}]"
                )
            roles[role] = RolePolicy(pol, pid, tag, "onnx", extra)
        elif spec["policy"] == "heuristic":
            name = spec.get("heuristic", base["policy"])
            if name == base["policy"]:
                roles[role] = fb
            else:
                roles[role] = RolePolicy(
                    _heuristic(name, base.get("knobs"), compiled), name, tag, "heuristic"
                )
        else:
            raise ArtifactError(f"{path}: unknown policy kind {spec['policy']!r} for role {role}")
    return Bundle(version=version, path=path, manifest=m, roles=roles, fallback=fb)


def _extra_features(path: Path, role: str, spec: dict[str, Any], compiled) -> tuple[tuple[str, ...], int]:
    """The role's extra per-SKU features (none, or exactly `EXTRA_SKU_FEATURES`) and the observation
    width they give, checked against the width the manifest declares for its model."""
    from restock.envs.types import NODE_FEATURES

    extra = spec.get("extra_sku_features", [])
    if not isinstance(extra, list) or extra not in ([], list(EXTRA_SKU_FEATURES)):
        raise ArtifactError(
            f"{path}: the {role} model reads extra SKU features {extra!r}; this server can feed none or "
            f"exactly {list(EXTRA_SKU_FEATURES)} (from the request's echelon_position): refusing the artifact"
        )
    K = compiled.K
    want = K * (len(compiled.sku_features) + len(extra)) + len(NODE_FEATURES)
    declared = spec.get("inputs", {}).get("obs", [None, want])[1]
    if declared != want:
        raise ArtifactError(
            f"{path}: the {role} model expects observations of width {declared}, the scenario's {K} SKUs "
            f"with extra SKU features {extra} give {want}: refusing the artifact"
        )
    return tuple(extra), want
