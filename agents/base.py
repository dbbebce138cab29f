"""The `Policy` protocol that the envs, evaluation and serving all accept.

A policy decides orders for some nodes of a batch of environments. It reads a decision context: an
`envs.ArrayEnv` (or anything with the same attributes: ``compiled``, ``params``, ``state``, ``obs``
[E, N, D], ``mask`` [E, N, K, Lmax], ``ub`` [E, N, K] and ``work``) and returns either action levels or
order quantities for the nodes it was asked about. Heuristics are white-box and may read the raw
state; learned policies read only ``obs`` and ``mask``. Either way the caller turns the output into
proposed quantities, runs the shield, and executes what the shield allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from restock.envs import kernel as kn
from restock.envs.roles import ROLES, role_nodes

Output = Literal["levels", "quantities"]


@runtime_checkable
class Policy(Protocol):
    """Anything that decides orders: heuristics, torch modules, RLlib/SB3 policies, ONNX sessions."""

    name: str
    version: str
    output: Output  # what act() returns

    def act(self, ctx: Any, nodes: np.ndarray) -> np.ndarray:
        """Decisions [E, len(nodes), K] for the given node indices of every environment in ctx."""
        ...


@dataclass
class PolicyOutput:
    """Proposed quantities [E, N, K] plus, where the policy has them, levels and confidences."""

    qty: np.ndarray
    levels: np.ndarray | None = None
    confidence: np.ndarray | None = None  # [E, N] probability of the proposed action, if known
    policy_of_node: list[str] = field(default_factory=list)


class JointPolicy:
    """One policy per role, acting together for every node of a batch.

    ``JointPolicy({"store": p1, "dc": p2})`` or ``JointPolicy(p)`` for the same policy everywhere.
    """

    def __init__(self, policies: Policy | dict[str, Policy], name: str | None = None):
        if not isinstance(policies, dict):
            policies = {r: policies for r in ROLES}
        missing = [r for r in ROLES if r not in policies]
        if missing:
            raise ValueError(f"JointPolicy needs a policy for every role; missing {missing}")
        self.policies = policies
        first = policies["store"]
        same = all(p is first for p in policies.values())
        self.name = name or (first.name if same else "+".join(f"{r}:{p.name}" for r, p in policies.items()))

    def bind(self, compiled) -> None:
        for p in set(self.policies.values()):
            if hasattr(p, "bind"):
                p.bind(compiled)

    def propose(self, ctx) -> PolicyOutput:
        """Proposed quantities [E, N, K] for every node (levels converted at the current state)."""
        c = ctx.compiled
        E, N, K = ctx.obs.shape[0], c.N, c.K
        qty = np.zeros((E, N, K), np.int64)
        levels = None
        conf = None
        names = [""] * N
        for role in ROLES:
            nodes = role_nodes(c, role)
            if len(nodes) == 0:
                continue
            pol = self.policies[role]
            out = pol.act(ctx, nodes)
            out = np.asarray(out)
            if out.shape != (E, len(nodes), K):
                raise ValueError(
                    f"policy {pol.name!r} returned shape {out.shape} for role {role}; "
                    f"expected {(E, len(nodes), K)}"
                )
            if pol.output == "levels":
                if levels is None:
                    levels = np.zeros((E, N, K), np.int64)
                levels[:, nodes] = out
                full = np.zeros((E, N, K), np.int64)
                full[:, nodes] = out
                q = np.zeros((E, N, K), np.int32)
                kn.levels_to_qty(ctx.params, ctx.state, ctx.work, full, q)
                qty[:, nodes] = q[:, nodes]
            else:
                qty[:, nodes] = out
            c_fn = getattr(pol, "last_confidence", None)
            if c_fn is not None:
                if conf is None:
                    conf = np.full((E, N), np.nan)
                conf[:, nodes] = c_fn
            for n in nodes:
                names[n] = pol.name
        return PolicyOutput(qty=qty, levels=levels, confidence=conf, policy_of_node=names)
