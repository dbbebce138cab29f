"""`--resume` reads checkpoints/latest.json through training.checkpoints.read_latest: a pointer that is
not what restock writes is refused naming the file (no traceback, no folder outside the run)."""

from __future__ import annotations

import json
import os

import pytest
from restock.training.checkpoints import read_latest


def _run(tmp_path, latest, folder: str | None = "000000000032"):
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    if folder:
        (root / folder).mkdir()
    if latest is not None:
        (root / "latest.json").write_text(latest if isinstance(latest, str) else json.dumps(latest))
    return tmp_path / "run"


def test_read_latest__gives_the_pointer_and_its_folder(tmp_path):
    run = _run(tmp_path, {"path": "000000000032", "env_steps": 32, "role": "store"})
    latest, ckpt = read_latest(run)
    assert latest["env_steps"] == 32 and ckpt == run / "checkpoints" / "000000000032"


@pytest.mark.parametrize(
    "latest, match",
    [
        (None, r"has no checkpoint to resume from \(.*latest\.json is missing\)"),
        ("", r"latest\.json is not readable JSON \(JSONDecodeError"),
        ("{not json", r"latest\.json is not readable JSON"),
        ([1, 2], r"must be a JSON object whose 'path' names a checkpoint folder"),
        ({"env_steps": 32}, r"'path' names a checkpoint folder"),
        ({"path": 32}, r"'path' names a checkpoint folder"),
        ({"path": "../other"}, r"'path' names a checkpoint folder"),
        ({"path": "/etc"}, r"'path' names a checkpoint folder"),
        ({"path": ".."}, r"'path' names a checkpoint folder"),
        ({"path": "000000000032", "env_steps": -1}, r"env_steps must be a whole number >= 0 \(found -1\)"),
        ({"path": "000000000032", "env_steps": "32"}, r"env_steps must be a whole number"),
        ({"path": "000000000064"}, r"000000000064, named by .*latest\.json, is not a checkpoint folder"),
    ],
)
def test_read_latest__refuses_what_restock_does_not_write(tmp_path, latest, match):
    with pytest.raises(ValueError, match=match):
        read_latest(_run(tmp_path, latest))


def test_read_latest__refuses_a_link_and_bytes_that_are_not_text(tmp_path):
    run = _run(tmp_path, {"path": "elsewhere"})
    os.symlink(tmp_path, run / "checkpoints" / "elsewhere")
    with pytest.raises(ValueError, match=r"elsewhere, named by .* is not a checkpoint folder"):
        read_latest(run)
    (run / "checkpoints" / "latest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"not readable JSON \(UnicodeDecodeError"):
        read_latest(run)


def test_train_resume__a_bad_pointer_exits_2_naming_the_file(tmp_path):
    from typer.testing import CliRunner

    from restock.cli import app

    run = _run(tmp_path, {"path": "../../x"})
    res = CliRunner().invoke(
        app, ["train", "tiny", "--trainer", "sb3", "--steps", "64", "--resume", str(run)]
    )
    assert res.exit_code == 2, res.output
    out = "".join(res.output.split())  # the console wraps long paths
    assert "latest.jsonmustbeaJSONobjectwhose'path'namesacheckpointfolder" in out, res.output
    assert "Traceback" not in res.output
