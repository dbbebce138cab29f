"""Retail demand from the M5 forecasting data set's file layout, as a replay scenario.

The M5 competition (Walmart, 2020) ships three files, read here in exactly their layout:

- ``sales_train_validation.csv`` (or ``sales_train_evaluation.csv``): one row per item and store,
  ``id,item_id,dept_id,cat_id,store_id,state_id,d_1,...,d_n``: daily units sold, wide;
- ``calendar.csv``: one row per day, with at least ``date`` (ISO), ``wm_yr_wk`` (the Walmart week) and
  ``d`` (``d_1``, ...), the key of the sales columns;
- ``sell_prices.csv`` (optional): ``store_id,item_id,wm_yr_wk,sell_price``, a row per week in which the
  item was on sale at the store.

`load_m5` selects stores, items and a date window and returns units per day, store and item (and the
price in force each day); `import_m5` writes a replay CSV (``date,store,sku,units``, zero days left out:
`envs.replay.load_replay_csv` reads a missing row as zero) and a scenario YAML around it: one supplier,
one DC, the selected stores, the items as SKUs (named by ``item_id``), prices from ``sell_price`` and
costs derived from them (see `scenario_from_m5`). ``restock data import-m5`` is the command. A small
sample in the same layout, made by ``tests/data/m5_sample/make_sample.py``, is shipped for the tests.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SALES_KEYS = ("id", "item_id", "dept_id", "cat_id", "store_id", "state_id")
MAX_SKUS_IMPORT = 512  # the schema's SKU limit is checked again when the scenario loads


@dataclass
class M5Data:
    stores: list[str]  # store_id, in the order of the scenario's stores (store_0, store_1, ...)
    items: list[str]  # item_id, the scenario's SKU names
    dates: list[str]  # ISO dates, one per period
    units: np.ndarray  # [T, S, K] units sold per day
    prices: np.ndarray | None  # [T, S, K] sell price in force that day, NaN where the item was not on sale

    def mean_prices(self) -> np.ndarray | None:
        """Per item: the mean sell price over the selected stores and days where it was on sale (None
        without a prices file; NaN for an item never on sale in the window)."""
        if self.prices is None:
            return None
        p = self.prices.reshape(-1, len(self.items))
        have = ~np.isnan(p)
        n = have.sum(axis=0)
        return np.where(n > 0, np.nansum(p, axis=0) / np.maximum(n, 1), np.nan)


def _csv_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as fh:
        yield from csv.reader(fh)


def _split(v: str | list[str] | None) -> list[str] | None:
    if v is None:
        return None
    parts = v.split(",") if isinstance(v, str) else list(v)
    out = [p.strip() for p in parts if p.strip()]
    return out or None


def load_m5(
    sales: str | Path,
    calendar: str | Path,
    prices: str | Path | None = None,
    stores: str | list[str] | None = None,
    items: str | list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
) -> M5Data:
    """Units (and prices) per day for the chosen ``stores`` and ``items`` (comma lists or lists; None:
    every one in the sales file) between ``start`` and ``end`` (ISO dates, both included; None: the
    whole sales file). Every chosen store must carry every chosen item in the sales file. Raises
    ValueError naming the file and what is wrong."""
    sales, calendar = Path(sales), Path(calendar)
    want_s, want_i = _split(stores), _split(items)
    # calendar: d -> (date, week)
    rows = _csv_rows(calendar)
    head = next(rows, None)
    if not head or not {"date", "wm_yr_wk", "d"}.issubset(head):
        raise ValueError(f"{calendar}: a calendar needs the columns date, wm_yr_wk and d (got {head})")
    ci = {c: head.index(c) for c in ("date", "wm_yr_wk", "d")}
    cal = {r[ci["d"]]: (r[ci["date"]], r[ci["wm_yr_wk"]]) for r in rows if len(r) >= len(head)}
    # sales: wide rows, filtered as they stream past
    rows = _csv_rows(sales)
    head = next(rows, None)
    if not head or list(head[: len(SALES_KEYS)]) != list(SALES_KEYS):
        raise ValueError(
            f"{sales}: M5 sales files start with the columns {','.join(SALES_KEYS)} (got {head})"
        )
    day_cols = head[len(SALES_KEYS) :]
    missing = [d for d in day_cols if d not in cal]
    if missing:
        raise ValueError(f"{sales}: day column {missing[0]} is not in {calendar}")
    dates = np.array([cal[d][0] for d in day_cols])
    lo = 0 if start is None else int(np.searchsorted(dates, start, side="left"))
    hi = len(dates) if end is None else int(np.searchsorted(dates, end, side="right"))
    if hi <= lo:
        raise ValueError(f"{sales}: no days between {start or dates[0]} and {end or dates[-1]}")
    found: dict[tuple[str, str], np.ndarray] = {}
    seen_s: list[str] = []
    seen_i: list[str] = []
    for n, r in enumerate(rows, start=2):
        if len(r) != len(head):
            raise ValueError(f"{sales} line {n}: {len(r)} fields, the header has {len(head)}")
        item, store = r[1], r[4]
        if (want_s is not None and store not in want_s) or (want_i is not None and item not in want_i):
            continue
        try:
            found[(store, item)] = np.asarray(r[len(SALES_KEYS) + lo : len(SALES_KEYS) + hi], np.float64)
        except ValueError:
            raise ValueError(f"{sales} line {n}: the daily units must be numbers") from None
        if store not in seen_s:
            seen_s.append(store)
        if item not in seen_i:
            seen_i.append(item)
    store_ids = want_s or sorted(seen_s)
    item_ids = want_i or sorted(seen_i)
    if not found:
        raise ValueError(f"{sales}: no rows for stores {want_s or 'any'} and items {want_i or 'any'}")
    if len(item_ids) > MAX_SKUS_IMPORT:
        raise ValueError(f"{len(item_ids)} items selected; choose at most {MAX_SKUS_IMPORT} with --items")
    absent = [f"{i} at {s}" for s in store_ids for i in item_ids if (s, i) not in found]
    if absent:
        raise ValueError(
            f"{sales}: no sales row for {', '.join(absent[:5])}" + (" ..." if len(absent) > 5 else "")
        )
    units = np.stack([np.stack([found[(s, i)] for i in item_ids], axis=-1) for s in store_ids], axis=1)
    if (units < 0).any() or not np.isfinite(units).all():
        raise ValueError(f"{sales}: daily units must be finite and >= 0")
    window = dates[lo:hi].tolist()
    price_arr = None
    if prices is not None:
        weeks = np.array([cal[d][1] for d in day_cols[lo:hi]])
        price_arr = _daily_prices(Path(prices), store_ids, item_ids, weeks)
    return M5Data(stores=list(store_ids), items=list(item_ids), dates=window, units=units, prices=price_arr)


def _daily_prices(path: Path, store_ids: list[str], item_ids: list[str], weeks: np.ndarray) -> np.ndarray:
    rows = _csv_rows(path)
    head = next(rows, None)
    need = ("store_id", "item_id", "wm_yr_wk", "sell_price")
    if not head or not set(need).issubset(head):
        raise ValueError(f"{path}: a prices file needs the columns {','.join(need)} (got {head})")
    ix = [head.index(c) for c in need]
    s_of = {s: i for i, s in enumerate(store_ids)}
    k_of = {k: i for i, k in enumerate(item_ids)}
    uw, w_inv = np.unique(weeks, return_inverse=True)
    w_of = {w: i for i, w in enumerate(uw.tolist())}
    weekly = np.full((len(uw), len(store_ids), len(item_ids)), np.nan)
    for n, r in enumerate(rows, start=2):
        s, k, w = s_of.get(r[ix[0]]), k_of.get(r[ix[1]]), w_of.get(r[ix[2]])
        if s is None or k is None or w is None:
            continue
        try:
            v = float(r[ix[3]])
        except ValueError:
            raise ValueError(f"{path} line {n}: sell_price {r[ix[3]]!r} is not a number") from None
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{path} line {n}: sell_price must be finite and >= 0")
        weekly[w, s, k] = v
    return weekly[w_inv]


def write_replay_csv(data: M5Data, path: str | Path) -> Path:
    """``date,store,sku,units`` rows (stores as ``store_<i>``, SKUs by item_id); days with zero units
    are left out (the replay reads them as zero)."""
    path = Path(path)
    t, s, k = np.nonzero(data.units)
    dates = np.asarray(data.dates)[t]
    stores = np.asarray([f"store_{i}" for i in range(len(data.stores))])[s]
    items = np.asarray(data.items)[k]
    units = data.units[t, s, k]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "store", "sku", "units"])
        w.writerows(
            zip(dates.tolist(), stores.tolist(), items.tolist(), [f"{u:g}" for u in units], strict=True)
        )
    return path


def scenario_from_m5(
    data: M5Data,
    name: str,
    replay_path: str,
    horizon: int | None = None,
    cost_ratio: float = 0.7,
    holding_rate: float = 0.25,
    dc_lead_time: int = 3,
    store_lead_time: int = 1,
) -> dict:
    """A scenario mapping replaying ``data``: one supplier, one DC, the stores, the items as SKUs.

    With prices: ``price`` is each item's mean sell price, ``unit_cost`` = ``cost_ratio`` x price,
    holding per day = ``holding_rate`` (a yearly rate) x unit cost / 365, and a lost sale costs the lost
    margin (price - unit cost). Without prices every item gets unit cost 1, no price, holding 0.05 and
    stockout 1 (the schema's defaults). Episodes start on a random day of the trace (``start:
    random``); ``horizon`` defaults to 28 days, at most the trace's length. Edit the result as needed.
    """
    T = len(data.dates)
    horizon = min(horizon or 28, T)
    skus: dict = {"count": len(data.items), "names": list(data.items)}
    price = data.mean_prices()
    if price is not None:
        fallback = float(np.nanmean(price)) if np.isfinite(price).any() else 1.0
        price = np.where(np.isfinite(price), price, fallback)
        cost = cost_ratio * price
        r = lambda a: [round(float(x), 4) for x in a]  # noqa: E731
        skus.update(
            price=r(price),
            unit_cost=r(cost),
            holding_cost=r(holding_rate * cost / 365.0),
            stockout_cost=r(np.maximum(price - cost, 1e-3)),
        )
    return {
        "name": name,
        "description": (
            f"M5 sales replayed: {len(data.items)} items at {len(data.stores)} stores "
            f"({', '.join(f'store_{i} = {s}' for i, s in enumerate(data.stores))}), {data.dates[0]} to "
            f"{data.dates[-1]} ({T} days)"
            + ("; prices: mean sell_price over the stores and days on sale" if price is not None else "")
        ),
        "seed": 0,
        "horizon": horizon,
        "skus": skus,
        "network": {
            "suppliers": [{"id": "supplier"}],
            "dcs": [{"id": "dc", "parent": "supplier", "lead_time": dc_lead_time}],
            "stores": {
                "count": len(data.stores),
                "parent": "dc",
                "lead_time": store_lead_time,
                "unmet": "lost",
            },
        },
        "demand": {"model": "replay", "replay": {"path": replay_path, "start": "random"}},
        "reward": {"include_revenue": False},
    }


def import_m5(
    sales: str | Path,
    calendar: str | Path,
    prices: str | Path | None,
    out: str | Path,
    stores: str | list[str] | None = None,
    items: str | list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    horizon: int | None = None,
) -> tuple[Path, Path]:
    """Write ``out`` (scenario YAML) and, beside it, ``<out stem>_demand.csv``; returns both paths. The
    scenario loads with `restock.envs.config.load_scenario` (checked before returning)."""
    import yaml
    from restock.envs.config import load_scenario

    out = Path(out)
    data = load_m5(sales, calendar, prices, stores=stores, items=items, start=start, end=end)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = write_replay_csv(data, out.with_name(out.stem + "_demand.csv"))
    scen = scenario_from_m5(data, out.stem, csv_path.name, horizon=horizon)
    text = (
        f"# made by `restock data import-m5` from {Path(sales).name}, "
        f"{Path(calendar).name}" + (f", {Path(prices).name}" if prices else "") + "\n"
    )
    text += yaml.safe_dump(scen, sort_keys=False, width=110)
    out.write_text(text)
    load_scenario(out)  # the schema's check (SKU limits, names) before anyone trains on it
    return out, csv_path
