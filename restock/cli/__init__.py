"""The `restock` command: one entry point for simulation, tuning, evaluation, training, export and serving.

One module per command group; each registers its commands on the shared Typer `app` (`common.py`) when
imported, in the order `restock --help` lists them.
"""

from __future__ import annotations

# the order of these imports is the order `restock --help` lists the commands in
# isort: off
from restock.cli import simulate, tune, evaluate, train, bench, export, serve, data, demo  # noqa: F401

# isort: on
from restock.cli.common import app
from restock.cli.demo import _demo_serve

__all__ = ["_demo_serve", "app", "main"]


def main() -> None:  # pragma: no cover
    import sys

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
