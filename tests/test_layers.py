"""Layering: the simulator (envs/) and the policies (agents/) import nothing from the layers built on
them (eval/, serving/, training/, the command line), not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("envs", "agents")
UPPER = ("eval", "serving", "training", "cli")


def upward_imports(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, module) of every import of restock.eval/serving/training/cli anywhere in the source."""
    bad = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports stay inside their own package
                continue
            mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names] if mod == "restock" else [mod]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) >= 2 and parts[0] == "restock" and parts[1] in UPPER:
                bad.append((node.lineno, name))
    return sorted(bad)


def lower_modules() -> list[Path]:
    return sorted(p for d in LOWER for p in (ROOT / d).rglob("*.py"))


def test_layers__the_checker_finds_imports_at_any_depth():
    src = (
        "import numpy\nfrom restock.envs import kernel\n"
        "def f():\n    if True:\n        from restock.eval.kpis import mean_ci\n"
        "class C:\n    def g(self):\n        import restock.serving.artifact as a\n"
        "from restock import training\nfrom restock.agents import base\n"
    )
    assert upward_imports(src) == [
        (5, "restock.eval.kpis"),
        (8, "restock.serving.artifact"),
        (9, "restock.training"),
    ]


def test_layers__the_lower_layers_are_all_checked():
    names = {p.relative_to(ROOT).as_posix() for p in lower_modules()}
    assert {"envs/kernel.py", "agents/shield.py", "agents/tuning.py"} <= names


@pytest.mark.parametrize("path", lower_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_layers__envs_and_agents_import_nothing_from_above(path):
    bad = upward_imports(path.read_text(), str(path))
    assert not bad, f"{path.relative_to(ROOT)} imports from a layer above it: {bad}"
