"""Progress for anything that takes more than ~10 s: a bar on a terminal, a plain line otherwise.

The whole API::

    from restock.progress import progress, track, jit_notice

    with progress(total=1000, desc="evaluating tiny") as bar:   # a context manager
        bar.advance(10)                  # 10 more units done
        bar.describe("evaluating tiny [stress]")   # new description
        bar.log("a message")             # a line that does not break the bar

    for x in track(items, desc="tuning"):   # an iterator (total: len(items) or ``total=``)
        ...

    with heartbeat("bench: kernel"):    # one long call with no steps: a line every ~10 s
        ...

    jit_notice()   # once per process: says the kernel is being compiled when Numba's cache is cold

On a terminal (the stream's ``isatty()``) a rich bar is drawn. Anywhere else (a log file, CI, a pipe) one
plain line is written when the work starts, then at most one line every ``interval`` seconds (10 by
default) and one when it ends, e.g. ``evaluating tiny: 450/1000 (45%), 0:00:20 elapsed, ~0:00:24 left``.
The environment variable ``RESTOCK_PROGRESS`` overrides the choice: ``bar``, ``plain`` or ``off``.
Everything goes to standard error unless a ``stream`` is given, so standard output stays parseable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

__all__ = ["Progress", "heartbeat", "jit_notice", "progress", "track"]

INTERVAL = 10.0  # seconds between plain lines


def _hms(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _mode(stream: IO[str]) -> str:
    forced = os.environ.get("RESTOCK_PROGRESS", "").strip().lower()
    if forced in ("bar", "plain", "off"):
        return forced
    try:
        return "bar" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


class Progress:
    """One unit of work with a known (or unknown: ``total=None``) number of steps; see the module doc."""

    def __init__(
        self,
        total: float | None,
        desc: str = "working",
        stream: IO[str] | None = None,
        interval: float = INTERVAL,
        mode: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.interval, self.clock = total, desc, interval, clock
        self.stream = stream if stream is not None else sys.stderr
        self.mode = mode or _mode(self.stream)
        self.done = 0.0
        self._rich: Any = None
        self._task: Any = None
        self._t0 = self._last = 0.0

    # -- context manager ------------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        self._t0 = self._last = self.clock()
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._rich.__enter__()
            self._task = self._rich.add_task(self.desc, total=self.total)
        elif self.mode == "plain":
            self._line("started" + (f" ({self._num(self.total)} steps)" if self.total else ""))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._rich is not None:
            self._rich.__exit__(exc_type, exc, tb)
            self._rich = None
        elif self.mode == "plain":
            took = _hms(self.clock() - self._t0)
            if exc_type is None:
                counted = "" if self.total is None and not self.done else f", {self._count()}"
                self._line(f"done{counted} in {took}")
            else:
                self._line(f"stopped ({exc_type.__name__}) at {self._count()} after {took}")

    # -- updates --------------------------------------------------------------------------------------
    def advance(self, n: float = 1) -> None:
        """``n`` more steps done."""
        self.done += n
        if self._rich is not None:
            self._rich.advance(self._task, n)
        elif self.mode == "plain":
            now = self.clock()
            if now - self._last >= self.interval:
                self._line(self._status(now))

    def set_total(self, total: float | None) -> None:
        """The number of steps, learned after the start (the bar and the time left follow it)."""
        self.total = total
        if self._rich is not None:
            self._rich.update(self._task, total=total)

    def describe(self, desc: str) -> None:
        """A new description (the plain mode shows it on its next line)."""
        self.desc = desc
        if self._rich is not None:
            self._rich.update(self._task, description=desc)

    def log(self, msg: str) -> None:
        """Print a message without breaking the bar."""
        if self._rich is not None:
            self._rich.console.print(msg, highlight=False, markup=False)
        elif self.mode != "off":
            print(msg, file=self.stream, flush=True)

    # -- plain lines ----------------------------------------------------------------------------------
    @staticmethod
    def _num(x: float | None) -> str:
        return "?" if x is None else (f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}")

    def _count(self) -> str:
        return f"{self._num(self.done)}/{self._num(self.total)}" if self.total else self._num(self.done)

    def _status(self, now: float) -> str:
        el = now - self._t0
        s = self._count()
        if self.total:
            frac = min(self.done / self.total, 1.0)
            s += f" ({100 * frac:.0f}%), {_hms(el)} elapsed"
            if 0 < frac < 1:
                s += f", ~{_hms(el * (1 - frac) / frac)} left"
        else:
            s += f", {_hms(el)} elapsed"
        return s

    def _line(self, text: str) -> None:
        self._last = self.clock()
        print(f"{self.desc}: {text}", file=self.stream, flush=True)


def progress(
    total: float | None = None,
    desc: str = "working",
    stream: IO[str] | None = None,
    interval: float = INTERVAL,
    mode: str | None = None,
) -> Progress:
    """A `Progress` to use as a context manager (``with progress(100, "tuning") as bar: bar.advance()``)."""
    return Progress(total, desc, stream=stream, interval=interval, mode=mode)


def track(
    items: Iterable,
    desc: str = "working",
    total: float | None = None,
    stream: IO[str] | None = None,
    interval: float = INTERVAL,
    mode: str | None = None,
) -> Iterator:
    """Yield from ``items``, one step per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, stream=stream, interval=interval, mode=mode) as bar:
        for x in items:
            yield x
            bar.advance(1)


class heartbeat:  # used like a function: ``with heartbeat("bench: kernel"): ...``
    """For work that reports no steps (one long call): a rich spinner on a terminal, otherwise a plain
    line at the start, one every ``interval`` seconds from a daemon thread ("still running, 0:00:20
    elapsed") and one at the end; ``RESTOCK_PROGRESS`` applies as for `Progress`."""

    def __init__(self, desc: str, stream: IO[str] | None = None, interval: float = INTERVAL):
        self.bar = Progress(None, desc, stream=stream, interval=interval)
        self._stop = None

    def __enter__(self) -> Progress:
        import threading

        self.bar.__enter__()
        if self.bar.mode == "plain":
            self._stop = threading.Event()

            def beat() -> None:
                while not self._stop.wait(self.bar.interval):
                    self.bar._line(f"still running, {_hms(self.bar.clock() - self.bar._t0)} elapsed")

            threading.Thread(target=beat, daemon=True).start()
        return self.bar

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
        self.bar.__exit__(*exc)


_NOTICED = False


def kernel_cache_cold() -> bool:
    """True when Numba has no cached machine code for the simulator's step (serial nor parallel): the
    first simulation will compile it. Reads Numba's cache index without compiling; False when unsure."""
    try:
        from restock.envs import kernel as kn

        for disp in (kn.step, kn.step_par):
            if disp.signatures:  # already compiled in this process
                return False
            if disp._cache._cache_file._load_index():  # a cached build for the current source
                return False
        return True
    except Exception:  # a private Numba API: never fail a run over a notice
        return False


def jit_notice(stream: IO[str] | None = None) -> bool:
    """Once per process, before the first simulation: when Numba's cache is cold, say that the kernel is
    being compiled (first run only, ~1-2 min) so a silent minute is not taken for a hang. Returns True
    when the notice was printed."""
    global _NOTICED
    if _NOTICED:
        return False
    _NOTICED = True
    if not kernel_cache_cold():
        return False
    out = stream if stream is not None else sys.stderr
    if _mode(out) != "off":
        print(
            "compiling the simulation kernel (first run only, ~1-2 min; later runs load it from the cache)...",
            file=out,
            flush=True,
        )
    return True
