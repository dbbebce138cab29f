"""The shield chain: safety for every state and proposal (hypothesis), minimal interference,
idempotence, determinism, the verifier catching a broken shield, runtime guards, env integration and
the `constrained` scenario's figures."""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace

import numpy as np
import pytest
import restock.agents.shield as shield_mod
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from restock.agents.records import (
    CHANGED_SANITISED,
    ESC_ANOMALY,
    ESC_BREAKER,
    ESC_OBS,
    ESC_SANITISED,
    ESC_VERIFIER,
    verify_chain,
)
from restock.agents.shield import (
    AnomalyConfig,
    Shield,
    apply_penalty,
    shielded_array_env,
    shielded_parallel_env,
)
from restock.agents.verifier import Verifier
from restock.envs import ArrayEnv, parallel_env
from restock.envs import kernel as kn
from restock.envs.compile import compile_scenario
from restock.envs.config import load_scenario
from restock.envs.constraints import BIG, CI_BUDGET, CI_STORAGE, CONSTRAINTS, VIOLATION_UNITS
from restock.envs.types import K_SPEND, new_step_out, new_work

C = len(CONSTRAINTS)
PROPS = dict(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ------------------------------------------------------------------------------------------------
# random small scenarios (built once per index and cached: compiling costs time)

POOL = 32


def scenario_dict(i: int) -> dict:
    """A random small network: every constraint kind appears somewhere in the pool, often tight."""
    r = np.random.default_rng(7000 + i)
    K = int(r.integers(1, 5))
    opt = lambda p, v: v if r.random() < p else None  # noqa: E731
    lot = r.choice([1, 1, 2, 3, 4, 5], K).tolist()
    skus = {
        "count": K,
        "unit_cost": [float(x) for x in r.choice([0.0, 0.5, 1.0, 2.5, 7.0, 13.3], K)],
        "volume": [float(x) for x in r.choice([0.1, 0.25, 0.3, 0.5, 1.0, 1.7, 3.0], K)],
        "lot_size": lot,
        "moq": [int(x) for x in r.choice([0, 0, 1, 3, 4, 8], K)],
        "stockout_cost": 1.0,
        "holding_cost": 0.05,
    }
    n_sup = int(r.integers(1, 3))
    suppliers = []
    for u in range(n_sup):
        cap = opt(0.6, [int(x) for x in r.choice([0, 3, 10, 25, 60], K)])
        suppliers.append({"id": f"s{u}", **({"capacity": cap} if cap is not None else {})})

    def node_limits() -> dict:
        d = {}
        if (v := opt(0.7, float(r.choice([2.0, 8.0, 30.0, 75.0, 200.0])))) is not None:
            d["storage_capacity"] = v
        if (v := opt(0.4, float(r.choice([1.5, 6.0, 20.0, 90.0])))) is not None:
            d["lane_capacity"] = v
        if (v := opt(0.5, float(r.choice([0.0, 5.0, 17.5, 60.0, 250.0])))) is not None:
            d["budget"] = v
        if (v := opt(0.4, int(r.choice([1, 4, 12, 40])))) is not None:
            d["max_order_increase"] = v
        d["overflow"] = str(r.choice(["penalty", "dispose"]))
        lt = int(r.integers(0, 4))
        d["lead_time"] = lt if r.random() < 0.8 else {"values": [1, 2], "probs": [0.5, 0.5]}
        return d

    n_dc = int(r.integers(0, 3))
    dcs = []
    for j in range(n_dc):
        parent = "s0" if j == 0 or r.random() < 0.5 else f"dc{j - 1}"
        dcs.append(
            {"id": f"dc{j}", "parent": parent, "unmet": str(r.choice(["backlog", "lost"])), **node_limits()}
        )
    # stores: one group per DC (so every DC supplies someone), plus maybe one fed by a supplier
    groups = []
    for j in range(n_dc):
        groups.append({"count": int(r.integers(1, 4)), "parent": f"dc{j}", **node_limits()})
    if n_dc == 0 or r.random() < 0.4:
        groups.append({"count": int(r.integers(1, 3)), "parent": f"s{n_sup - 1}", **node_limits()})
    disruptions = []
    if r.random() < 0.3:
        disruptions.append({"type": "supplier_outage", "supplier": "s0", "start": 3, "end": 6})
    if r.random() < 0.3:
        disruptions.append({"type": "capacity_cut", "node": "all", "start": 5, "end": 8, "factor": 0.5})
    mapping = str(r.choice(["quantity", "order_up_to"]))
    return {
        "name": f"pool_{i}",
        "seed": i,
        "horizon": int(r.integers(10, 18)),
        "skus": skus,
        "network": {"suppliers": suppliers, "dcs": dcs, "stores": groups},
        "demand": {"model": "poisson", "mean": [float(x) for x in r.choice([0.5, 2.0, 6.0, 15.0], K)]},
        "disruptions": disruptions,
        "action": {
            "store": {"mapping": mapping, "levels": int(r.integers(3, 9))},
            "dc": {"mapping": "order_up_to", "levels": 6, "max_cover": 5.0},
        },
        "initial": {"store_cover": float(r.choice([0.0, 2.0, 6.0])), "dc_cover": 3.0, "pipeline_cover": 1.0},
    }


@functools.cache
def pool(i: int):
    return compile_scenario(load_scenario(scenario_dict(i)))


@functools.cache
def verifier(i: int) -> Verifier:
    return Verifier(pool(i).params)


def random_state(c, E: int, r: np.random.Generator):
    """A state inside the domain (non-negative stock, pipeline summing to in-transit, owed only where a
    DC feeds the node), from empty to far over capacity."""
    p = c.params
    N, K, W = c.N, c.K, c.W
    s = c.new_state(E)
    s.t[:] = r.integers(0, c.horizon + 1, E)
    lam = p.mean[None] + 0.5
    cover = r.choice([0.0, 0.5, 2.0, 6.0, 40.0], size=(E, N, 1))
    s.on_hand[:] = r.poisson(lam * cover)
    for j in range(1, W):
        s.pipe[:, :, j] = r.poisson(lam * r.choice([0.0, 1.0, 3.0], size=(E, N, 1)))
    s.transit[:] = s.pipe.sum(axis=2)
    has_dc = (p.parent >= 0)[None, :, None]
    s.owed[:] = np.where(has_dc & (r.random((E, N, K)) < 0.3), r.poisson(lam * 2), 0)
    s.last_order[:] = np.where(r.random((E, N, K)) < 0.5, r.poisson(lam * 2), 0)
    s.last_demand[:] = r.poisson(lam)
    return s


def ctx_for(c, state, obs=None):
    return SimpleNamespace(
        params=c.params,
        state=state,
        compiled=c,
        obs=obs,
        work=new_work(*state.on_hand.shape[:1], c.N, c.M, c.K),
    )


def ub_of(c, state) -> np.ndarray:
    """The kernel's per-SKU bounds (what the masks encode) at a state."""
    E = state.on_hand.shape[0]
    W = state.pipe.shape[2]
    obs = np.zeros((E, c.N, c.K * (15 + W - 1) + 4), np.float32)
    mask = np.zeros((E, c.N, c.K, int(c.params.levels.max())), np.int8)
    ub = np.zeros((E, c.N, c.K), np.int32)
    kn.observe(c.params, state, new_work(E, c.N, c.M, c.K), obs, mask, ub)
    return ub


def sanitised(q) -> np.ndarray:
    """What the documented sanitising turns a proposal into (NaN/inf/negative -> 0, > BIG -> BIG, floor)."""
    a = np.asarray(q, dtype=np.float64)
    out = np.where(np.isfinite(a) & (a >= 0), np.floor(np.minimum(a, float(BIG))), 0.0)
    return np.where(np.isfinite(a) & (a > BIG), float(BIG), out).astype(np.int64)


quantities = st.one_of(
    st.integers(0, 12),
    st.integers(0, 400),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 100),
    st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 12, 15, 20, 24, 40, 60, 120]),
)


