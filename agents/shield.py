"""The safety shield: every proposed order passes through it before it executes, whatever proposed it.

docs/design.md#shield and docs/design.md#constraint-model. Every hard constraint is an upper bound on
an order (`envs.constraints`), so ordering zero is always safe and any repair that only lowers
quantities keeps everything it already satisfied. The chain, batched over E environments and all
nodes, in this order:

1. sanitise: NaN, infinities and negatives become 0, values above BIG become BIG (all escalate the
   node); fractions are rounded down. A wrong shape is a caller error (ValueError), nothing executes.
2. clip each SKU to its per-SKU bound (`envs.constraints.bound_values`, the predicate the masks use);
   the change is attributed to the tightest constraint (the first in CONSTRAINTS order on ties).
3. repair the joint constraints, each by the same rule (below): per node storage volume, then lane
   volume, then budget (across its SKUs); then per supplier and SKU the cap shared by the nodes it
   feeds; then per DC and SKU its availability shared by its children (DCs that cannot backlog).
4. snap down to the lot size, and to 0 below the MOQ.
5. verify with `agents.verifier` (written separately, N-version). A node whose shielded order fails
   (for a shared cap: every node with a positive order of the violated SKU) executes the safe action,
   zero, and is escalated: shields fail closed.

Repair rule (one linear constraint sum_i w_i q_i <= cap over items i, all w_i >= 0): when the sum
does not fit, scale every item with w_i > 0 by f = cap / sum and round each down to its lot (0 below
the MOQ); then visit the items in order of their largest fractional remainder (in lots), ties to the
lower index, and give each one more order step (a lot, or the MOQ from zero) when that still fits
and stays <= the item's input. It only lowers quantities, is deterministic, and leaves a sum that
already fits untouched, so a feasible proposal passes unchanged and the shield is idempotent.

Runtime guards: an anomaly check (a store's demand last period far above its recent range, or a
non-finite observation) escalates the node; a circuit breaker hands a node whose decisions escalated
R times in a row to a fallback policy (still shielded; zero orders when none is given) for a
cool-down. Modes: ``enforce`` (default) executes the shielded orders; ``monitor`` computes and counts
everything but executes the (sanitised) proposal and never hands a node to its fallback, to measure
what a raw policy would violate in simulation (``restock eval --no-shield``).

Use it as the `envs.ArrayEnv` hook, ``ArrayEnv(..., shield=Shield())`` or
``parallel_env(..., shield=Shield())``; its info keys are listed in `Shield.__call__`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from numba import njit, prange
from restock.agents.records import (
    CHANGED_SANITISED,
    ESC_ANOMALY,
    ESC_BREAKER,
    ESC_OBS,
    ESC_SANITISED,
    ESC_VERIFIER,
    MemorySink,
    RecordMeta,
    Sink,
    StepBatch,
)
from restock.agents.verifier import Verdict, Verifier
from restock.envs import kernel as kn
from restock.envs.constraints import (
    BIG,
    CI_BUDGET,
    CI_DC_AVAIL,
    CI_LANE,
    CI_LOT_MOQ,
    CI_RATE,
    CI_STORAGE,
    CI_SUPPLIER,
    CONSTRAINTS,
    N_CONSTRAINTS,
    availability_dc,
    bound_values,
    dc_available_values,
    headroom_values,
    joint_fits,
    joint_slacks,
    next_order_step,
    owed_out_into,
    snap_down_values,
    structural_ok_values,
)
from restock.envs.jit import variant
from restock.envs.types import new_work

SHIELD_VERSION = "1"
MODES = ("enforce", "monitor")
BIGF = float(BIG)
NEAR = 1.0 - 1e-12  # orders within this factor of a room get their exact per-SKU bounds computed

# ------------------------------------------------------------------------------------------------
# buffers


class ShieldWork(NamedTuple):
    """Buffers of one batch shape, allocated once (the chain allocates only when it repairs)."""

    q0: np.ndarray  # [E, N, K] int64 sanitised proposal
    q: np.ndarray  # [E, N, K] int64 shielded orders
    changed: np.ndarray  # [E, N, K] uint8 change flags (bit c: constraint c; bit 7: sanitised)
    interv: np.ndarray  # [E, C] int64 node-SKUs changed per constraint
    raw: np.ndarray  # [E, C] int64 violations of the proposal per constraint
    cost: np.ndarray  # [E, N] int64 SKUs changed per node
    esc: np.ndarray  # [E, N] uint8 escalation flags
    san: np.ndarray  # [E] int64 node-SKUs sanitised
    head: np.ndarray  # [E, N] float64 storage headroom
    oo: np.ndarray  # [E, N, K] int64 units each DC owes its children
    fs: np.ndarray  # [E, max(N, K)] float64 scratch
    xs: np.ndarray  # [E, max(N, K)] int64 scratch
    gt: np.ndarray  # [E, 2, K] int64 per-SKU totals over a group of nodes
    live: np.ndarray  # [E, N] uint8 1 where the node may order (`Shield.decide`'s ``rows``); 0: safe action


def new_shield_work(E: int, N: int, K: int) -> ShieldWork:
    L = max(N, K)
    return ShieldWork(
        q0=np.zeros((E, N, K), np.int64),
        q=np.zeros((E, N, K), np.int64),
        changed=np.zeros((E, N, K), np.uint8),
        interv=np.zeros((E, N_CONSTRAINTS), np.int64),
        raw=np.zeros((E, N_CONSTRAINTS), np.int64),
        cost=np.zeros((E, N), np.int64),
        esc=np.zeros((E, N), np.uint8),
        san=np.zeros(E, np.int64),
        head=np.zeros((E, N)),
        oo=np.zeros((E, N, K), np.int64),
        fs=np.zeros((E, L)),
        xs=np.zeros((E, L), np.int64),
        gt=np.zeros((E, 2, K), np.int64),
        live=np.ones((E, N), np.uint8),
    )


# ------------------------------------------------------------------------------------------------
# step 1: sanitise


@njit(cache=True)
def _sanitise_float(x, q0, changed, esc, san):
    """q0 = whole units from float proposals x; garbage (NaN, inf, < 0, > BIG) flags the node."""
    E, N, K = x.shape
    for e in range(E):
        cnt = 0
        for n in range(N):
            bad = False
            for k in range(K):
                v = x[e, n, k]
                flag = np.uint8(0)
                if v != v or math.isinf(v) or v < 0.0:
                    r = np.int64(0)
                    bad = True
                    flag = CHANGED_SANITISED
                elif v > BIGF:
                    r = BIG
                    bad = True
                    flag = CHANGED_SANITISED
                else:
                    f = math.floor(v)
                    r = np.int64(f)
                    if f != v:
                        flag = CHANGED_SANITISED
                q0[e, n, k] = r
                changed[e, n, k] = flag
                if flag:
                    cnt += 1
            esc[e, n] = ESC_SANITISED if bad else 0
        san[e] = cnt


@njit(cache=True)
def _sanitise_int(x, q0, changed, esc, san):
    """q0 = integer proposals x; negatives become 0 and values above BIG become BIG (flagging the node)."""
    E, N, K = x.shape
    for e in range(E):
        cnt = 0
        for n in range(N):
            bad = False
            for k in range(K):
                v = np.int64(x[e, n, k])
                if v < 0:
                    q0[e, n, k] = 0
                    changed[e, n, k] = CHANGED_SANITISED
                    bad = True
                    cnt += 1
                elif v > BIG:
                    q0[e, n, k] = BIG
                    changed[e, n, k] = CHANGED_SANITISED
                    bad = True
                    cnt += 1
                else:
                    q0[e, n, k] = v
                    changed[e, n, k] = 0
            esc[e, n] = ESC_SANITISED if bad else 0
        san[e] = cnt


# ------------------------------------------------------------------------------------------------
# step 3: the repair rule (arrays and scalars only)


@njit(cache=True)
def _repair_row(q, changed, e, n, w, lot, moq, cap, bit, rem, xs):
    """Make sum_k w[k] q[e, n, k] fit ``cap`` by the documented rule; returns the SKUs changed."""
    K = q.shape[2]
    if math.isinf(cap):
        return 0
    used = 0.0
    for k in range(K):
        used += q[e, n, k] * w[k]
    if joint_fits(used, cap):
        return 0
    f = cap / used if cap > 0.0 else 0.0
    used2 = 0.0
    for k in range(K):
        x = q[e, n, k]
        if w[k] <= 0.0 or x <= 0:
            xs[k] = x
            rem[k] = -1.0
            continue
        y = x * f / lot[k]
        j = np.int64(math.floor(y))
        v = j * lot[k]
        if v > x:
            v = (x // lot[k]) * lot[k]
        if v < moq[k]:
            v = np.int64(0)
        xs[k] = v
        rem[k] = y - j
        used2 += v * w[k]
    order = np.argsort(-rem[:K], kind="mergesort")  # largest remainder first, ties by index
    for i in range(K):
        k = order[i]
        if rem[k] < 0.0:
            break
        v = xs[k]
        step = next_order_step(v, lot[k], moq[k])
        if v + step <= q[e, n, k] and used2 + step * w[k] <= cap:
            xs[k] = v + step
            used2 += step * w[k]
    while not joint_fits(used2, cap):  # float guard: drop a step from the largest contribution
        best = -1
        bv = -1.0
        for k in range(K):
            if w[k] > 0.0 and xs[k] > 0 and xs[k] * w[k] > bv:
                best = k
                bv = xs[k] * w[k]
        if best < 0:
            break
        nv = snap_down_values(xs[best] - lot[best], lot[best], moq[best])
        used2 -= (xs[best] - nv) * w[best]
        xs[best] = nv
    cnt = 0
    for k in range(K):
        if w[k] > 0.0 and xs[k] != q[e, n, k]:
            q[e, n, k] = xs[k]
            changed[e, n, k] |= bit
            cnt += 1
    return cnt


@njit(cache=True)
def _group_totals(q0, q, e, idx, lo, hi, t0, t1, live):
    """t0[k], t1[k] = sums of q0[e, ., k] and q[e, ., k] over the nodes idx[lo:hi] (row by row; nodes
    that are not live order nothing and are skipped)."""
    K = q.shape[2]
    for k in range(K):
        t0[k] = 0
        t1[k] = 0
    for i in range(lo, hi):
        n = idx[i]
        if live[e, n] == 0:
            continue
        for k in range(K):
            t0[k] += q0[e, n, k]
            t1[k] += q[e, n, k]


@njit(cache=True)
def _repair_col(q, changed, e, k, idx, lo, hi, lot, moq, cap, bit, rem, xs):
    """Make sum_i q[e, idx[i], k] over i in [lo, hi) fit the integer ``cap``; returns the nodes changed."""
    tot = np.int64(0)
    for i in range(lo, hi):
        tot += q[e, idx[i], k]
    if tot <= cap:
        return 0
    m = hi - lo
    f = cap / tot if cap > 0 else 0.0
    used = np.int64(0)
    for j in range(m):
        x = q[e, idx[lo + j], k]
        if x <= 0:
            xs[j] = x
            rem[j] = -1.0
            continue
        y = x * f / lot
        a = np.int64(math.floor(y))
        v = a * lot
        if v > x:
            v = (x // lot) * lot
        if v < moq:
            v = np.int64(0)
        xs[j] = v
        rem[j] = y - a
        used += v
    order = np.argsort(-rem[:m], kind="mergesort")
    for i in range(m):
        j = order[i]
        if rem[j] < 0.0:
            break
        v = xs[j]
        step = next_order_step(v, lot, moq)
        if v + step <= q[e, idx[lo + j], k] and used + step <= cap:
            xs[j] = v + step
            used += step
    while used > cap:  # guard against float rounding in the scaling
        best = -1
        bv = np.int64(0)
        for j in range(m):
            if xs[j] > bv:
                best = j
                bv = xs[j]
        if best < 0:
            break
        nv = snap_down_values(xs[best] - lot, lot, moq)
        used -= xs[best] - nv
        xs[best] = nv
    cnt = 0
    for j in range(m):
        n = idx[lo + j]
        if xs[j] != q[e, n, k]:
            q[e, n, k] = xs[j]
            changed[e, n, k] |= bit
            cnt += 1
    return cnt


# ------------------------------------------------------------------------------------------------
# steps 2-4 for every environment: one jitted pass over the tuples


def _chain_impl(p, s, w):
    """Clip, repair and snap w.q0 into w.q (see the module docstring); counts into w.interv/raw/cost."""
    q0, q, changed, interv, raw, head, live = w.q0, w.q, w.changed, w.interv, w.raw, w.head, w.live
    E, N, K = q0.shape
    M = p.n_dcs
    U = p.sup_ptr.shape[0] - 1
    T = p.horizon
    on_hand, transit, owed, last_order = s.on_hand, s.transit, s.owed, s.last_order
    volume, unit_cost, lot, moq = p.volume, p.unit_cost, p.lot, p.moq
    parent, supplier, dc_backlog = p.parent, p.supplier, p.backlog
    cap_ahead, sup_cap, lane_cap, budget, max_inc = (
        p.storage_cap_ahead,
        p.sup_cap,
        p.lane_cap,
        p.budget,
        p.max_increase,
    )
    child_ptr, child_idx, sup_ptr, sup_idx = p.child_ptr, p.child_idx, p.sup_ptr, p.sup_idx
    b_storage = np.uint8(1 << CI_STORAGE)
    b_lane = np.uint8(1 << CI_LANE)
    b_budget = np.uint8(1 << CI_BUDGET)
    b_supplier = np.uint8(1 << CI_SUPPLIER)
    b_dc = np.uint8(1 << CI_DC_AVAIL)
    b_lot = np.uint8(1 << CI_LOT_MOQ)
    for e in prange(E):
        t = np.int64(s.t[e])
        tc = t if t < T else np.int64(T)
        for c in range(N_CONSTRAINTS):
            interv[e, c] = 0
            raw[e, c] = 0
        oo = w.oo[e]
        owed_out_into(owed, parent, e, oo)
        fs = w.fs[e]
        xs = w.xs[e]
        # per node: headroom, per-SKU bounds, violations of the proposal, clip
        for n in range(N):
            if live[e, n] == 0:  # not asked about: orders nothing (the safe action), checks skipped
                head[e, n] = 0.0
                for k in range(K):
                    q[e, n, k] = 0
                continue
            h = headroom_values(cap_ahead[tc, n], on_hand, transit, owed, volume, e, n)
            head[e, n] = h
            u = supplier[n]
            d = availability_dc(parent, dc_backlog, n)
            lane = lane_cap[n]
            bud = budget[n]
            inc = max_inc[n]
            used_v = 0.0
            used_c = 0.0
            over_s = False
            over_l = False
            over_b = False
            for k in range(K):
                x0 = q0[e, n, k]
                x = x0
                if x0 > 0:
                    vk = volume[k]
                    ck = unit_cost[k]
                    xv = x0 * vk
                    xc = x0 * ck
                    used_v += xv
                    used_c += xc
                    if lot[k] > 1 or moq[k] > 1:
                        if not structural_ok_values(x0, lot[k], moq[k]):
                            raw[e, CI_LOT_MOQ] += 1
                    sc = sup_cap[tc, u, k] if u >= 0 else np.inf
                    atp = dc_available_values(on_hand, oo, e, d, k) if d >= 0 else BIG
                    lim = last_order[e, n, k] + inc
                    # q * w <= room implies q <= floor(room / w + eps): only near or over a bound do the
                    # per-SKU bounds need computing (the margin keeps float rounding on the safe side)
                    if (
                        xv > h * NEAR
                        or xv > lane * NEAR
                        or xc > bud * NEAR
                        or x0 > sc
                        or x0 > atp
                        or x0 > lim
                    ):
                        b = bound_values(vk, ck, h, sc, lane, bud, atp, last_order[e, n, k], inc)
                        if x0 > b[0]:
                            over_s = True
                        if x0 > b[2]:
                            over_l = True
                        if x0 > b[3]:
                            over_b = True
                        if x0 > b[5]:
                            raw[e, CI_RATE] += 1
                        # clip to the tightest bound, attributed to the first constraint that sets it
                        ci = 0
                        ub = b[0]
                        for c in range(1, 6):
                            if b[c] < ub:
                                ub = b[c]
                                ci = c
                        if x0 > ub:
                            x = ub
                            changed[e, n, k] |= np.uint8(1 << ci)
                q[e, n, k] = x
            if over_s or not joint_fits(used_v, h):
                raw[e, CI_STORAGE] += 1
            if over_l or not joint_fits(used_v, lane):
                raw[e, CI_LANE] += 1
            if over_b or not joint_fits(used_c, bud):
                raw[e, CI_BUDGET] += 1
        # joint repairs per node
        for n in range(N):
            if live[e, n] == 0:
                continue
            _repair_row(q, changed, e, n, volume, lot, moq, head[e, n], b_storage, fs, xs)
            _repair_row(q, changed, e, n, volume, lot, moq, lane_cap[n], b_lane, fs, xs)
            _repair_row(q, changed, e, n, unit_cost, lot, moq, budget[n], b_budget, fs, xs)
        # shared caps: per-SKU totals of the proposal (violations) and of the orders so far (repair),
        # summed row by row over the sharing nodes
        t0 = w.gt[e, 0]
        t1 = w.gt[e, 1]
        for u in range(U):
            lo, hi = sup_ptr[u], sup_ptr[u + 1]
            _group_totals(q0, q, e, sup_idx, lo, hi, t0, t1, live)
            for k in range(K):
                cap = sup_cap[tc, u, k]
                if math.isinf(cap):
                    continue
                capi = np.int64(cap) if cap > 0 else np.int64(0)
                if t0[k] > capi:
                    raw[e, CI_SUPPLIER] += 1
                if t1[k] > capi:
                    _repair_col(q, changed, e, k, sup_idx, lo, hi, lot[k], moq[k], capi, b_supplier, fs, xs)
        for dd in range(M):
            if dc_backlog[dd]:
                continue  # a backlogging DC queues what it cannot ship (availability_dc)
            lo, hi = child_ptr[dd], child_ptr[dd + 1]
            _group_totals(q0, q, e, child_idx, lo, hi, t0, t1, live)
            for k in range(K):
                a = dc_available_values(on_hand, oo, e, dd, k)
                if t0[k] > a:
                    raw[e, CI_DC_AVAIL] += 1
                if t1[k] > a:
                    _repair_col(q, changed, e, k, child_idx, lo, hi, lot[k], moq[k], a, b_dc, fs, xs)
        # snap down to lot and MOQ; node-SKUs changed per constraint and SKUs changed per node
        for n in range(N):
            cnt = 0
            if live[e, n] == 0:
                w.cost[e, n] = 0
                continue
            for k in range(K):
                x = q[e, n, k]
                if x > 0 and (lot[k] > 1 or moq[k] > 1):
                    y = snap_down_values(x, lot[k], moq[k])
                    if y != x:
                        q[e, n, k] = y
                        changed[e, n, k] |= b_lot
                f = changed[e, n, k]
                if f != 0:
                    cnt += 1
                    for c in range(N_CONSTRAINTS):
                        if f & (1 << c):
                            interv[e, c] += 1
            w.cost[e, n] = cnt


chain_serial = njit(cache=True)(_chain_impl)
chain_parallel = njit(cache=True, parallel=True)(variant(_chain_impl, "_parallel"))


def repair(params, state, work: ShieldWork, parallel: bool = False) -> None:
    """Steps 2-4 of the chain on ``work.q0`` into ``work.q`` (the hook tests replace to break the shield)."""
    (chain_parallel if parallel else chain_serial)(params, state, work)


# ------------------------------------------------------------------------------------------------
# runtime guards


@dataclass(frozen=True)
class AnomalyConfig:
    """A store's demand last period is anomalous when it exceeds max(mu + z * sd, ratio * mu) + margin,
    with mu and sd its exponentially weighted mean and deviation (weight ``alpha``), once ``warmup``
    periods have been seen. Anomalous values enter the statistics capped at that threshold."""

    z: float = 8.0
    ratio: float = 4.0
    margin: float = 10.0
    alpha: float = 0.1
    warmup: int = 7


@njit(cache=True)
def _anomaly_step(t, last_t, demand, is_store, mu, var, seen, z, ratio, margin, alpha, warmup, esc, out):
    """Update the demand statistics once per period and flag anomalous stores (esc |= ESC_ANOMALY)."""
    E, N, K = demand.shape
    for e in range(E):
        out[e] = 0
        te = np.int64(t[e])
        if te == 0 or te == last_t[e]:
            continue
        last_t[e] = te
        first = seen[e] == 0
        for n in range(N):
            if not is_store[n]:
                continue
            hit = False
            for k in range(K):
                x = float(demand[e, n, k])
                if first:
                    mu[e, n, k] = x
                    var[e, n, k] = x if x > 1.0 else 1.0
                    continue
                m = mu[e, n, k]
                v = var[e, n, k]
                if seen[e] >= warmup and x > ratio * m + margin and x > m + margin:
                    # only values past the cheap bounds need the deviation (one sqrt per suspect)
                    thr = m + z * math.sqrt(v)
                    r = ratio * m
                    if r > thr:
                        thr = r
                    thr += margin
                    if x > thr:
                        hit = True
                        x = thr
                dlt = x - m
                mu[e, n, k] = m + alpha * dlt
                var[e, n, k] = (1.0 - alpha) * (v + alpha * dlt * dlt)
            if hit:
                esc[e, n] |= ESC_ANOMALY
                out[e] += 1
        seen[e] += 1


@njit(cache=True)
def _obs_check(bits, esc, rows=None):
    """esc |= ESC_OBS for nodes whose float32 observation (viewed as uint32 ``bits``) holds NaN or
    infinity: an all-ones exponent. Integer max reductions vectorise; float NaN tests do not. With
    ``rows`` (int64 [R, 2] of (environment, node)) only those nodes are checked."""
    E, N, D = bits.shape
    if rows is None:
        R = E * N
    else:
        R = rows.shape[0]
    for r in range(R):
        if rows is None:
            e = r // N
            n = r % N
        else:
            e = rows[r, 0]
            n = rows[r, 1]
        m = np.uint32(0)
        for j in range(D):
            x = bits[e, n, j] & np.uint32(0x7F800000)
            if x > m:
                m = x
        if m == np.uint32(0x7F800000):
            esc[e, n] |= ESC_OBS


# ------------------------------------------------------------------------------------------------
# the shield


@dataclass
class ShieldResult:
    """What the shield decided for one batch. The [E, N, K] arrays are the shield's buffers: they hold
    until its next call (copy them to keep them)."""

    executed: np.ndarray  # [E, N, K] int32 orders that execute
    proposed: np.ndarray  # [E, N, K] int64 the proposal after sanitising
    shielded: np.ndarray  # [E, N, K] int64 what enforce mode executes (in monitor mode: would execute)
    changed: np.ndarray  # [E, N, K] uint8 change flags (records.CHANGED_SANITISED, bit c = constraint c)
    interventions: np.ndarray  # [E, C] node-SKUs changed per constraint
    raw_violations: np.ndarray  # [E, C] violations in the proposal (envs.constraints.VIOLATION_UNITS)
    executed_violations: np.ndarray  # [E, C] violations in the executed orders (0 in enforce mode)
    escalation: np.ndarray  # [E, N] uint8 flags (records.ESCALATION_REASONS)
    fallback: np.ndarray  # [E, N] int8 records.FALLBACKS codes
    verifier_failures: np.ndarray  # [E] nodes whose shielded orders failed the verifier
    sanitised: np.ndarray  # [E] node-SKUs whose raw value was replaced or rounded down
    anomalies: np.ndarray  # [E] nodes with anomalous demand
    breaker_open: np.ndarray  # [E] nodes run by the fallback policy this period
    constraint_cost: np.ndarray  # [E, N] float64 SKUs changed per node
    reward_penalty: np.ndarray  # [E, N] float64 intervention penalty (0 in monitor mode)
    verdict: Verdict  # the verifier on the executed orders


def _policy_names(policy, compiled) -> tuple[list[str], list[str]]:
    N = compiled.N
    if policy is None:
        return ["unknown"] * N, [""] * N
    if isinstance(policy, str):
        return [policy] * N, [""] * N
    pols = getattr(policy, "policies", None)
    if isinstance(policy, dict):
        pols = policy
    if isinstance(pols, dict):
        ids, vers = [], []
        for n in range(N):
            pol = pols[compiled.role(n)]
            ids.append(str(getattr(pol, "name", pol)))
            vers.append(str(getattr(pol, "version", "")))
        return ids, vers
    return [str(getattr(policy, "name", policy))] * N, [str(getattr(policy, "version", ""))] * N


def _array_digest(h, a) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))


class Shield:
    """The shield chain around any policy: usable as ``ArrayEnv(shield=...)`` hook, in eval and serving.

    ``Shield(scenario=None, mode="enforce", *, fallback=None, penalty=0.0, penalty_per="sku",
    breaker_after=3, cooldown=10, anomaly=AnomalyConfig(), check_obs=True, records=False,
    policy=None, run_id="run", clock=time.time, obs_digest=True, parallel=False)``

    scenario: optional (a name, config or `Compiled`); the shield binds to the env's scenario on its
    first call anyway. fallback: a `Policy` that runs nodes whose breaker is open (zero orders when
    None). penalty: subtracted from the reward per SKU changed (``penalty_per="sku"``) or per period
    of mean demand changed (``"demand"``), returned as ``info["reward_penalty"]`` (see
    `apply_penalty`). breaker_after: R consecutive escalations open a node's breaker for ``cooldown``
    periods (0 disables it). anomaly: `AnomalyConfig` or None. records: True (a `MemorySink`), a sink,
    or False; with records the info also carries ``shield`` (per-node summaries). policy: what the
    records name as proposer (a `Policy`, `JointPolicy`, role dict or a string; `set_policy`).
    clock: the records' time source. obs_digest: hash each node's observation into its record (sha256
    of the float32 bytes; the main cost of records at large batches). parallel: run the chain on all
    threads (E > 1; worth it only for big batches on an otherwise idle machine).
    """

    def __init__(
        self,
        scenario: Any = None,
        mode: str = "enforce",
        *,
        fallback: Any = None,
        penalty: float = 0.0,
        penalty_per: str = "sku",
        breaker_after: int = 3,
        cooldown: int = 10,
        anomaly: AnomalyConfig | None = AnomalyConfig(),  # frozen: safe as a default
        check_obs: bool = True,
        records: bool | Sink = False,
        policy: Any = None,
        run_id: str = "run",
        clock: Callable[[], float] = time.time,
        obs_digest: bool = True,
        parallel: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if penalty_per not in ("sku", "demand"):
            raise ValueError(f"penalty_per must be 'sku' or 'demand', not {penalty_per!r}")
        if breaker_after < 0 or cooldown < 0:
            raise ValueError("breaker_after and cooldown must be >= 0")
        self.mode = mode
        self.fallback = fallback
        self.penalty = float(penalty)
        self.penalty_per = penalty_per
        self.breaker_after = int(breaker_after)
        self.cooldown = int(cooldown)
        self.anomaly = anomaly
        self.check_obs = bool(check_obs)
        if records is True:
            records = MemorySink()
        self.sink: Sink | None = None if records is False or records is None else records
        self.policy = policy
        self.run_id = run_id
        self.clock = clock
        self.obs_digest = obs_digest
        self.parallel = parallel
        self.steps = 0
        self._compiled = None
        self._params = None
        self._ctx_id = None
        self._shape = None
        self._pending_conf = None
        self._pending_ids = None
        self.config_hash = ""
        if scenario is not None:
            from restock.envs.array_env import compile_any

            c = compile_any(scenario)
            self._bind_params(c.params, c)

    # ---------------------------------------------------------------- configuration
    def config(self) -> dict[str, Any]:
        """The shield's configuration as plain data (hashed with the constraint data into config_hash)."""
        return {
            "version": SHIELD_VERSION,
            "mode": self.mode,
            "penalty": self.penalty,
            "penalty_per": self.penalty_per,
            "breaker_after": self.breaker_after,
            "cooldown": self.cooldown,
            "anomaly": None if self.anomaly is None else asdict(self.anomaly),
            "check_obs": self.check_obs,
            "fallback": None
            if self.fallback is None
            else [str(getattr(self.fallback, "name", "")), str(getattr(self.fallback, "version", ""))],
            "constraints": list(CONSTRAINTS),
        }

    def _bind_params(self, params, compiled=None) -> None:
        self._params = params
        self._compiled = compiled
        self.verifier = Verifier(params)
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for name in (
            "storage_cap_ahead",
            "sup_cap",
            "lane_cap",
            "budget",
            "max_increase",
            "volume",
            "unit_cost",
            "lot",
            "moq",
            "parent",
            "supplier",
            "child_ptr",
            "child_idx",
            "sup_ptr",
            "sup_idx",
        ):
            h.update(name.encode())
            _array_digest(h, getattr(params, name))
        h.update(f"{params.horizon}/{params.n_dcs}".encode())
        self.config_hash = h.hexdigest()
        if compiled is not None:
            self._meta = RecordMeta(
                agent_ids=tuple(compiled.agent_ids),
                sku_names=tuple(compiled.sku_names),
                n_dcs=int(compiled.M),
                scenario_hash=str(compiled.config_hash),
                volume=np.asarray(params.volume, float),
                unit_cost=np.asarray(params.unit_cost, float),
                lot=np.asarray(params.lot, np.int64),
                moq=np.asarray(params.moq, np.int64),
            )
        self._policy_ids = None

    def _bind(self, ctx) -> None:
        p = ctx.params
        compiled = getattr(ctx, "compiled", None)
        if p is not self._params:
            self._bind_params(p, compiled)
        elif compiled is not None and self._compiled is None:
            self._bind_params(p, compiled)
        E, N, K = ctx.state.on_hand.shape
        if self._shape != (E, N, K) or self._ctx_id != id(ctx):
            if self._shape != (E, N, K):
                self.work = new_shield_work(E, N, K)
                self._exec = np.zeros((E, N, K), np.int32)
                self._slack = np.zeros((E, N, 6))
                self._oo = np.zeros((N, K), np.int64)
            self._shape = (E, N, K)
            self._ctx_id = id(ctx)
            self.reset()

    def reset(self) -> None:
        """Forget the runtime guards' history (breakers closed, demand statistics empty)."""
        if self._shape is None:
            return
        E, N, K = self._shape
        self._consec = np.zeros((E, N), np.int64)
        self._cool = np.zeros((E, N), np.int64)
        self._mu = np.zeros((E, N, K))
        self._var = np.zeros((E, N, K))
        self._seen = np.zeros(E, np.int64)
        self._last_t = np.full(E, -1, np.int64)

    def set_policy(self, policy: Any) -> None:
        """Name the proposer in decision records (a Policy, JointPolicy, role dict or string)."""
        self.policy = policy
        self._policy_ids = None

    def note(self, confidence: np.ndarray | None = None, request_ids: list[str] | None = None) -> None:
        """Attach the policy's confidence [E, N] and/or request ids (E * N) to the next decision."""
        self._pending_conf = confidence
        self._pending_ids = request_ids

    @property
    def records(self) -> Sink | None:
        return self.sink

    # ---------------------------------------------------------------- the chain
    def _as_array(self, qty, E: int, N: int, K: int) -> np.ndarray:
        a = np.asarray(qty)
        if a.dtype.kind not in "biuf":
            try:
                a = a.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"proposed orders must be numbers, got an array of dtype {a.dtype}"
                ) from None
        if a.shape == (N, K) and E == 1:
            a = a[None]
        if a.shape != (E, N, K):
            raise ValueError(f"proposed orders must have shape {(E, N, K)} (E, nodes, SKUs), got {a.shape}")
        if a.dtype.kind == "b":
            a = a.astype(np.int64)
        elif a.dtype.kind == "u":
            a = np.minimum(a, BIG + 1).astype(np.int64)
        elif a.dtype.kind == "f" and a.dtype != np.float64:
            a = a.astype(np.float64)
        return a

    def _sanitise(self, a: np.ndarray) -> None:
        w = self.work
        if a.dtype.kind == "f":
            _sanitise_float(a, w.q0, w.changed, w.esc, w.san)
        else:
            _sanitise_int(np.ascontiguousarray(a), w.q0, w.changed, w.esc, w.san)

    def _use_parallel(self) -> bool:
        return bool(self.parallel) and self._shape[0] > 1

    def _fallback_proposals(self, ctx, a: np.ndarray, open_: np.ndarray) -> np.ndarray:
        """The proposal with the rows of nodes whose breaker is open replaced by the fallback policy's."""
        E, N, K = self._shape
        out = np.array(a, dtype=np.float64 if a.dtype.kind == "f" else np.int64, copy=True)
        nodes = np.flatnonzero(open_.any(axis=0))
        fq = np.zeros((E, len(nodes), K), np.int64)
        pol = self.fallback
        if pol is not None:
            if hasattr(pol, "bind") and getattr(ctx, "compiled", None) is not None:
                pol.bind(ctx.compiled)
            res = np.asarray(pol.act(ctx, nodes))
            if getattr(pol, "output", "quantities") == "levels":
                full = np.zeros((E, N, K), np.int64)
                full[:, nodes] = res
                q = np.zeros((E, N, K), np.int32)
                work = getattr(ctx, "work", None) or new_work(E, N, ctx.params.n_dcs, K)
                kn.levels_to_qty(ctx.params, ctx.state, work, full, q)
                fq = q[:, nodes].astype(np.int64)
            else:
                fq = res
        sel = open_[:, nodes]
        out[:, nodes] = np.where(sel[:, :, None], fq, out[:, nodes])
        return out

    def project(self, ctx, qty) -> np.ndarray:
        """Steps 1-4 only (no verifier, guards or records): a copy of the shielded orders [E, N, K]."""
        self._bind(ctx)
        E, N, K = self._shape
        self._sanitise(self._as_array(qty, E, N, K))
        self.work.live.fill(1)
        repair(ctx.params, ctx.state, self.work, self._use_parallel())
        return self.work.q.copy()

    def decide(
        self, ctx, qty, confidence: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> ShieldResult:
        """Shield proposed orders qty[E, N, K] at the decision point ``ctx`` (an ArrayEnv or anything with
        ``params`` and ``state``; ``compiled`` and ``obs`` when available).

        ``rows`` (int64 [R, 2] of (environment, node)): only these nodes are deciding (the serving shim
        asks about one node per environment). Every other node executes the safe action (orders
        nothing) and its clipping, repairs and observation check are skipped; give them zero
        proposals and the result is the one without ``rows``, computed for R nodes instead of E x N.
        """
        self._bind(ctx)
        E, N, K = self._shape
        p, s = ctx.params, ctx.state
        w = self.work
        if rows is None:
            w.live.fill(1)
        else:
            w.live.fill(0)
            w.live[rows[:, 0], rows[:, 1]] = 1
        enforce = self.mode == "enforce"
        a = self._as_array(qty, E, N, K)
        breaker = enforce and self.breaker_after > 0
        open_ = self._cool > 0 if breaker else np.zeros((E, N), bool)
        any_open = bool(open_.any())
        if any_open:
            a = self._fallback_proposals(ctx, a, open_)
        self._sanitise(a)
        repair(p, s, w, self._use_parallel())

        # verify the shielded orders; failing nodes execute the safe action
        verdict = self.verifier.check(s, w.q)
        fb = np.where(open_, np.int8(2), np.int8(0))
        failed = verdict.failed_nodes()
        vfail = failed.sum(axis=1)
        if failed.any():
            w.q[failed] = 0
            w.esc[failed] |= ESC_VERIFIER
            w.cost[failed] = ((w.q0[failed] != 0) | (w.changed[failed] != 0)).sum(axis=-1)
            fb[failed] = 1
            verdict = self.verifier.check(s, w.q)
            still = verdict.failed_nodes().any(axis=1)
            if still.any():  # cannot happen for zero orders; fail closed for the whole environment
                w.q[still] = 0
                verdict = self.verifier.check(s, w.q)
        if enforce:
            self._exec[...] = w.q
        else:
            self._exec[...] = w.q0
            verdict = self.verifier.check(s, w.q0)

        # runtime guards
        anomalies = np.zeros(E, np.int64)
        if self.anomaly is not None:
            an = self.anomaly
            _anomaly_step(
                s.t,
                self._last_t,
                s.last_demand,
                p.is_store,
                self._mu,
                self._var,
                self._seen,
                an.z,
                an.ratio,
                an.margin,
                an.alpha,
                an.warmup,
                w.esc,
                anomalies,
            )
        obs = getattr(ctx, "obs", None)
        if self.check_obs and obs is not None and np.shape(obs)[:2] == (E, N):
            ob = np.asarray(obs)
            if ob.dtype == np.float32 and ob.flags.c_contiguous:
                if rows is None:
                    _obs_check(ob.view(np.uint32), w.esc)
                else:
                    _obs_check(ob.view(np.uint32), w.esc, np.ascontiguousarray(rows, np.int64))
            else:
                w.esc[~np.isfinite(ob).all(axis=2)] |= ESC_OBS
        if breaker:
            esc = w.esc != 0
            closed = ~open_
            self._consec = np.where(closed, np.where(esc, self._consec + 1, 0), self._consec)
            trip = closed & (self._consec >= self.breaker_after)
            if trip.any():
                self._cool[trip] = self.cooldown
                self._consec[trip] = 0
                w.esc[trip] |= ESC_BREAKER
            if any_open:
                self._cool[open_] -= 1

        cost = w.cost.astype(np.float64)
        if enforce and self.penalty:
            if self.penalty_per == "sku":
                pen = self.penalty * cost
            else:
                diff = (w.q0 - w.q) * p.inv_scale[None]
                pen = self.penalty * diff.sum(axis=2)
        else:
            pen = np.zeros((E, N))
        if confidence is None:
            confidence = self._pending_conf
        res = ShieldResult(
            executed=self._exec,
            proposed=w.q0,
            shielded=w.q,
            changed=w.changed,
            interventions=w.interv.copy(),
            raw_violations=w.raw.copy(),
            executed_violations=verdict.count,
            escalation=w.esc.copy(),
            fallback=fb,
            verifier_failures=vfail,
            sanitised=w.san.copy(),
            anomalies=anomalies,
            breaker_open=open_.sum(axis=1),
            constraint_cost=cost,
            reward_penalty=pen,
            verdict=verdict,
        )
        if self.sink is not None:
            self._record(ctx, res, confidence)
        self._pending_conf = None
        self._pending_ids = None
        self.steps += 1
        return res

    # ---------------------------------------------------------------- records
    def _record(self, ctx, res: ShieldResult, confidence) -> None:
        compiled = getattr(ctx, "compiled", None) or self._compiled
        if compiled is None:
            raise ValueError(
                "decision records need the scenario: give Shield(scenario) or a ctx with compiled"
            )
        if self._compiled is None:
            self._bind_params(ctx.params, compiled)
        if self._policy_ids is None:
            self._policy_ids = _policy_names(self.policy, compiled)
        E, N, K = self._shape
        joint_slacks(ctx.params, ctx.state, res.executed, self._oo, self._slack)
        digests = None
        obs = getattr(ctx, "obs", None)
        if self.obs_digest and obs is not None and np.shape(obs)[:2] == (E, N):
            digests = np.empty((E, N, 32), np.uint8)
            ob = np.ascontiguousarray(obs)
            for e in range(E):
                for n in range(N):
                    digests[e, n] = np.frombuffer(hashlib.sha256(ob[e, n]).digest(), np.uint8)
        conf = None
        if confidence is not None:
            conf = np.broadcast_to(np.asarray(confidence, float), (E, N)).copy()
        fbp = None
        if self.fallback is not None:
            fbp = (
                str(getattr(self.fallback, "name", "fallback")),
                str(getattr(self.fallback, "version", "")),
            )
        batch = StepBatch(
            meta=self._meta,
            step=self.steps,
            run_id=self.run_id,
            mode=self.mode,
            timestamp=float(self.clock()),
            shield_config_hash=self.config_hash,
            period=ctx.state.t.astype(np.int64),
            policy_ids=self._policy_ids[0],
            policy_versions=self._policy_ids[1],
            proposed=res.proposed.astype(np.int32),
            executed=res.executed.copy(),
            changed=res.changed.copy(),
            slack=self._slack.copy(),
            escalation=res.escalation,
            fallback=res.fallback,
            confidence=conf,
            obs_digest=digests,
            request_ids=None if self._pending_ids is None else list(self._pending_ids),
            fallback_policy=fbp,
        )
        self.sink.append(batch)
        self._last_batch = batch

    def _summaries(self, res: ShieldResult) -> list[dict[str, Any]]:
        """Per-node summaries for env infos (environment 0 when E == 1, else leading E axis)."""
        E, N, K = self._shape
        batch = self._last_batch
        out = []
        if E == 1:
            recs = list(batch.records())
            for n in range(N):
                r = recs[n]
                out.append(
                    {
                        "proposed": res.proposed[0, n].copy(),
                        "executed": res.executed[0, n].copy(),
                        "interventions": {
                            c: int(((res.changed[0, n] >> i) & 1).sum()) for i, c in enumerate(CONSTRAINTS)
                        },
                        "binding": r.binding,
                        "escalated": r.escalated,
                        "escalation_reasons": r.escalation_reasons,
                        "fallback": r.fallback,
                        "rationale": r.rationale,
                    }
                )
            return out
        for n in range(N):
            out.append(
                {
                    "proposed": res.proposed[:, n].copy(),
                    "executed": res.executed[:, n].copy(),
                    "interventions": (
                        (res.changed[:, n, :, None] >> np.arange(N_CONSTRAINTS, dtype=np.uint8)) & 1
                    ).sum(axis=1),
                    "escalated": res.escalation[:, n] != 0,
                    "fallback": res.fallback[:, n].copy(),
                }
            )
        return out

    # ---------------------------------------------------------------- the env hook
    def __call__(self, env, qty) -> tuple[np.ndarray, dict[str, Any]]:
        """The ArrayEnv hook: (executed int32 [E, N, K], info). Info keys, C = len(CONSTRAINTS):

        shield_interventions [E, C]        node-SKUs changed per constraint (what monitor mode would change)
        shield_raw_violations [E, C]       violations in the proposal (units: constraints.VIOLATION_UNITS)
        shield_executed_violations [E, C]  violations in the executed orders (all 0 in enforce mode)
        shield_decisions [E]               node decisions this period (N)
        shield_sku_decisions [E]           node-SKU decisions this period (N * K)
        shield_fallbacks [E]               nodes executing the safe action or the fallback policy
        shield_escalations [E]             nodes escalated
        shield_verifier_failures [E]       nodes whose shielded orders failed the verifier (must be 0)
        shield_sanitised [E]               node-SKUs whose raw value was replaced or rounded down
        shield_anomalies [E]               nodes with anomalous demand last period
        shield_breaker_open [E]            nodes run by the fallback policy
        constraint_cost [E, N]             SKUs changed per node (cost for constrained-RL learners)
        reward_penalty [E, N]              intervention penalty to subtract from rewards (`apply_penalty`)
        shield                             with records: per-node summaries (`_summaries`)
        """
        res = self.decide(env, qty)
        E, N, K = self._shape
        info: dict[str, Any] = {
            "shield_interventions": res.interventions,
            "shield_raw_violations": res.raw_violations,
            "shield_executed_violations": res.executed_violations,
            "shield_decisions": np.full(E, N, np.int64),
            "shield_sku_decisions": np.full(E, N * K, np.int64),
            "shield_fallbacks": (res.fallback != 0).sum(axis=1),
            "shield_escalations": (res.escalation != 0).sum(axis=1),
            "shield_verifier_failures": res.verifier_failures,
            "shield_sanitised": res.sanitised,
            "shield_anomalies": res.anomalies,
            "shield_breaker_open": res.breaker_open,
            "constraint_cost": res.constraint_cost,
            "reward_penalty": res.reward_penalty,
        }
        if self.sink is not None:
            info["shield"] = self._summaries(res)
        return res.executed, info


def apply_penalty(reward: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Subtract the shield's intervention penalty ``info["reward_penalty"]`` [E, N] from ``reward`` in
    place (a no-op without it) and return it. Rewards are -cost / scale, so the penalty is in reward units."""
    pen = info.get("reward_penalty")
    if pen is not None:
        reward -= pen
    return reward


# ------------------------------------------------------------------------------------------------
# shielded envs


def shielded_parallel_env(scenario: Any = "default", shield: Shield | None = None, **kwargs: Any):
    """``inventory_v0`` behind a shield (a default enforce-mode `Shield` when none is given).

    infos[agent]["cost"] then carries the shield's constraint cost, and ``infos[agent]["shield"]`` the
    node's summary when the shield keeps records.
    """
    from restock.envs.pz_env import parallel_env

    return parallel_env(scenario, shield=shield if shield is not None else Shield(), **kwargs)


def shielded_array_env(scenario: Any = "default", shield: Shield | None = None, **kwargs: Any):
    """An `envs.ArrayEnv` behind a shield (a default enforce-mode `Shield` when none is given)."""
    from restock.envs.array_env import ArrayEnv

    return ArrayEnv(scenario, shield=shield if shield is not None else Shield(), **kwargs)
