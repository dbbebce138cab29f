"""Policy artifacts: a folder with ``manifest.json``, the embedded scenario and one ONNX model per trained role.

An artifact is everything the serving shim needs and nothing it must trust blindly: the manifest
records the observation layout, the action mapping per role, the scenario (embedded as
``scenario.yaml`` with its config hash and the env version), the baseline heuristic (which plays the
roles without a network and is the fallback), training metrics, the creation time and the sha256 of
every file. `load_manifest` refuses a folder whose files do not match their hashes, or that holds a
file the manifest does not list, so a swapped or truncated model never loads.

This module imports neither torch nor onnxruntime (the export side, `training.export`, writes
artifacts with it; the serving side reads them); it needs only the simulator to describe a scenario.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

ARTIFACT_FORMAT = "restock.artifact/1"
MANIFEST = "manifest.json"
SCENARIO_FILE = "scenario.yaml"


class ArtifactError(ValueError):
    """An artifact that cannot be used: missing files, hash mismatches, unknown format."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _listed_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except the manifest, as sorted POSIX relative paths."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out.append(p.relative_to(root).as_posix())
    return out


# ------------------------------------------------------------------------------------------------
# describing a scenario (layout, action mapping)


def observation_layout(compiled) -> dict[str, Any]:
    """How an agent's observation vector is laid out (`envs.kernel.observe` writes it this way)."""
    from restock.envs.types import NODE_FEATURES, UB_FEATURE_CAP

    names = list(compiled.sku_features)  # the scenario's observation block (full by default)
    F, G, K = len(names), len(NODE_FEATURES), compiled.K
    return {
        "sku_features": names,
        "node_features": list(NODE_FEATURES),
        "F": F,
        "G": G,
        "K": K,
        "W": int(compiled.W),
        "dim": K * F + G,
        "layout": "obs[k * F + j] = SKU feature j of SKU k (scenario SKU order), then obs[K * F + g] = node feature g",
        "units": "quantities divided by the node-SKU demand scale max(mean demand per period, 0.1)",
        "upper_bound_cap": UB_FEATURE_CAP,
        "mask": "mask[k * L + l] = 1 when level l of SKU k is allowed (level 0 always is)",
    }


def action_mapping(compiled, role: str) -> dict[str, Any]:
    """Levels and how a level becomes a quantity for the nodes of ``role`` (`envs.kernel.level_quantity`)."""
    from restock.envs.roles import role_nodes
    from restock.envs.types import MODE_QUANTITY

    nodes = [int(n) for n in role_nodes(compiled, role)]
    if not nodes:
        return {"levels": 0, "nodes": []}
    p = compiled.params
    n0 = nodes[0]
    mode = "quantity" if int(p.mode[n0]) == MODE_QUANTITY else "order_up_to"
    out: dict[str, Any] = {
        "levels": int(p.levels[n0]),
        "mode": mode,
        "nodes": [compiled.agent_ids[n] for n in nodes],
    }
    if mode == "quantity":
        out["qstep"] = [int(x) for x in p.qstep[n0]]
        out["rule"] = "quantity = level * qstep[k]"
    else:
        out["cover_step"] = float(p.cover_step[n0])
        out["rule"] = (
            "quantity = max(0, level * cover_step * forecast - inventory_position), rounded up to the lot "
            "size and at least the MOQ; level 0 orders nothing"
        )
    return out


def scenario_section(compiled) -> dict[str, Any]:
    from restock.envs import ENV_NAME, ENV_VERSION

    return {
        "name": compiled.config.name,
        "file": SCENARIO_FILE,
        "config_hash": compiled.config_hash,
        "env": {"name": ENV_NAME, "version": ENV_VERSION},
        "agent_ids": list(compiled.agent_ids),
        "node_names": list(compiled.node_names),
        "sku_names": list(compiled.sku_names),
        "n_dcs": int(compiled.M),
        "n_stores": int(compiled.S),
        "n_skus": int(compiled.K),
        "horizon": int(compiled.horizon),
    }


def write_scenario(out_dir: Path, compiled) -> None:
    """Embed the scenario as YAML (reloading it gives the same config hash)."""
    text = yaml.safe_dump(compiled.config.model_dump(mode="json"), sort_keys=False)
    (out_dir / SCENARIO_FILE).write_text(text)


