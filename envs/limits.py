"""Limits on scenario sizes and values: checked while a file is validated, before anything is allocated.

``LIMITS`` gathers them in one table; ``RESTOCK_MAX_SCENARIO_GIB`` overrides the memory limit.
`restock.envs.config` re-exports all of them.
"""

from __future__ import annotations

import math
import os

from restock.envs.safeyaml import MAX_FILE_BYTES

MAX_MAGNITUDE = 1e12  # any number: costs x quantities x periods stay far inside float64
MAX_HORIZON = 10_000  # periods (27 years of days); the kernel steps one period at a time
MAX_SKUS = 100_000
MAX_STORES = 100_000
MAX_DCS = 1_000
MAX_SUPPLIERS = 1_000
MAX_LEAD_TIME = 1_000  # periods (a lane's lead time, and a lead-time spike's extra periods)
MAX_EFFECTS = 64  # promotions and shocks together (the kernel keeps one bit per window)
MAX_DISRUPTIONS = 1_000
MAX_UNITS = 1_000_000_000  # lot sizes, MOQs, order increases, supplier caps: int32 order quantities
MAX_COVER = 10_000.0  # periods of forecast demand (order-up-to tops, initial stock)
# arrays of the compiled scenario plus one environment's state; RESTOCK_MAX_SCENARIO_GIB overrides
MAX_MEMORY_GIB = 4.0

LIMITS = {
    "file_bytes": MAX_FILE_BYTES,
    "magnitude": MAX_MAGNITUDE,
    "horizon": MAX_HORIZON,
    "skus": MAX_SKUS,
    "stores": MAX_STORES,
    "dcs": MAX_DCS,
    "suppliers": MAX_SUPPLIERS,
    "lead_time": MAX_LEAD_TIME,
    "effects": MAX_EFFECTS,
    "disruptions": MAX_DISRUPTIONS,
    "units": MAX_UNITS,
    "cover_periods": MAX_COVER,
    "memory_gib": MAX_MEMORY_GIB,
}


def _gib_limit() -> float:
    raw = os.environ.get("RESTOCK_MAX_SCENARIO_GIB")
    try:
        v = float(raw) if raw else MAX_MEMORY_GIB
    except ValueError:
        v = MAX_MEMORY_GIB
    return v if math.isfinite(v) and v > 0 else MAX_MEMORY_GIB


def _bytes(n: float) -> str:
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} bytes"
