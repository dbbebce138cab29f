"""Fixtures for the serving tests: a hand-made training run on `tiny`, its exported artifact, heuristic
artifacts, registries and a helper that turns simulator states into requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from serving_helpers import make_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, tiny_run) -> Path:
    from restock.training.export import export_run

    out = tmp_path_factory.mktemp("art") / "tiny-learned"
    export_run(tiny_run, out, n_parity=1000, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def tiny_heuristic_artifact(tmp_path_factory) -> Path:
    from restock.serving.artifact import export_heuristic

    c = compile_scenario(load_scenario("tiny"))
    out = tmp_path_factory.mktemp("art") / "tiny-base-stock"
    export_heuristic("base_stock", {"store": {"z": 0.5}, "dc": {"z": 0.0}}, c, out)
    return out


@pytest.fixture(scope="session")
def default_heuristic_artifact(tmp_path_factory) -> Path:
    from restock.serving.artifact import export_heuristic

    c = compile_scenario(load_scenario("default"))
    out = tmp_path_factory.mktemp("art") / "default-base-stock"
    export_heuristic("base_stock", {"store": {"z": 0.3}, "dc": {"z": 0.5}}, c, out)
    return out


@pytest.fixture
def registry_of(tmp_path):
    """registry_of(artifact, ...) -> a fresh registry folder holding copies of the artifacts (v1, v2, ...)."""
    from restock.serving.registry import Registry

    def make(*artifacts: Path) -> Path:
        reg = tmp_path / f"registry-{len(list(tmp_path.glob('registry-*')))}"
        r = Registry(reg)
        for a in artifacts:
            r.register(a)
        return reg

    return make


@pytest.fixture
def copy_dir(tmp_path):
    def cp(src: Path, name: str = "copy") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return cp
