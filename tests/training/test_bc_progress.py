"""Behaviour cloning reports through one progress bar and one summary line, not a line per epoch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from restock.agents.networks import NetConfig, PerSkuNet  # noqa: E402
from restock.training.bc import pretrain  # noqa: E402


def test_pretrain__one_summary_line_and_a_few_progress_lines(monkeypatch, capsys):
    monkeypatch.setenv("RESTOCK_PROGRESS", "plain")
    rng = np.random.default_rng(0)
    n, K, F, G, L = 300, 2, 3, 2, 4
    data = {
        "obs": rng.normal(size=(n, K * F + G)).astype(np.float32),
        "mask": np.ones((n, K * L), np.float32),
        "level": rng.integers(0, L, size=(n, K)),
        "ret": rng.normal(size=n).astype(np.float32),
    }
    logged: list[str] = []
    net = PerSkuNet(NetConfig(n_skus=K, sku_features=F, node_features=G, levels=L))
    res = pretrain(net, data, epochs=40, batch=64, min_updates=1, log=logged.append)
    assert res["updates"] == 200  # 40 epochs of 5 batches
    assert len(logged) == 1 and logged[0].startswith("behaviour cloning: 200 gradient steps")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "behaviour cloning: started (200 steps)"
    assert err[-1].startswith("behaviour cloning: done, 200/200 in")
    # start, end and at most a line every 10 s: about a second on a quiet machine, but a loaded one can
    # stretch it (51 s beside two trainings), so the bound follows the time the bar itself reports
    h, m, sec = (int(x) for x in err[-1].split(" in ")[1].split()[0].split(":"))
    assert len(err) <= 2 + (3600 * h + 60 * m + sec) // 10 + 1
