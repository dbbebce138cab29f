"""Shared fixtures: tiny scenarios built by hand."""

from __future__ import annotations

import copy

import pytest

EDGE = {
    # every physics feature at once, small enough to check by brute force
    "name": "edge",
    "seed": 3,
    "horizon": 24,
    "skus": {
        "count": 3,
        "unit_cost": [1.0, 4.0, 9.0],
        "price": [2.0, 6.0, 12.0],
        "holding_cost": [0.1, 0.2, 0.3],
        "stockout_cost": [1.0, 2.0, 5.0],
        "order_cost": [0.01, 0.02, 0.0],
        "fixed_order_cost": [0.5, 0.0, 1.0],
        "lot_size": [1, 2, 3],
        "moq": [0, 4, 3],
        "volume": [1.0, 0.5, 2.0],
    },
    "network": {
        "suppliers": [{"id": "sa", "capacity": [40, 30, 20]}, {"id": "sb"}],
        "dcs": [
            {
                "id": "regional",
                "parent": "sa",
                "lead_time": {"values": [1, 2, 3], "probs": [0.3, 0.5, 0.2]},
                "storage_capacity": 300,
                "overflow": "dispose",
                "overflow_cost": 0.3,
                "rationing": "proportional",
            },
            {
                "id": "local",
                "parent": "regional",
                "lead_time": 0,
                "unmet": "lost",
                "rationing": "priority",
                "lane_capacity": 60,
                "stockout_factor": 0.5,
                "pipeline_holding": "parent",
            },
        ],
        "stores": [
            {
                "count": 2,
                "parent": "local",
                "lead_time": {"per_sku": [1, 2, 1]},
                "unmet": "backlog",
                "storage_capacity": 50,
                "overflow": "dispose",
                "demand_scale": [1.0, 1.5],
                "pipeline_holding": "own",
            },
            {
                "count": 2,
                "parent": ["regional", "sb"],
                "lead_time": 2,
                "unmet": "lost",
                "storage_capacity": 40,
                "lane_capacity": 25,
            },
        ],
    },
    "demand": {
        "model": "poisson",
        "mean": [6.0, 3.0, 1.0],
        "weekly": [1, 1, 1, 1, 1.2, 1.5, 0.8],
        "promotions": [{"start": 5, "end": 9, "uplift": 2.0, "skus": [0, 2]}],
        "shocks": [{"start": 12, "duration": 2, "multiplier": 3.0, "stores": [1, 3]}],
    },
    "disruptions": [
        {"type": "supplier_outage", "supplier": "sa", "start": 6, "end": 9},
        {"type": "lead_time_spike", "node": "regional", "start": 10, "end": 13, "extra": 2},
        {"type": "capacity_cut", "node": "stores", "start": 15, "end": 18, "factor": 0.5},
    ],
    "action": {
        "store": {"mapping": "quantity", "levels": 8, "lots_per_level": 1},
        "dc": {"mapping": "order_up_to", "levels": 10, "max_cover": 6.0},
    },
    "initial": {"store_cover": 2.0, "dc_cover": 3.0, "pipeline_cover": 1.0},
    "reward": {"network_weight": 0.3, "scale": 10.0},
}


@pytest.fixture
def edge_config() -> dict:
    return copy.deepcopy(EDGE)
