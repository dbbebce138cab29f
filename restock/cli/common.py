"""What every `restock` command shares: the Typer app, the consoles, exiting with a message, loading a
scenario, progress bars, the KPI table and the shield factory.

Imports of restock's own modules stay inside the functions here and in the command modules: each pulls
numba, scipy or more (1.5-5 s to import on a small machine), and `restock --help` or a command should pay
only for what it uses. torch, Ray and SB3 (tens of seconds) are imported only by the commands that need them.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    name="restock",
    help="Multi-agent RL for retail inventory control: simulate, tune, evaluate, train, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from restock import __version__

        typer.echo(f"restock {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


def fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def load_or_fail(scenario: str, **overrides):
    from restock.envs.compile import compile_scenario
    from restock.envs.config import ConfigError, load_scenario

    try:
        return compile_scenario(load_scenario(scenario, **overrides))
    except ConfigError as exc:
        fail(str(exc))


def progress_bar(total: int, description: str):
    """``(prog, task)`` for the commands' loops: restock.progress underneath (a bar on a terminal, a plain
    line every ~10 s otherwise, RESTOCK_PROGRESS=bar|plain|off), with rich's ``advance(task, n)`` /
    ``update(task, ...)`` call shape so the commands read the same. Says so once when the kernel compiles."""
    from restock.progress import Progress, jit_notice

    jit_notice()
    return _CommandProgress(Progress(total, description)), 0


class _CommandProgress:
    def __init__(self, bar) -> None:
        self.bar = bar

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def advance(self, _task: int, n: float = 1) -> None:
        self.bar.advance(n)

    def update(self, _task: int, description: str | None = None, completed: float | None = None) -> None:
        if description is not None:
            self.bar.describe(description)
        if completed is not None and completed > self.bar.done:
            self.bar.advance(completed - self.bar.done)


# ------------------------------------------------------------------------------------------------
def kpi_table(title: str, summaries: dict[str, dict[str, dict]], keys: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("policy")
    for k in keys:
        table.add_column(k, justify="right")
    for pol, summ in summaries.items():
        row = [Text(pol)]  # plain text: a run's label holds [...]
        for k in keys:
            if k not in summ:
                row.append("-")
                continue
            m, (lo, hi) = summ[k]["mean"], summ[k]["ci95"]
            row.append(fmt(m) + f" ±{fmt((hi - lo) / 2)}")
        table.add_row(*row)
    return table


def fmt(x: float) -> str:
    if x != x:
        return "nan"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


def shield_factory(no_shield: bool):
    """The shield every evaluated policy runs behind (monitor mode with --no-shield), when available."""
    try:
        from restock.agents.shield import Shield
    except ImportError:
        return None
    mode = "monitor" if no_shield else "enforce"
    return lambda compiled: Shield(compiled, mode=mode)
