"""Shared by the oracle tests (test_oracle_bound, test_oracle_cuts): an unshielded periodic order-up-to
policy, the policies every bound must stay below, and small scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from restock.agents.base import JointPolicy
from restock.agents.heuristics import RandomPolicy, ZeroPolicy
from restock.envs import kernel as kn

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"


class Periodic:
    """Every ``every`` periods (from ``offset``) order max(0, cover x mean demand - inventory position),
    unshielded and unrounded; nothing in the last ``stop`` periods."""

    name = "periodic"
    version = "1"
    output = "quantities"

    def __init__(self, every: int, cover: float, offset: int = 0, stop: int = 0):
        self.every, self.cover, self.offset, self.stop = every, cover, offset, stop

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        E, N, K = ctx.state.on_hand.shape
        t = int(ctx.state.t[0])
        if t % self.every != self.offset or t >= ctx.params.horizon - self.stop:
            return np.zeros((E, len(nodes), K), np.int64)
        ip = np.empty((E, N, K), np.int64)
        kn.inventory_positions(ctx.params, ctx.state, ctx.work, ip)
        target = self.cover * ctx.params.mean[nodes][None]
        return np.maximum(0, np.ceil(target - ip[:, nodes])).astype(np.int64)


POLICIES = (
    ZeroPolicy(),
    RandomPolicy(seed=4),
    Periodic(1, 3.0),
    Periodic(3, 4.0),
    Periodic(5, 7.0, offset=2),
    JointPolicy({"store": Periodic(1000, 20.0), "dc": Periodic(1, 1.5)}),  # stores order once
)


def _yaml(name: str) -> dict:
    return yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())


def _store(unmet: str) -> dict:
    """One store fed by a supplier over a random lead time, with a fixed cost per order line."""
    return {
        "name": f"store_{unmet}",
        "seed": 0,
        "horizon": 24,
        "skus": {
            "count": 2,
            "unit_cost": 1.0,
            "holding_cost": [0.2, 0.5],
            "stockout_cost": [3.0, 6.0],
            "fixed_order_cost": [4.0, 2.0],
        },
        "network": {
            "suppliers": [{"id": "s"}],
            "stores": {
                "count": 1,
                "parent": "s",
                "lead_time": {"values": [0, 1, 3], "probs": [0.3, 0.4, 0.3]},
                "unmet": unmet,
            },
        },  # fmt: skip
        "demand": {"model": "poisson", "mean": [3.0, 1.5]},
        "action": {"store": {"mapping": "quantity", "levels": 9}},
        "initial": {"store_cover": 1.0, "pipeline_cover": 1.0},
    }
