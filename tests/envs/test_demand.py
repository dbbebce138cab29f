"""Demand samplers: right distributions, reproducible, independent of chunking and batch layout."""

from __future__ import annotations

import numpy as np
import pytest
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.demand import DemandStream, sample_paths
from scipy import stats


def _single(model="poisson", mean=5.0, **demand):
    cfg = {
        "name": "d",
        "horizon": 10,
        "skus": {"count": 4},
        "network": {"suppliers": [{"id": "s"}], "stores": {"count": 1, "parent": "s", "unmet": "lost"}},
        "demand": {"model": model, "mean": [mean, 0.1, 40.0, 0.0], **demand},
    }
    return compile_scenario(load_scenario(cfg))


def _chi2_pvalue(x: np.ndarray, pmf) -> float:
    ks = np.arange(0, x.max() + 1)
    obs = np.bincount(x, minlength=len(ks)).astype(float)
    exp = pmf(ks) * len(x)
    exp[-1] += (1 - pmf(ks).sum()) * len(x)
    keep = exp >= 5  # pool the tails
    o = np.append(obs[keep], obs[~keep].sum())
    e = np.append(exp[keep], exp[~keep].sum())
    if e[-1] < 5:
        o, e = o[:-1], e[:-1]
    return stats.chisquare(o, e * o.sum() / e.sum()).pvalue


def test_poisson__matches_the_distribution():
    c = _single()
    x = sample_paths(c.demand, 1, np.arange(2000), 0, 10)[:, :, 0, :]  # 20k draws per SKU
    for k, lam in enumerate([5.0, 0.1, 40.0]):
        xs = x[..., k].ravel()
        assert abs(xs.mean() - lam) < 4 * np.sqrt(lam / xs.size)
        assert _chi2_pvalue(xs, lambda ks, lam=lam: stats.poisson.pmf(ks, lam)) > 1e-3
    assert (x[..., 3] == 0).all()


def test_negative_binomial__mean_and_distribution():
    c = _single("negative_binomial", dispersion=3.0)
    x = sample_paths(c.demand, 2, np.arange(2000), 0, 10)[:, :, 0, 0].ravel()
    r, m = 3.0, 5.0
    assert _chi2_pvalue(x, lambda ks: stats.nbinom.pmf(ks, r, r / (r + m))) > 1e-3
    assert abs(x.mean() - m) < 4 * np.sqrt((m + m * m / r) / x.size)


def test_truncated_normal__law_of_the_rounded_truncated_normal():
    c = _single("truncated_normal", cv=0.6)
    x = sample_paths(c.demand, 3, np.arange(2000), 0, 10)[:, :, 0, 0].ravel()
    m, sd = 5.0, 3.0
    z0 = stats.norm.cdf(-m / sd)

    def pmf(ks):
        lo = np.where(ks == 0, 0.0, ks - 0.5)
        return (stats.norm.cdf((ks + 0.5 - m) / sd) - stats.norm.cdf((lo - m) / sd)) / (1 - z0)

    assert _chi2_pvalue(x, pmf) > 1e-3


def test_sampling__same_path_whatever_the_batch_and_chunk():
    c = compile_scenario(load_scenario("tiny"))
    a = sample_paths(c.demand, 9, np.array([0, 1, 2, 3]), 0, 20)
    b = sample_paths(c.demand, 9, np.array([3, 1]), 0, 20)
    np.testing.assert_array_equal(a[3], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    s = DemandStream(c.demand, 9, np.array([2, 3]), chunk=7)
    got = np.stack([s.get(t).copy() for t in range(20)], axis=1)
    np.testing.assert_array_equal(got, a[2:4])
    other_seed = sample_paths(c.demand, 10, np.array([0]), 0, 20)
    assert not np.array_equal(other_seed[0], a[0])


def test_seasonality_promotions_and_shocks_shape_the_mean(edge_config):
    c = compile_scenario(load_scenario(edge_config, horizon=24))
    x = sample_paths(c.demand, 0, np.arange(3000), 0, 24).astype(float)  # [P, T, S, K]
    m = x.mean(axis=0)
    # promotion on SKUs 0 and 2 in periods 5..8 (uplift 2): SKU 0 doubles, SKU 1 does not
    assert m[5:9, 0, 0].mean() / m[0:4, 0, 0].mean() == pytest.approx(
        2.0 * np.mean(c.demand.season[5:9]) / np.mean(c.demand.season[0:4]), rel=0.05
    )
    assert m[5:9, 0, 1].mean() / m[0:4, 0, 1].mean() == pytest.approx(
        np.mean(c.demand.season[5:9]) / np.mean(c.demand.season[0:4]), rel=0.08
    )
    # shock x3 on stores 1 and 3 in periods 12, 13
    assert m[12:14, 1, 1].mean() / m[12:14, 0, 1].mean() == pytest.approx(3.0 * 1.5, rel=0.08)


def test_replay__csv_trace(tmp_path):
    csv = tmp_path / "trace.csv"
    rows = ["date,store,sku,units"]
    for d in range(5):
        rows.append(f"2024-01-0{d + 1},store_0,a,{d}")
        rows.append(f"2024-01-0{d + 1},1,b,{10 + d}")
    csv.write_text("\n".join(rows) + "\n")
    cfg = {
        "name": "r",
        "horizon": 8,
        "skus": {"count": 2, "names": ["a", "b"]},
        "network": {"suppliers": [{"id": "s"}], "stores": {"count": 2, "parent": "s"}},
        "demand": {"model": "replay", "replay": {"path": str(csv), "start": 0}},
    }
    c = compile_scenario(load_scenario(cfg))
    x = sample_paths(c.demand, 0, np.arange(2), 0, 8)
    assert x[0, :, 0, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]  # wraps around
    assert x[0, :, 1, 1].tolist() == [10, 11, 12, 13, 14, 10, 11, 12]
    assert (x[0, :, 0, 1] == 0).all() and np.array_equal(x[0], x[1])
    assert c.params.mean[0, 0] == pytest.approx(2.0)


def test_replay__bad_rows_name_the_line(tmp_path):
    from restock.envs.config import ConfigError

    csv = tmp_path / "bad.csv"
    csv.write_text("date,store,sku,units\n2024-01-01,store_0,0,3\n2024-01-02,store_9,0,1\n")
    cfg = {
        "name": "r",
        "horizon": 8,
        "skus": {"count": 1},
        "network": {"suppliers": [{"id": "s"}], "stores": {"count": 1, "parent": "s"}},
        "demand": {"model": "replay", "replay": {"path": str(csv)}},
    }
    with pytest.raises(ConfigError, match="line 3.*store"):
        compile_scenario(load_scenario(cfg))
