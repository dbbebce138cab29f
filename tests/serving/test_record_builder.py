"""`serving.records.RecordBuilder` gives, field for field, the records `agents.records.StepBatch.records`
gives for one-decision batches (what the engine built per request before): random shield batches with
interventions, sanitised SKUs, infinite and NaN slack, escalations, fallbacks and missing confidences."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
from restock.agents.records import RecordMeta, StepBatch
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.serving.records import RecordBuilder


def reference(c, batch, e, n, job, used, fell, esc, fbc, digest):
    p = c.params
    one = StepBatch(
        meta=RecordMeta(
            agent_ids=(c.agent_ids[n],),
            sku_names=tuple(c.sku_names),
            n_dcs=1 if n < c.M else 0,
            scenario_hash=str(c.config_hash),
            volume=np.asarray(p.volume, float),
            unit_cost=np.asarray(p.unit_cost, float),
            lot=np.asarray(p.lot, np.int64),
            moq=np.asarray(p.moq, np.int64),
        ),
        step=0,
        run_id="serving",
        mode=batch.mode,
        timestamp=batch.timestamp,
        shield_config_hash=batch.shield_config_hash,
        period=batch.period[e : e + 1],
        policy_ids=[job.rp.policy_id],
        policy_versions=[job.rp.version],
        proposed=batch.proposed[e : e + 1, n : n + 1],
        executed=batch.executed[e : e + 1, n : n + 1],
        changed=batch.changed[e : e + 1, n : n + 1],
        slack=batch.slack[e : e + 1, n : n + 1],
        escalation=np.array([[esc]], np.uint8),
        fallback=np.array([[fbc]], np.int8),
        confidence=None if batch.confidence is None else batch.confidence[e : e + 1, n : n + 1],
        obs_digest=np.frombuffer(bytes.fromhex(digest), np.uint8).reshape(1, 1, 32),
        request_ids=[job.ns.request_id],
        fallback_policy=(used.policy_id, used.version) if fell else None,
    )
    rec = next(one.records())
    rec.node = n
    return rec


def random_batch(c, rng, E, with_conf):
    N, K = c.N, c.K
    prop = rng.integers(0, 50, (E, N, K)).astype(np.int32)
    exe = prop.astype(np.int64).copy()
    cut = rng.random((E, N, K)) < 0.2
    exe[cut] = rng.integers(0, 50, int(cut.sum()))
    chg = np.zeros((E, N, K), np.uint8)
    flags = rng.random((E, N, K)) < 0.25
    chg[flags] = rng.integers(0, 256, int(flags.sum())).astype(np.uint8)
    slack = rng.normal(5.0, 20.0, (E, N, 6))
    slack[rng.random((E, N, 6)) < 0.3] = np.inf
    slack[rng.random((E, N, 6)) < 0.05] = np.nan
    slack[rng.random((E, N, 6)) < 0.2] = 0.0
    conf = None
    if with_conf:
        conf = rng.random((E, N))
        conf[rng.random((E, N)) < 0.3] = np.nan
    return SimpleNamespace(
        mode="enforce",
        timestamp=1_700_000_000.123456,
        shield_config_hash="abc",
        period=rng.integers(0, 10, E),
        proposed=prop,
        executed=exe,
        changed=chg,
        slack=slack,
        escalation=rng.integers(0, 4, (E, N)).astype(np.uint8),
        fallback=rng.integers(0, 3, (E, N)).astype(np.int8),
        confidence=conf,
    )


@pytest.mark.parametrize("scenario", ["tiny", "default"])
def test_builder_matches_stepbatch_records(scenario):
    c = compile_scenario(load_scenario(scenario))
    b = RecordBuilder(c)
    rng = np.random.default_rng(0)
    model = SimpleNamespace(policy_id="m:store", version="v1+x")
    base = SimpleNamespace(policy_id="base_stock", version="v1+x")
    for trial in range(12):
        E = int(rng.integers(1, 9))
        batch = random_batch(c, rng, E, with_conf=trial % 3 != 0)
        nn = rng.integers(0, c.N, E)
        ee = np.arange(E)
        fell = (rng.random(E) < 0.3).tolist()
        jobs = [
            SimpleNamespace(ns=SimpleNamespace(request_id=f"r{trial}-{e}", node=int(nn[e])), rp=model)
            for e in range(E)
        ]
        used = [base if f else model for f in fell]
        esc = batch.escalation[ee, nn].astype(np.int64) | (rng.random(E) < 0.3) * 2
        fbc = batch.fallback[ee, nn].astype(np.int64)
        digests = [hashlib.sha256(f"{trial}-{e}".encode()).hexdigest() for e in range(E)]
        got = b.build(batch, ee, nn, jobs, used, fell, esc, fbc, digests)
        for e in range(E):
            want = reference(c, batch, e, int(nn[e]), jobs[e], used[e], fell[e], esc[e], fbc[e], digests[e])
            assert got[e] == want
            assert got[e].canonical() == want.canonical()
            counts = b.last_counts[e].tolist()
            chg = batch.changed[e, nn[e]]
            assert counts == [int(((chg >> ci) & 1).sum()) for ci in range(len(counts))]
