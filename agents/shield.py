"""The safety shield: every proposed order passes through it before it executes, whatever proposed it.

docs/design.md#shield and docs/design.md#constraint-model. Every hard constraint is an upper bound on
an order (`envs.constraints`), so ordering zero is always safe. `Shield.decide` runs, batched over E
environments and all nodes:

1-4. the chain (`agents.shield_chain`, compiled): sanitise the proposal, clip each SKU to its
   per-SKU bound, repair the joint constraints (storage, lane, budget, supplier caps, DC
   availability), snap down to lot and MOQ;
5. verify with `agents.verifier` (written separately, N-version). A node whose shielded order fails
   (for a shared cap: every node with a positive order of the violated SKU) executes the safe action,
   zero, and is escalated: shields fail closed.

Runtime guards: an anomaly check (a store's demand last period far above its recent range, or a
non-finite observation; `agents.shield_guards`) escalates the node; a circuit breaker hands a node
whose decisions escalated R times in a row to a fallback policy (still shielded; zero orders when
none is given) for a cool-down. Modes: ``enforce`` (default) executes the shielded orders;
``monitor`` computes and counts everything but executes the (sanitised) proposal and never hands a
node to its fallback, to measure what a raw policy would violate in simulation (``restock eval
--no-shield``).

Use it as the `envs.ArrayEnv` hook, ``ArrayEnv(..., shield=Shield())`` or
``parallel_env(..., shield=Shield())``; its info keys are listed in `Shield.__call__`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from restock.agents.records import (
    ESC_VERIFIER,
    MemorySink,
    RecordMeta,
    Sink,
    StepBatch,
)
from restock.agents.shield_chain import ShieldWork, new_shield_work, repair, sanitise
from restock.agents.shield_guards import AnomalyConfig, Guards, check_observations, fallback_proposals
from restock.agents.verifier import Verdict, Verifier
from restock.envs.constraints import BIG, CONSTRAINTS, N_CONSTRAINTS, joint_slacks

__all__ = [
    "MODES",
    "SHIELD_VERSION",
    "AnomalyConfig",
    "Shield",
    "ShieldResult",
    "ShieldWork",
    "apply_penalty",
    "new_shield_work",
    "repair",
    "shielded_array_env",
    "shielded_parallel_env",
]

SHIELD_VERSION = "1"
MODES = ("enforce", "monitor")

# ------------------------------------------------------------------------------------------------
# the shield


@dataclass
class ShieldResult:
    """What the shield decided for one batch. The [E, N, K] arrays are the shield's buffers: they hold
    until its next call (copy them to keep them)."""

    executed: np.ndarray  # [E, N, K] int32 orders that execute
    proposed: np.ndarray  # [E, N, K] int64 the proposal after sanitising
    shielded: np.ndarray  # [E, N, K] int64 what enforce mode executes (in monitor mode: would execute)
    changed: np.ndarray  # [E, N, K] uint8 change flags (records.CHANGED_SANITISED, bit c = constraint c)
    interventions: np.ndarray  # [E, C] node-SKUs changed per constraint
    raw_violations: np.ndarray  # [E, C] violations in the proposal (envs.constraints.VIOLATION_UNITS)
    executed_violations: np.ndarray  # [E, C] violations in the executed orders (0 in enforce mode)
    escalation: np.ndarray  # [E, N] uint8 flags (records.ESCALATION_REASONS)
    fallback: np.ndarray  # [E, N] int8 records.FALLBACKS codes
    verifier_failures: np.ndarray  # [E] nodes whose shielded orders failed the verifier
    sanitised: np.ndarray  # [E] node-SKUs whose raw value was replaced or rounded down
    anomalies: np.ndarray  # [E] nodes with anomalous demand
    breaker_open: np.ndarray  # [E] nodes run by the fallback policy this period
    constraint_cost: np.ndarray  # [E, N] float64 SKUs changed per node
    reward_penalty: np.ndarray  # [E, N] float64 intervention penalty (0 in monitor mode)
    verdict: Verdict  # the verifier on the executed orders


def _policy_names(policy, compiled) -> tuple[list[str], list[str]]:
    N = compiled.N
    if policy is None:
        return ["unknown"] * N, [""] * N
    if isinstance(policy, str):
        return [policy] * N, [""] * N
    pols = getattr(policy, "policies", None)
    if isinstance(policy, dict):
        pols = policy
    if isinstance(pols, dict):
        ids, vers = [], []
        for n in range(N):
            pol = pols[compiled.role(n)]
            ids.append(str(getattr(pol, "name", pol)))
            vers.append(str(getattr(pol, "version", "")))
        return ids, vers
    return [str(getattr(policy, "name", policy))] * N, [str(getattr(policy, "version", ""))] * N


def _array_digest(h, a) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))


class Shield:
    """The shield chain around any policy: usable as ``ArrayEnv(shield=...)`` hook, in eval and serving.

    ``Shield(scenario=None, mode="enforce", *, fallback=None, penalty=0.0, penalty_per="sku",
    breaker_after=3, cooldown=10, anomaly=AnomalyConfig(), check_obs=True, records=False,
    policy=None, run_id="run", clock=time.time, obs_digest=True, parallel=False)``

    scenario: optional (a name, config or `Compiled`); the shield binds to the env's scenario on its
    first call anyway. fallback: a `Policy` that runs nodes whose breaker is open (zero orders when
    None). penalty: subtracted from the reward per SKU changed (``penalty_per="sku"``) or per period
    of mean demand changed (``"demand"``), returned as ``info["reward_penalty"]`` (see
    `apply_penalty`). breaker_after: R consecutive escalations open a node's breaker for ``cooldown``
    periods (0 disables it). anomaly: `AnomalyConfig` or None. records: True (a `MemorySink`), a sink,
    or False; with records the info also carries ``shield`` (per-node summaries). policy: what the
    records name as proposer (a `Policy`, `JointPolicy`, role dict or a string; `set_policy`).
    clock: the records' time source. obs_digest: hash each node's observation into its record (sha256
    of the float32 bytes; the main cost of records at large batches). parallel: run the chain on all
    threads (E > 1; worth it only for big batches on an otherwise idle machine).
    """

    def __init__(
        self,
        scenario: Any = None,
        mode: str = "enforce",
        *,
        fallback: Any = None,
        penalty: float = 0.0,
        penalty_per: str = "sku",
        breaker_after: int = 3,
        cooldown: int = 10,
        anomaly: AnomalyConfig | None = AnomalyConfig(),  # frozen: safe as a default
        check_obs: bool = True,
        records: bool | Sink = False,
        policy: Any = None,
        run_id: str = "run",
        clock: Callable[[], float] = time.time,
        obs_digest: bool = True,
        parallel: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if penalty_per not in ("sku", "demand"):
            raise ValueError(f"penalty_per must be 'sku' or 'demand', not {penalty_per!r}")
        if breaker_after < 0 or cooldown < 0:
            raise ValueError("breaker_after and cooldown must be >= 0")
        self.mode = mode
        self.fallback = fallback
        self.penalty = float(penalty)
        self.penalty_per = penalty_per
        self.breaker_after = int(breaker_after)
        self.cooldown = int(cooldown)
        self.anomaly = anomaly
        self.check_obs = bool(check_obs)
        if records is True:
            records = MemorySink()
        self.sink: Sink | None = None if records is False or records is None else records
        self.policy = policy
        self.run_id = run_id
        self.clock = clock
        self.obs_digest = obs_digest
        self.parallel = parallel
        self.steps = 0
        self._compiled = None
        self._params = None
        self._ctx_id = None
        self._shape = None
        self._pending_conf = None
        self._pending_ids = None
        self.config_hash = ""
        if scenario is not None:
            from restock.envs.array_env import compile_any

            c = compile_any(scenario)
            self._bind_params(c.params, c)

    # ---------------------------------------------------------------- configuration
    def config(self) -> dict[str, Any]:
        """The shield's configuration as plain data (hashed with the constraint data into config_hash)."""
        return {
            "version": SHIELD_VERSION,
            "mode": self.mode,
            "penalty": self.penalty,
            "penalty_per": self.penalty_per,
            "breaker_after": self.breaker_after,
            "cooldown": self.cooldown,
            "anomaly": None if self.anomaly is None else asdict(self.anomaly),
            "check_obs": self.check_obs,
            "fallback": None
            if self.fallback is None
            else [str(getattr(self.fallback, "name", "")), str(getattr(self.fallback, "version", ""))],
            "constraints": list(CONSTRAINTS),
        }

    def _bind_params(self, params, compiled=None) -> None:
        self._params = params
        self._compiled = compiled
        self.verifier = Verifier(params)
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for name in (
            "storage_cap_ahead",
            "sup_cap",
            "lane_cap",
            "budget",
            "max_increase",
            "volume",
            "unit_cost",
            "lot",
            "moq",
            "parent",
            "supplier",
            "child_ptr",
            "child_idx",
            "sup_ptr",
            "sup_idx",
        ):
            h.update(name.encode())
            _array_digest(h, getattr(params, name))
        h.update(f"{params.horizon}/{params.n_dcs}".encode())
        self.config_hash = h.hexdigest()
        if compiled is not None:
            self._meta = RecordMeta(
                agent_ids=tuple(compiled.agent_ids),
                sku_names=tuple(compiled.sku_names),
                n_dcs=int(compiled.M),
                scenario_hash=str(compiled.config_hash),
                volume=np.asarray(params.volume, float),
                unit_cost=np.asarray(params.unit_cost, float),
                lot=np.asarray(params.lot, np.int64),
                moq=np.asarray(params.moq, np.int64),
            )
        self._policy_ids = None

    def _bind(self, ctx) -> None:
        p = ctx.params
        compiled = getattr(ctx, "compiled", None)
        if p is not self._params:
            self._bind_params(p, compiled)
        elif compiled is not None and self._compiled is None:
            self._bind_params(p, compiled)
        E, N, K = ctx.state.on_hand.shape
        if self._shape != (E, N, K) or self._ctx_id != id(ctx):
            if self._shape != (E, N, K):
                self.work = new_shield_work(E, N, K)
                self._exec = np.zeros((E, N, K), np.int32)
                self._slack = np.zeros((E, N, 6))
                self._oo = np.zeros((N, K), np.int64)
            self._shape = (E, N, K)
            self._ctx_id = id(ctx)
            self.reset()

    def reset(self) -> None:
        """Forget the runtime guards' history (breakers closed, demand statistics empty)."""
        if self._shape is None:
            return
        self.guards = Guards(*self._shape)

    def set_policy(self, policy: Any) -> None:
        """Name the proposer in decision records (a Policy, JointPolicy, role dict or string)."""
        self.policy = policy
        self._policy_ids = None

    def note(self, confidence: np.ndarray | None = None, request_ids: list[str] | None = None) -> None:
        """Attach the policy's confidence [E, N] and/or request ids (E * N) to the next decision."""
        self._pending_conf = confidence
        self._pending_ids = request_ids

    @property
    def records(self) -> Sink | None:
        return self.sink

    # ---------------------------------------------------------------- the chain
    def _as_array(self, qty, E: int, N: int, K: int) -> np.ndarray:
        a = np.asarray(qty)
        if a.dtype.kind not in "biuf":
            try:
                a = a.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"proposed orders must be numbers, got an array of dtype {a.dtype}"
                ) from None
        if a.shape == (N, K) and E == 1:
            a = a[None]
        if a.shape != (E, N, K):
            raise ValueError(f"proposed orders must have shape {(E, N, K)} (E, nodes, SKUs), got {a.shape}")
        if a.dtype.kind == "b":
            a = a.astype(np.int64)
        elif a.dtype.kind == "u":
            a = np.minimum(a, BIG + 1).astype(np.int64)
        elif a.dtype.kind == "f" and a.dtype != np.float64:
            a = a.astype(np.float64)
        return a

    def _sanitise(self, a: np.ndarray) -> None:
        sanitise(a, self.work)

    def _use_parallel(self) -> bool:
        return bool(self.parallel) and self._shape[0] > 1

    def project(self, ctx, qty) -> np.ndarray:
        """Steps 1-4 only (no verifier, guards or records): a copy of the shielded orders [E, N, K]."""
        self._bind(ctx)
        E, N, K = self._shape
        self._sanitise(self._as_array(qty, E, N, K))
        self.work.live.fill(1)
        repair(ctx.params, ctx.state, self.work, self._use_parallel())
        return self.work.q.copy()

    def decide(
        self, ctx, qty, confidence: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> ShieldResult:
        """Shield proposed orders qty[E, N, K] at the decision point ``ctx`` (an ArrayEnv or anything with
        ``params`` and ``state``; ``compiled`` and ``obs`` when available).

        ``rows`` (int64 [R, 2] of (environment, node)): only these nodes are deciding (the serving shim
        asks about one node per environment). Every other node executes the safe action (orders
        nothing) and its clipping, repairs and observation check are skipped; give them zero
        proposals and the result is the one without ``rows``, computed for R nodes instead of E x N.
        """
        self._bind(ctx)
        E, N, K = self._shape
        p, s = ctx.params, ctx.state
        w = self.work
        if rows is None:
            w.live.fill(1)
        else:
            w.live.fill(0)
            w.live[rows[:, 0], rows[:, 1]] = 1
        enforce = self.mode == "enforce"
        a = self._as_array(qty, E, N, K)
        breaker = enforce and self.breaker_after > 0
        open_ = self.guards.open_nodes(breaker)
        if open_.any():
            a = fallback_proposals(ctx, a, open_, self.fallback)
        self._sanitise(a)
        repair(p, s, w, self._use_parallel())

        # verify the shielded orders; failing nodes execute the safe action
        verdict = self.verifier.check(s, w.q)
        fb = np.where(open_, np.int8(2), np.int8(0))
        failed = verdict.failed_nodes()
        vfail = failed.sum(axis=1)
        if failed.any():
            w.q[failed] = 0
            w.esc[failed] |= ESC_VERIFIER
            w.cost[failed] = ((w.q0[failed] != 0) | (w.changed[failed] != 0)).sum(axis=-1)
            fb[failed] = 1
            verdict = self.verifier.check(s, w.q)
            still = verdict.failed_nodes().any(axis=1)
            if still.any():  # cannot happen for zero orders; fail closed for the whole environment
                w.q[still] = 0
                verdict = self.verifier.check(s, w.q)
        if enforce:
            self._exec[...] = w.q
        else:
            self._exec[...] = w.q0
            verdict = self.verifier.check(s, w.q0)

        # runtime guards
        anomalies = self.guards.check_demand(self.anomaly, s, p, w.esc)
        obs = getattr(ctx, "obs", None)
        if self.check_obs and obs is not None and np.shape(obs)[:2] == (E, N):
            check_observations(obs, w.esc, rows)
        if breaker:
            self.guards.update_breakers(w.esc, open_, self.breaker_after, self.cooldown)

        cost = w.cost.astype(np.float64)
        if enforce and self.penalty:
            if self.penalty_per == "sku":
                pen = self.penalty * cost
            else:
                diff = (w.q0 - w.q) * p.inv_scale[None]
                pen = self.penalty * diff.sum(axis=2)
        else:
            pen = np.zeros((E, N))
        if confidence is None:
            confidence = self._pending_conf
        res = ShieldResult(
            executed=self._exec,
            proposed=w.q0,
            shielded=w.q,
            changed=w.changed,
            interventions=w.interv.copy(),
            raw_violations=w.raw.copy(),
            executed_violations=verdict.count,
            escalation=w.esc.copy(),
            fallback=fb,
            verifier_failures=vfail,
            sanitised=w.san.copy(),
            anomalies=anomalies,
            breaker_open=open_.sum(axis=1),
            constraint_cost=cost,
            reward_penalty=pen,
            verdict=verdict,
        )
        if self.sink is not None:
            self._record(ctx, res, confidence)
        self._pending_conf = None
        self._pending_ids = None
        self.steps += 1
        return res

    # ---------------------------------------------------------------- records
    def _record(self, ctx, res: ShieldResult, confidence) -> None:
        compiled = getattr(ctx, "compiled", None) or self._compiled
        if compiled is None:
            raise ValueError(
                "decision records need the scenario: give Shield(scenario) or a ctx with compiled"
            )
        if self._compiled is None:
            self._bind_params(ctx.params, compiled)
        if self._policy_ids is None:
            self._policy_ids = _policy_names(self.policy, compiled)
        E, N, K = self._shape
        joint_slacks(ctx.params, ctx.state, res.executed, self._oo, self._slack)
        digests = None
        obs = getattr(ctx, "obs", None)
        if self.obs_digest and obs is not None and np.shape(obs)[:2] == (E, N):
            digests = np.empty((E, N, 32), np.uint8)
            ob = np.ascontiguousarray(obs)
            for e in range(E):
                for n in range(N):
                    digests[e, n] = np.frombuffer(hashlib.sha256(ob[e, n]).digest(), np.uint8)
        conf = None
        if confidence is not None:
            conf = np.broadcast_to(np.asarray(confidence, float), (E, N)).copy()
        fbp = None
        if self.fallback is not None:
            fbp = (
                str(getattr(self.fallback, "name", "fallback")),
                str(getattr(self.fallback, "version", "")),
            )
        batch = StepBatch(
            meta=self._meta,
            step=self.steps,
            run_id=self.run_id,
            mode=self.mode,
            timestamp=float(self.clock()),
            shield_config_hash=self.config_hash,
            period=ctx.state.t.astype(np.int64),
            policy_ids=self._policy_ids[0],
            policy_versions=self._policy_ids[1],
            proposed=res.proposed.astype(np.int32),
            executed=res.executed.copy(),
            changed=res.changed.copy(),
            slack=self._slack.copy(),
            escalation=res.escalation,
            fallback=res.fallback,
            confidence=conf,
            obs_digest=digests,
            request_ids=None if self._pending_ids is None else list(self._pending_ids),
            fallback_policy=fbp,
        )
        self.sink.append(batch)
        self._last_batch = batch

    def _summaries(self, res: ShieldResult) -> list[dict[str, Any]]:
        """Per-node summaries for env infos (environment 0 when E == 1, else leading E axis)."""
        E, N, K = self._shape
        batch = self._last_batch
        out = []
        if E == 1:
            recs = list(batch.records())
            for n in range(N):
                r = recs[n]
                out.append(
                    {
                        "proposed": res.proposed[0, n].copy(),
                        "executed": res.executed[0, n].copy(),
                        "interventions": {
                            c: int(((res.changed[0, n] >> i) & 1).sum()) for i, c in enumerate(CONSTRAINTS)
                        },
                        "binding": r.binding,
                        "escalated": r.escalated,
                        "escalation_reasons": r.escalation_reasons,
                        "fallback": r.fallback,
                        "rationale": r.rationale,
                    }
                )
            return out
        for n in range(N):
            out.append(
                {
                    "proposed": res.proposed[:, n].copy(),
                    "executed": res.executed[:, n].copy(),
                    "interventions": (
                        (res.changed[:, n, :, None] >> np.arange(N_CONSTRAINTS, dtype=np.uint8)) & 1
                    ).sum(axis=1),
                    "escalated": res.escalation[:, n] != 0,
                    "fallback": res.fallback[:, n].copy(),
                }
            )
        return out

    # ---------------------------------------------------------------- the env hook
    def __call__(self, env, qty) -> tuple[np.ndarray, dict[str, Any]]:
        """The ArrayEnv hook: (executed int32 [E, N, K], info). Info keys, C = len(CONSTRAINTS):

        shield_interventions [E, C]        node-SKUs changed per constraint (what monitor mode would change)
        shield_raw_violations [E, C]       violations in the proposal (units: constraints.VIOLATION_UNITS)
        shield_executed_violations [E, C]  violations in the executed orders (all 0 in enforce mode)
        shield_decisions [E]               node decisions this period (N)
        shield_sku_decisions [E]           node-SKU decisions this period (N * K)
        shield_fallbacks [E]               nodes executing the safe action or the fallback policy
        shield_escalations [E]             nodes escalated
        shield_verifier_failures [E]       nodes whose shielded orders failed the verifier (must be 0)
        shield_sanitised [E]               node-SKUs whose raw value was replaced or rounded down
        shield_anomalies [E]               nodes with anomalous demand last period
        shield_breaker_open [E]            nodes run by the fallback policy
        constraint_cost [E, N]             SKUs changed per node (cost for constrained-RL learners)
        reward_penalty [E, N]              intervention penalty to subtract from rewards (`apply_penalty`)
        shield                             with records: per-node summaries (`_summaries`)
        """
        res = self.decide(env, qty)
        E, N, K = self._shape
        info: dict[str, Any] = {
            "shield_interventions": res.interventions,
            "shield_raw_violations": res.raw_violations,
            "shield_executed_violations": res.executed_violations,
            "shield_decisions": np.full(E, N, np.int64),
            "shield_sku_decisions": np.full(E, N * K, np.int64),
            "shield_fallbacks": (res.fallback != 0).sum(axis=1),
            "shield_escalations": (res.escalation != 0).sum(axis=1),
            "shield_verifier_failures": res.verifier_failures,
            "shield_sanitised": res.sanitised,
            "shield_anomalies": res.anomalies,
            "shield_breaker_open": res.breaker_open,
            "constraint_cost": res.constraint_cost,
            "reward_penalty": res.reward_penalty,
        }
        if self.sink is not None:
            info["shield"] = self._summaries(res)
        return res.executed, info


def apply_penalty(reward: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Subtract the shield's intervention penalty ``info["reward_penalty"]`` [E, N] from ``reward`` in
    place (a no-op without it) and return it. Rewards are -cost / scale, so the penalty is in reward units."""
    pen = info.get("reward_penalty")
    if pen is not None:
        reward -= pen
    return reward


# ------------------------------------------------------------------------------------------------
# shielded envs


def shielded_parallel_env(scenario: Any = "default", shield: Shield | None = None, **kwargs: Any):
    """``inventory_v0`` behind a shield (a default enforce-mode `Shield` when none is given).

    infos[agent]["cost"] then carries the shield's constraint cost, and ``infos[agent]["shield"]`` the
    node's summary when the shield keeps records.
    """
    from restock.envs.pz_env import parallel_env

    return parallel_env(scenario, shield=shield if shield is not None else Shield(), **kwargs)


def shielded_array_env(scenario: Any = "default", shield: Shield | None = None, **kwargs: Any):
    """An `envs.ArrayEnv` behind a shield (a default enforce-mode `Shield` when none is given)."""
    from restock.envs.array_env import ArrayEnv

    return ArrayEnv(scenario, shield=shield if shield is not None else Shield(), **kwargs)
