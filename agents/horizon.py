"""Base-stock with a horizon cut-off (``base_stock_cutoff``): a finite-horizon heuristic for episodes that
end, such as OR-Gym's 30-period InvManagement benchmarks (docs/results/benchmarks.md).

Stationary heuristics keep ordering to the last period, although what a node orders late can no longer
reach a customer before the episode ends: it is paid for and held, never sold. This policy orders as
`BaseStockPolicy` does (knob ``z``) and orders nothing at node n in period t once

    t + reach[n] > T - 1 + cutoff

where ``reach[n]`` (`reach_to_customer`) is the number of periods from an order at n to the earliest
period a customer can buy it and ``cutoff`` is a knob in periods (0: stop exactly when an order can no
longer sell; negative: stop earlier, positive: later). Only the period and the lead times are used, so
it is as cheap as base-stock; `restock tune --policy base_stock_cutoff` tunes both knobs.
"""

from __future__ import annotations

import numpy as np
from restock.agents.heuristics import BaseStockPolicy


def reach_to_customer(c) -> np.ndarray:
    """Periods from an order at node n to the earliest sale it can make [N]: the (largest) lead time into
    n, then for each DC on the way one period of waiting when it ships before its arrivals
    (``ship_before_arrivals``) and the next lead time; the shortest way down for a DC with several
    children."""
    p = c.params
    reach = np.zeros(c.N, np.int64)
    for n in range(c.N - 1, -1, -1):  # children after parents
        kids = p.child_idx[p.child_ptr[n] : p.child_ptr[n + 1]]
        down = 0 if len(kids) == 0 else int(p.ship_first[n]) + int(min(reach[k] for k in kids))
        reach[n] = int(p.lt_value[n].max()) + down
    return reach


class HorizonBaseStock(BaseStockPolicy):
    """Base-stock (knob ``z``) that orders nothing once an order could no longer sell before the horizon
    ends (knob ``cutoff``, in periods; module docstring)."""

    name = "base_stock_cutoff"
    knob_defaults = {"z": 0.0, "cutoff": 0.0}
    knob_bounds = {"z": (-3.0, 4.0), "cutoff": (-4.0, 4.0)}

    def bind(self, compiled) -> None:
        fresh = self._bound_to is not compiled
        super().bind(compiled)
        if fresh or not hasattr(self, "reach"):
            self.reach = reach_to_customer(compiled)

    def raw(self, ctx) -> np.ndarray:
        q = super().raw(ctx)  # [E, N, K]
        t = ctx.state.t.astype(float)[:, None, None]
        last = ctx.compiled.horizon - 1 + self.knob(ctx, "cutoff")  # [E, N, 1]
        late = t + self.reach[None, :, None] > last
        return np.where(late, 0.0, q)
