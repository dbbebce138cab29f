"""Behaviour cloning in proportion to the run (issue 10, item 2): `bc_budget` and `pretrain`'s caps."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from restock.agents.networks import NetConfig, PerSkuNet  # noqa: E402
from restock.training.bc import BC_MIN_UPDATES, BC_TIME_SHARE, BC_UPDATE_SHARE, bc_budget, pretrain  # noqa: E402
from restock.training.experiment import load_experiment  # noqa: E402


def _data(n=600, K=3, F=4, G=2, L=5, seed=0):
    rng = np.random.default_rng(seed)
    return NetConfig(n_skus=K, sku_features=F, node_features=G, levels=L), {
        "obs": rng.normal(size=(n, K * F + G)).astype(np.float32),
        "mask": np.ones((n, K * L), np.float32),
        "level": rng.integers(0, L, size=(n, K)),
        "ret": rng.normal(size=n).astype(np.float32),
    }


def test_pretrain__stops_at_its_update_and_time_caps():
    cfg, data = _data()
    uncapped = pretrain(PerSkuNet(cfg), data, epochs=1, min_updates=10)
    assert uncapped["updates"] == 12  # min_updates rounds up to whole epochs of 3 batches
    assert pretrain(PerSkuNet(cfg), data, epochs=8, min_updates=1500, max_updates=5)["updates"] == 5
    assert pretrain(PerSkuNet(cfg), data, epochs=8, min_updates=1500, max_seconds=0.0)["updates"] == 1


def test_bc_budget__is_a_share_of_the_runs_ppo_updates_and_minutes():
    exp = load_experiment(None, steps=40_000, minutes=10)
    b = bc_budget(exp, n_agents=10)
    ppo_updates = -(-40_000 * 10 // exp.ppo.minibatch_size) * exp.ppo.n_epochs
    assert b["max_updates"] == max(BC_MIN_UPDATES, int(BC_UPDATE_SHARE * ppo_updates))
    assert b["max_seconds"] == pytest.approx(BC_TIME_SHARE * 600)
    assert bc_budget(load_experiment(None, steps=100), n_agents=1)["max_updates"] == BC_MIN_UPDATES
    assert bc_budget(load_experiment(None), n_agents=1)["max_updates"] is None
