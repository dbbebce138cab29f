"""Decision records for a batch of served decisions, built together instead of one `StepBatch` each.

`agents.records.StepBatch.records` builds one record at a time with a dozen small numpy calls per
record (interventions, slack, binding constraints); for a served decision that was the largest single
cost of the decision path. `RecordBuilder.build` gives, field for field, the records that
``StepBatch.records`` gives for one-node, one-environment batches (what the engine used to build per
request: ``env`` 0, ``node`` the node's index), with the per-SKU work done once for the whole batch in
numpy, and the same helpers (`agents.records.rationale`, ``_num``, ``_iso``) for the rest.
``tests/serving/test_records.py`` compares both on many batches, so a change of the record schema in
`agents.records` that is not made here fails there.
"""

from __future__ import annotations

import numpy as np
from restock.agents.records import (
    CHANGED_SANITISED,
    ESCALATION_REASONS,
    FALLBACKS,
    DecisionRecord,
    _iso,
    _num,
    rationale,
)
from restock.envs.constraints import CONSTRAINTS
from restock.envs.roles import node_role

_NC = len(CONSTRAINTS)
_LOT_MOQ_BIT = 1 << CONSTRAINTS.index("lot_moq")


def _change_names(v: int) -> tuple[str, ...]:
    """The ``constraints`` list of an intervention with change flags ``v`` (as StepBatch.records)."""
    cs = [CONSTRAINTS[c] for c in range(_NC) if v & (1 << c)]
    if v & CHANGED_SANITISED:
        cs.insert(0, "sanitise")
    return tuple(cs)


_CHANGE_NAMES = [_change_names(v) for v in range(256)]
_REASONS = [[r for i, r in enumerate(ESCALATION_REASONS) if v & (1 << i)] for v in range(256)]


