"""restock.progress: plain lines every ~10 s off a terminal, nothing between, one notice for a cold JIT."""

from __future__ import annotations

import io

import numpy as np
import pytest

from restock import progress as pg


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress__plain_mode_writes_a_line_at_start_every_interval_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    with pg.Progress(100, "evaluating tiny", stream=out, interval=10.0, clock=clock) as bar:
        for _ in range(100):
            clock.t += 0.25  # 25 s in all
            bar.advance(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "evaluating tiny: started (100 steps)"
    assert lines[1] == "evaluating tiny: 40/100 (40%), 0:00:10 elapsed, ~0:00:15 left"
    assert lines[2] == "evaluating tiny: 80/100 (80%), 0:00:20 elapsed, ~0:00:05 left"
    assert lines[3] == "evaluating tiny: done, 100/100 in 0:00:25"
    assert len(lines) == 4  # no flood: 100 steps, four lines


def test_progress__a_total_learned_later_is_what_the_lines_count_to():
    """Roles trained together (store+dc) have one budget: the CLI sets it once the trainer says so."""
    out, clock = io.StringIO(), Clock()
    with pg.Progress(200, "training", stream=out, interval=10.0, clock=clock) as bar:
        bar.set_total(100)
        for _ in range(100):
            clock.t += 0.25
            bar.advance(1)
    lines = out.getvalue().splitlines()
    assert lines[1] == "training: 40/100 (40%), 0:00:10 elapsed, ~0:00:15 left"
    assert lines[-1] == "training: done, 100/100 in 0:00:25"


def test_progress__a_stream_that_is_not_a_terminal_gets_plain_lines(monkeypatch):
    monkeypatch.delenv("RESTOCK_PROGRESS", raising=False)
    out = io.StringIO()  # isatty() is False
    assert list(pg.track(range(3), "tuning", stream=out)) == [0, 1, 2]
    assert out.getvalue().splitlines() == ["tuning: started (3 steps)", "tuning: done, 3/3 in 0:00:00"]


def test_progress__env_override_and_off(monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv("RESTOCK_PROGRESS", "off")
    with pg.progress(5, "x", stream=out) as bar:
        bar.advance(5)
    assert out.getvalue() == ""
    monkeypatch.setenv("RESTOCK_PROGRESS", "bar")
    with pg.progress(5, "drawing", stream=out) as bar:
        bar.advance(5)
    assert "drawing" in out.getvalue() and "5/5" in out.getvalue()


def test_progress__an_exception_is_reported_and_propagates():
    out, clock = io.StringIO(), Clock()
    with pytest.raises(KeyboardInterrupt), pg.Progress(None, "training", stream=out, clock=clock) as bar:
        bar.advance(7)
        raise KeyboardInterrupt
    assert out.getvalue().splitlines()[-1] == "training: stopped (KeyboardInterrupt) at 7 after 0:00:00"


def test_jit_notice__once_per_process_and_only_when_the_cache_is_cold(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(pg, "_NOTICED", False)
    monkeypatch.setattr(pg, "kernel_cache_cold", lambda: True)
    monkeypatch.delenv("RESTOCK_PROGRESS", raising=False)
    assert pg.jit_notice(out) is True
    assert pg.jit_notice(out) is False
    assert out.getvalue().count("compiling the simulation kernel (first run only") == 1
    monkeypatch.setattr(pg, "_NOTICED", False)
    monkeypatch.setattr(pg, "kernel_cache_cold", lambda: False)
    assert pg.jit_notice(out) is False


def test_kernel_cache_cold__false_once_the_kernel_is_compiled_here():
    from restock.envs.array_env import ArrayEnv

    env = ArrayEnv("tiny", num_envs=1, seed=0)
    env.reset()
    env.step_qty(np.zeros((1, env.N, env.K)))
    assert pg.kernel_cache_cold() is False


def test_heartbeat__plain_lines_while_one_long_call_runs(monkeypatch):
    """A call that reports no steps still says it is alive: start, 'still running' lines, end."""
    import threading

    monkeypatch.delenv("RESTOCK_PROGRESS", raising=False)
    out = io.StringIO()
    beats = threading.Event()
    with pg.heartbeat("bench: kernel", stream=out, interval=0.05):
        # wait (bounded) until two beats were written, instead of sleeping a fixed time
        for _ in range(200):
            if out.getvalue().count("still running") >= 2:
                beats.set()
                break
            threading.Event().wait(0.02)
    lines = out.getvalue().splitlines()
    assert beats.is_set(), lines
    assert lines[0] == "bench: kernel: started"
    assert lines[1].startswith("bench: kernel: still running, 0:00:0")
    assert lines[-1].startswith("bench: kernel: done in 0:00:0")
    n = len(lines)
    threading.Event().wait(0.2)  # the beat thread stopped with the block
    assert len(out.getvalue().splitlines()) == n
