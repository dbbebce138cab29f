"""Malformed scenario and experiment files through the real command line (issue 12, item 3).

A corpus is generated at test time: every field of a small scenario (and of an experiment) set to
values it must refuse (NaN, infinities, 1e308, booleans, fractions for whole numbers, out-of-range
and wrong-typed values), the structural attacks the issue lists (non-UTF-8 bytes, 100,000 nested
``[``, alias expansion, duplicate keys, a horizon of 1e12, a lead time of 1e9, 1e9 SKUs, a replay path
that is a directory, ...), and hypothesis-drawn mutations. Each file must make the CLI exit with
status 2, print the field path (or, for file-level problems, the file and the reason) and no
traceback, within 5 seconds of CPU time. Most cases run in-process (CliRunner, `restock scenarios
--check`, `restock simulate` for a subset, `restock train --config` for experiments); a handful run
as real subprocesses.
"""

from __future__ import annotations

import copy
import math
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from restock.cli import app

ROOT = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((ROOT / "configs" / "scenarios" / "tiny.yaml").read_text())
runner = CliRunner()
NAN, INF = float("nan"), float("inf")
CPU_LIMIT_S = 5.0

# --------------------------------------------------------------------------------------------------
# the corpus


def _set(d: dict, path: str, value) -> dict:
    """Set a dotted path (``network.dcs[0].lead_time``) in a deep copy of ``d``."""
    d = copy.deepcopy(d)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    cur = d
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        key = int(p[1:-1]) if p.startswith("[") else p
        if last:
            cur[key] = value
        else:
            if isinstance(key, str) and key not in cur:
                cur[key] = {}
            cur = cur[key]
    return d


TINY_LIST = _set(TINY, "network.stores", [TINY["network"]["stores"]])  # the store group as a list
# a scenario of defaults: sizes can grow without per-SKU or per-store lists to match
PLAIN = {
    "name": "plain",
    "skus": {"count": 3},
    "network": {
        "suppliers": [{"id": "s"}],
        "dcs": [{"id": "dc", "parent": "s"}],
        "stores": [{"count": 2, "parent": "dc"}],
    },
}

# value kinds and values each must refuse
BAD = {
    "cost": [NAN, INF, -INF, 1e308, True, -1.0, "lots", [1.0]],
    "posint": [0, -1, 1.5, True, NAN, 10**13, "ten"],
    "unit": [NAN, INF, 0, 1.5, True, "x"],
    "int": [1.5, True, NAN, "x", 10**13],
    "lot": [1.5, 0, True, NAN, -2, 10**10, [1.5, 1, 1], {"choice": [1, 2.5]}],
    "moq": [1.5, -1, True, NAN, [0, 0.5, 3]],
    "lead": [1.5, -1, True, 10**9, NAN, {"values": [1, 2], "probs": [0.5, 0.6]}, {"per_sku": [1]}],
    "posfloat": [0, -1.0, NAN, INF, True, 1e308, "big"],
    "nonneg": [-1.0, NAN, INF, True, 1e308],
    "levels": [1, 257, 2.5, True, NAN, "many"],
    "posunits": [0, 1.5, True, 10**10, NAN],
    "bool": [0, 1, "yes", NAN],
}

SCENARIO_FIELDS = [
    ("horizon", "posint"),
    ("discount", "unit"),
    ("seed", "int"),
    ("skus.count", "posint"),
    ("skus.unit_cost", "cost"),
    ("skus.holding_cost", "cost"),
    ("skus.stockout_cost", "cost"),
    ("skus.price", "cost"),
    ("skus.volume", "cost"),
    ("skus.lot_size", "lot"),
    ("skus.moq", "moq"),
    ("network.dcs[0].lead_time", "lead"),
    ("network.dcs[0].storage_capacity", "posfloat"),
    ("network.dcs[0].holding_factor", "nonneg"),
    ("network.stores[0].lead_time", "lead"),
    ("network.stores[0].count", "posint"),
    ("network.stores[0].storage_capacity", "posfloat"),
    ("network.stores[0].max_order_increase", "posunits"),
    ("demand.mean", "cost"),
    ("demand.dispersion", "posfloat"),
    ("demand.cv", "posfloat"),
    ("action.store.levels", "levels"),
    ("action.store.lots_per_level", "posunits"),
    ("action.dc.max_cover", "posfloat"),
    ("initial.store_cover", "nonneg"),
    ("reward.scale", "posfloat"),
    ("reward.include_revenue", "bool"),
]


