"""Pieces of the multi-echelon dcl trainer (`training.dcl_serial`): the policy as a table over
(installation, echelon) positions, restarting rollouts from visited states, and fitting the networks."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from restock.agents.echelon import echelon_positions
from restock.agents.echelon_features import (
    EXTRA_SKU_FEATURES,
    augment_rows,
    demand_scale,
)
from restock.agents.networks import PerSkuNet
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv, compile_any
from restock.envs.compile import Compiled
from restock.envs.types import N_COST, sku_feature_names

HUGE = 1e9
KEEP = ("inventory_position", "mean_lead_time", *EXTRA_SKU_FEATURES)
STATE_FIELDS = (
    "on_hand",
    "backlog",
    "owed",
    "pipe",
    "transit",
    "last_order",
    "last_demand",
    "shipped",
    "arrived",
)


# ------------------------------------------------------------------------------------------------
# positions and the policy as a table


@njit(cache=True)
def _lookup(ip, eip, table, ilo, elo, out):
    """out[e, n, 0] = table[n, ip - ilo, eip - elo] (indices clipped to the grid)."""
    E, N = ip.shape[0], ip.shape[1]
    nI, nJ = table.shape[1], table.shape[2]
    for e in range(E):
        for n in range(N):
            i = ip[e, n, 0] - ilo
            j = eip[e, n, 0] - elo
            i = 0 if i < 0 else (nI - 1 if i >= nI else i)
            j = 0 if j < 0 else (nJ - 1 if j >= nJ else j)
            out[e, n, 0] = table[n, i, j]


class Positions:
    """Installation and echelon inventory positions [E, N, 1] of an ArrayEnv's state (buffers reused)."""

    def __init__(self, env: ArrayEnv):
        self.env = env
        shape = env.state.on_hand.shape
        self.ip = np.zeros(shape, np.int64)
        self.eip = np.zeros(shape, np.int64)

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        env = self.env
        s, p = env.state, env.params
        kn.inventory_positions(p, s, env.work, self.ip)
        echelon_positions(s.on_hand, s.transit, s.owed, s.backlog, p.parent, self.eip)
        return self.ip, self.eip


class Grid:
    """The networks' greedy level at every (node, installation position, echelon position) of a grid."""

    def __init__(
        self, compiled: Compiled, roles: dict[str, np.ndarray], lo: int, hi: int, elo: int, ehi: int
    ):
        self.ilo, self.elo = lo, elo
        self.iv = np.arange(lo, hi + 1)
        self.ev = np.arange(elo, ehi + 1)
        self.N = compiled.N
        self.roles = roles
        env = ArrayEnv(compiled, num_envs=1, seed=0, features=True)
        env.reset()
        W = compiled.W
        names = sku_feature_names(W)
        self.F = len(names)
        self.i_ip = names.index("inventory_position")
        scale = demand_scale(compiled.params)[:, 0]
        ii, jj = np.meshgrid(self.iv, self.ev, indexing="ij")
        self.obs: dict[int, torch.Tensor] = {}
        for n in range(compiled.N):
            row = env.obs[0, n].copy()
            rows = np.repeat(row[None], ii.size, axis=0)
            rows[:, self.i_ip] = ii.ravel() / scale[n]
            eip = jj.ravel()[:, None].astype(np.float64)
            self.obs[n] = torch.as_tensor(
                augment_rows(rows, eip, np.full((rows.shape[0], 1), scale[n]), 1, self.F)
            )
        self.table = np.zeros((compiled.N, self.iv.size, self.ev.size), np.int64)

    def refresh(self, nets: dict[str, PerSkuNet]) -> np.ndarray:
        for role, nodes in self.roles.items():
            net = nets[role]
            L = net.cfg.levels
            for n in nodes:
                with torch.no_grad():
                    lg = net.forward_logits(self.obs[int(n)], torch.ones(self.obs[int(n)].shape[0], L))
                self.table[int(n)] = lg.argmax(dim=-1).numpy().reshape(self.iv.size, self.ev.size)
        return self.table

    def decide(self, ip: np.ndarray, eip: np.ndarray, out: np.ndarray) -> np.ndarray:
        _lookup(ip, eip, self.table, self.ilo, self.elo, out)
        return out


def _quantity_of_level(level: np.ndarray, ip: np.ndarray) -> np.ndarray:
    """Order-up-to levels of one unit each: level 0 orders nothing, level l orders max(0, l - ip)."""
    return np.where(level > 0, np.maximum(level - ip, 0), 0)


