"""M5-format import: the shipped sample (tests/data/m5_sample, M5's exact layout) becomes a replay scenario."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.m5 import import_m5, load_m5

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "m5_sample"
SALES, CAL, PRICES = (SAMPLE / f for f in ("sales_train_validation.csv", "calendar.csv", "sell_prices.csv"))


def _wide_row(store, item):
    with open(SALES, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["store_id"] == store and r["item_id"] == item:
                return np.array([float(r[f"d_{i + 1}"]) for i in range(42)])
    raise KeyError((store, item))


def test_m5__sample_is_what_its_script_makes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    for f in (SALES, CAL, PRICES):
        assert (tmp_path / f.name).read_text() == f.read_text(), f.name


def test_m5__load_selects_stores_items_and_days():
    d = load_m5(SALES, CAL, PRICES, stores="TX_1,CA_1", items=["HOUSEHOLD_1_001", "FOODS_3_001"])
    assert d.stores == ["TX_1", "CA_1"] and d.items == ["HOUSEHOLD_1_001", "FOODS_3_001"]
    assert d.units.shape == (42, 2, 2) and d.dates[0] == "2011-01-29" and d.dates[-1] == "2011-03-11"
    np.testing.assert_array_equal(d.units[:, 0, 0], _wide_row("TX_1", "HOUSEHOLD_1_001"))
    np.testing.assert_array_equal(d.units[:, 1, 1], _wide_row("CA_1", "FOODS_3_001"))
    # prices: none before the item's first week on sale at TX_1; FOODS 10% off in week 11104 (days 21-27)
    assert np.isnan(d.prices[:14, 0, 0]).all() and (d.prices[14:, 0, 0] == 5.97).all()
    assert d.prices[20, 1, 1] == 2.98 and d.prices[21, 1, 1] == 2.68 and d.prices[28, 1, 1] == 2.98
    w = load_m5(SALES, CAL, None, start="2011-02-05", end="2011-02-11")
    assert w.units.shape == (7, 3, 4) and w.prices is None and w.stores == ["CA_1", "CA_2", "TX_1"]


def test_m5__import_writes_a_scenario_that_replays_the_sales(tmp_path):
    scen, demand = import_m5(SALES, CAL, PRICES, tmp_path / "m5.yaml", stores="CA_1,TX_1", horizon=14)
    cfg = load_scenario(scen)
    assert cfg.skus.names == ["FOODS_3_001", "FOODS_3_002", "HOBBIES_1_001", "HOUSEHOLD_1_001"]
    assert cfg.horizon == 14 and cfg.demand.model == "replay"
    c = compile_scenario(cfg)
    d = load_m5(SALES, CAL, PRICES, stores="CA_1,TX_1")
    np.testing.assert_array_equal(c.demand.trace, d.units)  # zero days left out of the CSV come back as 0
    assert sum(1 for _ in open(demand)) - 1 == int(np.count_nonzero(d.units))
    mean_price = float(np.nanmean(d.prices[:, :, 3]))
    assert cfg.skus.price[3] == pytest.approx(mean_price, abs=1e-4)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"stores": "WI_9"}, "no rows for stores"),
        ({"items": "FOODS_3_001,NOPE_1"}, "no sales row for NOPE_1 at CA_1"),
        ({"start": "2012-01-01"}, "no days between"),
    ],
)
def test_m5__bad_selections_say_what_is_wrong(kw, match):
    with pytest.raises(ValueError, match=match):
        load_m5(SALES, CAL, PRICES, **kw)


def test_m5__a_file_that_is_not_m5_is_refused(tmp_path):
    bad = tmp_path / "sales.csv"
    bad.write_text("date,store,sku,units\n2024-01-01,0,0,1\n")
    with pytest.raises(ValueError, match="start with the columns id,item_id"):
        load_m5(bad, CAL)


def test_cli__data_import_m5(tmp_path):
    from typer.testing import CliRunner

    from restock.cli import app

    out = tmp_path / "s.yaml"
    r = CliRunner().invoke(
        app, ["data", "import-m5", str(SALES), str(CAL), str(PRICES), "--stores", "CA_2", "--items",
              "FOODS_3_002", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert load_scenario(out).skus.names == ["FOODS_3_002"] and (tmp_path / "s_demand.csv").exists()
    r = CliRunner().invoke(
        app, ["data", "import-m5", str(tmp_path / "none.csv"), str(CAL), "--out", str(out)]
    )
    assert r.exit_code == 2 and "no such file" in " ".join(r.output.split())
