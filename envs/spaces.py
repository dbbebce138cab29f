"""Space helpers."""

from __future__ import annotations

import numpy as np
from gymnasium.spaces import MultiDiscrete


class FlatMaskMultiDiscrete(MultiDiscrete):
    """A MultiDiscrete whose ``sample(mask=...)`` also takes the flat ``sum(nvec)`` mask.

    restock's observations carry the flat per-dimension mask that RLlib and sb3-contrib use;
    gymnasium's MultiDiscrete wants a tuple of per-dimension masks. This accepts both, so tools that
    sample with the observation's mask (PettingZoo's API test among them) work unchanged.
    """

    def sample(self, mask=None, probability=None):
        if (
            isinstance(mask, np.ndarray)
            and mask.ndim == 1
            and self.nvec.ndim == 1
            and mask.shape[0] == int(self.nvec.sum())
        ):
            splits = np.cumsum(self.nvec)[:-1]
            mask = tuple(m.astype(np.int8) for m in np.split(mask, splits))
        return super().sample(mask=mask, probability=probability)
