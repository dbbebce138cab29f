"""Compiling one Python function twice (serial and parallel) without the builds sharing a cache."""

from __future__ import annotations

import types


def variant(fn, suffix: str):
    """A copy of ``fn`` under another qualified name.

    Numba's on-disk cache keys entries by qualified name, line and bytecode, not by compile flags, so a
    serial and a ``parallel=True`` build of the same function would load each other's machine code
    (the parallel build then never runs in parallel). Distinct names keep the cache entries apart.
    """
    g = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    g.__qualname__ = fn.__qualname__ + suffix
    g.__doc__ = fn.__doc__
    return g
