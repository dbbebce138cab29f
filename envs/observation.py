"""What agents observe per SKU: the scenario's ``observation`` block and the columns it selects.

``observation: {features: full}`` (the default) observes every per-SKU feature
(`types.SKU_FEATURES_FIXED`, then one per pipeline slot). ``features: compact`` observes
`COMPACT_FEATURES` only, and a list of feature names observes those. The observation of a node is
always K blocks of F per-SKU features followed by the four node features (`types.NODE_FEATURES`);
the selected features keep the full set's order, so a lean observation equals the full one's columns
``obs_full[..., k * F_full + sel]`` bit for bit (the same float32 values, computed the same way).

Fewer features mean fewer bytes written per step: on `default` with 1,000 environments the full
observation is about 92 MB a step, the compact one about 35 MB. Masks, bounds, dynamics and rewards do
not depend on the observation block. The network's input sizes follow it: `ArrayEnv.F` and
``obs_dim`` come from `Compiled.sku_features`.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from restock.envs.types import SKU_FEATURES_FIXED, sku_feature_names

# what a base-stock-like policy reads: stock, position, demand to cover, the binding bound, the
# economics and the lead time (8 of 15 + W - 1; pipeline slots are left out)
COMPACT_FEATURES = (
    "on_hand",
    "backlog",
    "pipeline_total",
    "forecast",
    "upper_bound",
    "inventory_position",
    "critical_ratio",
    "mean_lead_time",
)
_PIPELINE = re.compile(r"pipeline_([1-9][0-9]{0,3})")


class ObservationSpec(BaseModel):
    """The scenario's ``observation`` block."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # "full", "compact" (COMPACT_FEATURES) or a list of per-SKU feature names
    features: Literal["full", "compact"] | list[str] = Field(default="full")

    @field_validator("features")
    @classmethod
    def _names(cls, v):
        if isinstance(v, str):
            return v
        if not 1 <= len(v) <= 64:
            raise ValueError(f"list 1 to 64 feature names (got {len(v)})")
        for name in v:
            if name not in SKU_FEATURES_FIXED and not _PIPELINE.fullmatch(name):
                raise ValueError(
                    f"unknown feature {name!r} (choose from {', '.join(SKU_FEATURES_FIXED)}, "
                    "pipeline_<j> with j >= 1)"
                )
        dup = sorted({x for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"feature(s) listed twice: {', '.join(dup)}")
        return v


def feature_selection(features: str | list[str], W: int) -> np.ndarray:
    """int64 indices into `types.sku_feature_names(W)` of the observed per-SKU features, ascending.

    Raises ValueError naming ``observation.features`` when a pipeline slot is beyond the scenario's
    pipeline (slots 1..W-1 exist).
    """
    names = sku_feature_names(W)
    if features == "full":
        return np.arange(len(names), dtype=np.int64)
    chosen = COMPACT_FEATURES if features == "compact" else features
    missing = [x for x in chosen if x not in names]
    if missing:
        raise ValueError(
            f"observation.features: {', '.join(missing)} beyond this scenario's pipeline "
            f"(it has slots pipeline_1..pipeline_{W - 1})"
            if W > 1
            else f"observation.features: {', '.join(missing)}: this scenario has no pipeline slots"
        )
    return np.asarray(sorted(names.index(x) for x in chosen), np.int64)