def _norm(text: str) -> str:
    """Output with wrapped lines joined and ``a: b`` path separators read as ``a.b``."""
    t = re.sub(r"\s+", " ", text)
    return re.sub(r"(\w): (?=[a-z_]+\b)", r"\1.", t)


def _field_cases() -> list[tuple[str, str, list[str]]]:
    out = []
    for path, kind in SCENARIO_FIELDS:
        for v in BAD[kind]:
            if path == "skus.count" and v == -1:
                continue  # same as 0 (kept: 1.5, True, ...)
            data = _set(TINY_LIST, path, v)
            if path.startswith("demand.mean") and isinstance(v, list):
                expect = ["demand.mean"]
            else:
                expect = [path]
            out.append((f"{path}={v!r}", yaml.safe_dump(data, sort_keys=False), expect))
    return out


def _text(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def _sub(text: str, old: str, new: str, count: int = -1) -> str:
    assert old in text, old  # a case that changes nothing would test nothing
    return text.replace(old, new, count)


def _structural_cases(tmp: Path) -> list[tuple[str, str | bytes, list[str]]]:
    """The attacks of issue 12 and their neighbours; ``{dir}`` in text is the case's folder."""
    base = _text(TINY)
    replay_dir = tmp / "replay_is_a_dir"
    replay_dir.mkdir(exist_ok=True)
    bad_csv = tmp / "latin1.csv"
    bad_csv.write_bytes(b"date,store,sku,units\n2024-01-01,store_0,sku_0,3\n2024-01-02,store_0,caf\xe9,1\n")
    nan_csv = tmp / "nan.csv"
    nan_csv.write_text("date,store,sku,units\n2024-01-01,store_0,sku_0,nan\n")
    short_csv = tmp / "short.csv"
    short_csv.write_text("date,store,sku,units\n2024-01-01,store_0\n")
    replay = lambda p: _set(TINY, "demand", {"model": "replay", "replay": {"path": str(p)}})  # noqa: E731
    laughs = "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['1'] * 9)}]\n" for i in range(9)
    )
    cases: list[tuple[str, str | bytes, list[str]]] = [
        ("non-utf8 bytes", base.encode() + b"# caf\xe9 \xff\xfe\n", ["not UTF-8", "line"]),
        (
            "non-utf8 in a value",
            _sub(base, "name: tiny", "name: caf\udce9", 1).encode("utf-8", "surrogateescape"),
            ["not UTF-8", "line 1, column 10 in name"],
        ),
        ("utf-16 file", base.encode("utf-16"), ["not UTF-8"]),
        ("100k nested [", "name: x\nskus: " + "[" * 100_000, ["nest"]),
        (
            "40 nested {",
            "name: x\nskus: " + "{a: " * 40 + "1" + "}" * 40 + "\n",
            ["nested deeper than", "skus.a.a"],
        ),
        ("alias bomb", base + laughs, ["expands to more than"]),
        ("recursive alias", base + "extra: &a [*a]\n", ["extra", "contains it"]),
        ("duplicate top key", base + "horizon: 40\n", ["horizon", "duplicate key"]),
        (
            "duplicate nested key",
            _sub(base, "  count: 3\n", "  count: 3\n  count: 4\n", 1),
            ["skus.count", "duplicate key"],
        ),
        ("horizon 1e12", _text(_set(TINY, "horizon", 10**12)), ["horizon"]),
        ("horizon 1e12 float", _sub(base, "horizon: 30", "horizon: 1.0e+12"), ["horizon"]),
        (
            "lead time 1e9",
            _text(_set(TINY_LIST, "network.dcs[0].lead_time", 10**9)),
            ["network.dcs[0].lead_time"],
        ),
        ("1e9 SKUs", _text(_set(PLAIN, "skus.count", 10**9)), ["skus.count"]),
        ("holding 1e308", _text(_set(TINY, "skus.holding_cost", 1e308)), ["skus.holding_cost"]),
        (
            "holding 1e308 string",
            _text(_set(TINY, "skus.holding_cost", "1e308")),
            ["skus.holding_cost"],
        ),
        ("lot size 1.5", _text(_set(TINY, "skus.lot_size", 1.5)), ["skus.lot_size", "whole number"]),
        (
            "inf storage",
            _sub(base, "storage_capacity: 400", "storage_capacity: .inf"),
            ["storage_capacity", "finite"],
        ),
        ("nan discount", _sub(base, "discount: 0.99", "discount: .nan"), ["discount", "finite number"]),
        (
            "levels true",
            _text(_set(TINY, "action.store.levels", True)),
            ["action.store.levels", "whole number"],
        ),
        ("replay path is a directory", _text(replay(replay_dir)), ["demand.replay.path", "directory"]),
        ("replay path missing", _text(replay(tmp / "nowhere.csv")), ["demand.replay.path", "no such"]),
        ("replay csv not utf-8", _text(replay(bad_csv)), ["demand.replay.path", "not UTF-8"]),
        ("replay csv nan units", _text(replay(nan_csv)), ["demand.replay.path", "line 2"]),
        ("replay csv short row", _text(replay(short_csv)), ["demand.replay.path", "line 2"]),
        (
            "memory: stores x skus",
            _text(_set(_set(PLAIN, "skus.count", 100_000), "network.stores[0].count", 100_000)),
            ["nodes x SKUs", "over the limit", "horizon, skus.count"],
        ),
        (
            "memory: lead time x skus",
            _text(_set(_set(PLAIN, "skus.count", 100_000), "network.stores[0].lead_time", 1000)),
            ["pipeline slots", "over the limit"],
        ),
        (
            "10^6 stores",
            _text(_set(TINY_LIST, "network.stores[0].count", 10**6)),
            ["network.stores[0].count"],
        ),
        (
            "negative binomial tail",
            _text(_set(_set(TINY, "demand.model", "negative_binomial"), "demand.dispersion", 1e-9)),
            ["demand", "sampling tables", "dispersion"],
        ),
        (
            "truncated normal tail",
            _text(_set(_set(TINY, "demand.model", "truncated_normal"), "demand.cv", 1e6)),
            ["demand", "sampling tables", "demand.cv"],
        ),
        ("mean demand 1e11", _text(_set(TINY, "demand.mean", 1e11)), ["demand", "largest mean demand"]),
        (
            "orders overflow int32",
            _text(
                _set(TINY, "action.store", {"mapping": "quantity", "levels": 256, "lots_per_level": 10**9})
            ),
            ["action.store"],
        ),
        (
            "65 promotions",
            _text(_set(TINY, "demand.promotions", [{"start": 0, "end": 2}] * 65)),
            ["demand.promotions"],
        ),
        (
            "lognormal draws overflow",
            _text(_set(TINY, "skus.unit_cost", {"lognormal": [1.0, 1000.0]})),
            ["skus.unit_cost"],
        ),
        (
            "supplier cap draws overflow",
            _text(
                _set(
                    TINY, "network.suppliers", [{"id": "supplier", "capacity": {"lognormal": [1.0, 1000.0]}}]
                )
            ),
            ["network.suppliers[0].capacity"],
        ),
        (
            "starting stock overflows int32",
            _text(_set(_set(TINY, "demand.mean", 1e6), "initial", {"store_cover": 10_000})),
            ["initial", "starting stock"],
        ),
        ("cover 1e12", _text(_set(TINY, "initial.dc_cover", 1e12)), ["initial.dc_cover"]),
        ("unknown key", base + "colour: red\n", ["colour", "unknown key"]),
        ("integer key", _sub(base, "  count: 3\n", "  count: 3\n  5: x\n", 1), ["skus.5", "not a string"]),
        ("null key", base + "null: x\n", ["null", "not a string"]),
        ("list as a key", base + "? [a, b]\n: 1\n", ["key must be a plain string"]),
        ("source key", base + "source: /etc/passwd\n", ["unknown key 'source'"]),
        ("quoted horizon", _sub(base, "horizon: 30", "horizon: '30'"), ["horizon", "whole number"]),
        ("discriminator unknown", base + "disruptions: [{type: meteor}]\n", ["disruptions[0]", "meteor"]),
        ("python tag", base + "x: !!python/object/apply:os.system [ls]\n", ["not valid YAML"]),
        ("two documents", base + "---\nname: y\n", ["not valid YAML"]),
        ("top level list", "- 1\n- 2\n", ["top level must be a mapping"]),
        ("empty file", "", ["top level must be a mapping"]),
        ("5000-digit horizon", _sub(base, "horizon: 30", "horizon: 1" + "0" * 5000), ["horizon"]),
        ("nul byte", base + "x: \x00\n", ["not valid YAML"]),
        ("tab indentation", "name: x\nskus:\n\tcount: 3\n", ["not valid YAML"]),
        ("oversized file", base + "#" + "x" * (1024 * 1024) + "\n", ["limit"]),
        (
            "shock nan multiplier",
            _text(_set(TINY, "demand.shocks", [{"start": 1, "multiplier": NAN}])),
            ["demand.shocks[0].multiplier", "finite"],
        ),
        (
            "lead time spike 1e6",
            _text(
                _set(TINY, "disruptions", [{"type": "lead_time_spike", "start": 0, "end": 5, "extra": 10**6}])
            ),
            ["disruptions[0].extra"],
        ),
        (
            "capacity cut inf",
            _text(_set(TINY, "disruptions", [{"type": "capacity_cut", "start": 0, "end": 5, "factor": INF}])),
            ["disruptions[0].factor"],
        ),
    ]
    return cases


