"""The decision request: one node's state in one period, validated strictly, then checked against the scenario.

How each field becomes the one-environment simulator state the kernel observes (period contract,
step 2: this period's arrivals have already been received; a store's demand for this period has not
happened yet). K is the scenario's SKU count, W its pipeline ring length; per-SKU lists follow the
order of ``skus``.

====================  ==============================================================================
field                 state (``envs.types.State``, environment 0, node n = ``node``)
====================  ==============================================================================
request_id            idempotency key (1-128 of ``A-Z a-z 0-9 . _ : -``); not part of the state
node                  agent id (``store_3``, ``dc_0``) or node name from the scenario (``dc``) -> n
period                t (0 <= t < horizon): seasonality, capacities by period, time_fraction
skus                  every scenario SKU name once, in the order of the per-SKU lists below
on_hand               on_hand[n, k] (units, after this period's arrivals)
pipeline              rows j = 0..W-2: units arriving in period t + 1 + j -> pipe[n, (t+1+j) % W, k];
                      transit[n, k] = their sum (fewer rows than W-1 mean nothing later)
backlog               stores: customer backorders backlog[n, k] (must be 0 at lost-sales stores);
                      DCs: units the DC owes its children (as their owed; 0 when the DC cannot backlog)
owed                  owed[n, k]: units the parent DC owes this node (0 when it cannot backlog or n is
                      fed by a supplier)
last_demand           last_demand[n, k]: customer demand last period (stores) or the children's orders
                      last period (DCs)
last_order            last_order[n, k]: the node's executed order last period (rate limits use it)
last_shipped          shipped[n, k]: units the parent dispatched to n last period (default 0)
last_arrived          arrived[n, k]: units that arrived at n this period (default 0)
echelon_position      optional; the node's echelon inventory position per SKU (units, may be negative),
                      as `agents.echelon.echelon_positions` computes it: the on hand + in transit of
                      every node of n's subtree (n and everything downstream of it) + owed[n] (what
                      n's parent owes n) - the customer backlog of the subtree's stores (what a node of
                      the subtree owes another is not counted). Not written into the state: a policy
                      whose artifact lists ``extra_sku_features: ["echelon_position"]`` (`dcl` runs on
                      serial chains) reads it as one more SKU feature (divided by the node-SKU demand
                      scale, `agents.echelon_features.augment_rows`), and a request routed to it
                      without the field is refused (422). The ``echelon_base_stock`` heuristic orders on
                      it where sent (without it, it sees nothing downstream of n); other policies
                      ignore it. At a node without children it must equal on_hand + sum(pipeline) +
                      owed - backlog
demand_history        optional rows of past demand, oldest first (the row before ``last_demand`` last):
                      feeds the shield's demand-anomaly guard (`agents.shield.AnomalyConfig`)
constraints.parent_available   units the parent DC can still promise per SKU -> the parent's on_hand
                      (plus ``owed``, which the parent already owes n); required when the parent DC
                      cannot backlog (its availability bounds n's orders), refused otherwise
constraints.budget             remaining ordering budget this period (money) -> budget[n]; only where
                      the scenario gives the node a budget
constraints.storage_capacity   storage volume over the coming lead-time window -> storage_cap[t, n]
                      and storage_cap_ahead[t, n]; only where the scenario caps the node's storage
constraints.lane_capacity      inbound volume this period -> lane_cap[n]; only where the scenario has one
constraints.supplier_capacity  units per SKU the node's supplier can still ship -> sup_cap[t, u, k];
                      only for nodes fed by a capped supplier
====================  ==============================================================================

Everything else (lead times, costs, lot sizes, MOQs, forecasts) comes from the artifact's scenario.
Quantities are whole units in [0, 10^8] (``echelon_position`` in [-10^8, 10^8]); money and volume are
finite numbers >= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_serializer
from restock.envs.roles import node_role

MAX_UNITS = 100_000_000
MAX_HISTORY = 365

# whole units; the range [0, MAX_UNITS] is checked on the converted arrays (`ScenarioInfo.check`: one
# vectorised test instead of a constraint per list item, which was a third of validation's time)
UnitList = Annotated[
    list[Annotated[int, Field(json_schema_extra={"minimum": 0, "maximum": MAX_UNITS})]], Field(min_length=1)
]
Money = Annotated[float, Field(ge=0.0, allow_inf_nan=False, le=1e15)]
# whole units that may be negative (the echelon position subtracts backlogs); range checked in `check`
SignedUnitList = Annotated[
    list[Annotated[int, Field(json_schema_extra={"minimum": -MAX_UNITS, "maximum": MAX_UNITS})]],
    Field(min_length=1),
]
ECHELON_DOC = (
    "Optional: the node's echelon inventory position per SKU, in units, in the order of skus (may be "
    "negative): the on hand plus in transit of every node of the node's subtree (the node itself and "
    "everything downstream of it), plus what the node's parent owes it, minus the customer backlog of "
    "the subtree's stores (agents.echelon.echelon_positions). Required when the policy that decides "
    'for the node reads it (artifact manifest extra_sku_features: ["echelon_position"], e.g. dcl '
    "runs on serial chains): refused with 422 otherwise. The echelon_base_stock heuristic orders on it "
    "where sent; other policies ignore it. At a node without "
    "children it must equal on_hand + sum(pipeline) + owed - backlog."
)


class Constraints(BaseModel):
    """Constraint data known at decision time (see the module docstring for the mapping)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    parent_available: UnitList | None = None
    budget: Money | None = None
    storage_capacity: Money | None = None
    lane_capacity: Money | None = None
    supplier_capacity: Annotated[list[Money], Field(min_length=1)] | None = None


