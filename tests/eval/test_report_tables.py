"""Report output people read: 80-column text tables with whole numbers, a cost breakdown at scale."""

from __future__ import annotations

import pytest
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.eval.evaluate import evaluate, parse_policies
from restock.eval.report import breakdown_policies, cell, fit_table, text_table


def test_fit_table__never_wider_than_80_and_cells_whole():
    header = ["policy", "total_cost", "fill_rate", "cycle_service_level", "stockout_days", "inventory_turns"]
    rows = [
        [
            "zero",
            "4,713,012 ± 12,345",
            "0.0000 ± 0.0000",
            "0.0000 ± 0.0000",
            "1,200 ± 0.000",
            "0.0000 ± 0.0000",
        ],
        [
            "base_stock",
            "7,654.3 ± 123.4",
            "0.9512 ± 0.0021",
            "0.8800 ± 0.0100",
            "12.000 ± 1.000",
            "8.123 ± 0.100",
        ],
    ]
    text = fit_table(header, rows, width=80)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    for r in rows:
        for c in r:
            assert c in text  # never cut
    assert text.count("zero") == 2  # split into two blocks, each repeating the first column
    assert "cycle_service" in text and "level" in text  # the long header wrapped


def test_text_table__eval_result_fits_80_columns_with_long_run_labels():
    c = compile_scenario(load_scenario("tiny"))
    specs, _ = parse_policies("zero,base_stock", c)
    res = evaluate(c, specs, episodes=3, seed=0)
    long = "runs/tiny__default__0__20261203-104113 [store: learned]"
    res.summary[long] = res.summary["base_stock"]
    text = text_table(res)
    assert max(len(ln) for ln in text.splitlines()) <= 80
    assert long in text  # the full label is listed under the table
    for pol in ("zero", "base_stock"):
        assert cell(res.summary[pol]["total_cost"]) in text  # numbers whole


def test_breakdown__leaves_out_the_policy_that_would_squash_the_rest():
    c = compile_scenario(load_scenario("tiny"))
    specs, _ = parse_policies("zero,base_stock,s_S", c)
    res = evaluate(c, specs, episodes=3, seed=0)
    shown, left_out = breakdown_policies(res)
    costs = {p: res.summary[p]["total_cost"]["mean"] for p in res.summary}
    assert costs["zero"] > 5 * min(costs.values()), "premise: zero costs far more on tiny"
    assert left_out == ["zero"] and set(shown) == {"base_stock", "s_S"}


@pytest.mark.parametrize("width", [60, 80, 100])
def test_fit_table__respects_any_width(width):
    header = ["policy"] + [f"kpi_number_{i}" for i in range(8)]
    rows = [["p", *[f"{1234567.0 * i:,.0f}" for i in range(8)]]]
    text = fit_table(header, rows, width=width)
    assert max(len(ln) for ln in text.splitlines()) <= width
    for c in rows[0][1:]:
        assert c in text
