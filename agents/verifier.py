"""The independent verifier: does an executed order break any hard constraint? Plain NumPy, no shield code.

N-version check of the shield (docs/design.md#shield): this module re-derives every constraint from the
scenario's `Params` and the authoritative `State` on its own, from the definitions in
`envs.constraints` (the module docstring and the joint forms listed there), without calling the
predicates the masks and the shield share. Only the names and the two documented tolerances are
imported, so a bug in the shared predicates or in the shield's repair cannot hide itself here.

For orders q[E, N, K] (whole units) at state s, period t (clamped to the horizon), a node n violates:

  storage          q[n, k] > floor(h / volume[k] + FLOOR_EPS) for some k, or sum_k volume[k] q[n, k] does
                   not fit h, where h = max(0, storage_cap_ahead[t, n] - sum_k volume[k] (on hand + in
                   transit + owed)[n, k]) (inf without a capacity);
  lane             the same with lane_cap[n] in place of h;
  budget           the same with unit_cost and budget[n] (SKUs with unit cost 0 are free);
  supplier         for supplier u feeding n and SKU k: sum of q[., k] over the nodes u feeds >
                   floor(sup_cap[t, u, k]);
  dc_availability  for n's parent DC d that does not backlog, and SKU k: sum of q[., k] over d's
                   children > on hand[d, k] minus what d owes its children of k, minus this period's
                   arrivals at d when it ships first (ship_before_arrivals) (at least 0); a
                   backlogging DC queues what it cannot ship, so it bounds nothing;
  rate_limit       q[n, k] > last_order[n, k] + max_increase[n];
  lot_moq          q[n, k] is not 0 and (not a multiple of lot[k] or below moq[k]).

"Fits" means used <= cap + JOINT_RTOL * max(1, cap). Orders must also be well formed: finite,
whole, >= 0 and <= BIG; anything else is reported as malformed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from restock.envs.constraints import BIG, CONSTRAINTS, FLOOR_EPS, JOINT_RTOL, VIOLATION_UNITS

C = len(CONSTRAINTS)
STORAGE, SUPPLIER, LANE = (
    CONSTRAINTS.index("storage"),
    CONSTRAINTS.index("supplier"),
    CONSTRAINTS.index("lane"),
)
BUDGET, DC_AVAIL = CONSTRAINTS.index("budget"), CONSTRAINTS.index("dc_availability")
RATE, LOT_MOQ = CONSTRAINTS.index("rate_limit"), CONSTRAINTS.index("lot_moq")


@dataclass
class Verdict:
    """What the verifier found for one batch of orders."""

    node: np.ndarray  # [E, N, C] bool: node n takes part in a violation of constraint c
    count: np.ndarray  # [E, C] int64 violations, in the units of envs.constraints.VIOLATION_UNITS
    malformed: np.ndarray  # [E, N] bool: some order of the node is not a finite whole number in [0, BIG]

    @property
    def ok(self) -> bool:
        return not (self.count.any() or self.malformed.any())

    def failed_nodes(self) -> np.ndarray:
        """[E, N] bool: nodes whose orders must not execute as they are."""
        return self.node.any(axis=2) | self.malformed

    def describe(self, e: int = 0) -> list[str]:
        """Human-readable findings for environment e (empty when it is clean)."""
        out = []
        for c in range(C):
            if self.count[e, c]:
                nodes = np.flatnonzero(self.node[e, :, c]).tolist()
                out.append(
                    f"{CONSTRAINTS[c]}: {int(self.count[e, c])} {VIOLATION_UNITS[c]}(s), nodes {nodes}"
                )
        bad = np.flatnonzero(self.malformed[e]).tolist()
        if bad:
            out.append(f"malformed orders at nodes {bad}")
        return out


def _fits(used: np.ndarray, cap: np.ndarray) -> np.ndarray:
    cap = np.asarray(cap, dtype=float)
    finite_cap = np.where(np.isinf(cap), 0.0, cap)
    return np.isinf(cap) | (used <= finite_cap + JOINT_RTOL * np.maximum(1.0, np.abs(finite_cap)))


def _per_unit_bound(room: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """floor(room / weight + FLOOR_EPS) as float (inf where room is inf or weight is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor(room / weight + FLOOR_EPS)
    b = np.where(np.isinf(room) | (weight <= 0), np.inf, b)
    return np.maximum(b, 0.0)


def _over_per_unit(
    q: np.ndarray, qf: np.ndarray, used: np.ndarray, room: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """[E, N] bool: some q[e, n, k] > floor(room[e, n] / weight[k] + FLOOR_EPS).

    Only an order whose weighted size reaches the room can break its bound (q * w <= room implies
    q <= the bound), and only in a node whose weighted total ``used`` reaches it, so the division runs
    for those alone (the 1e-12 margin keeps float rounding on the safe side).
    """
    out = np.zeros(room.shape, bool)
    e, n = np.nonzero(used > room * (1.0 - 1e-12))
    if len(e):
        rows_q = q[e, n]  # [R, K]
        near = (rows_q > 0) & (qf[e, n] * weight > room[e, n][:, None] * (1.0 - 1e-12))
        if near.any():
            r, k = np.nonzero(near)
            bad = rows_q[r, k] > _per_unit_bound(room[e[r], n[r]], weight[k])
            out[e[r[bad]], n[r[bad]]] = True
    return out


class Verifier:
    """Checks orders against one scenario's constraints; the static parts are prepared once."""

    def __init__(self, params):
        p = params
        self.params = p
        self.N = int(p.parent.shape[0])
        self.M = int(p.n_dcs)
        self.volume = np.asarray(p.volume, float)
        self.unit_cost = np.asarray(p.unit_cost, float)
        self.lot = np.asarray(p.lot, np.int64)
        self.moq = np.asarray(p.moq, np.int64)
        self.lane_cap = np.asarray(p.lane_cap, float)
        self.budget = np.asarray(p.budget, float)
        self.max_increase = np.asarray(p.max_increase, float)
        self.rate_nodes = np.flatnonzero(np.isfinite(self.max_increase))
        self.lane_nodes = np.flatnonzero(np.isfinite(self.lane_cap))
        self.budget_nodes = np.flatnonzero(np.isfinite(self.budget))
        self.lot_skus = np.flatnonzero(self.lot > 1)  # lot 1 is always a whole multiple
        self.moq_skus = np.flatnonzero(self.moq > 1)  # MOQ 0 or 1 holds for every positive order
        # groups: the nodes each capped supplier feeds, the children of each DC
        U = p.sup_cap.shape[1]
        self.supplier_groups = []
        for u in range(U):
            if np.isinf(p.sup_cap[:, u, :]).all():
                continue
            members = np.flatnonzero(np.asarray(p.supplier) == u)
            if len(members):
                self.supplier_groups.append((u, _as_slice(members)))
        self.dc_groups = []
        for d in range(self.M):
            kids = np.flatnonzero(np.asarray(p.parent) == d)
            if len(kids) and not p.backlog[d]:  # a backlogging DC queues what it cannot ship
                self.dc_groups.append((d, _as_slice(kids)))

    def check(self, state, qty) -> Verdict:
        """Verify orders qty[E, N, K] at ``state`` (raises ValueError on a wrong shape)."""
        p = self.params
        q_in = np.asarray(qty)
        E, N, K = state.on_hand.shape
        if q_in.shape != (E, N, K):
            raise ValueError(f"orders must have shape {(E, N, K)}, got {q_in.shape}")
        node = np.zeros((E, N, C), bool)
        count = np.zeros((E, C), np.int64)
        # well formed: finite whole numbers in [0, BIG]
        malformed = np.zeros((E, N), bool)
        if np.issubdtype(q_in.dtype, np.integer):
            q = q_in.astype(np.int64, copy=False)
            if q.size and (q.min() < 0 or q.max() > BIG):
                bad = (q < 0) | (q > BIG)
                q = np.where(bad, 0, q)
                malformed = bad.any(axis=2)
        else:
            qf = q_in.astype(float)
            bad = ~np.isfinite(qf) | (qf < 0) | (qf > BIG) | (qf != np.floor(qf))
            q = np.where(bad, 0, qf).astype(np.int64)
            malformed = bad.any(axis=2)
        qf = q.astype(float)
        t = np.minimum(state.t.astype(np.int64), p.horizon)

        # storage: headroom at arrival with zero demand meanwhile
        committed = state.on_hand @ self.volume + state.transit @ self.volume + state.owed @ self.volume
        cap = p.storage_cap_ahead[t]  # [E, N]
        finite = np.isfinite(cap)
        room = np.where(finite, np.maximum(np.where(finite, cap, 0.0) - committed, 0.0), np.inf)
        used_vol = qf @ self.volume
        over = _over_per_unit(q, qf, used_vol, room, self.volume) | ~_fits(used_vol, room)
        node[:, :, STORAGE] = over
        count[:, STORAGE] = over.sum(axis=1)

        # lane and budget: fixed caps per node
        if len(self.lane_nodes):
            ln = self.lane_nodes
            room = np.broadcast_to(self.lane_cap[ln], (E, len(ln)))
            used = used_vol[:, ln]
            over = _over_per_unit(q[:, ln], qf[:, ln], used, room, self.volume) | ~_fits(used, room)
            node[:, ln, LANE] = over
            count[:, LANE] = over.sum(axis=1)
        if len(self.budget_nodes):
            bn = self.budget_nodes
            room = np.broadcast_to(self.budget[bn], (E, len(bn)))
            spend = qf[:, bn] @ self.unit_cost
            over = _over_per_unit(q[:, bn], qf[:, bn], spend, room, self.unit_cost) | ~_fits(spend, room)
            node[:, bn, BUDGET] = over
            count[:, BUDGET] = over.sum(axis=1)

        # supplier caps, shared by the nodes a supplier feeds
        for u, members in self.supplier_groups:
            capk = np.floor(p.sup_cap[t, u, :])  # [E, K] (inf stays inf)
            qm = q[:, members, :]
            viol = qm.sum(axis=1) > capk
            if viol.any():
                count[:, SUPPLIER] += viol.sum(axis=1)
                node[:, members, SUPPLIER] |= (viol[:, None, :] & (qm > 0)).any(axis=2)

        # DC availability, shared by a DC's children
        for d, kids in self.dc_groups:
            owed_out = state.owed[:, kids, :].sum(axis=1, dtype=np.int64)  # [E, K]
            avail = state.on_hand[:, d, :] - owed_out
            if p.ship_first[d]:  # ships from its start-of-period stock: this period's arrivals wait
                avail = avail - state.arrived[:, d, :]
            avail = np.maximum(avail, 0)
            qk = q[:, kids, :]
            viol = qk.sum(axis=1) > avail
            if viol.any():
                count[:, DC_AVAIL] += viol.sum(axis=1)
                node[:, kids, DC_AVAIL] |= (viol[:, None, :] & (qk > 0)).any(axis=2)

        # rate limit per SKU
        if len(self.rate_nodes):
            rn = self.rate_nodes
            limit = state.last_order[:, rn, :] + self.max_increase[rn].astype(np.int64)[None, :, None]
            viol = q[:, rn, :] > limit
            node[:, rn, RATE] = viol.any(axis=2)
            count[:, RATE] = viol.sum(axis=(1, 2))

        # lot size and MOQ
        viol = np.zeros((E, N, K), bool)
        if len(self.lot_skus):
            ls = self.lot_skus
            lots = qf[:, :, ls] / self.lot[ls]  # exact for whole multiples; never whole otherwise (q <= BIG)
            viol[:, :, ls] = lots != np.floor(lots)
        if len(self.moq_skus):
            ms = self.moq_skus
            qm = q[:, :, ms]
            viol[:, :, ms] |= (qm > 0) & (qm < self.moq[ms])
        node[:, :, LOT_MOQ] = viol.any(axis=2)
        count[:, LOT_MOQ] = viol.sum(axis=(1, 2))
        return Verdict(node=node, count=count, malformed=malformed)


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A slice when the indices are one contiguous run (views instead of copies), else the indices."""
    if len(idx) and (np.diff(idx) == 1).all():
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def verify(params, state, qty) -> Verdict:
    """One-off check of orders qty[E, N, K] (build a `Verifier` once to check many batches)."""
    return Verifier(params).check(state, qty)
