"""The in-process decision path: the same numbers as policy + shield in the simulator, idempotency,
constraint data, the anomaly guard and the model fallback."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.learned import load_learned_policy
from restock.agents.records import verify_chain
from restock.agents.shield import Shield
from restock.serving.engine import anomalous
from restock.serving.schema import RequestInvalid, request_from_state
from restock.serving.service import Conflict, DecisionService
from serving_helpers import simulate


def reference(env, policy):
    """What the simulator executes for every node at the env's current state: policy, then shield."""
    prop = policy.propose(env).qty
    res = Shield(env.compiled).decide(env, prop)
    return res.proposed.copy(), res.executed.copy()


def orders(d, sku_names):
    return np.asarray([d.orders[s] for s in sku_names], np.int64)


def test_decision__heuristic_equals_simulator_policy_plus_shield(default_heuristic_artifact, registry_of):
    svc = DecisionService(registry_of(default_heuristic_artifact))
    pol = JointPolicy(make_policy("base_stock", {"store": {"z": 0.3}, "dc": {"z": 0.5}}))
    env = simulate("default", pol, periods=0)
    checked = 0
    for t in range(12):
        prop, exe = reference(env, pol)
        if t in (0, 5, 11):
            for n in (0, 1, 7):  # the DC and two stores
                d = svc.decide(request_from_state(env.compiled, env.state, 0, n, f"h-{t}-{n}"))
                np.testing.assert_array_equal(orders(d, env.compiled.sku_names), exe[0, n])
                assert d.record["proposed"] == prop[0, n].tolist()
                assert d.data["policy"]["id"] == "base_stock" and d.data["route"] == "champion"
                checked += 1
        env.step_qty(pol.propose(env).qty)
    assert checked == 9
    assert svc.store.verify()["ok"]
    svc.close()


def test_decision__exported_model_equals_torch_policy_plus_shield(tiny_run, tiny_artifact, registry_of):
    svc = DecisionService(registry_of(tiny_artifact))
    c = svc.compiled
    pol = load_learned_policy(tiny_run, c)
    env = simulate("tiny", pol, periods=0, seed=8)
    for t in range(20):
        prop, exe = reference(env, pol)
        for n in range(c.N):
            d = svc.decide(request_from_state(c, env.state, 0, n, f"m-{t}-{n}"))
            np.testing.assert_array_equal(orders(d, c.sku_names), exe[0, n])
            assert d.record["proposed"] == prop[0, n].tolist()
            assert d.data["policy"]["kind"] == "onnx" and 0.0 < d.record["confidence"] <= 1.0
        env.step_qty(pol.propose(env).qty)
    svc.close()


def test_decision__batch_equals_one_by_one(default_heuristic_artifact, registry_of):
    svc = DecisionService(registry_of(default_heuristic_artifact))
    pol = JointPolicy(make_policy("base_stock", {}))
    env = simulate("default", pol, periods=4)
    reqs = []
    for t in range(3):
        for n in range(env.compiled.N):
            reqs.append(request_from_state(env.compiled, env.state, 0, n, f"b-{t}-{n}"))
        env.step_qty(pol.propose(env).qty)
    many = svc.decide_many(reqs)
    for r, d in zip(reqs, many, strict=True):
        one = svc.decide({**r, "request_id": "single-" + r["request_id"]})
        assert one.orders == d.orders and one.record["proposed"] == d.record["proposed"]
    assert svc.store.verify()["ok"] and svc.store.count() == 2 * len(reqs)
    svc.close()


def test_decision__request_id_is_idempotent(tiny_heuristic_artifact, registry_of):
    svc = DecisionService(registry_of(tiny_heuristic_artifact))
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=3)
    req = request_from_state(env.compiled, env.state, 0, 1, "same")
    a = svc.decide(req)
    b = svc.decide(copy.deepcopy(req))
    assert not a.replayed and b.replayed and a.response == b.response
    assert svc.store.count() == 1
    other = copy.deepcopy(req)
    other["on_hand"][0] += 1
    with pytest.raises(Conflict, match="different request"):
        svc.decide(other)
    dup = svc.decide_many([{**req, "request_id": "x"}, {**req, "request_id": "x"}])
    assert dup[0].response == dup[1].response and svc.store.count() == 2
    svc.close()


def test_decision__storage_capacity_from_the_request_binds(default_heuristic_artifact, registry_of):
    svc = DecisionService(registry_of(default_heuristic_artifact))
    env = simulate("default", JointPolicy(make_policy("base_stock", {})), periods=5)
    c = env.compiled
    req = request_from_state(c, env.state, 0, 3, "cap-free")
    free = svc.decide(req)
    vol = float(orders(free, c.sku_names) @ c.params.volume)
    committed = float(
        (env.state.on_hand[0, 3] + env.state.transit[0, 3] + env.state.owed[0, 3]).astype(float)
        @ c.params.volume
    )
    tight = svc.decide(
        {**req, "request_id": "cap-tight", "constraints": {"storage_capacity": committed + vol / 2}}
    )
    q = orders(tight, c.sku_names)
    assert q @ c.params.volume <= vol / 2 + 1e-6 and (q <= orders(free, c.sku_names)).all()
    assert "storage" in tight.record["binding"]
    # the scenario's capacity is restored afterwards: the same request decides as before
    again = svc.decide({**req, "request_id": "cap-again"})
    assert again.orders == free.orders
    with pytest.raises(RequestInvalid, match="no budget constraint"):
        svc.decide({**req, "request_id": "b", "constraints": {"budget": 10.0}})
    svc.close()