def _write(tmp: Path, i: int, content: str | bytes) -> Path:
    p = tmp / f"case_{i:03d}.yaml"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def _invoke(args: list[str]) -> tuple[int, str, float]:
    t0 = time.process_time()
    res = runner.invoke(app, args)
    cpu = time.process_time() - t0
    out = res.output  # stdout and stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        out += "Traceback (in-process)\n" + "".join(traceback.format_exception(res.exception))
    return res.exit_code, out, cpu


def _check(label: str, code: int, out: str, cpu: float, expect: list[str]) -> None:
    assert "Traceback" not in out, f"{label}: traceback\n{out}"
    assert code == 2, f"{label}: exit {code}\n{out}"
    norm = _norm(out)
    for e in expect:
        assert e in norm or e in out, f"{label}: {e!r} not in the message\n{out}"
    assert cpu < CPU_LIMIT_S, f"{label}: {cpu:.1f} s"


@pytest.fixture(scope="module")
def scenario_corpus(tmp_path_factory) -> list[tuple[str, Path, list[str]]]:
    tmp = tmp_path_factory.mktemp("malformed_scenarios")
    cases = _field_cases() + _structural_cases(tmp)
    return [(label, _write(tmp, i, content), expect) for i, (label, content, expect) in enumerate(cases)]


