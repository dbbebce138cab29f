"""`restock train` caps numba's threads with torch's, without breaking later numba compilations."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import numpy as np
from numba import njit, prange
import torch

@njit(parallel=True)
def before(x):
    s = 0.0
    for i in prange(x.size):
        s += x[i]
    return s

before(np.ones(8))  # numba's threads are running
torch.set_num_threads(1)
from restock.cli.train import _numba_threads
_numba_threads(1)

@njit(parallel=True)
def after(x):  # compiled after the cap: this failed when NUMBA_NUM_THREADS was changed
    s = 0.0
    for i in prange(x.size):
        s += 2 * x[i]
    return s

import numba
print(after(np.ones(8)), numba.get_num_threads(), torch.get_num_threads())
"""


def test_numba_threads_follow_the_cap_and_later_compilations_work():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["16.0", "1", "1"]
