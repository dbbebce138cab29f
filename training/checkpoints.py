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