def test_corpus__has_the_promised_size(scenario_corpus):
    assert len(scenario_corpus) >= 100
    assert len(_experiment_cases(Path("."))) >= 30


def test_corpus__scenarios_check_exits_2_with_the_field_path(scenario_corpus):
    slow = []
    for label, path, expect in scenario_corpus:
        code, out, cpu = _invoke(["scenarios", "--check", str(path)])
        _check(label, code, out, cpu, expect)
        slow.append((cpu, label))
    assert max(slow)[0] < CPU_LIMIT_S


def test_corpus__simulate_exits_2_on_a_subset(scenario_corpus):
    subset = scenario_corpus[::7] + [
        c for c in scenario_corpus if c[0] in STRUCTURAL_FOR_SUBPROCESS | {"horizon 1e12", "1e9 SKUs"}
    ]
    for label, path, expect in subset:
        code, out, cpu = _invoke(["simulate", str(path), "--episodes", "2"])
        _check(label, code, out, cpu, expect)


def test_corpus__a_valid_scenario_still_passes(tmp_path):
    """The generator's base file is valid: each case fails because of its one change."""
    p = tmp_path / "tiny_list.yaml"
    p.write_text(_text(TINY_LIST))
    code, out, _ = _invoke(["scenarios", "--check", str(p)])
    assert code == 0, out


def test_shipped_files_still_load():
    """Every shipped scenario (any folder depth) and experiment passes the bounded loaders."""
    from restock.training.experiment import load_experiment

    shipped = sorted((ROOT / "configs" / "scenarios").rglob("*.yaml"))
    assert len(shipped) >= 6
    for f in shipped:
        code, out, _ = _invoke(["scenarios", "--check", str(f)])
        assert code == 0, out
    for f in sorted((ROOT / "configs" / "experiments").rglob("*.yaml")):
        load_experiment(f)


STRUCTURAL_FOR_SUBPROCESS = {"non-utf8 bytes", "100k nested [", "alias bomb", "replay path is a directory"}