@st.composite
def cases(draw, adversarial: bool = True):
    """(scenario index, compiled, state, proposal): proposals from hypothesis elements (small batches,
    shrinkable) or from numpy draws with garbage injected, in several dtypes."""
    i = draw(st.integers(0, POOL - 1))
    c = pool(i)
    E = draw(st.integers(1, 3))
    r = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    state = random_state(c, E, r)
    shape = (E, c.N, c.K)
    how = draw(st.sampled_from(["elements", "poisson", "huge"]))
    if how == "elements" and E * c.N * c.K <= 64:
        elems = quantities if adversarial else st.integers(0, 400)
        q = draw(hnp.arrays(np.float64, shape, elements=elems))
    else:
        scale = draw(st.sampled_from([0.5, 2.0, 8.0, 50.0]))
        q = r.poisson((c.params.mean[None] + 1) * scale, size=shape).astype(np.float64)
        if how == "huge":
            q *= r.choice([1.0, 1e3, 1e7], size=shape)
        if adversarial:
            u = r.random(shape)
            q[u < 0.05] = np.nan
            q[(u >= 0.05) & (u < 0.08)] = -r.integers(1, 100)
            q[(u >= 0.08) & (u < 0.1)] = np.inf
            q[(u >= 0.1) & (u < 0.12)] = 1e15
            q[(u >= 0.12) & (u < 0.2)] += 0.37
    dtype = draw(st.sampled_from(["float64", "float32", "int64", "int32", "list"]))
    if dtype in ("int64", "int32"):
        q = sanitised(q).clip(0, np.iinfo(dtype).max).astype(dtype)
        if adversarial and dtype == "int64":
            q[r.random(shape) < 0.05] *= -1
    elif dtype == "float32":
        with np.errstate(over="ignore"):
            q = q.astype(np.float32)  # huge values become inf: more garbage
    elif dtype == "list":
        q = q.tolist()
    return i, c, state, q