def test_decision__parent_availability_is_required_where_it_binds(tmp_path, registry_of):
    from restock.envs.compile import compile_scenario
    from restock.envs.config import load_scenario
    from restock.serving.artifact import export_heuristic

    cfg = load_scenario("tiny").model_dump(mode="json")
    cfg["network"]["dcs"][0]["unmet"] = "lost"  # the DC cannot backlog: its stock bounds store orders
    c = compile_scenario(load_scenario(cfg))
    export_heuristic("base_stock", {"store": {"z": 2.0}}, c, tmp_path / "a")
    svc = DecisionService(registry_of(tmp_path / "a"))
    env = simulate(c, JointPolicy(make_policy("base_stock", {"store": {"z": 2.0}})), periods=4)
    req = request_from_state(c, env.state, 0, 1, "pa")
    assert "parent_available" in req["constraints"]
    no = {k: v for k, v in req.items() if k != "constraints"}
    with pytest.raises(RequestInvalid) as exc:
        svc.decide(no)
    assert exc.value.errors[0]["loc"] == ["constraints", "parent_available"]
    req["constraints"]["parent_available"] = [1, 0, 0]
    d = svc.decide(req)
    q = orders(d, c.sku_names)
    assert q[0] <= 1 and q[1] == 0 and q[2] == 0
    assert "dc_availability" in d.record["binding"] or q.sum() == 0
    with pytest.raises(RequestInvalid, match="not bounded"):
        svc.decide(
            {**request_from_state(c, env.state, 0, 0, "dcpa"), "constraints": {"parent_available": [1, 1, 1]}}
        )
    svc.close()


def test_decision__demand_history_feeds_the_anomaly_guard(tiny_heuristic_artifact, registry_of):
    svc = DecisionService(registry_of(tiny_heuristic_artifact))
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=3)
    base = request_from_state(env.compiled, env.state, 0, 1, "calm", history=[[8, 3, 1]] * 10)
    base["last_demand"] = [9, 3, 2]
    calm = svc.decide(base)
    assert not calm.record["escalated"]
    spike = svc.decide({**base, "request_id": "spike", "last_demand": [400, 3, 2]})
    assert spike.record["escalated"] and spike.record["escalation_reasons"] == ["demand_anomaly"]
    assert not anomalous(None, np.array([400]), svc.engine.anomaly)
    svc.close()


def test_decision__model_failure_falls_back_to_the_baseline(tiny_artifact, registry_of, monkeypatch):
    from restock.serving.onnx_policy import OnnxPolicy, PolicyError

    svc = DecisionService(registry_of(tiny_artifact))
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {"store": {"z": 0.5}})), periods=3)

    def broken(self, obs, mask):
        raise PolicyError("boom")

    monkeypatch.setattr(OnnxPolicy, "logits", broken)
    d = svc.decide(request_from_state(env.compiled, env.state, 0, 1, "fb"))
    assert d.data["policy"]["kind"] == "fallback" and d.record["fallback"] == "fallback_policy"
    assert d.record["policy_id"] == "base_stock"
    pol = JointPolicy(make_policy("base_stock", {"store": {"z": 0.5}, "dc": {"z": 0.0}}))
    _, exe = reference(env, pol)
    np.testing.assert_array_equal(orders(d, env.compiled.sku_names), exe[0, 1])
    assert 'restock_fallbacks_total{kind="fallback_policy",role="store"} 1' in svc.metrics.render()
    svc.close()


def test_decision__records_chain_and_carry_versions(tiny_artifact, registry_of):
    from restock.agents.records import DecisionRecord

    svc = DecisionService(registry_of(tiny_artifact))
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=2)
    ds = [svc.decide(request_from_state(env.compiled, env.state, 0, n, f"r{n}")) for n in range(3)]
    recs = [DecisionRecord.from_json(__import__("json").dumps(d.record)) for d in ds]
    assert verify_chain(recs)
    assert (
        recs[1].policy_version.startswith("v1+")
        and recs[1].shield_config_hash == svc.engine.shield_config_hash
    )
    assert recs[1].obs_digest and len(recs[1].obs_digest) == 64 and recs[0].role == "dc" and recs[1].node == 1
    # the serving shield is configured as training's default shield: same configuration hash
    assert svc.engine.shield_config_hash == Shield(env.compiled).config_hash
    svc.close()


