"""Compile a `ScenarioConfig` into kernel `Params`, a `DemandModel` and the names that go with them.

`compile_scenario` composes one function per section: SKU attributes, nodes, demand means and the
demand model (`envs.compile_demand`), lead times, capacities, costs, actions, the initial state. Each
section returns the `Params` fields it owns; attributes given as distributions are drawn from one
generator seeded by the scenario, in that order.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np
from restock.envs import config as C
from restock.envs.compile_demand import (
    demand_means,
    demand_model,
    demand_table_entries,
)
from restock.envs.demand import DemandModel
from restock.envs.observation import feature_selection
from restock.envs.roles import node_role
from restock.envs.types import (
    MODE_ORDER_UP_TO,
    MODE_QUANTITY,
    RATION_PRIORITY,
    RATION_PROPORTIONAL,
    Params,
    State,
    new_state,
    sku_feature_names,
)

__all__ = ["Compiled", "compile_scenario", "demand_table_entries"]

MAX_ORDER_UNITS = 2**31 - 1  # one order line (int32 state)


@dataclass
class Compiled:
    """A scenario ready to simulate: kernel params, demand model, names and the initial state."""

    config: C.ScenarioConfig
    params: Params
    demand: DemandModel
    agent_ids: list[str]  # one per node: dc_0.., store_0..
    node_names: list[str]  # the config's DC ids, then store_<i>
    sku_names: list[str]
    supplier_names: list[str]
    W: int  # pipeline ring length
    init_on_hand: np.ndarray  # [N, K] int64
    init_pipe: np.ndarray  # [N, K, W] int64 by arrival offset 0..W-1 (offset 0 arrives at reset)
    config_hash: str = field(default="")

    @property
    def N(self) -> int:
        return len(self.agent_ids)

    @property
    def M(self) -> int:
        return self.params.n_dcs

    @property
    def S(self) -> int:
        return self.N - self.M

    @property
    def K(self) -> int:
        return len(self.sku_names)

    @property
    def horizon(self) -> int:
        return self.params.horizon

    def role(self, n: int) -> str:
        return node_role(n, self.M)

    @property
    def sku_features(self) -> list[str]:
        """Names of the observed per-SKU features (the scenario's ``observation`` block), in order."""
        names = sku_feature_names(self.W)
        return [names[i] for i in self.params.feat_sel]

    def new_state(self, E: int) -> State:
        return new_state(E, self.N, self.K, self.W)


def _attr(
    v,
    n: int,
    rng: np.random.Generator,
    where: str,
    integer: bool = False,
    lo: float = 0.0,
    known: dict | None = None,
) -> np.ndarray:
    if isinstance(v, C.Dist):
        if v.of is not None:
            if known is None or v.of not in known:
                raise C.ConfigError(
                    f"{where}: 'of: {v.of}' is not available here (SKU attributes only; "
                    "unit_cost, volume, demand_mean, then price are drawn in that order)"
                )
            f = v.factor
            fac = rng.uniform(f[0], f[1], n) if isinstance(f, tuple) else np.full(n, float(f))
            a = known[v.of] * fac
        elif v.uniform is not None:
            a = rng.uniform(v.uniform[0], v.uniform[1], n)
        elif v.loguniform is not None:
            a = np.exp(rng.uniform(math.log(v.loguniform[0]), math.log(v.loguniform[1]), n))
        elif v.lognormal is not None:
            with np.errstate(over="ignore"):  # an overflow to inf is refused below, with the field
                a = v.lognormal[0] * np.exp(v.lognormal[1] * rng.standard_normal(n))
        else:
            a = rng.choice(np.asarray(v.choice, float), n)
    elif isinstance(v, list):
        a = np.asarray(v, float)
    else:
        a = np.full(n, float(v))
    if integer:
        a = np.round(a)
    hi = C.MAX_UNITS if integer else C.MAX_MAGNITUDE
    bad = ~np.isfinite(a) | (a < lo) | (a > hi)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise C.ConfigError(
            f"{where}: every value must be a finite number in {lo:g}..{hi:g}; entry {i} is {a[i]:g}"
            + (" (drawn from the distribution)" if isinstance(v, C.Dist) else "")
        )
    return a


def config_hash(cfg: C.ScenarioConfig) -> str:
    data = cfg.model_dump(mode="json")
    if data.get("observation") == {"features": "full"}:
        # the default observation block hashes as if absent: scenarios (and artifacts, audit records)
        # from before the block existed keep their hash
        data.pop("observation")
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def compile_scenario(cfg: C.ScenarioConfig) -> Compiled:
    """Compile a validated scenario; a `ConfigError` names the scenario's file and the field path."""
    try:
        return _compile(cfg)
    except C.ConfigError as exc:
        src = cfg.source
        if src and not str(exc).startswith(src):
            raise C.ConfigError(f"{src}: {exc}") from None
        raise


def _compile(cfg: C.ScenarioConfig) -> Compiled:
    # one generator, drawn in this order (it fixes every attribute given as a distribution):
    # SKU attributes, store demand scales, promotion and shock selections, supplier capacities
    rng = np.random.default_rng(cfg.seed)
    skus = _skus(cfg, rng)
    nodes = _nodes(cfg, rng)
    means = demand_means(cfg, nodes, skus)
    demand = demand_model(cfg, rng, nodes, means)
    lead = _lead_times(cfg, nodes)
    params = Params(
        **nodes.fields,
        **means.fields,
        **lead.fields,
        **_capacities(cfg, rng, nodes, means.mean, lead.W),
        **_costs(nodes, skus),
        **_suppliers(cfg),
        **_actions(cfg, nodes, skus.lot),
        unit_cost=skus.unit_cost,
        volume=skus.volume,
        lot=skus.lot,
        moq=skus.moq,
        season=demand.season,
        net_weight=float(cfg.reward.network_weight),
        reward_scale=float(cfg.reward.scale),
        include_revenue=bool(cfg.reward.include_revenue),
        **_discounts(cfg),
        horizon=int(cfg.horizon),
        n_dcs=int(nodes.M),
        feat_sel=_feature_selection(cfg.observation.features, lead.W),
    )
    init_on_hand, init_pipe = _initial_state(cfg, nodes, means.mean, demand.season, lead)
    return Compiled(
        config=cfg,
        params=params,
        demand=demand,
        agent_ids=nodes.agent_ids,
        node_names=nodes.names,
        sku_names=skus.names,
        supplier_names=[s.id for s in cfg.network.suppliers],
        W=lead.W,
        init_on_hand=init_on_hand,
        init_pipe=init_pipe,
        config_hash=config_hash(cfg),
    )


def _feature_selection(features, W: int) -> np.ndarray:
    try:
        return feature_selection(features, W)
    except ValueError as exc:
        raise C.ConfigError(str(exc)) from None


# ---- SKU attributes (drawn first: `of:` refers to the ones drawn before it)


@dataclass(frozen=True)
class _Skus:
    names: list[str]
    unit_cost: np.ndarray  # [K]
    volume: np.ndarray  # [K]
    mean: np.ndarray  # [K] demand mean per store (before demand_scale)
    price: np.ndarray  # [K]
    holding: np.ndarray  # [K]
    stockout: np.ndarray  # [K]
    order_cost: np.ndarray  # [K]
    fixed_cost: np.ndarray  # [K]
    lot: np.ndarray  # [K] int64
    moq: np.ndarray  # [K] int64


def _skus(cfg: C.ScenarioConfig, rng: np.random.Generator) -> _Skus:
    K = cfg.skus.count
    sku = cfg.skus
    known: dict[str, np.ndarray] = {}
    unit_cost = known["unit_cost"] = _attr(sku.unit_cost, K, rng, "skus.unit_cost")
    volume = known["volume"] = _attr(sku.volume, K, rng, "skus.volume", known=known)
    if np.any(volume <= 0):
        raise C.ConfigError("skus.volume: every unit volume must be > 0")
    mean_sku = known["demand_mean"] = _attr(cfg.demand.mean, K, rng, "demand.mean", known=known)
    price = known["price"] = _attr(sku.price, K, rng, "skus.price", known=known)
    return _Skus(
        names=sku.names or [f"sku_{k}" for k in range(K)],
        unit_cost=unit_cost,
        volume=volume,
        mean=mean_sku,
        price=price,
        holding=_attr(sku.holding_cost, K, rng, "skus.holding_cost", known=known),
        stockout=_attr(sku.stockout_cost, K, rng, "skus.stockout_cost", known=known),
        order_cost=_attr(sku.order_cost, K, rng, "skus.order_cost", known=known),
        fixed_cost=_attr(sku.fixed_order_cost, K, rng, "skus.fixed_order_cost", known=known),
        lot=_attr(sku.lot_size, K, rng, "skus.lot_size", integer=True, lo=1, known=known).astype(np.int64),
        moq=_attr(sku.moq, K, rng, "skus.moq", integer=True, known=known).astype(np.int64),
    )


# ---- nodes: DCs in config order (parents first), then stores


@dataclass(frozen=True)
class _Nodes:
    M: int
    S: int
    U: int
    specs: list[C.NodeCommon]  # [N] the config entry of each node (a store group for each store)
    names: list[str]  # [N]
    agent_ids: list[str]  # [N]
    sup_ids: dict[str, int]
    store_scale: np.ndarray  # [S] demand_scale of each store
    parent: np.ndarray  # [N] int64
    supplier: np.ndarray  # [N] int64
    fields: dict  # the Params fields of this section

    @property
    def N(self) -> int:
        return self.M + self.S


def _nodes(cfg: C.ScenarioConfig, rng: np.random.Generator) -> _Nodes:
    net = cfg.network
    sup_ids = {s.id: u for u, s in enumerate(net.suppliers)}
    dc_ids = {d.id: j for j, d in enumerate(net.dcs)}
    for j, d in enumerate(net.dcs):
        if d.parent in dc_ids and dc_ids[d.parent] >= j:
            raise C.ConfigError(
                f"network.dcs[{j}].parent: {d.parent!r} is listed after this DC; list parents first"
            )
    M = len(net.dcs)
    S = net.n_stores
    N = M + S
    U = len(net.suppliers)
    node_specs: list[C.NodeCommon] = list(net.dcs)
    store_parent_names: list[str] = []
    store_scale = []
    for g, grp in enumerate(net.stores):
        parents = [grp.parent] if isinstance(grp.parent, str) else list(grp.parent)
        for i in range(grp.count):
            node_specs.append(grp)
            store_parent_names.append(parents[i * len(parents) // grp.count])
        store_scale.append(_attr(grp.demand_scale, grp.count, rng, f"network.stores[{g}].demand_scale"))
    parent_names = [d.parent for d in net.dcs] + store_parent_names
    node_names = [d.id for d in net.dcs] + [f"store_{i}" for i in range(S)]

    parent = np.full(N, -1, np.int64)
    supplier = np.full(N, -1, np.int64)
    for n, pn in enumerate(parent_names):
        if pn in dc_ids:
            parent[n] = dc_ids[pn]
        else:
            supplier[n] = sup_ids[pn]
    is_store = np.zeros(N, np.int8)
    is_store[M:] = 1
    depth = np.zeros(N, np.int64)
    for n in range(N):
        depth[n] = 0 if parent[n] < 0 else depth[parent[n]] + 1
    children = [[] for _ in range(N)]
    for n in range(N):
        if parent[n] >= 0:
            children[parent[n]].append(n)
    for j in range(M):
        if not children[j]:
            raise C.ConfigError(f"network.dcs[{j}] ({node_names[j]!r}) supplies no store or DC")
    child_ptr = np.zeros(N + 1, np.int64)
    child_ptr[1:] = np.cumsum([len(c) for c in children])
    child_idx = np.asarray([c for cs in children for c in cs], np.int64)
    fed_nodes = np.nonzero(supplier >= 0)[0]
    sup_idx = fed_nodes[np.argsort(supplier[fed_nodes], kind="stable")].astype(np.int64)  # by supplier
    sup_ptr = np.zeros(U + 1, np.int64)
    sup_ptr[1:] = np.cumsum(np.bincount(supplier[fed_nodes], minlength=U))
    fields = dict(
        parent=parent,
        supplier=supplier,
        is_store=is_store,
        child_ptr=child_ptr,
        child_idx=child_idx,
        sup_ptr=sup_ptr,
        sup_idx=sup_idx,
        depth=depth,
        backlog=np.asarray([1 if s.unmet == "backlog" else 0 for s in node_specs], np.int8),
        rationing=np.asarray(
            [
                RATION_PRIORITY
                if getattr(s, "rationing", "proportional") == "priority"
                else RATION_PROPORTIONAL
                for s in node_specs
            ],
            np.int8,
        ),
    )
    return _Nodes(
        M=M,
        S=S,
        U=U,
        specs=node_specs,
        names=node_names,
        agent_ids=[f"dc_{j}" for j in range(M)] + [f"store_{i}" for i in range(S)],
        sup_ids=sup_ids,
        store_scale=np.concatenate(store_scale),
        parent=parent,
        supplier=supplier,
        fields=fields,
    )


# ---- lead times


@dataclass(frozen=True)
class _Lead:
    W: int  # pipeline ring length
    value: np.ndarray  # [N, K] int64 fixed (or most likely) lead time
    fields: dict  # the Params fields of this section


def _lead_times(cfg: C.ScenarioConfig, nodes: _Nodes) -> _Lead:
    M, N, K, T = nodes.M, nodes.N, cfg.skus.count, cfg.horizon
    lt_specs = []
    for n in range(N):
        lt = nodes.specs[n].lead_time
        if isinstance(lt, int):
            lt_specs.append(("fixed", np.full(K, lt)))
        elif isinstance(lt, C.LeadTimePerSku):
            lt_specs.append(("fixed", np.asarray(lt.per_sku)))
        else:
            lt_specs.append(("dist", (np.asarray(lt.values), np.asarray(lt.probs))))
    lt_extra = np.zeros((T + 1, N), np.int64)
    for dis in cfg.disruptions:
        if isinstance(dis, C.LeadTimeSpike):
            on = _nodes_named(dis.node, nodes.names, M, N, "disruptions: lead_time_spike.node")
            lt_extra[dis.start : min(dis.end, T + 1), on] += dis.extra
    max_lt = 0
    for kind_, v in lt_specs:
        max_lt = max(max_lt, int(v.max()) if kind_ == "fixed" else int(v[0].max()))
    W = max_lt + int(lt_extra.max(initial=0)) + 1
    lt_fixed = np.zeros(N, np.int8)
    lt_value = np.zeros((N, K), np.int64)
    lt_cdf = np.zeros((N, K, W))
    lt_mean = np.zeros((N, K))
    for n, (kind_, v) in enumerate(lt_specs):
        if kind_ == "fixed":
            lt_fixed[n] = 1
            lt_value[n] = v
            lt_mean[n] = v
            lt_cdf[n] = np.arange(W)[None, :] >= np.asarray(v)[:, None]
        else:
            vals, probs = v
            pmf = np.zeros(W)
            np.add.at(pmf, vals, probs)
            cdf_ = np.cumsum(pmf)
            cdf_[-1] = 1.0
            lt_cdf[n, :, :] = cdf_
            lt_value[n] = int(vals[np.argmax(probs)])
            lt_mean[n] = float(np.dot(vals, probs))
    fields = dict(
        lt_fixed=lt_fixed,
        lt_uniform=np.asarray(
            [1 if lt_fixed[n] and (lt_value[n] == lt_value[n, 0]).all() else 0 for n in range(N)], np.int8
        ),
        lt_value=lt_value,
        lt_cdf=lt_cdf,
        lt_mean=lt_mean,
        lt_extra=lt_extra,
    )
    return _Lead(W=W, value=lt_value, fields=fields)


# ---- capacities over time (storage, suppliers) and per-node caps (lanes, budget, order increases)


def _capacities(
    cfg: C.ScenarioConfig, rng: np.random.Generator, nodes: _Nodes, mean: np.ndarray, W: int
) -> dict:
    net, specs = cfg.network, nodes.specs
    M, N, U, K, T = nodes.M, nodes.N, nodes.U, cfg.skus.count, cfg.horizon
    storage = np.asarray([np.inf if s.storage_capacity is None else s.storage_capacity for s in specs])
    storage_cap = np.tile(storage, (T + 1, 1))
    sup_cap = np.full((T + 1, U, K), np.inf)
    for u, s in enumerate(net.suppliers):
        if s.capacity is not None:
            sup_cap[:, u, :] = np.floor(_attr(s.capacity, K, rng, f"network.suppliers[{u}].capacity"))
    for dis in cfg.disruptions:
        if isinstance(dis, C.CapacityCut):
            on = _nodes_named(dis.node, nodes.names, M, N, "disruptions: capacity_cut.node")
            storage_cap[dis.start : min(dis.end, T + 1), on] *= dis.factor
        elif isinstance(dis, C.SupplierOutage):
            u = nodes.sup_ids[dis.supplier]
            sl = slice(dis.start, min(dis.end, T + 1))
            if dis.capacity_factor == 0.0:
                sup_cap[sl, u, :] = 0.0
            else:
                # an uncapped supplier under partial outage: cap at the factor times mean demand it serves
                served = mean[nodes.supplier == u].sum(axis=0)
                capped = np.where(np.isinf(sup_cap[sl, u, :]), served[None, :], sup_cap[sl, u, :])
                sup_cap[sl, u, :] = np.floor(capped * dis.capacity_factor)
    ahead = np.empty_like(storage_cap)
    for tt in range(T + 1):
        ahead[tt] = storage_cap[tt : min(tt + W, T + 1)].min(axis=0)
    return dict(
        storage_cap=storage_cap,
        storage_cap_ahead=ahead,
        overflow_dispose=np.asarray([1 if s.overflow == "dispose" else 0 for s in specs], np.int8),
        overflow_cost=np.asarray([s.overflow_cost for s in specs], float),
        lane_cap=np.asarray([np.inf if s.lane_capacity is None else s.lane_capacity for s in specs]),
        budget=np.asarray([np.inf if s.budget is None else s.budget for s in specs]),
        max_increase=np.asarray(
            [np.inf if s.max_order_increase is None else float(s.max_order_increase) for s in specs]
        ),
        sup_cap=sup_cap,
        sup_capped=np.asarray([0 if np.isinf(sup_cap[:, u]).all() else 1 for u in range(U)], np.int8),
    )


# ---- costs per node and SKU


def _costs(nodes: _Nodes, skus: _Skus) -> dict:
    M, N, K = nodes.M, nodes.N, len(skus.names)
    hold = np.asarray([s.holding_factor for s in nodes.specs])[:, None] * skus.holding[None, :]
    stock_f = np.asarray([s.stockout_factor for s in nodes.specs])
    pipe_hold = np.zeros((N, K))
    for n, s in enumerate(nodes.specs):
        if s.pipeline_holding == "parent" and nodes.parent[n] >= 0:
            pipe_hold[n] = hold[nodes.parent[n]]
        elif s.pipeline_holding == "own":
            pipe_hold[n] = hold[n]
    price_nk = np.zeros((N, K))
    price_nk[M:] = skus.price[None, :]
    order_cost = np.tile(skus.order_cost, (N, 1))
    for n, s in enumerate(nodes.specs):  # per-node selling prices and purchase costs
        if s.price is not None:
            price_nk[n] = s.price
        if s.purchase_cost is not None:
            order_cost[n] = s.purchase_cost
    return dict(
        hold=hold,
        pipe_hold=pipe_hold,
        stockout=stock_f[:, None] * skus.stockout[None, :],
        order_cost=order_cost,
        ship_first=np.asarray(
            [1 if getattr(s, "ship_before_arrivals", False) else 0 for s in nodes.specs], np.int8
        ),
        fixed_cost=np.tile(skus.fixed_cost, (N, 1)),
        price=price_nk,
        crit_ratio=_crit_ratio(hold, stock_f[:, None] * skus.stockout[None, :]),
    )


def _suppliers(cfg: C.ScenarioConfig) -> dict:
    """What suppliers do with what they cannot ship: owe it or cancel it, and the penalty per unit."""
    K = cfg.skus.count
    sups = cfg.network.suppliers
    backlog = np.asarray([1 if s.unmet == "backlog" else 0 for s in sups], np.int8)
    penalty = np.asarray([[s.shortage_cost] * K for s in sups], float).reshape(len(sups), K)
    settle = np.asarray(
        [1 if b or s.shortage_cost > 0 else 0 for b, s in zip(backlog, sups, strict=True)], np.int8
    )
    return dict(sup_backlog=backlog, sup_penalty=penalty, sup_settle=settle)


def _discounts(cfg: C.ScenarioConfig) -> dict:
    """discount^t for t = 0..T (the discounted_profit KPI) and the reward weights (reward.discounted)."""
    disc = float(cfg.discount) ** np.arange(cfg.horizon + 1, dtype=float)
    return dict(disc=disc, reward_disc=disc.copy() if cfg.reward.discounted else np.ones_like(disc))


# ---- actions


def _actions(cfg: C.ScenarioConfig, nodes: _Nodes, lot: np.ndarray) -> dict:
    M, N, K = nodes.M, nodes.N, len(lot)

    def aspec(n: int) -> C.ActionSpec:
        return getattr(cfg.action, node_role(n, M))

    levels = np.asarray([aspec(n).levels for n in range(N)], np.int64)
    mode = np.asarray(
        [MODE_QUANTITY if aspec(n).mapping == "quantity" else MODE_ORDER_UP_TO for n in range(N)], np.int8
    )
    for role, spec in (("store", cfg.action.store), ("dc", cfg.action.dc)):
        top = int(lot.max(initial=1)) * spec.lots_per_level * (spec.levels - 1)
        if spec.mapping == "quantity" and top > MAX_ORDER_UNITS:
            raise C.ConfigError(
                f"action.{role}: the top level orders (levels - 1) x lots_per_level x lot_size = "
                f"{spec.levels - 1} x {spec.lots_per_level} x {int(lot.max(initial=1))} = {top:,} units, "
                f"over {MAX_ORDER_UNITS:,} (one order line)"
            )
    qstep = np.asarray([lot * aspec(n).lots_per_level for n in range(N)], np.int64).reshape(N, K)
    cover_step = np.asarray([aspec(n).max_cover / (aspec(n).levels - 1) for n in range(N)], float)
    return dict(levels=levels, mode=mode, qstep=qstep, cover_step=cover_step)


# ---- initial state


def _initial_state(
    cfg: C.ScenarioConfig, nodes: _Nodes, mean: np.ndarray, season: np.ndarray, lead: _Lead
) -> tuple[np.ndarray, np.ndarray]:
    """(on hand [N, K], pipeline [N, K, W]) at reset."""
    M, N, K, W = nodes.M, nodes.N, mean.shape[1], lead.W
    cover = np.where(np.arange(N) >= M, cfg.initial.store_cover, cfg.initial.dc_cover)
    start_units = float((cover[:, None] * mean * season[0]).max(initial=0.0)) + float(
        (cfg.initial.pipeline_cover * mean).max(initial=0.0)
    ) * max(W - 2, 0)
    if start_units > C.MAX_UNITS:
        raise C.ConfigError(
            f"initial: the starting stock of one SKU at one node would be {start_units:.3g} units (covers x "
            f"mean demand, pipeline included), over {C.MAX_UNITS:,}; lower initial.store_cover, dc_cover "
            "or pipeline_cover"
        )
    init_on_hand = np.round(cover[:, None] * mean * season[0]).astype(np.int64)
    for n, s in enumerate(nodes.specs):  # units given per node replace the cover
        if s.initial_stock is not None:
            init_on_hand[n] = s.initial_stock
    init_pipe = np.zeros((N, K, W), np.int64)
    if cfg.initial.pipeline_cover > 0:
        fill = np.round(cfg.initial.pipeline_cover * mean).astype(np.int64)
        # at a decision the orders of the last L-1 periods are in transit: arrivals at 1..L-1
        slot = np.arange(W)[None, None, :]
        in_transit = (slot >= 1) & (slot < lead.value[:, :, None])
        init_pipe[:] = np.where(in_transit, fill[:, :, None], 0)
    return init_on_hand, init_pipe


def _crit_ratio(hold: np.ndarray, stockout: np.ndarray) -> np.ndarray:
    tot = hold + stockout
    return np.where(tot > 0, stockout / np.where(tot > 0, tot, 1.0), 0.5)


def _nodes_named(name: str, node_names: list[str], M: int, N: int, where: str) -> list[int]:
    if name == "all":
        return list(range(N))
    if name == "stores":
        return list(range(M, N))
    if name == "dcs":
        return list(range(M))
    if name in node_names:
        return [node_names.index(name)]
    raise C.ConfigError(f"{where}: unknown node {name!r}")