def decide(c, state, q, **kw):
    sh = Shield(anomaly=None, breaker_after=0, **kw)
    res = sh.decide(ctx_for(c, state), q)
    return sh, res


# ------------------------------------------------------------------------------------------------
# properties (hypothesis)


@settings(max_examples=2500, **PROPS)
@given(case=cases())
def test_shield__executed_orders_always_pass_the_verifier(case):
    """P-safe, P-monotone and inside the masks, for adversarial proposals in random states."""
    i, c, state, q = case
    _, res = decide(c, state, q)
    ex = res.executed.copy()
    assert res.verifier_failures.sum() == 0, res.verdict.describe()
    assert not res.executed_violations.any()
    v = verifier(i).check(state, ex)  # a fresh verifier agrees
    assert v.ok, v.describe()
    assert (ex >= 0).all()
    assert (ex <= sanitised(q)).all()  # never increases a quantity
    assert (ex <= ub_of(c, state)).all()  # inside the per-SKU bounds the masks encode
    garbage = ~np.isfinite(np.asarray(q, float)) | (np.asarray(q, float) < 0) | (np.asarray(q, float) > BIG)
    assert ((res.escalation & ESC_SANITISED) != 0).tolist() == garbage.any(axis=2).tolist()


@settings(max_examples=1200, **PROPS)
@given(case=cases(adversarial=False), data=st.data())
def test_shield__feasible_proposals_pass_unchanged(case, data):
    """P-minimal-interference: the shield's own output, or any proposal the verifier accepts, executes
    exactly as proposed with no intervention."""
    i, c, state, q = case
    if data.draw(st.booleans()):
        _, first = decide(c, state, q)
        feasible = first.executed.astype(np.int64)
    else:
        feasible = sanitised(q)
        # thin it until the verifier accepts it: scale down, snap to lots
        lot = c.params.lot
        for f in (1.0, 0.5, 0.2, 0.05, 0.0):
            cand = (np.floor(feasible * f / lot) * lot).astype(np.int64)
            cand = np.where(cand < c.params.moq, 0, cand)
            if verifier(i).check(state, cand).ok:
                feasible = cand
                break
    assert verifier(i).check(state, feasible).ok
    _, res = decide(c, state, feasible)
    np.testing.assert_array_equal(res.executed, feasible)
    assert not res.interventions.any()
    assert not res.raw_violations.any()
    assert not res.constraint_cost.any()
    assert not res.escalation.any()