def test_canonical_request_json_is_pydantics():
    """The request text that is hashed and stored is `model_dump_json`'s, byte for byte (orjson writes
    it faster): unicode and DEL in names, constraint floats over many magnitudes, optional fields."""
    from restock.serving.schema import DecisionRequest
    from restock.serving.service import canonical_json

    rng = np.random.default_rng(5)
    for i in range(200):
        body = {
            "request_id": f"c-{i}",
            "node": ["store_0", "st\u00f6re\x7f", "dc_0"][i % 3],
            "period": int(rng.integers(0, 50)),
            "skus": ["a", "b\u00e9", "c"],
            "on_hand": rng.integers(0, 10**8, 3).tolist(),
            "pipeline": [rng.integers(0, 9, 3).tolist()] * int(rng.integers(0, 3)),
            "last_demand": [1, 2, 3],
            "last_order": [0, 0, 0],
        }
        if i % 2:
            body["constraints"] = {
                "budget": float(10 ** rng.uniform(-8, 14)),
                "supplier_capacity": [float(10 ** rng.uniform(-6, 9)), 0.0, 1e-5],
            }
        if i % 5 == 0:
            body["demand_history"] = [[1, 2, 3], [4, 5, 6]]
        req = DecisionRequest.model_validate(body)
        assert canonical_json(req) == req.model_dump_json()


def test_decision__sku_order_of_the_request_does_not_matter(default_heuristic_artifact, registry_of):
    """Per-SKU lists may come in any SKU order (``skus`` names it): the decision is the one for the
    scenario order, and range errors name the list, row and position as sent."""
    svc = DecisionService(registry_of(default_heuristic_artifact))
    env = simulate("default", JointPolicy(make_policy("base_stock", {})), periods=6)
    c = env.compiled
    req = request_from_state(
        c, env.state, 0, 4, "order-a", history=env.state.last_demand[0, 4][None].repeat(3, 0)
    )
    rng = np.random.default_rng(1)
    perm = rng.permutation(c.K)

    def shuffled(v):
        return [v[i] for i in perm]

    other = {k: v for k, v in req.items()}
    other["request_id"] = "order-b"
    for key in (
        "skus",
        "on_hand",
        "backlog",
        "owed",
        "last_demand",
        "last_order",
        "last_shipped",
        "last_arrived",
    ):
        other[key] = shuffled(req[key])
    other["pipeline"] = [shuffled(r) for r in req["pipeline"]]
    other["demand_history"] = [shuffled(r) for r in req["demand_history"]]
    if "constraints" in req:
        other["constraints"] = {"parent_available": shuffled(req["constraints"]["parent_available"])}
    a, b = svc.decide(req), svc.decide(other)
    assert a.orders == b.orders and a.record["executed"] == b.record["executed"]
    assert sum(a.orders.values()) > 0
    bad = copy.deepcopy(other)
    bad["request_id"] = "order-c"
    bad["demand_history"][1][7] = -3
    bad["last_order"][2] = 10**9
    with pytest.raises(RequestInvalid) as exc:
        svc.decide(bad)
    locs = sorted(e["loc"] for e in exc.value.errors)
    assert locs == [["demand_history", 1, 7], ["last_order", 2]]
    # beyond int64, and negative debts: only the range errors, not the scenario rules on made-up values
    huge = copy.deepcopy(req)
    huge["request_id"] = "order-d"
    huge["last_order"][0] = 2**70
    huge["owed"][3] = -1
    with pytest.raises(RequestInvalid) as exc:
        svc.decide(huge)
    assert sorted(e["loc"] for e in exc.value.errors) == [["last_order", 0], ["owed", 3]]
    assert {e["type"] for e in exc.value.errors} == {"less_than_equal", "greater_than_equal"}
    svc.close()


def test_decision__a_batch_leaves_nothing_behind_for_the_next(tiny_heuristic_artifact, registry_of, tmp_path):
    """The engine zeroes only the rows the previous batch wrote: a batch decided after another gives
    what a fresh service gives. The first batch's DC owes its children (written into a child's row,
    which the second batch's DC request, owing nothing, does not write): a stale row would lower the
    DC's inventory position and change its order."""
    env = simulate("tiny", JointPolicy(make_policy("base_stock", {})), periods=5)
    c = env.compiled
    dc = request_from_state(c, env.state, 0, 0, "first-dc")
    dc["backlog"] = [40] * c.K
    first = [dc, request_from_state(c, env.state, 0, 1, "first-1")]
    second = [
        request_from_state(c, env.state, 0, 0, "second-dc"),
        request_from_state(c, env.state, 0, 2, "second-2"),
    ]
    second[0]["backlog"] = [0] * c.K
    used = DecisionService(registry_of(tiny_heuristic_artifact), audit=f"sqlite:///{tmp_path / 'a.db'}")
    fresh = DecisionService(registry_of(tiny_heuristic_artifact), audit=f"sqlite:///{tmp_path / 'b.db'}")
    owing = used.decide_many(first)[0]
    got = used.decide_many(second)
    want = fresh.decide_many(second)
    assert owing.orders != want[0].orders  # what the DC owes changes its order: the test can tell
    for g, w in zip(got, want, strict=True):
        assert g.orders == w.orders and g.record["proposed"] == w.record["proposed"]
        assert g.record["slack"] == w.record["slack"] and g.record["binding"] == w.record["binding"]
    used.close()
    fresh.close()
