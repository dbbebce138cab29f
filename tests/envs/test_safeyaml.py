"""The bounded YAML loader: what it still reads, and where each bound sits."""

from __future__ import annotations

import pytest
from restock.envs import safeyaml as Y
from restock.envs.safeyaml import YamlInputError, load_yaml_file, load_yaml_text


def test_ordinary_yaml_reads_as_before():
    text = "base: &b {a: 1, b: [1, 2]}\nm:\n  <<: *b\n  a: 2\nlist: [*b, *b]\nq: '1'\nf: 1e-3\n"
    assert load_yaml_text(text, "f") == {
        "base": {"a": 1, "b": [1, 2]},
        "m": {"a": 2, "b": [1, 2]},  # merge keys: an explicit key overrides a merged one, not a duplicate
        "list": [{"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]}],
        "q": "1",
        "f": "1e-3",  # YAML 1.1: no dot, a string (the schema parses it as a number)
    }


def test_depth_bound_is_exact():
    nested = lambda n: "a: " + "[" * n + "]" * n  # noqa: E731  (the n-th list sits n levels down)
    assert load_yaml_text(nested(Y.MAX_DEPTH - 1), "f")["a"] is not None
    with pytest.raises(YamlInputError, match=f"nested deeper than {Y.MAX_DEPTH}"):
        load_yaml_text(nested(Y.MAX_DEPTH), "f")


def test_alias_budget_and_expansion(monkeypatch):
    monkeypatch.setattr(Y, "MAX_ALIASES", 3)
    assert load_yaml_text("a: &x 1\nb: [*x, *x, *x]\n", "f") == {"a": 1, "b": [1, 1, 1]}
    with pytest.raises(YamlInputError, match="more than 3 alias uses"):
        load_yaml_text("a: &x 1\nb: [*x, *x, *x, *x]\n", "f")
    monkeypatch.setattr(Y, "MAX_ALIASES", 1000)
    monkeypatch.setattr(Y, "MAX_NODES", 100)
    ten = "a: &a [" + ", ".join(["1"] * 9) + "]\n"  # 10 values
    assert load_yaml_text(ten + "b: [*a, *a, *a, *a, *a, *a, *a, *a]\n", "f")  # 10 + 1 + 80 = 91
    with pytest.raises(YamlInputError, match="b\\[8\\]: the document expands to more than 100 values"):
        load_yaml_text(ten + "b: [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n", "f")


def test_duplicate_and_non_string_keys_name_their_path():
    with pytest.raises(YamlInputError, match=r"x\.y\.z: duplicate key 'z' \(first at line 3"):
        load_yaml_text("x:\n  y:\n    z: 1\n    z: 2\n", "f")
    with pytest.raises(YamlInputError, match=r"x\.on: key 'on' is not a string"):
        load_yaml_text("x:\n  on: 1\n", "f")


def test_file_checks(tmp_path):
    with pytest.raises(YamlInputError, match="is a directory"):
        load_yaml_file(tmp_path, "scenario file")
    with pytest.raises(YamlInputError, match="no such scenario file"):
        load_yaml_file(tmp_path / "missing.yaml", "scenario file")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (Y.MAX_FILE_BYTES + 1))
    with pytest.raises(YamlInputError, match="the limit is"):
        load_yaml_file(big, "scenario file")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffa: 1\n".encode())  # a UTF-8 byte-order mark is fine
    assert load_yaml_file(bom) == {"a": 1}
    with pytest.raises(YamlInputError, match="not a regular file"):
        load_yaml_file("/dev/null", "scenario file")