@settings(max_examples=800, **PROPS)
@given(case=cases())
def test_shield__idempotent_and_deterministic(case):
    i, c, state, q = case
    sh1, a = decide(c, state, q, records=True, clock=lambda: 0.0)
    ex = a.executed.copy()
    sh2, b = decide(c, state, copy.deepcopy(q), records=True, clock=lambda: 0.0)
    np.testing.assert_array_equal(b.executed, ex)
    assert a.executed.tobytes() == b.executed.tobytes()
    h1 = [r.hash for r in sh1.sink.records()]
    h2 = [r.hash for r in sh2.sink.records()]
    assert h1 == h2 and len(h1) == state.on_hand.shape[0] * c.N
    _, again = decide(c, state, ex)
    np.testing.assert_array_equal(again.executed, ex)
    assert not again.interventions.any()


@settings(max_examples=800, **PROPS)
@given(case=cases())
def test_shield__monitor_counts_what_the_verifier_finds_and_executes_the_proposal(case):
    """Differential: the shield's jitted violation counts equal the independent verifier's on the
    (sanitised) proposal; monitor mode executes that proposal and would intervene as enforce does."""
    i, c, state, q = case
    _, mon = decide(c, state, q, mode="monitor")
    np.testing.assert_array_equal(mon.executed, np.minimum(sanitised(q), BIG))
    ver = verifier(i).check(state, sanitised(q))
    np.testing.assert_array_equal(mon.raw_violations, ver.count)
    np.testing.assert_array_equal(mon.executed_violations, ver.count)
    _, enf = decide(c, state, q)
    np.testing.assert_array_equal(mon.interventions, enf.interventions)
    np.testing.assert_array_equal(mon.constraint_cost, enf.constraint_cost)
    # a node that violated nothing was not changed by any constraint (sanitising aside)
    changed = (enf.changed & ~np.uint8(CHANGED_SANITISED)) != 0
    clean = ~ver.failed_nodes()
    assert not (changed.any(axis=2) & clean).any()


@settings(max_examples=400, **PROPS)
@given(i=st.integers(0, POOL - 1), seed=st.integers(0, 2**32 - 1))
def test_shield__any_repair_order_stays_safe(i, seed):
    """P-order-invariance (safety): repairs only lower quantities, so re-running the chain on its own
    output, or on any componentwise-lower order, never breaks a constraint."""
    c = pool(i)
    r = np.random.default_rng(seed)
    state = random_state(c, 2, r)
    q = r.poisson((c.params.mean[None] + 1) * 10, size=(2, c.N, c.K))
    _, res = decide(c, state, q)
    lower = (res.executed * r.random(res.executed.shape)).astype(np.int64)
    _, res2 = decide(c, state, lower)
    assert verifier(i).check(state, res2.executed).ok
    assert (res2.executed <= lower).all()


# ------------------------------------------------------------------------------------------------
# stateful: many periods through the kernel