_NO_CONSTRAINTS = Constraints()


class DecisionRequest(BaseModel):
    """One node's state in one period; the shim answers with orders for all its SKUs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")]
    node: Annotated[str, Field(min_length=1, max_length=128)]
    period: Annotated[int, Field(ge=0)]
    skus: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(min_length=1)]
    on_hand: UnitList
    pipeline: list[UnitList]
    last_demand: UnitList
    last_order: UnitList
    backlog: UnitList | None = None
    owed: UnitList | None = None
    last_shipped: UnitList | None = None
    last_arrived: UnitList | None = None
    echelon_position: SignedUnitList | None = Field(default=None, description=ECHELON_DOC)
    demand_history: Annotated[list[UnitList], Field(max_length=MAX_HISTORY)] | None = None
    constraints: Constraints | None = None
    _canonical: str | None = PrivateAttr(default=None)
    _digest: str | None = PrivateAttr(default=None)

    @model_serializer(mode="wrap")
    def _omit_absent_echelon(self, handler):
        """``echelon_position`` is left out when absent, so a request without it serialises (and
        hashes: the idempotency digest, the audit store's request_sha256) exactly as before the field
        existed."""
        d = handler(self)
        if isinstance(d, dict) and d.get("echelon_position", 0) is None:
            del d["echelon_position"]
        return d


class RequestInvalid(ValueError):
    """A request that does not fit the scenario; ``errors`` are pydantic-style dicts with ``loc``."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


@dataclass
class NodeState:
    """A validated request as arrays in scenario SKU order (what the engine writes into the state)."""

    request_id: str
    node: int
    agent_id: str
    role: str
    period: int
    on_hand: np.ndarray  # [K] int64
    pipeline: np.ndarray  # [W-1, K] int64
    backlog: np.ndarray
    owed: np.ndarray
    last_demand: np.ndarray
    last_order: np.ndarray
    last_shipped: np.ndarray
    last_arrived: np.ndarray
    history: np.ndarray | None  # [R, K] int64 or None
    echelon_position: np.ndarray | None  # [K] int64 (may be negative) or None
    parent_available: np.ndarray | None
    budget: float | None
    storage_capacity: float | None
    lane_capacity: float | None
    supplier_capacity: np.ndarray | None
    overrides: tuple = field(default=())  # keys of shared parameters the request overrides


_PER_SKU = ("on_hand", "last_demand", "last_order", "backlog", "owed", "last_shipped", "last_arrived")


class ScenarioInfo:
    """What request validation needs to know about the served scenario (built once)."""

    def __init__(self, compiled):
        c = compiled
        p = c.params
        self.compiled = c
        self.K = c.K
        self.W = c.W
        self.horizon = c.horizon
        self.sku_names = list(c.sku_names)
        self.sku_index = {s: k for k, s in enumerate(self.sku_names)}
        self.nodes: dict[str, int] = {}
        for n, a in enumerate(c.agent_ids):
            self.nodes[a] = n
        for n, a in enumerate(c.node_names):
            self.nodes.setdefault(a, n)
        self.agent_ids = list(c.agent_ids)
        self.M = c.M
        self.parent = [int(x) for x in p.parent]
        self.supplier = [int(x) for x in p.supplier]
        self.backlog = [bool(x) for x in p.backlog]
        self.children = [
            [int(x) for x in p.child_idx[p.child_ptr[n] : p.child_ptr[n + 1]]] for n in range(c.N)
        ]
        self.storage_finite = [not math.isinf(float(p.storage_cap[:, n].max())) for n in range(c.N)]
        self.budget_finite = [not math.isinf(float(p.budget[n])) for n in range(c.N)]
        self.lane_finite = [not math.isinf(float(p.lane_cap[n])) for n in range(c.N)]
        self.sup_capped = [bool(x) for x in p.sup_capped]
        self._identity = list(range(self.K))

    def availability_parent(self, n: int) -> int:
        """The DC whose availability bounds n's orders (`envs.constraints.availability_dc`), or -1."""
        d = self.parent[n]
        return d if d >= 0 and not self.backlog[d] else -1

    def check(self, req: DecisionRequest) -> NodeState:
        """Scenario checks (node, SKU names and list lengths, period, constraint data); raises RequestInvalid."""
        errs: list[dict[str, Any]] = []

        def bad(loc: tuple, msg: str, value: Any = None, kind: str = "value_error") -> None:
            errs.append({"type": kind, "loc": list(loc), "msg": msg, "input": value})

        n = self.nodes.get(req.node)
        if n is None:
            bad(("node",), f"unknown node {req.node!r} (nodes: {', '.join(self.agent_ids)})", req.node)
        if req.period >= self.horizon:
            bad(("period",), f"must be < the scenario horizon {self.horizon}", req.period)
        K = self.K
        perm = None
        if req.skus != self.sku_names:
            seen: set[str] = set()
            idx = []
            for i, s in enumerate(req.skus):
                k = self.sku_index.get(s)
                if k is None:
                    bad(("skus", i), f"unknown SKU {s!r}", s)
                elif s in seen:
                    bad(("skus", i), f"SKU {s!r} appears twice", s)
                else:
                    seen.add(s)
                    idx.append(k)
            missing = [s for s in self.sku_names if s not in seen]
            if missing and len(req.skus) <= K:
                shown = ", ".join(repr(s) for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
                bad(("skus",), f"{len(missing)} scenario SKUs missing: {shown} (give all {K})", None)
            elif len(req.skus) != K:
                bad(("skus",), f"expected {K} SKU names, got {len(req.skus)}", None)
            perm = idx
        for name in (
            "on_hand",
            "last_demand",
            "last_order",
            "backlog",
            "owed",
            "last_shipped",
            "last_arrived",
            "echelon_position",
        ):
            v = getattr(req, name)
            if v is not None and len(v) != K:
                bad((name,), f"expected {K} values (one per SKU), got {len(v)}", None)
        if len(req.pipeline) > self.W - 1:
            bad(
                ("pipeline",),
                f"at most {self.W - 1} rows (arrivals 1..{self.W - 1} periods ahead in this scenario), "
                f"got {len(req.pipeline)}",
                None,
            )
        for j, row in enumerate(req.pipeline):
            if len(row) != K:
                bad(("pipeline", j), f"expected {K} values (one per SKU), got {len(row)}", None)
        if req.demand_history is not None:
            for j, row in enumerate(req.demand_history):
                if len(row) != K:
                    bad(("demand_history", j), f"expected {K} values (one per SKU), got {len(row)}", None)
        cons = req.constraints or _NO_CONSTRAINTS
        if cons.parent_available is not None and len(cons.parent_available) != K:
            bad(("constraints", "parent_available"), f"expected {K} values, got {len(cons.parent_available)}")
        if cons.supplier_capacity is not None and len(cons.supplier_capacity) != K:
            bad(
                ("constraints", "supplier_capacity"),
                f"expected {K} values, got {len(cons.supplier_capacity)}",
            )
        if errs:
            raise RequestInvalid(errs)

        role = node_role(n, self.M)
        agent = self.agent_ids[n]

        # whole units in [0, MAX_UNITS], checked on the converted arrays (one min and max per array)
        def in_range(a: np.ndarray) -> bool:
            return a.size == 0 or (a.min() >= 0 and a.max() <= MAX_UNITS)

        def out_of_range(loc: tuple, v: list) -> None:
            for at, x in _first_out_of_range(v):
                if x < 0:
                    bad(loc + at, "Input should be greater than or equal to 0", x, "greater_than_equal")
                else:
                    msg = f"Input should be less than or equal to {MAX_UNITS}"
                    bad(loc + at, msg, x, "less_than_equal")

        def ints(loc: tuple, v: list) -> np.ndarray:
            try:
                a = np.asarray(v, np.int64)
            except OverflowError:  # beyond int64: out of range
                out_of_range(loc, v)
                return np.zeros(np.shape(v), np.int64)
            if not in_range(a):
                out_of_range(loc, v)
            return a

        def signed_ints(loc: tuple, v: list) -> np.ndarray:
            for i, x in enumerate(v):
                if not -MAX_UNITS <= x <= MAX_UNITS:
                    if x < 0:
                        msg = f"Input should be greater than or equal to {-MAX_UNITS}"
                        bad(loc + (i,), msg, x, "greater_than_equal")
                    else:
                        bad(
                            loc + (i,),
                            f"Input should be less than or equal to {MAX_UNITS}",
                            x,
                            "less_than_equal",
                        )
                    return np.zeros(len(v), np.int64)
            return np.asarray(v, np.int64)

        def rows(v: list[list[int]] | None, name: str) -> np.ndarray | None:
            if v is None:
                return None
            a = ints((name,), v).reshape(len(v), K)
            if perm is not None and len(v):
                out = np.empty_like(a)
                out[:, perm] = a
                a = out
            return a

        # the per-SKU lists in one conversion (one [P, K] block); per list only when one is out of range
        lists = [getattr(req, name) for name in _PER_SKU]
        have = [i for i, v in enumerate(lists) if v is not None]
        try:
            block = np.array([lists[i] for i in have], np.int64)
            fine = in_range(block)
        except OverflowError:
            fine = False
        if not fine:
            block = np.stack([ints((_PER_SKU[i],), lists[i]) for i in have])
        if perm is not None:
            permuted = np.empty_like(block)
            permuted[:, perm] = block
            block = permuted
        per_sku: dict[str, np.ndarray] = dict(zip([_PER_SKU[i] for i in have], block, strict=True))
        for name in _PER_SKU:
            if name not in per_sku:
                per_sku[name] = np.zeros(K, np.int64)
        on_hand, last_demand, last_order = per_sku["on_hand"], per_sku["last_demand"], per_sku["last_order"]
        backlog, owed = per_sku["backlog"], per_sku["owed"]
        last_shipped, last_arrived = per_sku["last_shipped"], per_sku["last_arrived"]
        pipe = np.zeros((self.W - 1, K), np.int64)
        if req.pipeline:
            pipe[: len(req.pipeline)] = rows(req.pipeline, "pipeline")
        history = rows(req.demand_history, "demand_history")
        eip = None
        if req.echelon_position is not None:
            eip = signed_ints(("echelon_position",), req.echelon_position)
            if perm is not None:
                eip_given, eip = eip, np.empty(K, np.int64)
                eip[perm] = eip_given
        if errs:  # out-of-range units: reported before the scenario rules that read them
            raise RequestInvalid(errs)
        if backlog.any():
            if role == "store" and not self.backlog[n]:
                bad(("backlog",), f"{agent} loses unmet demand in this scenario: backlog must be 0")
            if role == "dc" and not self.backlog[n]:
                bad(
                    ("backlog",),
                    f"{agent} cannot backlog its children's orders in this scenario: backlog must be 0",
                )
        if owed.any():
            d = self.parent[n]
            if d < 0:
                bad(
                    ("owed",), f"{agent} is fed by an external supplier, which never backlogs: owed must be 0"
                )
            elif not self.backlog[d]:
                bad(("owed",), f"{agent}'s parent {self.agent_ids[d]} cannot backlog: owed must be 0")
        if len(req.pipeline) > 1:  # one row is bounded by the range check
            total = pipe.sum(axis=0)
            if (total > MAX_UNITS).any():
                k = int(np.argmax(total > MAX_UNITS))
                bad(("pipeline",), f"units in transit of SKU {self.sku_names[k]!r} exceed {MAX_UNITS}")
        if eip is not None and not self.children[n]:
            own = on_hand + pipe.sum(axis=0) + owed - backlog  # a leaf's echelon is its own position
            if (eip != own).any():
                k = int(np.argmax(eip != own))
                bad(
                    ("echelon_position",),
                    f"{agent} has no downstream nodes, so its echelon position is on_hand + sum(pipeline) "
                    f"+ owed - backlog = {int(own[k])} for SKU {self.sku_names[k]!r}, not {int(eip[k])}",
                )
        overrides: list[tuple] = []
        d = self.availability_parent(n)
        pa = None
        if cons.parent_available is not None:
            if d < 0:
                bad(
                    ("constraints", "parent_available"),
                    f"{agent}'s orders are not bounded by a parent DC's stock in this scenario",
                )
            else:
                pa = ints(("constraints", "parent_available"), cons.parent_available)
                if perm is not None:
                    pa_given, pa = pa, np.empty(K, np.int64)
                    pa[perm] = pa_given
        elif d >= 0:
            bad(
                ("constraints", "parent_available"),
                f"required: {agent}'s parent {self.agent_ids[d]} cannot backlog, so its available stock "
                "bounds the order",
                kind="missing",
            )
        if cons.budget is not None:
            if not self.budget_finite[n]:
                bad(("constraints", "budget"), f"{agent} has no budget constraint in this scenario")
            else:
                overrides.append(("budget", n))
        if cons.storage_capacity is not None:
            if not self.storage_finite[n]:
                bad(("constraints", "storage_capacity"), f"{agent} has no storage capacity in this scenario")
            else:
                overrides.append(("storage", req.period, n))
        if cons.lane_capacity is not None:
            if not self.lane_finite[n]:
                bad(("constraints", "lane_capacity"), f"{agent} has no lane capacity in this scenario")
            else:
                overrides.append(("lane", n))
        sc = None
        if cons.supplier_capacity is not None:
            u = self.supplier[n]
            if u < 0 or not self.sup_capped[u]:
                bad(
                    ("constraints", "supplier_capacity"),
                    f"{agent} is not fed by a capacity-limited supplier in this scenario",
                )
            else:
                sc = arr_f(cons.supplier_capacity, perm, K)
                overrides.append(("supplier", req.period, u))
        if errs:
            raise RequestInvalid(errs)
        return NodeState(
            request_id=req.request_id,
            node=n,
            agent_id=agent,
            role=role,
            period=req.period,
            on_hand=on_hand,
            pipeline=pipe,
            backlog=backlog,
            owed=owed,
            last_demand=last_demand,
            last_order=last_order,
            last_shipped=last_shipped,
            last_arrived=last_arrived,
            history=history,
            echelon_position=eip,
            parent_available=pa,
            budget=cons.budget,
            storage_capacity=cons.storage_capacity,
            lane_capacity=cons.lane_capacity,
            supplier_capacity=sc,
            overrides=tuple(overrides),
        )


def _first_out_of_range(v: list) -> list[tuple[tuple, int]]:
    """(index path, value) of the first value of a list, or of a list of rows, outside [0, MAX_UNITS]."""
    for i, x in enumerate(v):
        if isinstance(x, list):
            for j, y in enumerate(x):
                if not 0 <= y <= MAX_UNITS:
                    return [((i, j), y)]
        elif not 0 <= x <= MAX_UNITS:
            return [((i,), x)]
    return []


def arr_f(v: list[float], perm: list[int] | None, K: int) -> np.ndarray:
    a = np.asarray(v, np.float64)
    if perm is not None:
        out = np.empty(K, np.float64)
        out[perm] = a
        return out
    return a


def pydantic_errors(exc) -> list[dict[str, Any]]:
    """pydantic ValidationError -> JSON-safe error dicts (``loc`` as a list, no exception objects)."""
    out = []
    for e in exc.errors(include_url=False, include_context=False):
        inp = e.get("input")
        if isinstance(inp, float) and not math.isfinite(inp):
            inp = str(inp)
        elif isinstance(inp, dict | list) or not isinstance(inp, str | int | float | bool | type(None)):
            inp = None
        out.append({"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"], "input": inp})
    return out


def request_from_state(
    compiled, state, e: int, n: int, request_id: str, history=None, echelon: bool = False
) -> dict[str, Any]:
    """The request that describes node n of environment e of a simulator ``State`` (tests, benchmarks,
    the demo, and a template for integrators): the inverse of the mapping in the module docstring.
    With ``echelon`` it carries n's ``echelon_position`` too (computed from the whole state)."""
    p = compiled.params
    W = state.pipe.shape[2]
    t = int(state.t[e])
    K = compiled.K
    pipe = [state.pipe[e, n, (t + 1 + j) % W].astype(int).tolist() for j in range(W - 1)]
    while pipe and not any(pipe[-1]):
        pipe.pop()
    if n >= compiled.M:
        backlog = state.backlog[e, n].astype(int).tolist()
    else:
        kids = p.child_idx[p.child_ptr[n] : p.child_ptr[n + 1]]
        backlog = state.owed[e, kids].sum(axis=0).astype(int).tolist()
    req: dict[str, Any] = {
        "request_id": request_id,
        "node": compiled.agent_ids[n],
        "period": t,
        "skus": list(compiled.sku_names),
        "on_hand": state.on_hand[e, n].astype(int).tolist(),
        "pipeline": pipe,
        "backlog": backlog,
        "owed": state.owed[e, n].astype(int).tolist(),
        "last_demand": state.last_demand[e, n].astype(int).tolist(),
        "last_order": state.last_order[e, n].astype(int).tolist(),
        "last_shipped": state.shipped[e, n].astype(int).tolist(),
        "last_arrived": state.arrived[e, n].astype(int).tolist(),
    }
    if echelon:
        from restock.agents.echelon import echelon_positions

        sl = slice(e, e + 1)
        eip = np.zeros(state.on_hand[sl].shape, np.int64)
        echelon_positions(
            state.on_hand[sl], state.transit[sl], state.owed[sl], state.backlog[sl], p.parent, eip
        )
        req["echelon_position"] = eip[0, n].astype(int).tolist()
    if history is not None:
        req["demand_history"] = [list(map(int, r)) for r in history]
    d = int(p.parent[n])
    if d >= 0 and not p.backlog[d]:
        kids = p.child_idx[p.child_ptr[d] : p.child_ptr[d + 1]]
        avail = state.on_hand[e, d].astype(np.int64) - state.owed[e, kids].sum(axis=0)
        req["constraints"] = {"parent_available": np.maximum(avail, 0).astype(int).tolist()}
    assert len(req["on_hand"]) == K
    return req
