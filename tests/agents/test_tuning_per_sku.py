"""Per-SKU knobs (``<knob>_by_sku``) and the tuner's per-SKU stage (`restock tune --per-sku`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.heuristics import SKU_SUFFIX, _per_node, check_sku_knobs
from restock.agents.tuning import (
    Objective,
    evaluate_candidates,
    evaluate_sku_candidates,
    tune,
)
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.eval.evaluate import evaluate, parse_policies
from typer.testing import CliRunner

KNOBS = {"store": {"z": -0.5, "q": 0.8}, "dc": {"z": 1.0, "q": 1.2}}


@pytest.fixture(scope="module")
def tiny():
    return compile_scenario(load_scenario("tiny"))


def _rollout(c, knobs, paths=8, seed=5):
    """Orders [T, E, N, K] and total cost [E] of s_S with ``knobs`` on ``paths`` common paths."""
    env = ArrayEnv(c, num_envs=paths, seed=seed)
    env.reset(paths=np.arange(paths, dtype=np.int64))
    joint = JointPolicy(make_policy("s_S", knobs))
    joint.bind(c)
    orders = []
    for _ in range(c.horizon):
        q = joint.propose(env).qty
        orders.append(q.copy())
        env.step_qty(q)
    return np.array(orders), env.episode_cost.sum(axis=(1, 2))


def _with_sku(knobs, unit, key, values):
    out = {u: dict(d) for u, d in knobs.items()}
    out[unit][key + SKU_SUFFIX] = list(values)
    return out


def test_per_sku_knob_equal_to_the_role_knob_changes_nothing(tiny):
    K = tiny.K
    same = _with_sku(_with_sku(KNOBS, "store", "z", [-0.5] * K), "dc", "q", [1.2] * K)
    o1, c1 = _rollout(tiny, KNOBS)
    o2, c2 = _rollout(tiny, same)
    assert np.array_equal(o1, o2) and np.array_equal(c1, c2)


def test_per_sku_knob_moves_only_its_sku_first(tiny):
    K = tiny.K
    z = [-0.5] * K
    z[0] = 2.5  # a much higher reorder point for SKU 0 at the stores
    o1, _ = _rollout(tiny, KNOBS)
    o2, _ = _rollout(tiny, _with_sku(KNOBS, "store", "z", z))
    stores = tiny.M
    # period 0: only SKU 0's store orders change (later periods may couple through the DC's stock)
    assert not np.array_equal(o1[0, :, stores:, 0], o2[0, :, stores:, 0])
    assert np.array_equal(o1[0, :, :, 1:], o2[0, :, :, 1:])
    assert o2[0, :, stores:, 0].sum() >= o1[0, :, stores:, 0].sum()


def test_per_node_precedence_and_shapes(tiny):
    K, N = tiny.K, tiny.N
    store_id = tiny.agent_ids[tiny.M]
    knobs = {"store": {"z": 1.0, "z_by_sku": [float(k) for k in range(K)]}, store_id: {"z": 9.0}}
    out = _per_node(tiny, knobs, "z", 0.0, 2)
    assert out.shape == (2, N, K)
    assert np.all(out[:, tiny.M] == 9.0)  # a node's own knob beats its role's per-SKU values
    assert np.all(out[:, tiny.M + 1 :] == np.arange(K))  # other stores: the role's per-SKU values
    assert np.all(out[:, : tiny.M] == 0.0)  # the DCs: default
    assert _per_node(tiny, {"store": {"z": 1.0}}, "z", 0.0, 2).shape == (2, N, 1)


def test_wrong_sku_count_names_the_field(tiny):
    bad = {"store": {"z": 0.0, "z_by_sku": [0.0] * (tiny.K + 1)}}
    with pytest.raises(ValueError, match=r"store\.z_by_sku.*one value per SKU \(3"):
        check_sku_knobs(bad, tiny, "--params: policies.s_S_per_sku.knobs")
    params = {"scenario": "tiny", "policies": {"s_S_per_sku": {"policy": "s_S", "knobs": bad}}}
    with pytest.raises(ValueError, match=r"--params: policies\.s_S_per_sku\.knobs: knobs\.store\.z_by_sku"):
        parse_policies("s_S_per_sku", tiny, params)


def test_sku_objective_adds_up_to_the_plain_cost(tiny):
    """Per SKU, summed over SKUs, the pair-cost objective is the total cost bar what reset charges."""
    cands = [KNOBS, _with_sku(KNOBS, "store", "z", [0.5, -1.0, 2.0][: tiny.K] + [0.0] * (tiny.K - 3))]
    paths = np.arange(6, dtype=np.int64)
    per = evaluate_sku_candidates(tiny, "s_S", cands, paths, seed=3, objective=Objective())
    total = evaluate_candidates(tiny, "s_S", cands, paths, seed=3)
    env = ArrayEnv(tiny, num_envs=6, seed=3)
    env.reset(paths=paths)
    at_reset = env.episode_cost.sum(axis=(1, 2))
    np.testing.assert_allclose(per.sum(axis=2) * tiny.horizon + at_reset[None], total, rtol=1e-9)
    assert not np.allclose(per[0], per[1])  # the two settings differ, SKU by SKU


def test_per_sku_stage_is_reproducible_and_checks_every_move(tiny):
    kw = dict(
        episodes=6, max_episodes=6, eval_episodes=8, rounds=2, progress=False, per_sku=True, sku_episodes=8
    )
    r1 = tune(tiny, "s_S", **kw)
    r2 = tune(tiny, "s_S", **kw)
    assert r1.knobs == r2.knobs and r1.label == "s_S_per_sku"
    for role in ("store", "dc"):
        for key in ("z", "q"):
            vals = r1.knobs[role][key + SKU_SUFFIX]
            assert len(vals) == tiny.K and all(np.isfinite(vals))
    moves = [h for h in r1.history if h.get("stage") == "sku"]
    assert len(moves) == 2 * 2 * 2  # rounds x roles x knobs
    assert all(h["accepted"] == (h["moved_skus"] > 0 and h["new_minus_incumbent"] < 0) for h in moves)
    # acceptance paths are fresh: disjoint from the scoring paths and from each other
    spans = [h["accept_paths"] for h in moves if "accept_paths" in h]
    assert spans and all(a >= 1_000_000 for a, _ in spans)
    assert all(b0 >= a1 for (_, a1), (b0, _) in zip(spans, spans[1:], strict=False))
    with pytest.raises(ValueError, match="cannot be combined"):
        tune(tiny, "s_S", per_node=True, **kw)


def test_eval_plays_a_saved_per_sku_variant(tiny, tmp_path):
    """`restock eval --policies s_S_per_sku` plays the knobs saved under that name, as s_S."""
    from restock.agents.catalogue import load_params, save_params

    res = tune(
        tiny, "s_S", episodes=6, max_episodes=6, eval_episodes=8, rounds=1, progress=False, per_sku=True
    )
    path = tmp_path / "p.json"
    save_params(path, res)
    data = load_params(path)
    assert "s_S_per_sku" in data["policies"] and data["policies"]["s_S_per_sku"]["policy"] == "s_S"
    specs, _ = parse_policies("s_S_per_sku", tiny, data)
    out = evaluate(tiny, specs, episodes=8, seed=2000, progress=False)
    direct = evaluate_candidates(tiny, "s_S", [res.knobs], np.arange(8, dtype=np.int64), seed=2000)[0]
    np.testing.assert_allclose(out.per_episode["s_S_per_sku"]["total_cost"], direct, rtol=1e-9)


def test_cli_tune_per_sku(tmp_path):
    from restock.cli import app

    out = tmp_path / "p.json"
    r = CliRunner().invoke(
        app,
        ["tune", "tiny", "--policy", "s_S", "--per-sku", "--episodes", "4", "--max-episodes", "4",
         "--eval-episodes", "4", "--rounds", "1", "--sku-episodes", "4", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "s_S_per_sku" in json.loads(out.read_text())["policies"]
    r = CliRunner().invoke(app, ["tune", "tiny", "--per-sku", "--per-node", "--out", str(out)])
    assert r.exit_code == 2 and "--per-sku and --per-node" in r.output