def test_corpus__worst_cases_as_real_processes(scenario_corpus):
    """A few through the installed `restock` entry point: exit 2, no traceback, bounded CPU."""
    exe = Path(sys.executable).parent / "restock"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "restock.cli"]
    picked = [c for c in scenario_corpus if c[0] in STRUCTURAL_FOR_SUBPROCESS]
    assert len(picked) == len(STRUCTURAL_FOR_SUBPROCESS)
    for label, path, expect in picked:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            [*cmd, "scenarios", "--check", str(path)],
            capture_output=True,
            text=True,
            timeout=120,  # wall clock on a shared machine; the bound that matters is CPU below
            env={**os.environ, "COLUMNS": "200"},
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        _check(label, proc.returncode, proc.stdout + proc.stderr, cpu, expect)


# --------------------------------------------------------------------------------------------------
# hypothesis: random single-field mutations of the valid base file


_paths = st.sampled_from(SCENARIO_FIELDS)


@st.composite
def _mutation(draw):
    path, kind = draw(_paths)
    return "field", path, draw(st.sampled_from(BAD[kind]))


@st.composite
def _unknown_key(draw):
    section = draw(st.sampled_from(["", "skus", "demand", "action.store", "initial", "reward", "network"]))
    return "key", section, draw(st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True))


@st.composite
def _junk(draw):
    return "bytes", "", draw(st.binary(min_size=1, max_size=64))


@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.one_of(_mutation(), _unknown_key(), _junk()))
def test_hypothesis__mutated_scenarios_exit_2(tmp_path, case):
    kind, where, value = case
    if kind == "bytes":  # junk appended to a valid file: bad UTF-8, bad YAML or a schema error
        content = _text(TINY).encode() + b"\n" + value
        try:
            if yaml.safe_load(content.decode("utf-8")) == TINY:
                return  # the bytes were whitespace or a comment: still the valid file
        except Exception:
            pass
        expect: list[str] = [str(tmp_path)]
    elif kind == "key":
        if value in _known_keys(where):
            return
        content = _text(_set(TINY, f"{where}.{value}" if where else value, 1)).encode()
        expect = [f"unknown key '{value}'"] + ([where] if where else [])
    else:
        content = _text(_set(TINY_LIST, where, value)).encode()
        expect = [where]
    p = tmp_path / "case.yaml"
    p.write_bytes(content)
    code, out, cpu = _invoke(["scenarios", "--check", str(p)])
    _check(repr(case)[:80], code, out, cpu, expect)


def _known_keys(section: str) -> set[str]:
    from restock.envs import config as C

    model = {
        "": C.ScenarioConfig,
        "skus": C.SkusSpec,
        "demand": C.DemandSpec,
        "action.store": C.ActionSpec,
        "initial": C.InitialSpec,
        "reward": C.RewardSpec,
        "network": C.NetworkSpec,
    }[section]
    return set(model.model_fields)


# --------------------------------------------------------------------------------------------------
# experiment files through `restock train --config`

EXPERIMENT_FIELDS = [
    ("ppo.learning_rate", [NAN, INF, 0, -1e-3, True, 1e308, "fast"]),
    ("ppo.gamma", [NAN, 0, 1.5, True]),
    ("ppo.n_epochs", [1.5, True, 0, NAN]),
    ("ppo.minibatch_size", [2.5, -1, "big"]),
    ("ppo.target_kl", [NAN, INF]),
    ("num_envs", [True, 0, 10**6, 1.5]),
    ("seed", [1.5, True, NAN]),
    ("steps", [0, 1.5, True, INF]),
    ("minutes", [INF, NAN, -1, True]),
    ("bc_epochs", [-1, 1.5, True]),
    ("shield.penalty", [NAN, -1.0, True]),
    ("rllib.num_env_runners", [-1, 1.5, True, 10**6]),
    ("network.hidden", [[64, 0], [64, 1.5], [True], [10**9]]),
    ("trainer", ["tensorflow", 3]),
    ("roles", [["warehouse"], "store", []]),
    ("keep_best", [0, "yes"]),
    ("shield.enabled", [1]),
    ("rllib.num_learners", [True, 1.5]),
    ("rllib.num_gpus_per_learner", [NAN, True]),
]


