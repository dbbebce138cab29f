"""`ArrayEnv`'s choice between the serial and parallel builds: by size, thread count and idle cores."""

from __future__ import annotations

import numba
import pytest
from restock.envs import ArrayEnv
from restock.envs import array_env as ae
from restock.envs import kernel as kn


@pytest.mark.parametrize(
    ("pairs", "threads", "cores", "load", "expect"),
    [
        (ae.PARALLEL_PAIRS - 1, 8, 8, 0.0, False),  # too small
        (ae.PARALLEL_PAIRS, 1, 8, 0.0, False),  # one thread
        (ae.PARALLEL_PAIRS, 8, 8, 0.5, True),  # idle machine
        (ae.PARALLEL_PAIRS, 8, 8, 6.5, False),  # under two idle cores
        (ae.PARALLEL_PAIRS, 2, 2, 4.0, False),  # the busy 2-core box of the bench notes
    ],
)
def test_choose_parallel(monkeypatch, pairs, threads, cores, load, expect):
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    monkeypatch.setattr(ae.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(ae.os, "getloadavg", lambda: (load, load, load))
    assert ae.choose_parallel(pairs) is expect


def test_one_environment_steps_on_the_serial_build():
    one = ArrayEnv("tiny", num_envs=1, parallel=True)
    two = ArrayEnv("tiny", num_envs=2, parallel=True)
    assert one._step is kn.step and one._observe is kn.observe_par
    assert two._step is kn.step_par
