"""The policy registry: artifact versions per role, the champion each role serves, canary and shadow rollout.

Layout of a registry folder::

    REGISTRY_DIR/
      registry.json          state (below), replaced atomically on every change
      .lock                  advisory lock serialising changes (CLI and server may both write)
      artifacts/v1/ ...      registered artifacts, copied in and verified (manifest.json, *.onnx, scenario.yaml)
      audit.db               the default audit store of `restock serve`

registry.json::

    {"format": "restock.registry/1",
     "scenario": {"name", "config_hash"},            every version must be exported for this scenario
     "versions": {"v1": {"path": "artifacts/v1", "kind", "name", "roles", "manifest_sha256",
                         "registered", "source"}},
     "roles": {"store": {"champion": "v2", "candidate": "v3", "mode": "canary" | "shadow",
                         "fraction": 0.1, "history": ["v1"]}},
     "events": [{"ts", "action", "role", "version", "detail", "by"}]}

Routing (`in_canary`): a node is in the canary when the first 8 bytes of sha256(node id), read as a
fraction of 2^64, are below ``fraction``. The split is stable across processes and restarts, and
raising the fraction only adds nodes (a store never flips back and forth between policies). In
shadow mode the candidate decides every request too, its decision is recorded, and the champion's
executes. ``promote`` makes a version the champion (the old one goes on the history stack);
``rollback`` restores the previous champion and drops any candidate.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restock.serving.artifact import load_manifest, manifest_digest, now_iso

REGISTRY_FORMAT = "restock.registry/1"
ROLES = ("store", "dc")
MODES = ("canary", "shadow")


def in_canary(node_id: str, fraction: float) -> bool:
    """True when ``node_id`` falls in the canary share ``fraction`` (stable hash of the id)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big")
    return h < fraction * 2.0**64


class RegistryError(ValueError):
    """A registry operation that cannot be done (unknown version, wrong scenario, ...)."""


@dataclass(frozen=True)
class RoleState:
    champion: str | None = None
    candidate: str | None = None
    mode: str = "canary"
    fraction: float = 0.0
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    scenario: dict[str, Any]
    versions: dict[str, dict[str, Any]]
    roles: dict[str, RoleState]
    events: list[dict[str, Any]] = field(default_factory=list)
    stamp: tuple = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REGISTRY_FORMAT,
            "scenario": self.scenario,
            "versions": self.versions,
            "roles": {
                r: {
                    "champion": s.champion,
                    "candidate": s.candidate,
                    "mode": s.mode,
                    "fraction": s.fraction,
                    "history": list(s.history),
                }
                for r, s in self.roles.items()
            },
            "events": self.events,
        }


