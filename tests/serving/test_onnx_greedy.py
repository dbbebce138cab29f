"""The serving policy's greedy pass (`serving.onnx_policy._greedy`) picks numpy's argmax (first level on
ties) and reports the softmax probability of that level averaged over SKUs; non-finite logits refuse."""

from __future__ import annotations

import numpy as np
from restock.serving.onnx_policy import _greedy


def test_greedy_matches_numpy_argmax_and_softmax():
    rng = np.random.default_rng(0)
    B, K, L = 7, 13, 16
    lg = rng.normal(0, 3, (B, K * L)).astype(np.float32)
    lg[:, ::5] = -1e8  # masked levels
    lg[0, 3 * L : 4 * L] = 2.0  # a tie across a whole SKU: level 0
    lg[1, 5 * L + 2] = lg[1, 5 * L + 9] = 50.0  # a tie between two levels: the first
    lv = np.empty((B, K), np.int64)
    conf = np.empty(B)
    assert _greedy(lg, K, L, lv, conf)
    r = lg.reshape(B, K, L)
    np.testing.assert_array_equal(lv, r.argmax(axis=-1))
    assert lv[0, 3] == 0 and lv[1, 5] == 2
    p = np.exp(r - r.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    want = np.take_along_axis(p, lv[..., None], axis=-1)[..., 0].mean(axis=-1)
    np.testing.assert_allclose(conf, want, rtol=1e-6)


def test_greedy_refuses_non_finite_logits():
    lg = np.zeros((2, 8), np.float32)
    lv = np.empty((2, 2), np.int64)
    conf = np.empty(2)
    assert _greedy(lg, 2, 4, lv, conf)
    for bad in (np.nan, np.inf, -np.inf):
        x = lg.copy()
        x[1, 6] = bad
        assert not _greedy(x, 2, 4, lv, conf)
