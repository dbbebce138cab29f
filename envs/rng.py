"""Counter-based random numbers for the kernel and the demand samplers.

Every random number in restock is a pure function of (seed, path, period, row, position): the same
demand path comes out whatever the batch layout, chunk size or thread count, which is what common
random numbers across policies (and the oracle's look at the same path) need.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

_GOLDEN = uint64(0x9E3779B97F4A7C15)
_M1 = uint64(0xBF58476D1CE4E5B9)
_M2 = uint64(0x94D049BB133111EB)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, inline="always")
def mix64(z):
    """splitmix64's finaliser: a bijective 64-bit hash."""
    z = (z ^ (z >> uint64(30))) * _M1
    z = (z ^ (z >> uint64(27))) * _M2
    return z ^ (z >> uint64(31))


@njit(cache=True, inline="always")
def row_key(seed, path, t, row):
    """Key of one row of draws; distinct (seed, path, t, row) give independent streams."""
    h = mix64(uint64(seed) + _GOLDEN)
    h = mix64(h ^ (uint64(path) * _GOLDEN))
    h = mix64(h ^ (uint64(t) * _M1 + uint64(0x632BE59BD9B4E019)))
    return mix64(h ^ (uint64(row) * _M2 + uint64(0x8CB92BA72F3D8DD7)))


@njit(cache=True, inline="always")
def next_u64(state):
    """Advance a splitmix64 stream; returns (new_state, 64 random bits)."""
    state = state + _GOLDEN
    return state, mix64(state)


@njit(cache=True, inline="always")
def next_uniform(state):
    """(new_state, u) with u uniform on [0, 1) with 53 random bits."""
    state, z = next_u64(state)
    return state, float(z >> uint64(11)) * _INV53


@njit(cache=True)
def uniform_at(key, t, n):
    """One uniform that depends only on (episode key, period, lane): lead-time draws."""
    z = mix64(key ^ (uint64(t) * _GOLDEN + uint64(n) * _M2 + uint64(0x2545F4914F6CDD1D)))
    return float(mix64(z) >> uint64(11)) * _INV53


def episode_key(seed: int, path: int) -> np.uint64:
    """The random key of one episode (sample path), used for in-kernel draws such as lead times."""
    return np.uint64(
        int(
            row_key(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), np.uint64(path), np.uint64(0), np.uint64(2**32 + 7))
        )
    )
