"""Masks of a DC that ships from its start-of-period stock (``ship_before_arrivals``) and cannot backlog:
this period's arrivals at it are not available to its children's orders (OR-Gym's InvManagement-v1)."""

from __future__ import annotations

import numpy as np
from restock.agents.verifier import verify
from restock.envs import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.constraints import CONSTRAINTS
from restock.envs.types import K_LOST

DC_AVAIL = CONSTRAINTS.index("dc_availability")


def test_masks__leave_out_this_periods_arrivals_at_a_dc_that_ships_first():
    c = compile_scenario(load_scenario("benchmarks/orgym_invmgmt_v1"))
    p = c.params
    assert p.ship_first[: c.M].all() and not p.backlog[: c.M].any()
    env = ArrayEnv(c, num_envs=16, seed=4)
    env.reset()
    binding = 0
    lost_at_dcs = 0
    for _ in range(c.horizon):
        s = env.state
        for n in range(c.N):
            d = p.parent[n]
            if d < 0:
                continue
            start = s.on_hand[:, d, 0].astype(np.int64) - s.arrived[:, d, 0]
            assert (env.ub[:, n, 0] <= np.maximum(start, 0)).all()
            binding += int(((s.arrived[:, d, 0] > 0) & (env.ub[:, n, 0] == np.maximum(start, 0))).sum())
        q = env.ub.astype(np.int64)  # every node orders the most its mask allows
        assert verify(p, env.state, q).ok  # the verifier applies the same rule
        over = q.copy()
        over[:, c.M :, 0] += 1  # one unit more at the store: above its parent's start-of-period stock
        tight = env.ub[:, c.M, 0] == np.maximum(
            s.on_hand[:, p.parent[c.M], 0].astype(np.int64) - s.arrived[:, p.parent[c.M], 0], 0
        )
        if tight.any():
            v = verify(p, env.state, over)
            assert v.count[tight, DC_AVAIL].min() >= 1
        env.step_qty(q)
        lost_at_dcs += int(env.out.kpi[:, : c.M, K_LOST].sum())  # this period's cancelled units
    assert binding > 0  # the rule decided some bounds (arrivals were on hand and left out)
    # orders within the masks are never cancelled at a DC (DCs lose only what they cannot ship)
    assert lost_at_dcs == 0
