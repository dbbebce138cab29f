"""Scenario schema: the strict pydantic models a scenario file validates into, and the memory estimate
that refuses a scenario too big to allocate (the limits themselves are in `restock.envs.limits`).

Loading (names, files, overrides) and the error messages that name field paths live in
`restock.envs.config`, which re-exports everything here; import from there.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from restock.envs.limits import (
    MAX_COVER,
    MAX_DCS,
    MAX_DISRUPTIONS,
    MAX_EFFECTS,
    MAX_HORIZON,
    MAX_LEAD_TIME,
    MAX_MAGNITUDE,
    MAX_SKUS,
    MAX_STORES,
    MAX_SUPPLIERS,
    MAX_UNITS,
    _bytes,
    _gib_limit,
)
from restock.envs.observation import ObservationSpec


class ConfigError(ValueError):
    """A scenario or experiment file is invalid; the message names the field path and the reason."""


def _number(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v} (true/false is not a number)")
    return v


def _bounded(v: float) -> float:
    if abs(v) > MAX_MAGNITUDE:
        raise ValueError(
            f"{v:g} is beyond the limit of {MAX_MAGNITUDE:g} in magnitude (products of costs, "
            "quantities and periods must stay finite)"
        )
    return v


def _whole(v: Any) -> Any:
    """Integers only: 3 and 3.0 pass; 1.5, true, '3', nan do not (nothing is rounded)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a whole number, got {v} (true/false is not a number)")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"expected a whole number, got {v} (not a finite number)")
        if v != math.floor(v):
            raise ValueError(f"expected a whole number, got {v} (nothing is rounded)")
        return int(v)
    raise ValueError(f"expected a whole number, got {_short(v)}")


def _int_bounded(v: int) -> int:
    if abs(v) > MAX_MAGNITUDE:
        raise ValueError(f"{v} is beyond the limit of {MAX_MAGNITUDE:g} in magnitude")
    return v