class Registry:
    """A registry folder (created on first use)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.file = self.root / "registry.json"

    # ---------------------------------------------------------------- reading
    def _stamp(self) -> tuple:
        try:
            st = self.file.stat()
        except FileNotFoundError:
            return ()
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def snapshot(self) -> Snapshot:
        stamp = self._stamp()
        if not stamp:
            if self.root.exists() and not self.root.is_dir():
                raise RegistryError(f"{self.root}: not a folder")
            return Snapshot(scenario={}, versions={}, roles={}, stamp=())
        try:
            d = json.loads(self.file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{self.file}: unreadable: {exc}") from None
        if d.get("format") != REGISTRY_FORMAT:
            raise RegistryError(f"{self.file}: not a restock registry (format {d.get('format')!r})")
        roles = {
            r: RoleState(
                champion=s.get("champion"),
                candidate=s.get("candidate"),
                mode=s.get("mode", "canary"),
                fraction=float(s.get("fraction", 0.0)),
                history=tuple(s.get("history", ())),
            )
            for r, s in d.get("roles", {}).items()
        }
        return Snapshot(
            scenario=d.get("scenario", {}),
            versions=d.get("versions", {}),
            roles=roles,
            events=d.get("events", []),
            stamp=stamp,
        )

    def snapshot_if_changed(self, prev: Snapshot) -> Snapshot:
        """``prev`` itself when registry.json has not changed since it was read, else a fresh snapshot."""
        return prev if self._stamp() == prev.stamp else self.snapshot()

    def artifact_path(self, version: str) -> Path:
        snap = self.snapshot()
        v = snap.versions.get(version)
        if v is None:
            raise RegistryError(f"unknown version {version!r} (known: {', '.join(snap.versions) or 'none'})")
        return self.root / v["path"]

    def describe(self) -> dict[str, Any]:
        return self.snapshot().to_json()

    # ---------------------------------------------------------------- writing
    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield self.snapshot()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, snap: Snapshot) -> None:
        tmp = self.root / ".registry.json.tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(snap.to_json(), indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.file)

    @staticmethod
    def _event(
        snap: Snapshot, action: str, role: str | None, version: str | None, detail: str, by: str
    ) -> list:
        ev = list(snap.events)
        ev.append(
            {"ts": now_iso(), "action": action, "role": role, "version": version, "detail": detail, "by": by}
        )
        return ev[-1000:]

    def register(self, artifact_dir: str | os.PathLike, by: str = "cli", note: str = "") -> str:
        """Verify and copy an artifact in as the next version; it becomes champion of roles without one."""
        src = Path(artifact_dir)
        m = load_manifest(src, verify=True)
        sc = {"name": m["scenario"]["name"], "config_hash": m["scenario"]["config_hash"]}
        with self._locked() as snap:
            if snap.scenario and snap.scenario.get("config_hash") != sc["config_hash"]:
                raise RegistryError(
                    f"{src}: exported for scenario {sc['name']} ({sc['config_hash']}); this registry serves "
                    f"{snap.scenario.get('name')} ({snap.scenario.get('config_hash')})"
                )
            n = 1 + max((int(v[1:]) for v in snap.versions if v[1:].isdigit()), default=0)
            version = f"v{n}"
            (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root / "artifacts"))
            try:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
                load_manifest(tmp, verify=True)  # the copy must verify too
                os.replace(tmp, self.root / "artifacts" / version)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            path = self.root / "artifacts" / version
            versions = dict(snap.versions)
            versions[version] = {
                "path": f"artifacts/{version}",
                "kind": m.get("kind"),
                "name": m.get("name"),
                "roles": sorted(m["roles"]),
                "manifest_sha256": manifest_digest(path),
                "registered": now_iso(),
                "source": str(src.resolve()),
                "note": note,
            }
            roles = dict(snap.roles)
            for r in m["roles"]:
                if r not in roles or roles[r].champion is None:
                    roles[r] = RoleState(champion=version)
            self._write(
                Snapshot(
                    scenario=snap.scenario or sc,
                    versions=versions,
                    roles=roles,
                    events=self._event(snap, "register", None, version, note, by),
                )
            )
        return version

    def _role_version(self, snap: Snapshot, role: str, version: str) -> None:
        if role not in ROLES:
            raise RegistryError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        v = snap.versions.get(version)
        if v is None:
            raise RegistryError(f"unknown version {version!r} (known: {', '.join(snap.versions) or 'none'})")
        if role not in v.get("roles", ()):
            raise RegistryError(f"version {version} has no policy for role {role!r}")

    def promote(self, role: str, version: str, by: str = "cli") -> RoleState:
        """Make ``version`` the champion of ``role`` (the current one becomes the rollback target)."""
        with self._locked() as snap:
            self._role_version(snap, role, version)
            cur = snap.roles.get(role, RoleState())
            if cur.champion == version:
                raise RegistryError(f"{version} is already the {role} champion")
            hist = cur.history + ((cur.champion,) if cur.champion else ())
            keep = cur.candidate if cur.candidate != version else None
            new = RoleState(
                champion=version,
                candidate=keep,
                mode=cur.mode if keep else "canary",
                fraction=cur.fraction if keep else 0.0,
                history=hist[-50:],
            )
            self._commit(snap, role, new, "promote", version, f"from {cur.champion}", by)
        return new

    def rollback(self, role: str, by: str = "cli") -> RoleState:
        """Restore the previous champion of ``role`` and stop any canary or shadow candidate."""
        with self._locked() as snap:
            cur = snap.roles.get(role)
            if cur is None or not cur.history:
                raise RegistryError(f"{role}: nothing to roll back to (no previous champion)")
            prev = cur.history[-1]
            new = RoleState(champion=prev, history=cur.history[:-1])
            self._commit(snap, role, new, "rollback", prev, f"from {cur.champion}", by)
        return new

    def set_candidate(
        self, role: str, version: str, mode: str = "canary", fraction: float = 0.1, by: str = "cli"
    ) -> RoleState:
        """Route ``fraction`` of the role's nodes to ``version`` (canary), or shadow it on every request."""
        if mode not in MODES:
            raise RegistryError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not 0.0 <= fraction <= 1.0 or fraction != fraction:
            raise RegistryError(f"fraction must be in [0, 1], not {fraction}")
        with self._locked() as snap:
            self._role_version(snap, role, version)
            cur = snap.roles.get(role, RoleState())
            if cur.champion == version:
                raise RegistryError(f"{version} is the {role} champion already")
            new = RoleState(
                champion=cur.champion,
                candidate=version,
                mode=mode,
                fraction=float(fraction) if mode == "canary" else 0.0,
                history=cur.history,
            )
            self._commit(snap, role, new, mode, version, f"fraction {new.fraction}", by)
        return new

    def clear_candidate(self, role: str, by: str = "cli") -> RoleState:
        """Stop the canary or shadow run of ``role`` (the champion serves every node)."""
        with self._locked() as snap:
            cur = snap.roles.get(role)
            if cur is None or cur.candidate is None:
                raise RegistryError(f"{role}: no candidate to clear")
            new = RoleState(champion=cur.champion, history=cur.history)
            self._commit(snap, role, new, "clear_candidate", cur.candidate, "", by)
        return new

    def _commit(
        self, snap: Snapshot, role: str, new: RoleState, action: str, version: str, detail: str, by: str
    ):
        roles = dict(snap.roles)
        roles[role] = new
        self._write(
            Snapshot(
                scenario=snap.scenario,
                versions=snap.versions,
                roles=roles,
                events=self._event(snap, action, role, version, detail, by),
            )
        )
