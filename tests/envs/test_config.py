"""Scenario schema: shipped files load, bad input gets one clear message naming the field path."""

from __future__ import annotations

import pytest
from restock.envs.compile import compile_scenario
from restock.envs.config import ConfigError, load_scenario, shipped_scenarios


def test_shipped_scenarios__all_load_and_compile():
    names = shipped_scenarios()
    assert {"tiny", "default", "serial_3", "single_lost_sales", "large", "constrained"} <= set(names)
    for name in names:
        c = compile_scenario(load_scenario(name))
        assert c.N == len(c.agent_ids) and c.K > 0


def test_shipped_scenarios__sizes_match_the_brief():
    sizes = {n: compile_scenario(load_scenario(n)) for n in ("tiny", "default", "large")}
    assert (sizes["tiny"].M, sizes["tiny"].S, sizes["tiny"].K) == (1, 2, 3)
    assert (sizes["default"].M, sizes["default"].S, sizes["default"].K) == (1, 10, 100)
    assert sizes["large"].M >= 4 and sizes["large"].S >= 200 and sizes["large"].K >= 1000
    assert all(sizes["default"].config.network.stores[0].storage_capacity for _ in [0])
    assert sizes["default"].config.network.dcs[0].storage_capacity


def test_load__unknown_key_names_its_path(edge_config):
    edge_config["network"]["stores"][1]["lead_tme"] = 3
    with pytest.raises(ConfigError) as exc:
        load_scenario(edge_config)
    msg = str(exc.value)
    assert "network.stores[1]" in msg and "lead_tme" in msg and "unknown key" in msg


def test_load__bad_value_names_field_and_reason(edge_config):
    edge_config["skus"]["holding_cost"] = "cheap"
    edge_config["network"]["dcs"][0]["lead_time"] = {"values": [1, 2], "probs": [0.5, 0.6]}
    with pytest.raises(ConfigError) as exc:
        load_scenario(edge_config)
    msg = str(exc.value)
    assert "skus.holding_cost" in msg and "expected a number" in msg
    assert "network.dcs[0].lead_time" in msg and "sum to 1" in msg


def test_load__cross_field_errors(edge_config):
    edge_config["network"]["dcs"][1]["parent"] = "nowhere"
    with pytest.raises(ConfigError, match=r"dcs\[1\]\.parent: unknown node 'nowhere'"):
        load_scenario(edge_config)


def test_load__list_length_mismatch(edge_config):
    edge_config["skus"]["unit_cost"] = [1.0, 2.0]
    with pytest.raises(ConfigError, match="unit_cost lists 2 values but there are 3 SKUs"):
        load_scenario(edge_config)


def test_load__unknown_scenario_name_lists_shipped():
    with pytest.raises(ConfigError, match="unknown scenario 'nope'.*tiny"):
        load_scenario("nope")


def test_load__overrides_walk_into_sections():
    cfg = load_scenario("tiny", horizon=7, demand__model="negative_binomial", reward__network_weight=0.5)
    assert cfg.horizon == 7 and cfg.demand.model == "negative_binomial" and cfg.reward.network_weight == 0.5


def test_load__yaml_errors_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nskus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_scenario(bad)


def test_compile__attributes_drawn_from_the_scenario_seed():
    a = compile_scenario(load_scenario("default"))
    b = compile_scenario(load_scenario("default"))
    c = compile_scenario(load_scenario("default", seed=8))
    assert (a.params.unit_cost == b.params.unit_cost).all()
    assert not (a.params.unit_cost == c.params.unit_cost).all()
    # price proportional to the unit cost with a factor in [1.3, 1.9]
    ratio = a.params.price[a.M] / a.params.unit_cost
    assert ratio.min() >= 1.3 - 1e-9 and ratio.max() <= 1.9 + 1e-9


def test_compile__dc_mean_is_the_sum_of_its_stores(edge_config):
    c = compile_scenario(load_scenario(edge_config))
    p = c.params
    # regional feeds local (stores 0,1) and store 2; local feeds stores 0 and 1
    assert p.mean[1] == pytest.approx(p.mean[2] + p.mean[3])
    assert p.mean[0] == pytest.approx(p.mean[1] + p.mean[4])