class ShieldedSimulation(RuleBasedStateMachine):
    """Shielded orders stepped through the kernel; after every period the kernel never had to ration,
    cap or cancel what the shield let through, budgets and supplier caps held, and with zero demand
    committed storage volume never grew past capacity."""

    @initialize(i=st.integers(0, POOL - 1), E=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
    def setup(self, i, E, seed):
        c = pool(i)
        self.c, self.E = c, E
        self.r = np.random.default_rng(seed)
        self.s = c.new_state(E)
        self.w = new_work(E, c.N, c.M, c.K)
        self.out = new_step_out(E, c.N)
        kn.reset_envs(
            c.params,
            self.s,
            np.ones(E, np.int8),
            np.arange(E, dtype=np.uint64) + seed % 1000,
            c.init_on_hand,
            c.init_pipe,
            self.out,
        )
        self.ctx = ctx_for(c, self.s)
        self.shield = Shield(
            anomaly=AnomalyConfig(warmup=2), breaker_after=2, cooldown=2, records=True, clock=lambda: 0.0
        )
        self.decisions = 0
        self.cap_fixed = bool((c.params.storage_cap == c.params.storage_cap[0]).all())

    def committed(self):
        s, p = self.s, self.c.params
        return (s.on_hand.astype(np.int64) + s.transit + s.owed) @ p.volume

    @rule(scale=st.sampled_from([0.0, 1.0, 4.0, 30.0]), garbage=st.booleans(), zero_demand=st.booleans())
    def period(self, scale, garbage, zero_demand):
        c, s, r, E = self.c, self.s, self.r, self.E
        p = c.params
        if int(s.t[0]) >= c.horizon:  # the episode is over: start the next one
            kn.reset_envs(
                p,
                s,
                np.ones(E, np.int8),
                np.arange(E, dtype=np.uint64) + 7,
                c.init_on_hand,
                c.init_pipe,
                self.out,
            )
        q = r.poisson((p.mean[None] + 1) * scale, size=(E, c.N, c.K)).astype(np.float64)
        if garbage:
            q[r.random(q.shape) < 0.1] = np.nan
        t = np.minimum(s.t.astype(np.int64), p.horizon)
        before = self.committed()
        cap = p.storage_cap_ahead[t]
        res = self.shield.decide(self.ctx, q)
        ex = res.executed.copy()
        assert not res.executed_violations.any()
        self.decisions += E * c.N
        owed_before = s.owed.copy()
        demand = np.zeros((E, c.S, c.K), np.int32)
        if not zero_demand:
            demand[:] = r.poisson(p.mean[None, c.M :])
        kn.step(p, s, self.w, ex.copy(), demand, self.out)
        # budgets: the kernel's own spend counter
        assert (self.out.kpi[:, :, K_SPEND] <= p.budget[None] * (1 + 1e-8) + 1e-8).all()
        # supplier caps: summed orders of the nodes each supplier feeds
        for u in range(p.sup_cap.shape[1]):
            fed = np.flatnonzero(p.supplier == u)
            assert (ex[:, fed].sum(axis=1) <= p.sup_cap[t, u]).all()
        # nothing the shield let through was rationed, lane-capped or lost by the kernel; only a DC that
        # backlogs may queue its children's orders (availability does not bind it), and then ship less
        exact = (p.parent < 0) | (p.backlog[np.maximum(p.parent, 0)] == 0)
        np.testing.assert_array_equal(s.shipped[:, exact], (ex + owed_before)[:, exact])
        assert not s.owed[:, exact].any()
        assert (s.shipped <= ex + owed_before).all()
        if zero_demand and self.cap_fixed:
            after = self.committed()
            assert (after <= np.maximum(np.where(np.isinf(cap), np.inf, cap), before) + 1e-6).all()

    @invariant()
    def records_cover_every_decision(self):
        if hasattr(self, "shield") and self.decisions:
            assert len(self.shield.sink) == self.decisions

    def teardown(self):
        if hasattr(self, "shield") and self.decisions:
            recs = list(self.shield.sink.records())
            assert len(recs) == self.decisions and verify_chain(recs)


TestShieldedSimulation = ShieldedSimulation.TestCase
TestShieldedSimulation.settings = settings(max_examples=250, stateful_step_count=20, **PROPS)


# ------------------------------------------------------------------------------------------------
# the verifier catches a broken shield


def test_shield__broken_repair_is_caught_by_the_verifier_and_falls_back(monkeypatch):
    c = compile_scenario(load_scenario("constrained"))
    env = ArrayEnv(c, num_envs=2)
    env.reset()
    real = shield_mod.repair

    def broken(params, state, work, parallel=False):
        real(params, state, work, parallel)
        work.q[:, 1, :] += 1000  # store_0 orders far more than proposed (and than fits)
        work.q[1, 3, :] += 999  # so does store_2 of env 1

    monkeypatch.setattr(shield_mod, "repair", broken)
    sh = Shield(anomaly=None)
    q = np.zeros((2, c.N, c.K), np.int64)
    ex, info = sh(env, q)
    assert (ex[:, 1] == 0).all()  # the safe action
    assert info["shield_verifier_failures"].tolist() == [1, 2]
    assert info["shield_fallbacks"].tolist() == [1, 2]
    assert info["shield_escalations"].tolist() == [1, 2]
    assert not info["shield_executed_violations"].any()
    res = sh.decide(env, q)
    assert (res.escalation[:, 1] & ESC_VERIFIER).all()
    assert (res.fallback[:, 1] == 1).all()
    assert Verifier(c.params).check(env.state, res.executed).ok


# ------------------------------------------------------------------------------------------------
# runtime guards


class ConstantPolicy:
    name = "constant"
    version = "2"
    output = "quantities"

    def __init__(self, q: int):
        self.q = q

    def act(self, ctx, nodes):
        return np.full((ctx.obs.shape[0], len(nodes), ctx.compiled.K), self.q, np.int64)


def test_shield__breaker_hands_a_node_to_its_fallback_policy_for_a_cool_down():
    env = ArrayEnv("tiny", num_envs=1)
    env.reset()
    sh = Shield(fallback=ConstantPolicy(2), breaker_after=3, cooldown=2, anomaly=None)
    N, K = env.N, env.K
    bad = np.ones((1, N, K))
    bad[0, 1, 0] = np.nan  # store_0 keeps proposing garbage
    opened = []
    for _ in range(8):
        ex, info = sh(env, bad)
        opened.append(int(info["shield_breaker_open"][0]))
        if opened[-1]:
            # the fallback's constant order, still shielded (lot 2 for SKU 1, MOQ 3 for SKU 2)
            assert ex[0, 1].tolist() == [2, 2, 0]
        env.step_qty(ex)
    # escalations at t=0,1,2 trip the breaker; periods 3,4 run the fallback; then 3 more escalations
    assert opened == [0, 0, 0, 1, 1, 0, 0, 0]


def test_shield__anomalous_demand_and_non_finite_observations_escalate():
    env = ArrayEnv("tiny", num_envs=2)
    env.reset()
    sh = Shield(anomaly=AnomalyConfig(warmup=3), breaker_after=0)
    q = np.zeros((2, env.N, env.K), np.int64)
    for _ in range(6):
        _, info = sh(env, q)
        assert not info["shield_escalations"].any()
        env.step_qty(q)
    env.state.last_demand[1, 2, 0] = 10_000  # store_1 of env 1 reports a wild demand
    env.obs[0, 1, 3] = np.nan  # store_0 of env 0 saw a broken observation
    res = sh.decide(env, q)
    assert res.anomalies.tolist() == [0, 1]
    assert res.escalation[1, 2] & ESC_ANOMALY
    assert res.escalation[0, 1] & ESC_OBS
    assert (res.escalation != 0).sum() == 2
    assert not (res.escalation & ESC_BREAKER).any()


def test_shield__input_errors_are_clear():
    env = ArrayEnv("tiny", num_envs=2)
    env.reset()
    sh = Shield()
    with pytest.raises(ValueError, match="shape"):
        sh(env, np.zeros((2, env.N, env.K + 1)))
    with pytest.raises(ValueError, match="numbers"):
        sh(env, np.full((2, env.N, env.K), "x"))
    one = ArrayEnv("tiny", num_envs=1)
    one.reset()
    ex, _ = sh(one, np.ones((one.N, one.K)))  # [N, K] accepted when E == 1
    assert ex.shape == (1, one.N, one.K)
    with pytest.raises(ValueError, match="mode"):
        Shield(mode="off")


# ------------------------------------------------------------------------------------------------
# env integration


def test_shield__array_env_hook_info_keys_and_penalty():
    sh = Shield(penalty=0.5)
    env = shielded_array_env("constrained", shield=sh, num_envs=3)
    env.reset()
    q = np.full((3, env.N, env.K), 500, np.int64)
    _, _, reward, _, info = env.step_qty(q)
    E, N = 3, env.N
    for key in ("shield_interventions", "shield_raw_violations", "shield_executed_violations"):
        assert info[key].shape == (E, C)
    for key in ("shield_decisions", "shield_fallbacks", "shield_escalations", "shield_verifier_failures"):
        assert info[key].shape == (E,)
    assert info["constraint_cost"].shape == (E, N) and info["reward_penalty"].shape == (E, N)
    assert info["shield_decisions"].tolist() == [N] * E
    np.testing.assert_allclose(info["reward_penalty"], 0.5 * info["constraint_cost"])
    np.testing.assert_array_equal(info["executed"], info["executed"].clip(0))
    assert not info["shield_executed_violations"].any()
    before = reward.copy()
    apply_penalty(reward, info)
    np.testing.assert_allclose(reward, before - info["reward_penalty"])


def test_shield__pettingzoo_infos_carry_cost_and_shield_summaries():
    env = shielded_parallel_env("constrained", shield=Shield(records=True), mode="clip", seed=3)
    obs, _ = env.reset(seed=3)
    top = {a: np.full(env.compiled.K, 11) for a in env.agents}  # top level everywhere: breaks budgets
    _, _, _, _, infos = env.step(top)
    a = "store_0"
    assert infos[a]["cost"] > 0
    summ = infos[a]["shield"]
    assert set(summ) >= {"proposed", "executed", "interventions", "binding", "rationale", "escalated"}
    assert (summ["executed"] <= summ["proposed"]).all()
    assert summ["rationale"].startswith("sku_")
    assert "storage" in summ["binding"] or "budget" in summ["binding"]


def test_shield__pettingzoo_api_holds_with_a_shield():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(parallel_env("tiny", shield=Shield(), mode="clip", seed=0), num_cycles=40)


# ------------------------------------------------------------------------------------------------
# the constrained scenario: a naive policy breaks storage and budget unshielded, nothing shielded


class NaiveOrderUpTo:
    """Order every SKU up to ``cover`` periods of mean demand, blind to every constraint."""

    name = "naive_order_up_to"
    version = "1"
    output = "quantities"

    def __init__(self, cover: float = 6.0):
        self.cover = cover

    def act(self, ctx, nodes):
        E = ctx.obs.shape[0]
        ip = np.empty(ctx.state.on_hand.shape, np.int64)
        kn.inventory_positions(ctx.params, ctx.state, ctx.work, ip)
        t = min(int(ctx.state.t[0]), ctx.params.horizon)
        target = self.cover * ctx.params.mean * ctx.params.season[t]
        q = np.maximum(np.ceil(target[None] - ip), 0)
        return q[:, nodes].reshape(E, len(nodes), -1)


def _naive_rollout(mode: str, episodes: int = 4):
    c = compile_scenario(load_scenario("constrained"))
    sh = Shield(c, mode=mode)
    env = ArrayEnv(c, num_envs=episodes, shield=sh)
    env.reset(paths=np.arange(episodes))
    pol = NaiveOrderUpTo()
    tot: dict[str, np.ndarray] = {}
    while not env.done():
        q = pol.act(env, np.arange(env.N))
        *_, info = env.step_qty(q)
        for k, v in info.items():
            if k.startswith("shield_"):
                tot[k] = tot.get(k, 0) + np.asarray(v).sum(axis=0)
    return c, tot


def test_constrained__naive_policy_breaks_storage_and_budget_only_when_unshielded():
    c, mon = _naive_rollout("monitor")
    _, enf = _naive_rollout("enforce")
    raw = dict(zip(CONSTRAINTS, mon["shield_raw_violations"].tolist(), strict=True))
    assert raw["storage"] > 0 and raw["budget"] > 0
    assert (
        mon["shield_executed_violations"][CI_STORAGE] > 0 and mon["shield_executed_violations"][CI_BUDGET] > 0
    )
    assert not enf["shield_executed_violations"].any()
    assert enf["shield_verifier_failures"] == 0
    assert enf["shield_interventions"][CI_STORAGE] > 0 and enf["shield_interventions"][CI_BUDGET] > 0
    # figures for the closing note (pytest -s prints them)
    decisions = enf["shield_decisions"]
    sku_decisions = enf["shield_sku_decisions"]
    print("\nconstrained, naive order-up-to 6 periods, 4 episodes x 60 periods:")
    for j, name in enumerate(CONSTRAINTS):
        unit = VIOLATION_UNITS[j]
        print(
            f"  {name:16s} raw violations {int(mon['shield_raw_violations'][j]):6d} ({unit})"
            f"  interventions {int(enf['shield_interventions'][j]):6d} node-SKUs"
            f" = {enf['shield_interventions'][j] / sku_decisions:.3f} of node-SKU decisions"
        )
    print(f"  node decisions {int(decisions)}, node-SKU decisions {int(sku_decisions)}")


def test_shield__parallel_chain_matches_the_serial_one():
    env = ArrayEnv("constrained", num_envs=6)
    env.reset()
    serial, par = Shield(anomaly=None), Shield(anomaly=None, parallel=True)
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.poisson(env.params.mean * 5, size=(6, env.N, env.K))
        a = serial.decide(env, q)
        ex = a.executed.copy()
        b = par.decide(env, q)
        np.testing.assert_array_equal(b.executed, ex)
        np.testing.assert_array_equal(b.interventions, a.interventions)
        np.testing.assert_array_equal(b.raw_violations, a.raw_violations)
        env.step_qty(ex)


@settings(max_examples=300, **PROPS)
@given(case=cases(adversarial=False), pick=st.integers(0, 2**32 - 1))
def test_shield__rows_decide_the_listed_nodes_as_the_whole_batch_would(case, pick):
    """``decide(..., rows=...)`` (the serving shim's one node per environment): with the other nodes
    proposing nothing, the listed nodes get exactly what deciding every node gives (orders, change
    flags, slack, escalations); the other nodes execute nothing, even when they propose something."""
    _, c, state, q = case
    q = sanitised(q)
    E = q.shape[0]
    r = np.random.default_rng(pick)
    rows = np.stack([np.arange(E), r.integers(0, c.N, E)], axis=1).astype(np.int64)
    live = np.zeros((E, c.N), bool)
    live[rows[:, 0], rows[:, 1]] = True
    only = np.where(live[..., None], q, 0)
    obs = r.random((E, c.N, 7)).astype(np.float32)
    obs[r.random((E, c.N)) < 0.3, 2] = np.nan
    full = Shield(anomaly=None, breaker_after=0).decide(ctx_for(c, state, obs), only)
    sub = Shield(anomaly=None, breaker_after=0).decide(ctx_for(c, state, obs), only, rows=rows)
    ee, nn = rows[:, 0], rows[:, 1]
    np.testing.assert_array_equal(sub.executed[ee, nn], full.executed[ee, nn])
    np.testing.assert_array_equal(sub.changed[ee, nn], full.changed[ee, nn])
    np.testing.assert_array_equal(sub.escalation[ee, nn], full.escalation[ee, nn])
    np.testing.assert_array_equal(sub.constraint_cost[ee, nn], full.constraint_cost[ee, nn])
    np.testing.assert_array_equal(sub.interventions, full.interventions)
    assert (sub.executed[~live] == 0).all()
    noisy = Shield(anomaly=None, breaker_after=0).decide(ctx_for(c, state, obs), q, rows=rows)
    assert (noisy.executed[~live] == 0).all() and not noisy.executed_violations.any()
