"""Consumers of the observation follow the scenario's observation block (lean or full), or refuse it by
name where they read features by name in the full layout (the dcl trainers)."""

from __future__ import annotations

import numpy as np
import pytest
from restock.envs import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.types import NODE_FEATURES


def _compiled(name: str, features):
    return compile_scenario(load_scenario(name, observation__features=features))


def test_serving_layout_and_width_follow_a_compact_observation():
    from restock.serving.artifact import observation_layout
    from restock.serving.engine import _obs_dim

    c = _compiled("tiny", "compact")
    env = ArrayEnv(c, num_envs=1, seed=0)
    lay = observation_layout(c)
    full = compile_scenario(load_scenario("tiny"))
    assert lay["sku_features"] == list(c.sku_features) and lay["F"] == len(c.sku_features) == env.F
    assert lay["F"] < len(full.sku_features)
    assert _obs_dim(c) == env.obs_dim == c.K * len(c.sku_features) + len(NODE_FEATURES)
    assert _obs_dim(full) > _obs_dim(c)


def test_the_default_observation_block_keeps_the_scenario_hash():
    """Artifacts, params files and audit records name a scenario by its hash: the observation block's
    default (full) hashes as if the block were absent, so their hashes from before it existed still match."""
    from restock.envs.compile import config_hash

    plain = config_hash(load_scenario("tiny"))
    assert config_hash(load_scenario("tiny", observation__features="full")) == plain
    assert "observation" in load_scenario("tiny").model_dump(mode="json")  # present, yet not hashed
    assert config_hash(load_scenario("tiny", observation__features="compact")) != plain


def test_single_agent_feature_names_match_the_observation():
    from restock.single_node import SingleNodeEnv

    env = SingleNodeEnv("single_lost_sales", observation__features="compact")
    obs, _ = env.reset(seed=0)
    assert len(env.feature_names) == obs.shape[0] == env.observation_space.shape[0]
    assert np.isfinite(obs).all()


def test_dcl_refuses_a_lean_observation_naming_the_field(tmp_path):
    from restock.training.experiment import load_experiment
    from restock.training.train import train

    c = _compiled("lost_sales/ls_L1_p4", "compact")
    exp = load_experiment("configs/experiments/lost_sales_dcl.yaml")
    with pytest.raises(ValueError, match=r"observation\.features: the dcl trainer"):
        train(c, exp, "dcl", out_root=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before any run directory is made