def _experiment_cases(tmp: Path) -> list[tuple[str, str | bytes, list[str]]]:
    cases: list[tuple[str, str | bytes, list[str]]] = []
    for path, values in EXPERIMENT_FIELDS:
        for v in values:
            cases.append((f"{path}={v!r}", _text(_set({"name": "bad"}, path, v)), [path]))
    for section, key in [
        ("ppo", "learning_rat"),
        ("network", "hiden"),
        ("", "learning_rate"),
        ("shield", "on"),
    ]:
        data = _set({"name": "bad"}, f"{section}.{key}" if section else key, 1)
        msg = f"unknown key '{key}'"
        cases.append((f"unknown {section}.{key}", _text(data), [f"{section}: {msg}" if section else msg]))
    cases += [
        ("exp non-utf8", b"name: caf\xe9\n", ["not UTF-8"]),
        ("exp nested", "ppo: " + "[" * 100_000, ["nest"]),
        (
            "exp alias bomb",
            "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1'}]\n" for i in range(9)),
            ["expands to more than"],
        ),
        ("exp duplicate key", "ppo:\n  gamma: 0.9\n  gamma: 0.5\n", ["ppo.gamma", "duplicate key"]),
        ("exp top-level list", "- 1\n", ["top level must be a mapping"]),
    ]
    return cases


def test_corpus__experiment_files_exit_2_with_the_field_path(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what `restock train` sets; restored afterwards
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    cases = _experiment_cases(tmp_path)
    assert len(cases) >= 30
    try:
        for i, (label, content, expect) in enumerate(cases):
            p = _write(tmp_path, i, content)
            code, out, cpu = _invoke(["train", "tiny", "--config", str(p)])
            _check(label, code, out, cpu, expect)
        d = tmp_path / "a_directory.yaml"
        d.mkdir()
        code, out, cpu = _invoke(["train", "tiny", "--config", str(d)])
        _check("experiment path is a directory", code, out, cpu, ["is a directory"])
    finally:
        torch.set_num_threads(threads)


def test_nan_discount_message_says_what_is_wrong():
    from restock.envs.config import ConfigError, load_scenario

    with pytest.raises(ConfigError) as ei:
        load_scenario(_set(TINY, "discount", NAN))
    msg = str(ei.value)
    assert "finite" in msg and "<= 1" not in msg


def test_integer_fields_are_not_rounded():
    from restock.envs.config import ConfigError, load_scenario

    for path, v in [
        ("skus.lot_size", 1.5),
        ("skus.moq", 2.5),
        ("action.store.levels", True),
        ("horizon", 30.5),
    ]:
        with pytest.raises(ConfigError, match=re.escape(path.split(".")[-1])):
            load_scenario(_set(TINY, path, v))
    cfg = load_scenario(_set(TINY, "skus.lot_size", 2.0))  # a whole number written as a float is fine
    assert cfg.skus.lot_size == 2 and isinstance(cfg.skus.lot_size, int)


def test_memory_refusal_names_the_product():
    from restock.envs.config import ConfigError, load_scenario

    with pytest.raises(ConfigError) as ei:
        load_scenario(_set(_set(PLAIN, "skus.count", 100_000), "network.stores[0].count", 100_000))
    msg = str(ei.value)
    assert re.search(r"nodes x SKUs .*= 100,001 x 100,000", msg), msg  # 1 DC + 100,000 stores
    assert re.search(r"\d(\.\d)? (TiB|PiB|GiB)", msg)


def test_finite_products_for_the_largest_allowed_costs():
    """Costs at the magnitude limit keep every KPI finite (1e308 gave total_cost nan)."""
    from restock.agents.heuristics import RandomPolicy
    from restock.envs.compile import compile_scenario
    from restock.envs.config import MAX_MAGNITUDE, load_scenario
    from restock.eval.kpis import episode_kpis, summarise
    from restock.eval.rollout import rollout

    cfg = load_scenario(_set(_set(TINY, "skus.holding_cost", MAX_MAGNITUDE), "horizon", 5))
    c = compile_scenario(cfg)
    s = summarise(episode_kpis(rollout(c, RandomPolicy(0), episodes=2, seed=0), c))
    assert math.isfinite(s["total_cost"]["mean"]) and s["total_cost"]["mean"] > 0


def test_episode_counts_are_bounded():
    for args in (["simulate", "tiny"], ["eval", "tiny", "--policies", "zero"]):
        code, out, cpu = _invoke([*args, "--episodes", str(10**9)])
        assert code == 2 and "Traceback" not in out and "100000" in out.replace(",", ""), out
        assert cpu < CPU_LIMIT_S
