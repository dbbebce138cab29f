"""Checkpoint retention shared by the SB3 and RLlib trainers (``keep_checkpoints``, like Tune's
``CheckpointConfig(num_to_keep=...)``).

Both write ``checkpoints/<012d env steps>/`` folders and then ``checkpoints/latest.json`` naming the
newest; pruning runs only after that, so a crash at any point leaves latest.json pointing at a complete
folder (the one it names is never deleted).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path


def read_latest(run_dir: Path) -> tuple[dict, Path]:
    """``run_dir/checkpoints/latest.json`` and the checkpoint folder it names, for ``--resume``; a
    pointer that is missing, unreadable, not a JSON object, or names anything but a folder directly under
    ``checkpoints/`` is refused with a ValueError naming the file (never a traceback, never a folder
    outside the run)."""
    root = Path(run_dir) / "checkpoints"
    p = root / "latest.json"
    if not p.is_file():
        raise ValueError(f"--resume: {run_dir} has no checkpoint to resume from ({p} is missing)")
    try:
        latest = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"--resume: {p} is not readable JSON ({type(err).__name__}: {err})") from None
    name = latest.get("path") if isinstance(latest, dict) else None
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            f"--resume: {p} must be a JSON object whose 'path' names a checkpoint folder under {root} "
            f"(found {str(latest)[:80]!r})"
        )
    steps = latest.get("env_steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"--resume: {p}: env_steps must be a whole number >= 0 (found {steps!r})")
    ckpt = root / name
    if ckpt.is_symlink() or not ckpt.is_dir():
        raise ValueError(f"--resume: {ckpt}, named by {p}, is not a checkpoint folder")
    return latest, ckpt


def step_folders(root: Path) -> list[Path]:
    """The finished checkpoint folders under ``root`` (names of digits; ``.tmp-*`` ones are skipped)."""
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]


def prune_checkpoints(
    root: Path, keep: int | None, order: Callable[[Path], tuple] | None = None
) -> list[Path]:
    """Delete the oldest checkpoint folders under ``root`` until ``keep`` remain; ``None`` or 0 keeps
    all. ``order`` sorts them oldest first (default: by env steps, the folder name). The folder
    latest.json names always stays, counted among the ``keep``. Returns the deleted folders."""
    if not keep:
        return []
    try:
        latest = json.loads((root / "latest.json").read_text())["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no valid pointer yet: delete nothing
    folders = sorted(step_folders(root), key=order or (lambda p: (int(p.name),)))
    extra = len(folders) - keep
    gone = []
    for p in folders:
        if extra <= 0:
            break
        if p.name == latest:
            continue
        shutil.rmtree(p, ignore_errors=True)
        gone.append(p)
        extra -= 1
    return gone
