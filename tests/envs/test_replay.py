"""Replay CSV: dates with no rows are zero-demand periods; weekly spacing; the parse is column-wise."""

from __future__ import annotations

import time

import numpy as np
import pytest
from restock.envs.replay import load_replay_csv


def _write(tmp_path, rows, name="t.csv"):
    p = tmp_path / name
    p.write_text("date,store,sku,units\n" + "\n".join(rows) + "\n")
    return p


def test_replay__a_date_without_rows_is_a_zero_period(tmp_path):
    # three dates in (2024-01-01, -02 missing, -03 and -04): four periods out, the missing one zero
    p = _write(
        tmp_path, ["2024-01-01,0,0,5", "2024-01-03,0,0,7", "2024-01-04,store_0,a,1", "2024-01-04,0,a,2"]
    )
    tr = load_replay_csv(p, ["store_0"], ["a"])
    assert tr.shape == (4, 1, 1)
    assert tr[:, 0, 0].tolist() == [5.0, 0.0, 7.0, 3.0]  # rows of one date, store and SKU add up


def test_replay__three_dates_in_three_periods_out_even_when_the_middle_one_has_no_rows_for_a_sku(tmp_path):
    p = _write(tmp_path, ["2024-03-01,0,0,1", "2024-03-02,0,1,2", "2024-03-03,0,0,3"])
    tr = load_replay_csv(p, ["s"], ["x", "y"])
    assert tr.shape == (3, 1, 2)
    assert tr[:, 0, 0].tolist() == [1.0, 0.0, 3.0] and tr[:, 0, 1].tolist() == [0.0, 2.0, 0.0]


def test_replay__weekly_dates_make_weekly_periods_and_a_missing_week_is_zero(tmp_path):
    p = _write(tmp_path, ["2024-01-01,0,0,1", "2024-01-08,0,0,2", "2024-01-22,0,0,4"])
    tr = load_replay_csv(p, ["s"], ["k"])
    assert tr[:, 0, 0].tolist() == [1.0, 2.0, 0.0, 4.0]


def test_replay__period_numbers_and_labels(tmp_path):
    tr = load_replay_csv(_write(tmp_path, ["1,0,0,1", "10,0,0,2", "3,0,0,3"]), ["s"], ["k"])
    assert tr.shape[0] == 10 and tr[0, 0, 0] == 1 and tr[2, 0, 0] == 3 and tr[9, 0, 0] == 2
    tr = load_replay_csv(_write(tmp_path, ["b,0,0,1", "a,0,0,2"], "l.csv"), ["s"], ["k"])
    assert tr[:, 0, 0].tolist() == [2.0, 1.0]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("2024-01-02,store_9,0,1", "line 3: unknown store 'store_9'"),
        ("2024-01-02,0,5,1", "line 3: sku index 5 out of range"),
        ("2024-01-02,0,0,-1", "line 3: units must be a finite number >= 0"),
        ("2024-01-02,0,0,nan", "line 3: units must be a finite number >= 0"),
        ("2024-01-02,0,0,lots", "line 3: units 'lots' is not a number"),
        ("2024-01-02,0,0", "line 3: a row needs all four columns"),
    ],
)
def test_replay__bad_rows_name_their_line(tmp_path, row, match):
    p = _write(tmp_path, ["2024-01-01,0,0,3", row])
    with pytest.raises(ValueError, match=match):
        load_replay_csv(p, ["store_0"], ["k"])


def test_replay__a_large_file_parses_column_wise(tmp_path):
    """200,000 rows (2 years x 20 stores x 5 SKUs): the old per-row loop took seconds; this is a bound
    loose enough for a loaded 2-core machine, the point being no Python work per row."""
    rng = np.random.default_rng(0)
    dates = np.datetime64("2022-01-01") + np.arange(2000)
    d, s, k = np.meshgrid(np.arange(2000), np.arange(20), np.arange(5), indexing="ij")
    u = rng.integers(0, 9, size=d.size)
    lines = [f"{dates[a]},{b},{c},{x}" for a, b, c, x in zip(d.ravel(), s.ravel(), k.ravel(), u, strict=True)]
    p = _write(tmp_path, lines)
    t0 = time.perf_counter()
    tr = load_replay_csv(p, [f"store_{i}" for i in range(20)], [f"k{i}" for i in range(5)])
    took = time.perf_counter() - t0
    assert tr.shape == (2000, 20, 5)
    np.testing.assert_array_equal(tr.reshape(-1), u)
    assert took < 10.0, took
