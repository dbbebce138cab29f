"""`restock train --trainer dcl`: approximate policy iteration with rollout labels (Deep Controlled Learning).

The idea (Temizoz, Imdahl, Dijkman, Lamghari-Idrissi and van Jaarsveld, "Deep Controlled Learning for
inventory control", EJOR 2025): a fast simulator can tell, for a sampled state, which order is best
under the current policy by simulating every candidate order followed by the current policy on the
same demand paths (common random numbers), and a classifier learns those labels. Each iteration is one
step of policy iteration with a learned, generalising policy:

1. warm start: behaviour cloning of the tuned heuristic (the "cloned heuristic", saved in ``cloned/``);
2. sample states by simulating the current policy on training paths (after a burn-in);
3. for each sampled state and each candidate order (the current policy's order +- ``window``, within
   the action mask), simulate ``rollouts`` paths of ``horizon`` periods in the kernel: the candidate
   now, the current policy after; the same paths for every candidate of that state;
4. label each state with the candidate of least mean cost and fit the network (cross-entropy, states
   weighted by how often they were visited), then repeat from 2 with the new network.

Scope: one decision per period (a one-store, one-SKU scenario with a fixed lead time: what
`agents.single_node_scenario.spec_from_scenario` accepts), because rollouts restart from sampled exact
states. The policy is the same `PerSkuNet` the other trainers use, reading the same observation; its
feature normalisation gives features that are not part of the state (time, last period's flows,
constants) a scale of 1e9, so the learned policy is a function of the exact state (on hand, backlog and
the pipeline slot by slot). That is what lets rollouts run the network as a table over the finite set
of states (positions up to the top action level) instead of a forward pass per simulated period: the
table is the network's greedy action at each state, recomputed after every fit. Nothing here reads an
optimal solution; the DP module is used only to enumerate states.

Run directory, TensorBoard tags (``charts/``, ``losses/``, ``eval/``, ``dcl/``), ``policies/<role>.pt``
(the best held-out greedy weights, the cloned start included, when ``keep_best``), ``checkpoints/`` and
export are those of the other trainers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from restock.agents.base import JointPolicy
from restock.agents.learned import load_role, save_role
from restock.agents.networks import PerSkuNet
from restock.agents.single_node_scenario import StateTable
from restock.envs.array_env import ArrayEnv, compile_any
from restock.envs.compile import Compiled
from restock.envs.roles import role_nodes
from restock.envs.types import N_COST, NODE_FEATURES, sku_feature_names
from restock.training.common import (
    Baseline,
    Monitor,
    make_eval,
    net_config,
    observation_stats,
    seed_everything,
    write_cloned_run,
    write_json_atomic,
)
from restock.training.experiment import ExperimentConfig

# features the policy may read: the exact state of the one node (everything else gets scale 1e9)
STATE_FEATURES = ("on_hand", "backlog", "pipeline_total", "inventory_position")
HUGE = 1e9


def _state_feature_std(net: PerSkuNet, W: int) -> None:
    """Scale 1e9 for every feature that is not part of the exact state (see the module docstring)."""
    names = sku_feature_names(W) + list(NODE_FEATURES)
    keep = set(STATE_FEATURES) | {f"pipeline_{j}" for j in range(1, W)}
    std = net.feat_std.clone()
    for i, n in enumerate(names):
        if n not in keep:
            std[i] = HUGE
    net.feat_std.copy_(std)
    net.cfg.feat_std = [float(v) for v in std]


class _Tables:
    """Observation, mask and quantity of every level at every state (computed once, in the kernel)."""

    def __init__(self, compiled: Compiled, table: StateTable, node: int):
        env = ArrayEnv(compiled, num_envs=table.S, seed=0, features=True)
        env.reset()
        table.write(env, np.arange(table.S))
        env._observe(env.params, env.state, env.work, env.obs, env.mask, env.ub)
        L = int(compiled.params.levels[node])
        self.L = L
        self.obs = torch.as_tensor(env.obs[:, node].copy())
        self.mask = env.mask[:, node, 0, :L].astype(bool)
        qty = np.zeros((table.S, L), np.int64)
        lv = np.zeros((table.S, 1, 1), np.int64)
        for level in range(L):
            lv[:] = level
            qty[:, level] = env.levels_to_qty(lv)[:, 0, 0]
        self.qty = np.where(self.mask, qty, -1)
        self.env = env

    def heuristic(self, joint: JointPolicy, compiled: Compiled, node: int) -> np.ndarray:
        joint.bind(compiled)
        return joint.propose(self.env).qty[:, node, 0].astype(np.int64)

    def greedy(self, net: PerSkuNet) -> tuple[np.ndarray, np.ndarray]:
        """(quantity [S], level [S]) of the network's greedy action at every state."""
        with torch.no_grad():
            logits = net.forward_logits(self.obs, torch.as_tensor(self.mask.astype(np.float32)))
        lv = logits.argmax(dim=-1).numpy()
        return self.qty[np.arange(lv.size), lv], lv

    def level_of(self, idx: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The first allowed level that orders q at state idx (level 0 for q = 0)."""
        rows = self.qty[idx]
        hit = rows == q[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), 0)


def _simulate_states(
    compiled: Compiled,
    table: StateTable,
    policy_q: np.ndarray,
    envs: int,
    periods: int,
    burn_in: int,
    seed: int,
):
    """Visited state indices [periods * envs] of the table policy after a burn-in, and its cost per period."""
    c = compile_any(compiled.config, horizon=burn_in + periods)
    env = ArrayEnv(c, num_envs=envs, seed=seed, features=False)
    env.reset()
    out = []
    cost = 0.0
    for t in range(burn_in + periods):
        idx = table.index(env)
        q = np.where(idx >= 0, policy_q[np.maximum(idx, 0)], 0)
        if t >= burn_in:
            out.append(idx)
        _, _, _, _, info = env.step_qty(q.reshape(envs, 1, 1))
        if t >= burn_in:
            cost += float(info["cost"].sum())
    idx = np.concatenate(out)
    return idx[idx >= 0], cost / (envs * periods)


def _rollout_costs(
    compiled_h: Compiled,
    table: StateTable,
    policy_q: np.ndarray,
    start: np.ndarray,
    first_q: np.ndarray,
    paths: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Total cost of each rollout: state start[e], order first_q[e] now, the table policy after."""
    E = start.size
    env = ArrayEnv(compiled_h, num_envs=E, seed=seed, features=False)
    env.reset(paths=paths)
    table.write(env, start)
    total = np.zeros(E)
    q = first_q.astype(np.int64)
    for _ in range(compiled_h.horizon):
        _, _, _, _, info = env.step_qty(q.reshape(E, 1, 1))
        total += info["cost"][:, 0, :N_COST].sum(axis=1)
        if env.done():
            break
        idx = table.index(env)
        q = np.where(idx >= 0, policy_q[np.maximum(idx, 0)], 0)
    return total


def _labels(cands, per_state, q_now, z: float) -> tuple[np.ndarray, np.ndarray]:
    """The label of each state and the estimated gain over the current order (rollout cost units).

    The candidate with the least mean cost replaces the current order only when its paired difference
    to it is below zero by ``z`` standard errors (paired over the common paths); otherwise the current
    order stays the label. Without this test, near-ties flip with the sampling noise and the policy
    drifts (seen on lead time 3 at penalty 39: the held-out cost rose over iterations).
    """
    label = q_now.copy()
    gain = np.zeros(q_now.size)
    for j, blocks in enumerate(per_state):
        costs = np.concatenate(blocks, axis=1)  # [candidates, paths]
        own = np.flatnonzero(cands[j] == q_now[j])
        mean = costs.mean(axis=1)
        best = int(np.argmin(mean))
        if own.size == 0:  # the current order is not a candidate (masked): take the best
            label[j] = cands[j][best]
            continue
        d = costs[best] - costs[own[0]]
        n = d.size
        se = d.std(ddof=1) / np.sqrt(n) if n > 1 else np.inf
        if d.mean() < -z * se:
            label[j] = cands[j][best]
            gain[j] = -d.mean()
    return label, gain


def _fit(net: PerSkuNet, obs, mask, levels, weights, epochs: int, lr: float, seed: int) -> dict:
    """Weighted cross-entropy of the masked logits against the labels (full batches)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    y = torch.as_tensor(levels, dtype=torch.long)
    w = torch.as_tensor(weights / weights.sum(), dtype=torch.float32)
    m = torch.as_tensor(mask.astype(np.float32))
    net.train()
    loss = torch.zeros(())
    for _ in range(epochs):
        logits = net.forward_logits(obs, m)
        loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net.forward_logits(obs, m).argmax(dim=-1)
    acc = float(((pred == y).float() * w).sum())
    return {"loss": float(loss.detach()), "accuracy": acc}


def train_dcl(
    compiled: Compiled,
    exp: ExperimentConfig,
    run_dir: Path,
    baseline: Baseline,
    monitor: Monitor,
    shield_factory=None,
    resume: Path | None = None,
    on_progress: Callable[[dict], None] | None = None,
    stop_after_checkpoints: int | None = None,
    log=print,
) -> dict:
    """Approximate policy iteration from the cloned heuristic; returns a summary for run.json."""
    if resume is not None:
        raise ValueError(
            "--resume is not supported by --trainer dcl yet (each iteration is saved; start anew)"
        )
    if "dc" in exp.roles:  # a network, every stage learned: training.dcl_serial
        from restock.training.dcl_serial import train_dcl_network

        return train_dcl_network(
            compiled, exp, run_dir, baseline, monitor, shield_factory, resume, on_progress,
            stop_after_checkpoints, log,
        )  # fmt: skip
    cfg = exp.dcl
    seed_everything(exp.seed)
    t_start = time.perf_counter()
    deadline = t_start + 60 * exp.minutes if exp.minutes else None
    role = "store"
    node = int(role_nodes(compiled, role)[0])
    try:
        table = StateTable(compiled)
    except ValueError as exc:
        raise ValueError(f"--trainer dcl: {exc}") from None
    tabs = _Tables(compiled, table, node)
    log(f"dcl: {table.S:,} exact states (lead time {table.spec.lead_time}, top level {table.smax} units)")
    stats = observation_stats(compiled, role, baseline)
    net = PerSkuNet(net_config(compiled, role, exp, stats))
    _state_feature_std(net, compiled.W)
    horizon_c = compile_any(compiled.config, horizon=cfg.horizon)

    # --- warm start: behaviour cloning of the tuned heuristic on the states it visits
    q_heur = tabs.heuristic(baseline.joint(), compiled, node)
    visited, heur_cost = _simulate_states(
        compiled, table, q_heur, cfg.sample_envs, cfg.sample_periods, cfg.burn_in, exp.seed
    )
    uniq, counts = np.unique(visited, return_counts=True)
    lv = tabs.level_of(uniq, q_heur[uniq])
    fit = _fit(
        net,
        tabs.obs[uniq],
        tabs.mask[uniq],
        lv,
        counts.astype(float),
        cfg.bc_epochs,
        cfg.learning_rate,
        exp.seed,
    )
    q_pol, _ = tabs.greedy(net)
    agree = float((q_pol[uniq] == q_heur[uniq]) @ counts / counts.sum())
    log(
        f"dcl: cloned {exp.baseline} on {uniq.size:,} visited states (accuracy {fit['accuracy']:.3f}, "
        f"same order in {agree:.1%} of visits); heuristic cost {heur_cost:.4f} per period on training paths"
    )
    monitor.log(0, {"charts/bc_accuracy": fit["accuracy"], "dcl/heuristic_cost_per_period": heur_cost})
    save_role(run_dir / "cloned", role, net)
    write_cloned_run(run_dir, ["store"])

    held_out = make_eval(compiled, exp, baseline, shield_factory)
    best: dict[str, Any] | None = None
    env_steps = 0
    summary: dict[str, Any] = {"roles": {}, "iterations": []}

    def consider(step: int, it: int) -> None:
        nonlocal best
        res = held_out({role: net})
        monitor.log(step, {f"eval/{k}": v for k, v in res.items()})
        if best is None or res["episodic_cost"] < best["eval_cost"]:
            best = {"env_steps": step, "iteration": it, "eval_cost": res["episodic_cost"]}
            save_role(run_dir / "best", role, net)
            write_json_atomic(run_dir / "best" / f"{role}.json", best)
        log(f"dcl: iteration {it}: held-out greedy cost {res['episodic_cost']:,.1f} per episode")

    consider(0, 0)
    save_role(run_dir, role, net)
    stopped_for_time = False
    rng = np.random.default_rng(exp.seed)
    for it in range(1, cfg.iterations + 1):
        if deadline is not None and time.perf_counter() > deadline:
            stopped_for_time = True
            break
        t_it = time.perf_counter()
        q_pol, _ = tabs.greedy(net)
        visited, pol_cost = _simulate_states(
            compiled, table, q_pol, cfg.sample_envs, cfg.sample_periods, cfg.burn_in, exp.seed * 1_000 + it
        )
        sample = rng.choice(visited, size=min(cfg.states, visited.size), replace=False)
        uniq, inv, counts = np.unique(sample, return_inverse=True, return_counts=True)
        # candidates per unique state: allowed quantities within +- window of the policy's order
        cands = []
        for u in uniq:
            allowed = np.unique(tabs.qty[u][tabs.qty[u] >= 0])
            if cfg.window > 0:
                allowed = allowed[np.abs(allowed - q_pol[u]) <= cfg.window]
            cands.append(allowed)
        n_c = np.array([c.size for c in cands])
        # one rollout block per sampled state instance: its state's candidates x M paths (CRN)
        inst_c = n_c[inv]
        M = int(min(cfg.max_rollouts, round(cfg.rollouts * cfg.rollouts_growth ** (it - 1))))
        starts = np.repeat(uniq[inv], inst_c * M)
        first = np.concatenate([np.repeat(cands[inv[i]], M) for i in range(inv.size)])
        path_of = np.concatenate([np.tile(i * M + np.arange(M), inst_c[i]) for i in range(inv.size)])
        total = np.zeros(starts.size)
        chunk = cfg.chunk
        seed_it = 7_919 * (exp.seed + 1) + it
        for lo in range(0, starts.size, chunk):
            hi = min(lo + chunk, starts.size)
            total[lo:hi] = _rollout_costs(
                horizon_c, table, q_pol, starts[lo:hi], first[lo:hi], path_of[lo:hi].astype(np.int64), seed_it
            )
        env_steps += int(starts.size * cfg.horizon)
        # per unique state: every path's cost of each candidate minus the policy's own order on the same
        # path (common random numbers), pooled over the instances of that state
        per_state: list[list[np.ndarray]] = [[] for _ in range(uniq.size)]
        pos = 0
        for i in range(inv.size):
            k = inst_c[i]
            per_state[inv[i]].append(total[pos : pos + k * M].reshape(k, M))
            pos += k * M
        label_q, gap = _labels(cands, per_state, q_pol[uniq], cfg.confidence)
        changed = float(((label_q != q_pol[uniq]) * counts).sum() / counts.sum())
        lv = tabs.level_of(uniq, label_q)
        fit = _fit(
            net,
            tabs.obs[uniq],
            tabs.mask[uniq],
            lv,
            counts.astype(float),
            cfg.epochs,
            cfg.learning_rate,
            exp.seed + it,
        )
        dt = time.perf_counter() - t_it
        scal = {
            "charts/SPS": starts.size * cfg.horizon / max(dt, 1e-9),
            "dcl/policy_cost_per_period_training_paths": pol_cost,
            "losses/policy_loss": fit["loss"],
            "dcl/label_accuracy": fit["accuracy"],
            "dcl/labels_changed": changed,
            "dcl/mean_rollout_gain": float(gap @ counts / counts.sum()),
            "dcl/states": float(uniq.size),
            "dcl/candidates": float(n_c.mean()),
            "dcl/rollouts_per_candidate": float(M),
        }
        monitor.log(env_steps, scal)
        log(
            f"dcl: iteration {it}: {uniq.size:,} states, {n_c.mean():.1f} candidates, {starts.size:,} rollouts "
            f"in {dt:.1f} s; labels differ from the policy on {changed:.1%} of visits; fit accuracy "
            f"{fit['accuracy']:.3f}; policy cost {pol_cost:.4f} per period on training paths"
        )
        if on_progress:
            on_progress({"env_steps": env_steps, "role": role, **scal})
        save_role(run_dir, role, net)
        _checkpoint(run_dir, role, net, it, env_steps)
        summary["iterations"].append({"iteration": it, "seconds": dt, "changed": changed, "cost": pol_cost})
        if stop_after_checkpoints is not None and it >= stop_after_checkpoints:
            break
        if it % max(1, cfg.eval_every_iterations) == 0 or it == cfg.iterations:
            consider(env_steps, it)
    summary["roles"][role] = {
        "env_steps": env_steps,
        "stopped_for_time": stopped_for_time,
        "seconds": time.perf_counter() - t_start,
    }
    if exp.keep_best and best is not None:
        best_net = load_role(run_dir / "best", role)
        net = copy.deepcopy(net)
        net.load_state_dict(best_net.state_dict())
        save_role(run_dir, role, net)
        summary["roles"][role]["selected"] = dict(best)
        log(
            f"{role}: kept the weights of iteration {best['iteration']} (held-out greedy cost "
            f"{best['eval_cost']:,.1f} per episode)"
        )
    summary["seconds"] = time.perf_counter() - t_start
    return summary


def _checkpoint(run_dir: Path, role: str, net: PerSkuNet, it: int, env_steps: int) -> None:
    d = run_dir / "checkpoints" / f"iter_{it:04d}"
    save_role(d, role, net)
    write_json_atomic(d / "meta.json", {"iteration": it, "env_steps": env_steps, "role": role})
    write_json_atomic(
        run_dir / "checkpoints" / "latest.json", {"path": d.name, "role": role, "env_steps": env_steps}
    )
