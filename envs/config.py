"""Scenario schema: strict pydantic models loaded from YAML, with errors that name the field path.

A scenario describes one supply network (external suppliers -> DCs -> stores, a tree of any depth),
its SKUs, demand, disruptions, costs, action mapping and initial state. `load_scenario` accepts a
shipped scenario name (``configs/scenarios/<name>.yaml``), a path to a YAML file, a mapping or an
already-built `ScenarioConfig`, and applies keyword overrides (``horizon=20``,
``demand__model="poisson"``: double underscores walk into nested sections).

Per-SKU and per-store attributes accept a number, a list (one value per SKU or store) or a
distribution (``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{lognormal: [median, sigma]}``,
``{choice: [a, b, ...]}``) drawn once from the scenario's ``seed`` when the scenario is compiled.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "ConfigError",
    "ScenarioConfig",
    "load_scenario",
    "scenario_dir",
    "shipped_scenarios",
    "format_validation_error",
]


class ConfigError(ValueError):
    """A scenario or experiment file is invalid; the message names the field path and the reason."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------------
# attribute values: number | list | distribution


class Dist(Strict):
    """A distribution an attribute is drawn from, once per SKU (or store), from the scenario seed."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    lognormal: tuple[PositiveFloat, NonNegativeFloat] | None = None  # (median, sigma of log)
    choice: list[float] | None = Field(default=None, min_length=1)
    # proportional to another SKU attribute: {of: unit_cost, factor: 1.6} or factor: [lo, hi] (uniform)
    of: Literal["unit_cost", "price", "demand_mean", "volume"] | None = None
    factor: float | tuple[float, float] = 1.0

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


Attr = float | list[float] | Dist


# --------------------------------------------------------------------------------------------------
# SKUs


class SkusSpec(Strict):
    """The SKU catalogue. Costs are per unit; holding and stockout costs are per period."""

    count: PositiveInt
    names: list[str] | None = None
    unit_cost: Attr = 1.0  # value of one unit: budget spend and inventory turns use it
    price: Attr = 0.0  # selling price at stores; 0 means no revenue is tracked
    holding_cost: Attr = 0.05  # per unit on hand per period (times the node's holding_factor)
    stockout_cost: Attr = 1.0  # per unit lost, or per unit backlogged per period (times stockout_factor)
    order_cost: Attr = 0.0  # variable ordering cost per unit shipped
    fixed_order_cost: Attr = 0.0  # per order line (SKU) per period with a positive order
    lot_size: Attr = 1.0  # orders are multiples of this (integer >= 1)
    moq: Attr = 0.0  # minimum order quantity when ordering at all (integer >= 0)
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
        return self


# --------------------------------------------------------------------------------------------------
# lead times and nodes


class LeadTimeDist(Strict):
    """A discrete lead-time distribution for a lane (drawn once per lane and period)."""

    values: list[NonNegativeInt] = Field(min_length=1)
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

    per_sku: list[NonNegativeInt] = Field(min_length=1)


LeadTime = NonNegativeInt | LeadTimeDist | LeadTimePerSku


class NodeCommon(Strict):
    lead_time: LeadTime = 1  # of the inbound lane (from the node's parent)
    lane_capacity: PositiveFloat | None = None  # inbound volume per period; None = unlimited
    storage_capacity: PositiveFloat | None = None  # volume on hand; None = unlimited
    budget: NonNegativeFloat | None = None  # ordering spend (unit_cost x quantity) per period
    holding_factor: NonNegativeFloat = 1.0
    overflow: Literal["penalty", "dispose"] = "penalty"  # what happens to volume above capacity
    overflow_cost: NonNegativeFloat = 1.0  # per volume unit above capacity per period
    max_order_increase: PositiveInt | None = None  # rate limit: order_t - order_{t-1} <= this (units)
    # holding cost on units in transit to this node: none, the parent's rate (Clark-Scarf
    # accounting: the shipper owns goods in transit) or this node's own rate
    pipeline_holding: Literal["none", "parent", "own"] = "none"


class DCSpec(NodeCommon):
    """A distribution centre: an internal node that orders from its parent and ships to children."""

    id: str
    parent: str
    unmet: Literal["backlog", "lost"] = "backlog"  # children's orders it cannot fill
    rationing: Literal["proportional", "priority"] = "proportional"
    stockout_factor: NonNegativeFloat = 0.0


class StoreGroup(NodeCommon):
    """A group of stores sharing attributes. Stores are numbered store_0.. across groups in order."""

    count: PositiveInt = 1
    parent: str | list[str]  # one parent, or a list assigned to consecutive blocks of stores
    unmet: Literal["backlog", "lost"] = "lost"  # customer demand it cannot fill
    stockout_factor: NonNegativeFloat = 1.0
    demand_scale: Attr = 1.0  # multiplies every SKU's base demand mean at these stores


class SupplierSpec(Strict):
    """An external supplier. It never runs out, but may cap units per SKU and period."""

    id: str
    capacity: Attr | None = None  # units per SKU per period (None = unlimited)


class NetworkSpec(Strict):
    suppliers: list[SupplierSpec] = Field(min_length=1)
    dcs: list[DCSpec] = Field(default_factory=list)
    stores: list[StoreGroup] = Field(min_length=1)

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
    sku_fraction: float | None = Field(default=None, gt=0, le=1)  # random subset of SKUs (scenario seed)

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
    sku_fraction: float | None = Field(default=None, gt=0, le=1)


class Yearly(Strict):
    amplitude: float = Field(default=0.2, ge=0, lt=1)
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
    trend: float = 0.0  # relative growth per period: mean x max(0, 1 + trend * t)
    promotions: list[Promotion] = Field(default_factory=list)
    shocks: list[Shock] = Field(default_factory=list)
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
    capacity_factor: float = Field(default=0.0, ge=0, le=1)  # 0 = nothing ships


class LeadTimeSpike(Strict):
    type: Literal["lead_time_spike"]
    node: str = "all"  # the receiving node of the lane (a DC id, 'store_<i>', 'stores' or 'all')
    start: NonNegativeInt
    end: PositiveInt  # exclusive
    extra: PositiveInt = 2  # periods added to shipments sent in the window


class CapacityCut(Strict):
    type: Literal["capacity_cut"]
    node: str = "all"  # a DC id, 'store_<i>', 'stores', 'dcs' or 'all'
    start: NonNegativeInt
    end: PositiveInt
    factor: float = Field(default=0.5, gt=0, le=1)  # storage capacity multiplier in the window


Disruption = Annotated[SupplierOutage | LeadTimeSpike | CapacityCut, Field(discriminator="type")]


# --------------------------------------------------------------------------------------------------
# reward, actions, initial state


class RewardSpec(Strict):
    network_weight: float = Field(default=0.0, ge=0, le=1)  # 0 = own cost only, 1 = network mean
    scale: PositiveFloat = 1.0  # reward = -cost / scale
    include_revenue: bool = False  # reward = (revenue - cost) / scale


class ActionSpec(Strict):
    """How a discrete level maps to an order quantity for one role."""

    mapping: Literal["quantity", "order_up_to"] = "quantity"
    levels: int = Field(default=11, ge=2, le=256)
    lots_per_level: PositiveInt = 1  # quantity: level l orders l * lots_per_level * lot_size
    max_cover: PositiveFloat = 4.0  # order_up_to: top level = max_cover periods of forecast demand


class ActionsSpec(Strict):
    store: ActionSpec = Field(default_factory=ActionSpec)
    dc: ActionSpec = Field(default_factory=lambda: ActionSpec(mapping="order_up_to", max_cover=8.0))


class InitialSpec(Strict):
    store_cover: NonNegativeFloat = 2.0  # on hand at reset, in periods of forecast demand
    dc_cover: NonNegativeFloat = 4.0
    pipeline_cover: NonNegativeFloat = 0.0  # each pipeline slot starts with this many periods of demand


class ScenarioConfig(Strict):
    """One scenario: the whole description of a network, its demand and its economics."""

    name: str
    description: str = ""
    seed: int = 0  # draws SKU/store attributes given as distributions (not the episode's demand)
    horizon: PositiveInt = 52
    discount: float = Field(default=0.99, gt=0, le=1)
    skus: SkusSpec
    network: NetworkSpec
    demand: DemandSpec = Field(default_factory=DemandSpec)
    disruptions: list[Disruption] = Field(default_factory=list)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    action: ActionsSpec = Field(default_factory=ActionsSpec)
    initial: InitialSpec = Field(default_factory=InitialSpec)
    source: str | None = Field(default=None, exclude=True)  # where it was loaded from (not part of it)

    @model_validator(mode="after")
    def _cross(self) -> ScenarioConfig:
        K, S = self.skus.count, self.network.n_stores
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
        return self


# --------------------------------------------------------------------------------------------------
# loading


def scenario_dir() -> Path:
    """Folder of the shipped scenarios (``RESTOCK_CONFIGS`` overrides the configs root)."""
    root = os.environ.get("RESTOCK_CONFIGS")
    if root:
        return Path(root) / "scenarios"
    return Path(__file__).resolve().parent.parent / "configs" / "scenarios"


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.yaml"))


_FORMS = {
    "float": "a number",
    "list[float]": "a list of numbers",
    "Dist": "a distribution such as {uniform: [lo, hi]}",
    "constrained-int": "a whole number >= 0",
    "int": "a whole number",
    "LeadTimeDist": "{values: [...], probs: [...]}",
    "LeadTimePerSku": "{per_sku: [...]}",
    "str": "a string",
    "list[str]": "a list of strings",
}


def _field_names() -> set[str]:
    names: set[str] = set()
    for obj in list(globals().values()):
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            names.update(obj.model_fields)
    return names


def _split_loc(loc: tuple) -> tuple[str, str | None, str]:
    """(path up to a union, the union member tag or None, path inside the member)."""
    fields = _field_names()
    head, tag, tail = "", None, ""
    for part in loc:
        is_field = isinstance(part, int) or part in fields
        if not is_field and tag is None:
            tag = str(part)
            continue
        if not is_field:
            continue  # nested union tags
        seg = f"[{part}]" if isinstance(part, int) else part
        if tag is None:
            head += seg if isinstance(part, int) else ("." if head else "") + seg
        else:
            tail += seg if isinstance(part, int) else "." + seg
    return head, tag, tail


def _member_name(tag: str) -> str:
    if tag.startswith("function-"):  # 'function-after[_check(), LeadTimeDist]' -> LeadTimeDist
        m = re.search(r"(\w+)\]$", tag)
        return m.group(1) if m else tag
    return tag


def format_validation_error(err: ValidationError, source: str) -> str:
    """One message for all problems, each line naming the field path and the reason."""
    groups: dict[str, list[tuple[str | None, str, dict]]] = {}
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        extra = loc[-1] if e.get("type") == "extra_forbidden" and loc else None
        head, tag, tail = _split_loc(loc[:-1] if extra is not None else loc)
        if extra is not None:
            e = {**e, "msg": f"unknown key {extra!r} (not part of the schema; check the spelling)"}
        groups.setdefault(head, []).append((tag, tail, e))
    lines: list[str] = []
    for head, errs in groups.items():
        tagged = [x for x in errs if x[0] is not None]
        if not tagged:
            for _, _, e in errs:
                lines.append(f"  - {head or '<root>'}: {_msg(e)}")
            continue
        specific = [x for x in tagged if x[2].get("type") == "value_error"]
        if specific:
            for _, tail, e in specific:
                lines.append(f"  - {head}{tail}: {_msg(e)}")
            continue
        members = {_member_name(t) for t, _, _ in tagged}
        if len(members) == 1:  # a tagged (discriminated) union: the member is known, report inside it
            for _, tail, e in tagged:
                lines.append(f"  - {head}{tail}: {_msg(e)}")
            continue
        forms = ", ".join(dict.fromkeys(_FORMS.get(m, m) for m in (_member_name(t) for t, _, _ in tagged)))
        lines.append(f"  - {head}: expected {forms}; got {_short(tagged[0][2].get('input'))}")
    n = len(lines)
    return "\n".join([f"{source}: invalid scenario ({n} problem{'s' if n != 1 else ''})", *lines])


def _msg(e: dict) -> str:
    return str(e.get("msg", "invalid")).removeprefix("Value error, ")


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _set_override(data: dict, key: str, value: Any) -> None:
    parts = key.split("__")
    cur = data
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def load_scenario(scenario: str | os.PathLike | dict | ScenarioConfig, **overrides: Any) -> ScenarioConfig:
    """Load a scenario by shipped name, YAML path, mapping or config, then apply overrides.

    Raises `ConfigError` with one message naming every bad field path and the reason.
    """
    source = "<config>"
    if isinstance(scenario, ScenarioConfig):
        if not overrides:
            return scenario
        data = scenario.model_dump(mode="python", exclude_none=False)
        source = scenario.source or scenario.name
    elif isinstance(scenario, dict):
        data = copy.deepcopy(scenario)
    else:
        path = Path(scenario)
        if not path.suffix and not path.exists():
            cand = scenario_dir() / f"{scenario}.yaml"
            if not cand.exists():
                raise ConfigError(
                    f"unknown scenario {str(scenario)!r}: not a file, and not one of the shipped scenarios "
                    f"({', '.join(shipped_scenarios())})"
                )
            path = cand
        if not path.exists():
            raise ConfigError(f"{path}: no such scenario file")
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of scenario fields")
        # relative replay paths resolve against the scenario file's folder
        rp = data.get("demand", {}).get("replay", {}) if isinstance(data.get("demand"), dict) else {}
        if isinstance(rp, dict) and isinstance(rp.get("path"), str) and not Path(rp["path"]).is_absolute():
            rp["path"] = str((path.parent / rp["path"]).resolve())
        data.setdefault("name", path.stem)
    for k, v in overrides.items():
        _set_override(data, k, v)
    data.pop("source", None)
    try:
        cfg = ScenarioConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    cfg.source = source
    return cfg