def load_scenario_of(artifact_dir: str | os.PathLike, manifest: dict | None = None):
    """The `Compiled` scenario embedded in an artifact, checked against the manifest's config hash."""
    from restock.envs import ENV_VERSION
    from restock.envs.compile import compile_scenario
    from restock.envs.config import ConfigError, load_scenario

    d = Path(artifact_dir)
    m = manifest or load_manifest(d)
    sc = m["scenario"]
    try:
        compiled = compile_scenario(load_scenario(str(d / sc.get("file", SCENARIO_FILE))))
    except ConfigError as exc:
        raise ArtifactError(f"{d}: the embedded scenario does not load: {exc}") from None
    if compiled.config_hash != sc["config_hash"]:
        raise ArtifactError(
            f"{d}: the embedded scenario hashes to {compiled.config_hash}, the manifest says {sc['config_hash']}"
        )
    env_v = sc.get("env", {}).get("version")
    if env_v != ENV_VERSION:
        raise ArtifactError(
            f"{d}: exported for env version {env_v}, this simulator is version {ENV_VERSION}; re-export it"
        )
    return compiled


# ------------------------------------------------------------------------------------------------
# writing and reading manifests


def finalize(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file of ``out_dir`` into ``manifest["files"]`` and write manifest.json atomically."""
    d = Path(out_dir)
    manifest = dict(manifest)
    manifest.setdefault("format", ARTIFACT_FORMAT)
    manifest.setdefault("created", now_iso())
    manifest["files"] = {rel: sha256_file(d / rel) for rel in _listed_files(d)}
    tmp = d / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False))
    os.replace(tmp, d / MANIFEST)
    return manifest


def load_manifest(artifact_dir: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read manifest.json; with ``verify`` check the sha256 of every listed file and refuse unlisted ones."""
    d = Path(artifact_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{d}: not an artifact (no {MANIFEST})")
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{path}: unknown artifact format {m.get('format') if isinstance(m, dict) else m!r}"
        )
    for key in ("files", "scenario", "roles", "baseline"):
        if key not in m:
            raise ArtifactError(f"{path}: manifest lacks {key!r}")
    if verify:
        verify_files(d, m)
    return m


def verify_files(artifact_dir: Path, manifest: dict[str, Any]) -> None:
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ArtifactError(f"{artifact_dir}: manifest 'files' must map paths to sha256 digests")
    present = set(_listed_files(artifact_dir))
    for rel, digest in files.items():
        p = artifact_dir / rel
        if rel not in present:
            raise ArtifactError(f"{artifact_dir}: {rel} is listed in the manifest but missing")
        got = sha256_file(p)
        if got != digest:
            raise ArtifactError(
                f"{artifact_dir}: sha256 of {rel} is {got}, the manifest says {digest}: refusing the artifact"
            )
    extra = sorted(present - set(files))
    if extra:
        raise ArtifactError(f"{artifact_dir}: files not listed in the manifest: {', '.join(extra)}")


def manifest_digest(artifact_dir: str | os.PathLike) -> str:
    return sha256_file(Path(artifact_dir) / MANIFEST)


class staging_dir:
    """Write an artifact into a temporary sibling folder and move it into place only on success.

    A failed export (for example a parity failure) leaves nothing behind at ``out``.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        self.out = Path(out)
        self.overwrite = overwrite

    def __enter__(self) -> Path:
        if self.out.exists() and any(self.out.iterdir()) and not self.overwrite:
            raise ArtifactError(f"--out: {self.out} exists and is not empty (use --force to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)


# ------------------------------------------------------------------------------------------------
# heuristic artifacts


def export_heuristic(
    policy: str,
    knobs: dict | None,
    compiled,
    out_dir: str | os.PathLike,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """A heuristic as an artifact: the manifest names the policy and its knobs for every role (no ONNX)."""
    from restock.agents.catalogue import make_policy

    make_policy(policy, knobs)  # unknown names fail here, before anything is written
    with staging_dir(out_dir, overwrite) as tmp:
        write_scenario(tmp, compiled)
        roles = {}
        for role in ("store", "dc"):
            am = action_mapping(compiled, role)
            if not am["nodes"]:
                continue
            roles[role] = {"policy": "heuristic", "heuristic": policy, "action": am}
        manifest = {
            "format": ARTIFACT_FORMAT,
            "kind": "heuristic",
            "name": policy,
            "created": now_iso(),
            "scenario": scenario_section(compiled),
            "observation": observation_layout(compiled),
            "roles": roles,
            "baseline": {"policy": policy, "knobs": knobs or {}},
            "training": {"source": source or {}},
        }
        manifest = finalize(tmp, manifest)
    return manifest