class RecordBuilder:
    """Builds the records of served decisions for one scenario (constants are computed once)."""

    def __init__(self, compiled):
        from restock.agents.records import RecordMeta

        p = compiled.params
        self.compiled = compiled
        self.agent_ids = list(compiled.agent_ids)
        self.M = compiled.M
        self.scenario_hash = str(compiled.config_hash)
        self.lot = np.asarray(p.lot, np.int64)
        self.moq = np.asarray(p.moq, np.int64)
        self.volume = np.asarray(p.volume, float)
        self.unit_cost = np.asarray(p.unit_cost, float)
        self.moq_step = np.maximum(self.lot, -(-self.moq // self.lot) * self.lot)
        self.costed = self.unit_cost > 0
        self.meta = RecordMeta(  # the names `rationale` reads (SKU names, volume, unit cost)
            agent_ids=tuple(compiled.agent_ids),
            sku_names=tuple(compiled.sku_names),
            n_dcs=0,
            scenario_hash=self.scenario_hash,
            volume=self.volume,
            unit_cost=self.unit_cost,
            lot=self.lot,
            moq=self.moq,
        )
        self.last_changed: np.ndarray | None = None
        self.last_counts: np.ndarray | None = None

    def _needs(self, exe: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Room for one more order line per row (`agents.records._binding`): by volume, by cost, in units."""
        step = np.where(exe > 0, self.lot, self.moq_step)
        by_vol = (step * self.volume).min(axis=1)
        if self.costed.any():
            by_cost = (step * self.unit_cost)[:, self.costed].min(axis=1)
        else:
            by_cost = np.full(len(exe), np.inf)
        return by_vol, by_cost, step.min(axis=1).astype(float)

    def build(self, batch, ee, nn, jobs, used, fell, esc, fbc, digests) -> list[DecisionRecord]:
        """The records of decisions (env ee[i], node nn[i]) of the shield's ``batch``: ``esc`` and
        ``fbc`` are their final escalation bits and fallback codes, ``digests`` their observation
        sha256 (hex). Also sets ``last_changed`` [B, K] and ``last_counts`` [B, constraints]."""
        B = len(jobs)
        prop = batch.proposed[ee, nn]
        exe = batch.executed[ee, nn]
        chg = batch.changed[ee, nn]
        slack = batch.slack[ee, nn]
        self.last_changed = chg
        self.last_counts = ((chg[:, :, None] >> np.arange(_NC, dtype=chg.dtype)) & 1).sum(axis=1)
        ts = _iso(batch.timestamp)
        period = batch.period[ee].tolist()
        conf = None if batch.confidence is None else batch.confidence[ee, nn]
        conf_ok = None if conf is None else np.isfinite(conf)
        by_vol, by_cost, by_units = self._needs(exe)
        chg_any = np.bitwise_or.reduce(chg, axis=1).tolist() if chg.shape[1] else [0] * B
        slack_l = slack.tolist()
        slack_fin = np.isfinite(slack).tolist()
        nslack = slack.shape[1]
        bound = list(enumerate(CONSTRAINTS[:nslack]))
        touched = (prop != exe) | (chg != 0)
        sanit = (chg & CHANGED_SANITISED) != 0
        prop_l, exe_l, chg_l = prop.tolist(), exe.tolist(), chg.tolist()
        # the touched and sanitised SKUs of every record from one nonzero each (row-major: by record)
        t_sku = np.nonzero(touched)[1].tolist()
        t_end = np.cumsum(touched.sum(axis=1)).tolist()
        s_sku = np.nonzero(sanit)[1].tolist()
        s_end = np.cumsum(sanit.sum(axis=1)).tolist()
        out = []
        t_at = s_at = 0
        for i in range(B):
            j = jobs[i]
            n = int(nn[i])
            p_i, x_i, c_i = prop_l[i], exe_l[i], chg_l[i]
            inter = [
                {"sku": k, "proposed": p_i[k], "executed": x_i[k], "constraints": list(_CHANGE_NAMES[c_i[k]])}
                for k in t_sku[t_at : t_end[i]]
            ]
            t_at = t_end[i]
            sanitised = s_sku[s_at : s_end[i]]
            s_at = s_end[i]
            sl = slack_l[i]
            slack_d = {CONSTRAINTS[c]: _num(sl[c]) for c in range(nslack)}
            binding = []
            ca = chg_any[i]
            for c, name in bound:
                if name in ("storage", "lane"):
                    need = by_vol[i]
                elif name == "budget":
                    need = by_cost[i]
                else:
                    need = by_units[i]
                if (ca & (1 << c)) or (slack_fin[i][c] and sl[c] < need):
                    binding.append(name)
            if ca & _LOT_MOQ_BIT:
                binding.append("lot_moq")
            e_bits = int(esc[i])
            reasons = (
                list(_REASONS[e_bits])
                if e_bits < 256
                else [r for b, r in enumerate(ESCALATION_REASONS) if e_bits & (1 << b)]
            )
            fb = FALLBACKS[int(fbc[i])]
            pid, pver = j.rp.policy_id, j.rp.version
            if fb == "fallback_policy" and fell[i]:
                pid, pver = used[i].policy_id, used[i].version
            c_val = None
            if conf is not None and conf_ok[i]:
                c_val = _num(conf[i])
            out.append(
                DecisionRecord(
                    request_id=j.ns.request_id,
                    timestamp=ts,
                    period=int(period[i]),
                    env=0,
                    node=n,
                    agent_id=self.agent_ids[n],
                    role=node_role(n, self.M),
                    mode=batch.mode,
                    policy_id=pid,
                    policy_version=pver,
                    shield_config_hash=batch.shield_config_hash,
                    scenario_hash=self.scenario_hash,
                    obs_digest=digests[i],
                    proposed=p_i,
                    executed=x_i,
                    sanitised=sanitised,
                    interventions=inter,
                    slack=slack_d,
                    binding=binding,
                    rationale=rationale(self.meta, inter, slack_d, binding, exe[i], reasons, fb),
                    confidence=c_val,
                    escalated=e_bits != 0,
                    escalation_reasons=reasons,
                    fallback=fb,
                )
            )
        return out