def _level_of_quantity(q: np.ndarray, ip: np.ndarray, L: int) -> np.ndarray:
    """The level that orders q at position ip (q = 0: the position itself, clipped: the smooth choice)."""
    return np.clip(np.where(q > 0, ip + q, ip), 0, L - 1)


# ------------------------------------------------------------------------------------------------
# simulation


def _snapshot(state, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of the state of environments ``rows``, the pipeline rotated so that period t becomes 0."""
    t = state.t[rows].astype(np.int64)
    snap = {f: getattr(state, f)[rows].copy() for f in STATE_FIELDS}
    W = snap["pipe"].shape[2]
    idx = (np.arange(W)[None, :] + t[:, None]) % W  # new slot d holds old slot (d + t) % W
    snap["pipe"] = np.take_along_axis(snap["pipe"], idx[:, None, :, None], axis=2)
    return snap


def _write(state, snap: dict[str, np.ndarray], which: np.ndarray) -> None:
    for f in STATE_FIELDS:
        getattr(state, f)[:] = snap[f][which]


def _visit(compiled: Compiled, grid: Grid, envs: int, periods: int, burn_in: int, seed: int):
    """Visited states of the table policy after a burn-in: snapshots, positions [V, N], cost per period."""
    c = compile_any(compiled.config, horizon=burn_in + periods)
    env = ArrayEnv(c, num_envs=envs, seed=seed, features=False, parallel=False)
    env.reset()
    pos = Positions(env)
    lv = np.zeros(env.state.on_hand.shape, np.int64)
    snaps, ips, eips = [], [], []
    cost = 0.0
    rows = np.arange(envs)
    for t in range(burn_in + periods):
        ip, eip = pos()
        grid.decide(ip, eip, lv)
        q = env.levels_to_qty(lv).copy()
        if t >= burn_in:
            snaps.append(_snapshot(env.state, rows))
            ips.append(ip[:, :, 0].copy())
            eips.append(eip[:, :, 0].copy())
        _, _, _, _, info = env.step_qty(q)
        if t >= burn_in:
            cost += float(info["cost"].sum())
    snap = {f: np.concatenate([s[f] for s in snaps]) for f in STATE_FIELDS}
    return snap, np.concatenate(ips), np.concatenate(eips), cost / (envs * periods)


def _rollouts(
    compiled_h: Compiled,
    grid: Grid,
    snap: dict[str, np.ndarray],
    start: np.ndarray,
    node: np.ndarray,
    first_q: np.ndarray,
    paths: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Total cost of each rollout: state snap[start[e]], node[e] orders first_q[e] now, the others and
    every later period the table policy."""
    E = start.size
    env = ArrayEnv(compiled_h, num_envs=E, seed=seed, features=False, parallel=False)
    env.reset(paths=paths)
    _write(env.state, snap, start)
    pos = Positions(env)
    lv = np.zeros(env.state.on_hand.shape, np.int64)
    total = np.zeros(E)
    ar = np.arange(E)
    for t in range(compiled_h.horizon):
        ip, eip = pos()
        grid.decide(ip, eip, lv)
        q = env.levels_to_qty(lv)
        if t == 0:
            q[ar, node, 0] = first_q
        _, _, _, _, info = env.step_qty(q)
        total += info["cost"][:, :, :N_COST].sum(axis=(1, 2))
        if env.done():
            break
    return total


# ------------------------------------------------------------------------------------------------
# fitting


def _fit(net: PerSkuNet, obs: torch.Tensor, levels, weights, epochs: int, lr: float, seed: int) -> dict:
    """`training.dcl_train._fit` with every level allowed (the labels are the rollout winners)."""
    from restock.training.dcl_train import _fit as fit_masked

    mask = np.ones((obs.shape[0], net.cfg.levels), np.float32)
    return fit_masked(net, obs, mask, levels, weights, epochs, lr, seed)


def _keys(ip: np.ndarray, eip: np.ndarray, n: int, grid: Grid) -> np.ndarray:
    """Grid cell index of node n's (installation, echelon) position, clipped like the table lookup."""
    i = np.clip(ip - grid.ilo, 0, grid.iv.size - 1)
    j = np.clip(eip - grid.elo, 0, grid.ev.size - 1)
    return i * grid.ev.size + j


def _dataset(grid: Grid, role_nodes_: np.ndarray, keys_by_node: dict, labels_by_node: dict):
    obs, lv, w = [], [], []
    for n in role_nodes_:
        n = int(n)
        k, cnt = keys_by_node[n]
        obs.append(grid.obs[n][k])
        lv.append(labels_by_node[n])
        w.append(cnt.astype(float))
    return torch.cat(obs), np.concatenate(lv), np.concatenate(w)
