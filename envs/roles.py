"""Which role a node plays: the one place that decides it.

A compiled scenario (`envs.compile.Compiled`) orders its nodes DCs first, then stores: nodes
``0 .. M-1`` are the DCs (agent ids ``dc_0 ..``) and ``M .. N-1`` the stores (``store_0 ..``), with
``M = compiled.M`` (``params.n_dcs``). Policies, tuning, records, serving and the trainers ask here.
"""

from __future__ import annotations

import numpy as np

ROLES = ("dc", "store")


def node_role(n: int, n_dcs: int) -> str:
    """'dc' or 'store' for node index ``n`` of a network with ``n_dcs`` DCs."""
    return "dc" if n < n_dcs else "store"


def agent_role(agent_id: str) -> str | None:
    """'dc' or 'store' for an agent id (``dc_<j>``, ``store_<i>``); None for anything else (a role
    name used as a knob key, for example)."""
    if agent_id.startswith("dc_"):
        return "dc"
    if agent_id.startswith("store_"):
        return "store"
    return None


def policy_id_for(agent_id: str) -> str:
    """The multi-agent policy that acts for an agent: ``dc_policy`` for DCs, else ``store_policy``."""
    return "dc_policy" if agent_role(agent_id) == "dc" else "store_policy"


def role_nodes(compiled, role: str) -> np.ndarray:
    """Node indices of a role ('dc' or 'store')."""
    M, N = compiled.M, compiled.N
    if role == "dc":
        return np.arange(0, M)
    if role == "store":
        return np.arange(M, N)
    raise ValueError(f"unknown role {role!r} (roles: dc, store)")


def present_roles(compiled) -> list[str]:
    """The roles that have nodes in this scenario, stores first."""
    return (["store"] if compiled.S else []) + (["dc"] if compiled.M else [])
