"""Echelon base-stock policy for any tree network (serial chains and distribution networks).

Each node n orders q = max(0, S[n, k] - IP_ech[n, k]) of every SKU k, where the echelon inventory
position of n is

    IP_ech[n] = sum over the nodes i of n's subtree (n included) of (on_hand_i + in_transit_i)
                + owed_n                      (what n's parent still owes n)
                - sum over the stores s of the subtree of backlog_s   (customer backorders).

What a node of the subtree owes another node of the subtree is not counted: those units are neither on
hand nor on the way anywhere, and the customer backlog they serve is already subtracted. For a serial
chain this is exactly the IP_j = sum_{i<=j} (on_hand_i + in_transit_i) + owed_j - B of Clark and Scarf
(`agents.optimal`), so `EchelonBaseStock.from_clark_scarf` reproduces the exact optimum in the kernel.
Everything is read at the decision point (after the period's arrivals, which leave the position
unchanged), and no node's order changes another node's position, so all nodes decide at once.

Levels are given either in units per node (and optionally per SKU), or as a cover: periods of the
node's echelon forecast, ``cover[n] * params.mean[n, k] * params.season[t]`` (a DC's ``mean`` is the sum
over the stores it serves), which scales to any number of SKUs. Quantities are rounded up to the SKU's
lot size and raised to its MOQ; limits (capacity, budget, DC stock) are the shield's job.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def echelon_positions(on_hand, transit, owed, backlog, parent, out):
    """out[E, N, K] = echelon inventory positions; parents must come before their children (parent[n] < n)."""
    E, N, K = on_hand.shape
    for e in range(E):
        for n in range(N):
            for k in range(K):
                out[e, n, k] = np.int64(on_hand[e, n, k]) + transit[e, n, k] - backlog[e, n, k]
        for n in range(N - 1, -1, -1):
            d = parent[n]
            if d >= 0:
                for k in range(K):
                    out[e, d, k] += out[e, n, k]
        for n in range(N):
            for k in range(K):
                out[e, n, k] += owed[e, n, k]


def _as_node_sku(value, N: int, K: int, what: str) -> np.ndarray:
    """Broadcast a scalar, [N] or [N, K] value to float [N, K]."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    try:
        out = np.broadcast_to(a, (N, K)).astype(float)
    except ValueError:
        raise ValueError(
            f"{what} must be a number, one value per node ({N}) or one per node and SKU ({N}, {K}); "
            f"got shape {np.shape(value)}"
        ) from None
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{what} must be finite")
    return out


class EchelonBaseStock:
    """Order up to an echelon base-stock level at every node (see the module docstring).

    ``EchelonBaseStock(levels=...)``: levels in units, a number, [N] per node or [N, K] per node and
    SKU. ``EchelonBaseStock(cover=...)``: periods of the node's echelon forecast, same shapes. Nodes are
    the kernel's (DCs first, then stores). Output: order quantities [E, len(nodes), K].
    """

    name = "echelon_base_stock"
    version = "1"
    output = "quantities"

    # tuning knobs (`agents.tuning`): z per role in S = echelon forecast over (echelon lead time + 1)
    # + z * sd over the same interval; the echelon lead time of n runs from n's supplier down to a store
    knob_defaults = {"z": 1.0}
    knob_bounds = {"z": (-2.0, 5.0)}

    def __init__(self, levels=None, *, cover=None, name: str | None = None, knobs: dict | None = None):
        self.knobs = knobs
        if knobs is not None:
            levels = cover = None
        elif (levels is None) == (cover is None):
            raise ValueError("give exactly one of levels (units) or cover (periods of echelon forecast)")
        self.levels = None if levels is None else np.asarray(levels, dtype=float)
        self.cover = None if cover is None else np.asarray(cover, dtype=float)
        if name is not None:
            self.name = name
        self._ip: np.ndarray | None = None

    @classmethod
    def from_clark_scarf(cls, compiled) -> EchelonBaseStock:
        """The exact optimal policy of a serial scenario (`agents.optimal.serial_from_scenario`)."""
        from restock.agents.optimal import serial_from_scenario

        spec = serial_from_scenario(compiled)
        sol = spec.solve()
        levels = np.zeros((compiled.N, 1))
        for j, n in enumerate(spec.nodes):
            levels[n, 0] = sol.echelon[j]
        pol = cls(levels=levels, name="clark_scarf")
        pol.spec, pol.solution = spec, sol
        return pol

    def bind(self, compiled) -> None:
        """Check the levels against a scenario before a rollout."""
        self._check_tree(compiled.params.parent)
        if self.knobs is not None:
            from restock.agents.heuristics import DemandStats

            p = compiled.params
            st = DemandStats.from_compiled(compiled)
            lead = st.lt_mean.copy()  # [N, K] echelon lead time: into n plus the longest chain below
            for n in range(compiled.N - 1, -1, -1):
                if p.parent[n] >= 0:
                    lead[p.parent[n]] = np.maximum(lead[p.parent[n]], st.lt_mean[p.parent[n]] + lead[n])
            self._compiled, self._stats, self._lead = compiled, st, lead
            return
        self._targets(compiled.params, np.zeros(1, np.int64))

    @staticmethod
    def _check_tree(parent: np.ndarray) -> None:
        n = np.arange(parent.size)
        if np.any(parent >= n):
            raise ValueError("echelon positions need parents listed before their children (parent[n] < n)")

    def _targets(self, params, t: np.ndarray) -> np.ndarray:
        """Order-up-to levels [E or 1, N, K] at periods t[E]."""
        N, K = params.hold.shape
        if self.knobs is not None:
            from restock.agents.heuristics import _per_node

            P = self._lead + 1.0
            z = _per_node(self._compiled, self.knobs, "z", self.knob_defaults["z"], len(t))  # [E, N, 1]
            season = params.season[np.minimum(t, params.horizon)]
            fc = params.mean[None] * P[None] * season[:, None, None]
            sd = self._stats.sd1[None] * np.sqrt(P)[None]
            return fc + z * sd
        if self.levels is not None:
            return _as_node_sku(self.levels, N, K, "levels")[None]
        cov = _as_node_sku(self.cover, N, K, "cover")
        season = params.season[np.minimum(t, params.horizon)]
        return cov[None] * params.mean[None] * season[:, None, None]

    def positions(self, ctx) -> np.ndarray:
        """Echelon inventory positions [E, N, K] (int64) of every node now (a buffer reused by the next call)."""
        s, p = ctx.state, ctx.params
        shape = s.on_hand.shape
        if self._ip is None or self._ip.shape != shape:
            self._ip = np.zeros(shape, np.int64)
        self._check_tree(p.parent)
        echelon_positions(s.on_hand, s.transit, s.owed, s.backlog, p.parent, self._ip)
        return self._ip

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        p = ctx.params
        nodes = np.asarray(nodes, np.int64)
        ip = self.positions(ctx)[:, nodes]
        target = self._targets(p, np.asarray(ctx.state.t, np.int64))[:, nodes]
        gap = target - ip
        q = np.where(gap > 1e-9, np.ceil(gap - 1e-9), 0.0).astype(np.int64)
        lot, moq = p.lot[None, None, :], p.moq[None, None, :]
        q = (q + lot - 1) // lot * lot
        q = np.where((q > 0) & (q < moq), (moq + lot - 1) // lot * lot, q)
        return q
