"""Classical heuristics. Each one respects the masks: level policies pick allowed levels, quantity
policies are clipped by the shield that runs after every policy."""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.rng import next_uniform, row_key


class ZeroPolicy:
    """Never orders. The trivially safe action: a floor for cost comparisons and the fallback of last resort."""

    name = "zero"
    version = "1"
    output = "levels"

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        E, K = ctx.obs.shape[0], ctx.compiled.K
        return np.zeros((E, len(nodes), K), np.int64)


@njit(cache=True)
def sample_masked_levels(mask, nodes, seed, t, out):
    """out[E, len(nodes), K]: a uniformly random allowed level per SKU (counter-based randomness)."""
    E, _, K, L = mask.shape
    for e in range(E):
        for i in range(nodes.shape[0]):
            n = nodes[i]
            st = row_key(seed, e, t, n)
            for k in range(K):
                cnt = 0
                for l in range(L):
                    cnt += mask[e, n, k, l]
                st, u = next_uniform(st)
                pick = np.int64(u * cnt)
                j = 0
                for l in range(L):
                    if mask[e, n, k, l]:
                        if j == pick:
                            out[e, i, k] = l
                            break
                        j += 1


class RandomPolicy:
    """A uniformly random allowed level for every SKU (masks respected); deterministic given its seed."""

    name = "random"
    version = "1"
    output = "levels"

    def __init__(self, seed: int = 0):
        self.seed = np.uint64(seed)
        self._calls = 0

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        E, K = ctx.obs.shape[0], ctx.compiled.K
        out = np.zeros((E, len(nodes), K), np.int64)
        t = int(ctx.state.t[0]) + 1_000_003 * self._calls
        self._calls += 1
        sample_masked_levels(ctx.mask, np.asarray(nodes, np.int64), self.seed, t, out)
        return out
