"""Decision records: one per executed decision, hash-chained, tamper-evident, in memory and on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from restock.agents.base import JointPolicy
from restock.agents.records import (
    GENESIS,
    DecisionRecord,
    JsonlSink,
    MemorySink,
    find_break,
    verify_chain,
)
from restock.agents.shield import Shield
from restock.envs import ArrayEnv
from restock.envs import kernel as kn


class Named:
    output = "quantities"

    def __init__(self, name, version):
        self.name, self.version = name, version

    def act(self, ctx, nodes):  # pragma: no cover - only named in records here
        raise NotImplementedError


def naive(env, cover=6.0):
    ip = np.empty(env.state.on_hand.shape, np.int64)
    kn.inventory_positions(env.params, env.state, env.work, ip)
    t = min(env.t, env.horizon)
    return np.maximum(np.ceil(cover * env.params.mean[None] * env.params.season[t] - ip), 0).astype(np.int64)


def run(sink, periods=6, E=2, confidence=True):
    """Step `constrained` under a recording shield; returns (shield, env, per-period (obs, proposed, executed))."""
    pol = JointPolicy({"store": Named("store_net", "7"), "dc": Named("dc_net", "3")})
    sh = Shield(records=sink, policy=pol, clock=lambda: 1_700_000_000.0, run_id="t")
    env = ArrayEnv("constrained", num_envs=E, shield=sh)
    env.reset(paths=np.arange(E))
    seen = []
    for t in range(periods):
        q = naive(env)
        if t == 2:
            q = q.astype(float)
            q[0, 1, 0] = np.nan  # garbage from store_0 of env 0
        if confidence:
            sh.note(confidence=np.full((E, env.N), 0.25))
        obs = env.obs.copy()
        *_, info = _step(env, sh, q)
        seen.append((obs, info["executed"].copy()))
    return sh, env, seen


def _step(env, sh, q):
    # through the hook like the env does, but allowing NaN (ArrayEnv.step_qty rejects it up front)
    ex, sinfo = sh(env, q)
    out = env._step(env.params, env.state, env.work, ex, env.demand.get(env.t), env.out)
    env._observe(env.params, env.state, env.work, env.obs, env.mask, env.ub)
    return out, None, None, None, None, {**sinfo, "executed": ex}


def test_records__one_per_decision_with_the_facts_and_a_verified_chain():
    sh, env, seen = run(True)
    recs = list(sh.sink.records())
    E, N = 2, env.N
    assert len(recs) == len(sh.sink) == len(seen) * E * N
    assert verify_chain(recs) and sh.sink.verify()
    assert recs[0].prev_hash == GENESIS
    for i, r in enumerate(recs):
        step, rest = divmod(i, E * N)
        e, n = divmod(rest, N)
        obs, executed = seen[step]
        assert (r.period, r.env, r.node, r.agent_id) == (step, e, n, env.agent_ids[n])
        assert r.executed == executed[e, n].tolist()
        assert all(x <= p for x, p in zip(r.executed, r.proposed, strict=True))
        assert r.obs_digest == hashlib.sha256(obs[e, n].tobytes()).hexdigest()
        assert (r.policy_id, r.policy_version) == (("dc_net", "3") if n == 0 else ("store_net", "7"))
        assert r.confidence == 0.25
        assert r.shield_config_hash == sh.config_hash and len(r.shield_config_hash) == 64
        assert r.timestamp == "2023-11-14T22:13:20.000000Z"
        assert r.request_id == f"t-{step}-{e}-{n}"
        assert r.rationale
        if r.interventions:
            it = r.interventions[0]
            name = env.compiled.sku_names[it["sku"]]
            assert r.rationale.startswith(f"{name}: proposed {it['proposed']} -> {it['executed']} (")
    bad = [r for r in recs if r.escalated]
    assert [(r.period, r.env, r.node) for r in bad] == [(2, 0, 1)]
    assert bad[0].escalation_reasons == ["sanitised_input"] and bad[0].sanitised == [0]
    assert "escalated: sanitised_input" in bad[0].rationale
    # storage binds at the stores for this naive policy, and says how much room there was
    store = recs[N + 1]
    assert "storage" in store.binding and "storage headroom" in store.rationale


def test_records__tampering_is_detected():
    sh, _, _ = run(True, periods=3)
    recs = list(sh.sink.records())
    assert find_break(recs) is None
    edited = [dataclasses.replace(r) for r in recs]
    edited[7].executed = [x + 1 for x in edited[7].executed]
    assert find_break(edited) == 7
    assert find_break(recs[:5] + recs[6:]) == 5  # a dropped record
    assert find_break([recs[1], recs[0]] + recs[2:]) == 0  # reordered
    forged = dataclasses.replace(recs[7], executed=[0] * len(recs[7].executed))
    forged.hash = forged.compute_hash()  # rehashing one record does not help: the next link breaks
    assert find_break(recs[:7] + [forged] + recs[8:]) == 8
    # the columnar store is chained too
    sh.sink.batches[1].executed[0, 0, 0] += 4
    assert not sh.sink.verify()


@settings(max_examples=200, derandomize=True, deadline=None)
@given(data=st.data())
def test_records__any_single_edit_breaks_the_chain(data):
    recs = _RECS
    i = data.draw(st.integers(0, len(recs) - 1))
    field = data.draw(
        st.sampled_from(["executed", "proposed", "rationale", "period", "policy_id", "slack", "escalated"])
    )
    r = dataclasses.replace(recs[i])
    old = getattr(r, field)
    if isinstance(old, list):
        new = [*old[:-1], old[-1] + 1] if old else [1]
    elif isinstance(old, bool):
        new = not old
    elif isinstance(old, int):
        new = old + data.draw(st.integers(1, 5))
    elif isinstance(old, dict):
        new = {**old, "storage": 12345.0}
    else:
        new = old + "!"
    setattr(r, field, new)
    assert find_break(recs[:i] + [r] + recs[i + 1 :]) == i


_RECS = list(run(True, periods=2, E=1)[0].sink.records())


def test_records__jsonl_sink_round_trips_and_continues_the_chain(tmp_path):
    path = tmp_path / "audit" / "decisions.jsonl"
    mem, _, _ = run(True, periods=3)
    with JsonlSink(path, fsync=True) as sink:
        run(sink, periods=3)
        on_disk = list(sink.records())
    in_mem = list(mem.sink.records())
    assert [r.hash for r in on_disk] == [r.hash for r in in_mem]  # same decisions, same chain
    assert on_disk[5] == in_mem[5]
    with JsonlSink(path) as sink:  # reopen: the chain continues from the last line
        assert sink.last_hash == on_disk[-1].hash
        run(sink, periods=2)
        everything = list(sink.records())
    assert len(everything) == len(on_disk) + 2 * 2 * 5
    assert verify_chain(everything)
    lines = path.read_text().splitlines()
    assert len(lines) == len(everything) and json.loads(lines[0])["schema"] == "restock.decision/1"


def test_records__schema_json_round_trip():
    r = _RECS[3]
    back = DecisionRecord.from_json(r.to_json())
    assert back == r and back.compute_hash() == r.hash
    assert "hash" not in json.loads(r.canonical())
    with pytest.raises(ValueError, match="unknown fields"):
        DecisionRecord.from_json(json.dumps({**json.loads(r.to_json()), "extra": 1}))


def test_records__memory_sink_is_columnar_until_asked():
    sink = MemorySink()
    sh, env, _ = run(sink, periods=4, confidence=False)
    assert len(sink.batches) == 4 and sink.batches[0].executed.shape == (2, env.N, env.K)
    recs = list(sink.records())
    assert all(r.confidence is None for r in recs)
    sink.clear()
    assert len(sink) == 0 and list(sink.records()) == []


def test_canonical_bytes_is_json_dumps_exactly():
    """`canonical_bytes` (orjson where it writes the same bytes) equals the sorted compact json text on
    random record payloads and on every case it must hand to json: non-ASCII and DEL in strings,
    exponent-range floats, ints beyond 64 bits, ints in float fields; NaN is refused as json refuses it."""
    import json

    from restock.agents.records import canonical_bytes

    def ref(d):
        return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    rng = np.random.default_rng(7)
    for _ in range(300):
        d = {
            "request_id": f"r-{int(rng.integers(1e9))}",
            "proposed": rng.integers(0, 10 ** int(rng.integers(1, 9)), 20).tolist(),
            "interventions": [
                {"sku": int(k), "proposed": 3, "executed": 1, "constraints": ["budget"]} for k in range(3)
            ],
            "slack": {
                "storage": float(
                    rng.choice([0.0, -0.0, 1e-5, 1.5e-4, 3.25, 1e15, 2e16, -7.5]) * rng.random()
                ),
                "budget": None,
                "lane": float(10 ** rng.uniform(-6, 18)),
            },
            "confidence": None if rng.random() < 0.2 else float(10 ** rng.uniform(-6, 1)),
            "escalated": bool(rng.random() < 0.5),
            "binding": ["lot_moq"],
        }
        assert canonical_bytes(d) == ref(d)
    edge = [
        {"rationale": "trimmed \u2013 budget", "slack": {}},
        {"agent_id": "store\x7f", "confidence": 0.5},
        {"agent_id": 'tab\tquote"back\\slash\n', "confidence": 0.5},
        {"proposed": [2**64, 1]},
        {"slack": {"storage": 3}, "confidence": 1e-5},
        {"confidence": 1e16, "slack": None},
        {"confidence": -0.0},
        {"period": 1e-07, "confidence": 0.5},  # a float outside the screened fields
        {"env": 3.0, "slack": {"lane": 2.5}},
    ]
    for d in edge:
        assert canonical_bytes(d) == ref(d)
    with pytest.raises(ValueError):
        canonical_bytes({"confidence": float("nan")})
    with pytest.raises(ValueError):
        canonical_bytes({"slack": {"storage": float("inf")}})
    with pytest.raises(ValueError):
        canonical_bytes({"fallback": float("nan")})  # not screened, still refused as json refuses it


def test_from_json_refuses_non_finite_numbers_so_they_cannot_pass_as_null():
    """orjson writes NaN as null: stored text edited from null to NaN (or Infinity, or 1e999) must not
    read back as a record whose hash still matches."""
    sink = MemorySink()
    run(sink, periods=2)
    rec = next(iter(sink.records()))
    text = rec.to_json()
    assert DecisionRecord.from_json(text).compute_hash() == rec.hash
    assert '"obs_digest":' in text or '"fallback":null' in text
    for bad in ("NaN", "Infinity", "-Infinity", "1e999"):
        tampered = text.replace('"fallback":null', '"fallback":' + bad, 1)
        assert tampered != text
        with pytest.raises(ValueError):
            DecisionRecord.from_json(tampered)