Float = Annotated[float, BeforeValidator(_number), AfterValidator(_bounded)]
PositiveFloat = Annotated[float, BeforeValidator(_number), AfterValidator(_bounded), Gt(0)]
NonNegativeFloat = Annotated[float, BeforeValidator(_number), AfterValidator(_bounded), Ge(0)]
Int = Annotated[int, BeforeValidator(_whole), AfterValidator(_int_bounded)]
PositiveInt = Annotated[int, BeforeValidator(_whole), AfterValidator(_int_bounded), Gt(0)]
NonNegativeInt = Annotated[int, BeforeValidator(_whole), AfterValidator(_int_bounded), Ge(0)]
Units = Annotated[int, BeforeValidator(_whole), Ge(0), Le(MAX_UNITS)]
PositiveUnits = Annotated[int, BeforeValidator(_whole), Ge(1), Le(MAX_UNITS)]
LeadInt = Annotated[int, BeforeValidator(_whole), Ge(0), Le(MAX_LEAD_TIME)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------------
# attribute values: number | list | distribution


class Dist(Strict):
    """A distribution an attribute is drawn from, once per SKU (or store), from the scenario seed."""

    uniform: tuple[Float, Float] | None = None
    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    lognormal: tuple[PositiveFloat, NonNegativeFloat] | None = None  # (median, sigma of log)
    choice: list[Float] | None = Field(default=None, min_length=1)
    # proportional to another SKU attribute: {of: unit_cost, factor: 1.6} or factor: [lo, hi] (uniform)
    of: Literal["unit_cost", "price", "demand_mean", "volume"] | None = None
    factor: Float | tuple[Float, Float] = 1.0

    @model_validator(mode="after")
    def _exactly_one(self) -> Dist:
        kinds = ("uniform", "loguniform", "lognormal", "choice", "of")
        given = [k for k in kinds if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(kinds)} (got {given or 'none'})")
        if self.of is None and self.factor != 1.0:
            raise ValueError("factor goes with of")
        for k in ("uniform", "loguniform"):
            v = getattr(self, k)
            if v is not None and v[0] > v[1]:
                raise ValueError(f"{k}: low {v[0]} is above high {v[1]}")
        return self


Attr = Float | list[Float] | Dist
# integer attributes: whole numbers (drawn ones are rounded to the nearest whole number)
LotAttr = PositiveUnits | list[PositiveUnits] | Dist
MoqAttr = Units | list[Units] | Dist


# --------------------------------------------------------------------------------------------------
# SKUs


class SkusSpec(Strict):
    """The SKU catalogue. Costs are per unit; holding and stockout costs are per period."""

    count: PositiveInt = Field(le=MAX_SKUS)
    names: list[str] | None = None
    unit_cost: Attr = 1.0  # value of one unit: budget spend and inventory turns use it
    price: Attr = 0.0  # selling price at stores; 0 means no revenue is tracked
    holding_cost: Attr = 0.05  # per unit on hand per period (times the node's holding_factor)
    stockout_cost: Attr = 1.0  # per unit lost, or per unit backlogged per period (times stockout_factor)
    order_cost: Attr = 0.0  # variable ordering cost per unit shipped
    fixed_order_cost: Attr = 0.0  # per order line (SKU) per period with a positive order
    lot_size: LotAttr = 1  # orders are multiples of this (integer >= 1)
    moq: MoqAttr = 0  # minimum order quantity when ordering at all (integer >= 0)
    volume: Attr = 1.0  # storage volume of one unit

    @model_validator(mode="after")
    def _names(self) -> SkusSpec:
        if self.names is not None and len(self.names) != self.count:
            raise ValueError(f"names has {len(self.names)} entries but count is {self.count}")
        for key in (
            "unit_cost",
            "price",
            "holding_cost",
            "stockout_cost",
            "order_cost",
            "fixed_order_cost",
            "lot_size",
            "moq",
            "volume",
        ):
            v = getattr(self, key)
            if isinstance(v, list) and len(v) != self.count:
                raise ValueError(f"{key} lists {len(v)} values but there are {self.count} SKUs")
        for key, lo in (("lot_size", 1), ("moq", 0)):
            v = getattr(self, key)
            if isinstance(v, Dist) and v.choice is not None:
                bad = [c for c in v.choice if c != math.floor(c) or not lo <= c <= MAX_UNITS]
                if bad:
                    raise ValueError(
                        f"{key}.choice: {bad[0]:g} is not a whole number in {lo}..{MAX_UNITS:,} (nothing is rounded)"
                    )
        return self


# --------------------------------------------------------------------------------------------------
# lead times and nodes


class LeadTimeDist(Strict):
    """A discrete lead-time distribution for a lane (drawn once per lane and period)."""

    values: list[LeadInt] = Field(min_length=1)
    probs: list[NonNegativeFloat] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> LeadTimeDist:
        if len(self.values) != len(self.probs):
            raise ValueError(f"values has {len(self.values)} entries but probs has {len(self.probs)}")
        s = sum(self.probs)
        if abs(s - 1.0) > 1e-6:
            raise ValueError(f"probs must sum to 1 (they sum to {s:.6g})")
        return self


class LeadTimePerSku(Strict):
    """A fixed lead time per SKU on this lane."""

    per_sku: list[LeadInt] = Field(min_length=1)


LeadTime = LeadInt | LeadTimeDist | LeadTimePerSku


class NodeCommon(Strict):
    lead_time: LeadTime = 1  # of the inbound lane (from the node's parent)
    lane_capacity: PositiveFloat | None = None  # inbound volume per period; None = unlimited
    storage_capacity: PositiveFloat | None = None  # volume on hand; None = unlimited
    budget: NonNegativeFloat | None = None  # ordering spend (unit_cost x quantity) per period
    holding_factor: NonNegativeFloat = 1.0
    overflow: Literal["penalty", "dispose"] = "penalty"  # what happens to volume above capacity
    overflow_cost: NonNegativeFloat = 1.0  # per volume unit above capacity per period
    max_order_increase: PositiveUnits | None = None  # rate limit: order_t - order_{t-1} <= this (units)
    # holding cost on units in transit to this node: none, the parent's rate (Clark-Scarf
    # accounting: the shipper owns goods in transit) or this node's own rate
    pipeline_holding: Literal["none", "parent", "own"] = "none"
    # on hand at reset, units of every SKU (None: initial.store_cover / dc_cover periods of demand)
    initial_stock: Units | None = None
    # selling price per unit shipped out: a store's per unit sold (None: skus.price), a DC's per unit
    # shipped to its children (None: 0). With purchase_cost, transfers between stages can be priced.
    price: NonNegativeFloat | None = None
    purchase_cost: NonNegativeFloat | None = None  # per unit shipped to this node (None: skus.order_cost)


class DCSpec(NodeCommon):
    """A distribution centre: an internal node that orders from its parent and ships to children."""

    id: str
    parent: str
    unmet: Literal["backlog", "lost"] = "backlog"  # children's orders it cannot fill
    rationing: Literal["proportional", "priority"] = "proportional"
    stockout_factor: NonNegativeFloat = 0.0
    # ship from the stock on hand at the start of the period: what arrives this period ships from the
    # next one (OR-Gym's stages). Needs an inbound lead time of at least 1 in every case.
    ship_before_arrivals: StrictBool = False

    @model_validator(mode="after")
    def _ship_first(self) -> DCSpec:
        if self.ship_before_arrivals:
            lt = self.lead_time
            low = lt if isinstance(lt, int) else min(getattr(lt, "values", None) or lt.per_sku)
            if low < 1:
                raise ValueError(
                    "ship_before_arrivals needs an inbound lead_time of at least 1 (a delivery of the same "
                    "period would be on hand before the DC ships)"
                )
        return self


class StoreGroup(NodeCommon):
    """A group of stores sharing attributes. Stores are numbered store_0.. across groups in order."""

    count: PositiveInt = Field(default=1, le=MAX_STORES)
    parent: str | list[str]  # one parent, or a list assigned to consecutive blocks of stores
    unmet: Literal["backlog", "lost"] = "lost"  # customer demand it cannot fill
    stockout_factor: NonNegativeFloat = 1.0
    demand_scale: Attr = 1.0  # multiplies every SKU's base demand mean at these stores


class SupplierSpec(Strict):
    """An external supplier. It never runs out, but may cap units per SKU and period."""

    id: str
    capacity: Attr | None = None  # units per SKU per period (None = unlimited)
    # what it cannot ship (capacity, lane capacity): cancelled (lost) or owed and shipped first later
    unmet: Literal["lost", "backlog"] = "lost"
    # per unit of an order it did not ship, each period (lost: once; backlog: per unit still owed at
    # the end of the period), charged to the node it feeds
    shortage_cost: NonNegativeFloat = 0.0


class NetworkSpec(Strict):
    suppliers: list[SupplierSpec] = Field(min_length=1, max_length=MAX_SUPPLIERS)
    dcs: list[DCSpec] = Field(default_factory=list, max_length=MAX_DCS)
    stores: list[StoreGroup] = Field(min_length=1, max_length=MAX_STORES)

    @field_validator("stores", mode="before")
    @classmethod
    def _one_group(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _tree(self) -> NetworkSpec:
        sup_ids = [s.id for s in self.suppliers]
        dc_ids = [d.id for d in self.dcs]
        seen: set[str] = set()
        for i in sup_ids + dc_ids:
            if i in seen:
                raise ValueError(f"node id {i!r} is used twice")
            seen.add(i)
        for j, d in enumerate(self.dcs):
            if d.parent not in seen:
                raise ValueError(f"dcs[{j}].parent: unknown node {d.parent!r} (known: {sorted(seen)})")
            if d.parent == d.id:
                raise ValueError(f"dcs[{j}].parent: a DC cannot supply itself")
        # cycles among DCs
        parent = {d.id: d.parent for d in self.dcs}
        for d in self.dcs:
            path, cur = [d.id], d.parent
            while cur in parent:
                if cur in path:
                    raise ValueError(f"dcs: the parents form a cycle ({' -> '.join([*path, cur])})")
                path.append(cur)
                cur = parent[cur]
        if self.n_stores > MAX_STORES:
            raise ValueError(f"stores: {self.n_stores:,} stores in all; the limit is {MAX_STORES:,}")
        for g, grp in enumerate(self.stores):
            parents = [grp.parent] if isinstance(grp.parent, str) else grp.parent
            if not parents:
                raise ValueError(f"stores[{g}].parent: give at least one parent")
            if len(parents) > grp.count:
                raise ValueError(f"stores[{g}].parent: {len(parents)} parents for {grp.count} stores")
            for p in parents:
                if p not in seen:
                    raise ValueError(f"stores[{g}].parent: unknown node {p!r} (known: {sorted(seen)})")
            if isinstance(grp.demand_scale, list) and len(grp.demand_scale) != grp.count:
                raise ValueError(
                    f"stores[{g}].demand_scale lists {len(grp.demand_scale)} values for {grp.count} stores"
                )
        return self

    @property
    def n_stores(self) -> int:
        return sum(g.count for g in self.stores)


# --------------------------------------------------------------------------------------------------
# demand


SkuSelect = Literal["all"] | list[NonNegativeInt]


class Promotion(Strict):
    """A planned uplift: demand x ``uplift`` for periods ``start <= t < end``."""

    start: NonNegativeInt
    end: PositiveInt
    uplift: PositiveFloat = 1.5
    skus: SkuSelect = "all"
    stores: SkuSelect = "all"
    sku_fraction: Float | None = Field(default=None, gt=0, le=1)  # random subset of SKUs (scenario seed)

    @model_validator(mode="after")
    def _window(self) -> Promotion:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class Shock(Strict):
    """A one-off demand shock: demand x ``multiplier`` for ``duration`` periods from ``start``."""

    start: NonNegativeInt
    duration: PositiveInt = 1
    multiplier: NonNegativeFloat = 3.0
    skus: SkuSelect = "all"
    stores: SkuSelect = "all"
    sku_fraction: Float | None = Field(default=None, gt=0, le=1)


class Yearly(Strict):
    amplitude: Float = Field(default=0.2, ge=0, lt=1)
    peak_period: NonNegativeInt = 0
    period_length: PositiveInt = 365


class ReplaySpec(Strict):
    """Replay recorded demand from a CSV with columns ``date,store,sku,units``."""

    path: str
    start: Literal["random"] | NonNegativeInt = 0  # first row (date) of the trace for an episode
    scale: PositiveFloat = 1.0


class DemandSpec(Strict):
    model: Literal["poisson", "negative_binomial", "truncated_normal", "replay"] = "poisson"
    mean: Attr = 5.0  # base mean per period for each SKU at a store with demand_scale 1
    dispersion: PositiveFloat = 4.0  # negative binomial size r: variance = m + m^2 / r
    cv: PositiveFloat = 0.5  # truncated normal: sd = cv * m before truncation at zero
    weekly: list[NonNegativeFloat] | None = None  # 7 multipliers, period t uses weekly[t % 7]
    yearly: Yearly | None = None
    trend: Float = 0.0  # relative growth per period: mean x max(0, 1 + trend * t)
    promotions: list[Promotion] = Field(default_factory=list, max_length=MAX_EFFECTS)
    shocks: list[Shock] = Field(default_factory=list, max_length=MAX_EFFECTS)
    replay: ReplaySpec | None = None

    @model_validator(mode="after")
    def _check(self) -> DemandSpec:
        if self.weekly is not None and len(self.weekly) != 7:
            raise ValueError(f"weekly needs 7 multipliers, got {len(self.weekly)}")
        if self.model == "replay" and self.replay is None:
            raise ValueError("model 'replay' needs a replay section with the CSV path")
        return self


# --------------------------------------------------------------------------------------------------
# disruptions


class SupplierOutage(Strict):
    type: Literal["supplier_outage"]
    supplier: str
    start: NonNegativeInt
    end: PositiveInt  # exclusive
    capacity_factor: Float = Field(default=0.0, ge=0, le=1)  # 0 = nothing ships


class LeadTimeSpike(Strict):
    type: Literal["lead_time_spike"]
    node: str = "all"  # the receiving node of the lane (a DC id, 'store_<i>', 'stores' or 'all')
    start: NonNegativeInt
    end: PositiveInt  # exclusive
    extra: PositiveInt = Field(default=2, le=MAX_LEAD_TIME)  # periods added to shipments sent in the window


class CapacityCut(Strict):
    type: Literal["capacity_cut"]
    node: str = "all"  # a DC id, 'store_<i>', 'stores', 'dcs' or 'all'
    start: NonNegativeInt
    end: PositiveInt
    factor: Float = Field(default=0.5, gt=0, le=1)  # storage capacity multiplier in the window


Disruption = Annotated[SupplierOutage | LeadTimeSpike | CapacityCut, Field(discriminator="type")]


# --------------------------------------------------------------------------------------------------
# reward, actions, initial state


class RewardSpec(Strict):
    network_weight: Float = Field(default=0.0, ge=0, le=1)  # 0 = own cost only, 1 = network mean
    scale: PositiveFloat = 1.0  # reward = -cost / scale
    include_revenue: StrictBool = False  # reward = (revenue - cost) / scale
    discounted: StrictBool = False  # period t's reward times discount^t (OR-Gym's discounted profit)


class ActionSpec(Strict):
    """How a discrete level maps to an order quantity for one role."""

    mapping: Literal["quantity", "order_up_to"] = "quantity"
    levels: Int = Field(default=11, ge=2, le=256)
    lots_per_level: PositiveUnits = 1  # quantity: level l orders l * lots_per_level * lot_size
    # order_up_to: top level = max_cover periods of forecast demand
    max_cover: PositiveFloat = Field(default=4.0, le=MAX_COVER)


class ActionsSpec(Strict):
    store: ActionSpec = Field(default_factory=ActionSpec)
    dc: ActionSpec = Field(default_factory=lambda: ActionSpec(mapping="order_up_to", max_cover=8.0))


class InitialSpec(Strict):
    # on hand at reset, in periods of forecast demand
    store_cover: NonNegativeFloat = Field(default=2.0, le=MAX_COVER)
    dc_cover: NonNegativeFloat = Field(default=4.0, le=MAX_COVER)
    # each pipeline slot starts with this many periods of demand
    pipeline_cover: NonNegativeFloat = Field(default=0.0, le=MAX_COVER)


class ScenarioConfig(Strict):
    """One scenario: the whole description of a network, its demand and its economics."""

    name: str
    description: str = ""
    seed: Int = 0  # draws SKU/store attributes given as distributions (not the episode's demand)
    horizon: PositiveInt = Field(default=52, le=MAX_HORIZON)
    discount: Float = Field(default=0.99, gt=0, le=1)
    skus: SkusSpec
    network: NetworkSpec
    demand: DemandSpec = Field(default_factory=DemandSpec)
    disruptions: list[Disruption] = Field(default_factory=list, max_length=MAX_DISRUPTIONS)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    action: ActionsSpec = Field(default_factory=ActionsSpec)
    initial: InitialSpec = Field(default_factory=InitialSpec)
    observation: ObservationSpec = Field(default_factory=ObservationSpec)
    source: str | None = Field(default=None, exclude=True)  # where it was loaded from (not part of it)

    @model_validator(mode="after")
    def _cross(self) -> ScenarioConfig:
        K, S = self.skus.count, self.network.n_stores
        n_eff = len(self.demand.promotions) + len(self.demand.shocks)
        if n_eff > MAX_EFFECTS:
            raise ValueError(f"demand: at most {MAX_EFFECTS} promotions and shocks together (got {n_eff})")
        ids = {s.id for s in self.network.suppliers}
        for i, dis in enumerate(self.disruptions):
            if isinstance(dis, SupplierOutage) and dis.supplier not in ids:
                raise ValueError(f"disruptions[{i}].supplier: unknown supplier {dis.supplier!r}")
            if dis.end <= dis.start:
                raise ValueError(f"disruptions[{i}]: end ({dis.end}) must be after start ({dis.start})")
        for name, items in (("promotions", self.demand.promotions), ("shocks", self.demand.shocks)):
            for i, it in enumerate(items):
                if isinstance(it.skus, list) and any(k >= K for k in it.skus):
                    raise ValueError(f"demand.{name}[{i}].skus: index out of range (there are {K} SKUs)")
                if isinstance(it.stores, list) and any(s >= S for s in it.stores):
                    raise ValueError(f"demand.{name}[{i}].stores: index out of range (there are {S} stores)")
        if isinstance(self.demand.mean, list) and len(self.demand.mean) != K:
            raise ValueError(f"demand.mean lists {len(self.demand.mean)} values but there are {K} SKUs")
        nodes = [("network.dcs", j, d) for j, d in enumerate(self.network.dcs)]
        nodes += [("network.stores", g, grp) for g, grp in enumerate(self.network.stores)]
        for where, j, nd in nodes:
            lt = nd.lead_time
            if isinstance(lt, LeadTimePerSku) and len(lt.per_sku) != K:
                raise ValueError(
                    f"{where}[{j}].lead_time.per_sku lists {len(lt.per_sku)} values for {K} SKUs"
                )
        _check_memory(self)
        return self


# --------------------------------------------------------------------------------------------------
# memory: the arrays a scenario's sizes drive, estimated from the config alone


def pipeline_slots(cfg: ScenarioConfig) -> int:
    """Pipeline ring length W the compiler will use: longest lead time + spikes that can overlap + 1."""
    longest = 0
    nodes = list(cfg.network.dcs) + list(cfg.network.stores)
    for nd in nodes:
        lt = nd.lead_time
        if isinstance(lt, LeadTimeDist):
            longest = max(longest, max(lt.values))
        elif isinstance(lt, LeadTimePerSku):
            longest = max(longest, max(lt.per_sku))
        else:
            longest = max(longest, int(lt))
    spikes = sum(d.extra for d in cfg.disruptions if isinstance(d, LeadTimeSpike))
    return longest + spikes + 1


def estimate_memory(cfg: ScenarioConfig) -> list[tuple[str, str, float]]:
    """(what, formula with the numbers, bytes) for the arrays the scenario's sizes drive: the compiled
    scenario and the state, observations and masks of one environment."""
    T1 = cfg.horizon + 1
    K = cfg.skus.count
    M = len(cfg.network.dcs)
    S = cfg.network.n_stores
    N = M + S
    U = len(cfg.network.suppliers)
    W = pipeline_slots(cfg)
    L = max(cfg.action.store.levels, cfg.action.dc.levels)
    F = 16 + W  # per-SKU observation features (the fixed ones and one per pipeline slot)
    return [
        (
            "pipeline tables",
            f"nodes x SKUs x pipeline slots x 16 bytes = {N:,} x {K:,} x {W:,} x 16",
            16.0 * N * K * W,
        ),
        ("capacities over time", f"(horizon + 1) x nodes x 24 bytes = {T1:,} x {N:,} x 24", 24.0 * T1 * N),
        (
            "supplier caps over time",
            f"(horizon + 1) x suppliers x SKUs x 8 bytes = {T1:,} x {U:,} x {K:,} x 8",
            8.0 * T1 * U * K,
        ),
        ("node x SKU tables", f"nodes x SKUs x 200 bytes = {N:,} x {K:,} x 200", 200.0 * N * K),
        (
            "one environment's state",
            f"nodes x SKUs x (4 x (pipeline slots + 9 + features) + levels) bytes = {N:,} x {K:,} x "
            f"(4 x ({W:,} + 9 + {F:,}) + {L})",
            float(N) * K * (4.0 * (W + 9 + F) + L),
        ),
        ("one episode's trace", f"horizon x nodes x 16 bytes = {T1 - 1:,} x {N:,} x 16", 16.0 * (T1 - 1) * N),
    ]


def _check_memory(cfg: ScenarioConfig) -> None:
    parts = estimate_memory(cfg)
    total = sum(p[2] for p in parts)
    limit = _gib_limit() * 2**30
    if total > limit:
        what, formula, size = max(parts, key=lambda p: p[2])
        raise ValueError(
            f"the scenario needs about {_bytes(total)} before simulating anything, over the limit of "
            f"{_bytes(limit)} (RESTOCK_MAX_SCENARIO_GIB); the largest part is {what}: {formula} = "
            f"{_bytes(size)}. Reduce horizon, skus.count, stores, DCs or lead times"
        )


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
