"""Parameter files (``--params``) that are not one: every wrong shape exits 2 naming --params and
what was wrong, never a traceback (issue 12: a JSON list used to raise AttributeError)."""

from __future__ import annotations

import json

import pytest
from restock.agents.catalogue import PARAMS_FORMAT, load_params
from typer.testing import CliRunner

from restock.cli import app

GOOD = {
    "format": PARAMS_FORMAT,
    "scenario": "tiny",
    "config_hash": "x",
    "policies": {"base_stock": {"knobs": {"store": {"z": 0.5}, "dc": {"z": 0.0}}}},
}


def _with(**kw):
    return json.dumps({**GOOD, **kw})


def _knobs(k):
    return _with(policies={"base_stock": {"knobs": k}})


BAD = {
    "list": ("[1, 2, 3]", "not a JSON object"),
    "string": ('"params"', "not a JSON object"),
    "null": ("null", "not a JSON object"),
    "number": ("3", "not a JSON object"),
    "empty": ("", "cannot read"),
    "non_utf8": (b"\xff\xfe{}", "cannot read"),
    "nested": ("[" * 100_000 + "]" * 100_000, "cannot read"),
    "nan_constant": (_with().replace('"z": 0.5', '"z": NaN'), "NaN"),
    "infinity": (_with().replace('"z": 0.5', '"z": Infinity'), "Infinity"),
    "huge_number": (_with().replace('"z": 0.5', '"z": 1e999'), "finite"),
    "policies_list": (_with(policies=[1]), "policies"),
    "policy_not_object": (_with(policies={"base_stock": 3}), "policies.base_stock"),
    "knobs_list": (_knobs([1]), "policies.base_stock.knobs"),
    "role_not_object": (_knobs({"store": 3}), "policies.base_stock.knobs.store"),
    "knob_string": (_knobs({"store": {"z": "a"}}), "policies.base_stock.knobs.store.z"),
    "knob_bool": (_knobs({"store": {"z": True}}), "policies.base_stock.knobs.store.z"),
    "knob_object": (_knobs({"store": {"z": {"a": 1}}}), "policies.base_stock.knobs.store.z"),
    "knob_nested_list": (_knobs({"store": {"z": [[1]]}}), "policies.base_stock.knobs.store.z"),
    "scenario_number": (_with(scenario=3), "scenario"),
    "wrong_format": (_with(format="x"), "format"),
    "no_policies": (json.dumps({"format": PARAMS_FORMAT}), "policies"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_params__wrong_files_are_refused_naming_what(tmp_path, case):
    text, expect = BAD[case]
    f = tmp_path / "p.json"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match="--params") as e:
        load_params(f)
    assert expect in str(e.value), str(e.value)


def test_params__directory_and_oversized_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_params(tmp_path)
    big = tmp_path / "big.json"
    big.write_text(" " * (17 << 20))
    with pytest.raises(ValueError, match="larger than"):
        load_params(big)


def test_params__a_good_file_loads(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(_knobs({"store": {"z": 0.5, "cap": [1, 2.5]}, "dc_1": {"z": -1}}))
    assert load_params(f)["policies"]["base_stock"]["knobs"]["store"]["cap"] == [1, 2.5]


@pytest.mark.parametrize("case", ["list", "nan_constant", "knob_string", "non_utf8"])
def test_params__eval_exits_2_without_a_traceback(tmp_path, case):
    text, expect = BAD[case]
    f = tmp_path / "p.json"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "tiny",
            "--policies",
            "base_stock",
            "--params",
            str(f),
            "--episodes",
            "2",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "--params" in out and expect in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
