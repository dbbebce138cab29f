"""Write a small sample in the M5 file layout (sales_train_validation.csv, calendar.csv, sell_prices.csv).

The numbers are made up (seeded, so the files are reproducible): 3 stores, 4 items, 42 days from
2011-01-29 (M5's first day, d_1, in Walmart week 11101). The layout, column names and conventions are
M5's: wide daily sales per item and store, a calendar keyed by ``d``, weekly prices that start in the
first week an item is on sale (HOUSEHOLD_1_001 reaches TX_1 only in week 11103, with zero sales before).

    python tests/data/m5_sample/make_sample.py     # rewrites the three CSVs beside this script
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STORES = [("CA_1", "CA"), ("CA_2", "CA"), ("TX_1", "TX")]
ITEMS = ["FOODS_3_001", "FOODS_3_002", "HOBBIES_1_001", "HOUSEHOLD_1_001"]
MEANS = {"FOODS_3_001": 6.0, "FOODS_3_002": 2.5, "HOBBIES_1_001": 0.6, "HOUSEHOLD_1_001": 1.4}
BASE_PRICE = {"FOODS_3_001": 2.98, "FOODS_3_002": 1.48, "HOBBIES_1_001": 8.26, "HOUSEHOLD_1_001": 5.97}
DAYS = 42
FIRST = dt.date(2011, 1, 29)
LATE = ("TX_1", "HOUSEHOLD_1_001", 14)  # on sale from day 14 (week 11103)


def main(out: Path = HERE) -> None:
    rng = np.random.default_rng(13)
    dates = [FIRST + dt.timedelta(days=i) for i in range(DAYS)]
    weeks = [11101 + i // 7 for i in range(DAYS)]
    with open(out / "calendar.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "wm_yr_wk", "weekday", "wday", "month", "year", "d", "event_name_1",
                    "event_type_1", "event_name_2", "event_type_2", "snap_CA", "snap_TX", "snap_WI"])  # fmt: skip
        for i, (d, wk) in enumerate(zip(dates, weeks, strict=True)):
            event = ("SuperBowl", "Sporting") if d == dt.date(2011, 2, 6) else ("", "")
            snap = int(d.day <= 10)
            w.writerow([d.isoformat(), wk, d.strftime("%A"), (d.weekday() + 2) % 7 + 1, d.month, d.year,
                        f"d_{i + 1}", *event, "", "", snap, snap, snap])  # fmt: skip
    weekly = np.array([1.0, 0.9, 0.9, 1.0, 1.1, 1.4, 1.3])  # Saturday first, as M5's weeks start
    with open(out / "sales_train_validation.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "id",
                "item_id",
                "dept_id",
                "cat_id",
                "store_id",
                "state_id",
                *[f"d_{i + 1}" for i in range(DAYS)],
            ]
        )
        for item in ITEMS:
            dept, cat = item.rsplit("_", 1)[0], item.split("_")[0]
            for store, state in STORES:
                lam = MEANS[item] * weekly[np.arange(DAYS) % 7] * (0.7 if store == "CA_2" else 1.0)
                units = rng.poisson(lam)
                if (store, item) == LATE[:2]:
                    units[: LATE[2]] = 0
                w.writerow([f"{item}_{store}_validation", item, dept, cat, store, state, *units.tolist()])
    with open(out / "sell_prices.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["store_id", "item_id", "wm_yr_wk", "sell_price"])
        for store, _ in STORES:
            for item in ITEMS:
                first = LATE[2] if (store, item) == LATE[:2] else 0
                for wk in sorted(set(weeks[first:])):
                    p = BASE_PRICE[item] * (0.9 if wk == 11104 and item.startswith("FOODS") else 1.0)
                    w.writerow([store, item, wk, f"{p:.2f}"])


if __name__ == "__main__":
    main()
