"""`restock train --trainer dcl` on a multi-echelon network: every stage learned, with echelon features.

The single-node trainer (`training.dcl_train`) restarts rollouts from exact states it can enumerate.
Here the state (on hand, backlogs, owed units and pipelines of every stage) is restarted from copies of
states the current policy visited, and the policy of every node is a network of two numbers per SKU:
its installation inventory position (the kernel's ``inventory_position`` feature) and its echelon
inventory position (the extra feature of `agents.echelon_features`), plus the node's constant features
(``mean_lead_time`` tells the stages of one role apart). As in the single-node trainer every other
feature gets the normalisation scale 1e9, so the network is a function of those integers and rollouts
run it as a table over a grid of (installation position, echelon position) per node, recomputed after
every fit. Clark-Scarf's optimal policy for a serial chain is of this form (order up to an echelon
level), so the class contains the optimum; nothing here reads the optimum.

Coordinate-wise approximate policy iteration:

1. warm start: behaviour cloning of the tuned heuristic (`echelon_base_stock`) at every node (``cloned/``);
2. simulate the current policy of all nodes, keep copies of the visited states after a burn-in;
3. for sampled visited states and every node n: every order of node n within ``window`` units of the
   policy's, the other nodes ordering as the policy says; then ``horizon`` periods of the current
   policy of all nodes; ``rollouts`` common paths per (state, node), the same for every candidate;
4. pool the paired differences to the policy's own order over the sampled states that share node n's
   (installation, echelon) position; the best candidate becomes the label there only when it beats the
   policy's order by ``confidence`` paired standard errors; refit each role's network on every visited
   position (the policy's own order where no label changed), and repeat from 2.

Run directory, TensorBoard tags, checkpoints and ``policies/<role>.pt`` are the single-node trainer's;
``policies/<role>.features.json`` marks the echelon feature for `restock eval` and `restock export`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.echelon_features import (
    EXTRA_SKU_FEATURES,
    augment,
    make_echelon_policy,
    write_features,
)
from restock.agents.learned import load_role, save_role
from restock.agents.networks import PerSkuNet, feature_stats
from restock.envs.array_env import ArrayEnv, compile_any
from restock.envs.compile import Compiled
from restock.envs.roles import node_role, role_nodes
from restock.envs.types import MODE_ORDER_UP_TO, NODE_FEATURES, sku_feature_names
from restock.training.common import (
    Baseline,
    Monitor,
    net_config,
    seed_everything,
    write_cloned_run,
    write_json_atomic,
)
from restock.training.dcl_serial_parts import (
    HUGE,
    KEEP,
    Grid,
    Positions,
    _dataset,
    _fit,
    _keys,
    _level_of_quantity,
    _lookup,
    _quantity_of_level,
    _rollouts,
    _visit,
)
from restock.training.experiment import ExperimentConfig

# ------------------------------------------------------------------------------------------------
# the trainer


def _check(compiled: Compiled, exp: ExperimentConfig) -> None:
    p = compiled.params
    why = []
    if compiled.K != 1:
        why.append(f"one SKU ({compiled.K} here)")
    if not np.all(p.mode == MODE_ORDER_UP_TO):
        why.append("order-up-to actions at every node")
    step = p.cover_step[:, None] * p.mean
    if not np.allclose(step, 1.0):
        why.append(
            "order-up-to levels one unit apart (levels x max_cover / (levels - 1) = 1 unit of mean demand)"
        )
    if np.any(p.lot != 1) or np.any(p.moq > 1):
        why.append("lot size 1 and no MOQ")
    if not np.allclose(p.season, 1.0):
        why.append("no seasonality")
    if sorted(exp.roles) != ["dc", "store"]:
        why.append(f"roles [store, dc] (experiment roles: {exp.roles})")
    if why:
        raise ValueError("--trainer dcl on a network needs " + "; ".join(why))


def _roles(compiled: Compiled) -> dict[str, np.ndarray]:
    return {r: role_nodes(compiled, r) for r in ("store", "dc") if len(role_nodes(compiled, r))}


def _make_net(compiled: Compiled, role: str, exp: ExperimentConfig, obs_rows: np.ndarray) -> PerSkuNet:
    """A PerSkuNet over the augmented observation; every feature outside KEEP gets scale 1e9."""
    F = len(sku_feature_names(compiled.W)) + len(EXTRA_SKU_FEATURES)
    G = len(NODE_FEATURES)
    mean, std = feature_stats(obs_rows, F, G)
    names = sku_feature_names(compiled.W) + list(EXTRA_SKU_FEATURES) + list(NODE_FEATURES)
    std = [s if n in KEEP else HUGE for n, s in zip(names, std, strict=True)]
    cfg = net_config(compiled, role, exp, (mean, std))
    cfg.sku_features = F
    return PerSkuNet(cfg)


def train_dcl_network(
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
    """Coordinate-wise approximate policy iteration from the cloned heuristic (module docstring). Called by
    `training.dcl_train.train_dcl` (the trainer interface every trainer shares), which refuses ``resume``."""
    _check(compiled, exp)
    cfg = exp.dcl
    seed_everything(exp.seed)
    t_start = time.perf_counter()
    deadline = t_start + 60 * exp.minutes if exp.minutes else None
    roles = _roles(compiled)
    L = {r: int(compiled.params.levels[nodes[0]]) for r, nodes in roles.items()}
    N = compiled.N
    horizon_c = compile_any(compiled.config, horizon=cfg.horizon)

    # --- the heuristic's visits: normalisation statistics, the grid's extent, behaviour cloning
    env = ArrayEnv(compiled, num_envs=cfg.sample_envs, seed=exp.seed + 77, features=True)
    env.reset()
    joint = baseline.joint()
    joint.bind(compiled)
    pos = Positions(env)
    rows = {r: [] for r in roles}
    ips, eips, qs = [], [], []
    for t in range(min(compiled.horizon, cfg.burn_in + cfg.sample_periods)):
        ip, eip = pos()
        q = joint.propose(env).qty
        if t >= min(cfg.burn_in, compiled.horizon // 2):
            for r, nodes in roles.items():
                rows[r].append(augment(env, nodes))
            ips.append(ip[:, :, 0].copy())
            eips.append(eip[:, :, 0].copy())
            qs.append(q[:, :, 0].astype(np.int64).copy())
        env.step_qty(q)
    ip_h, eip_h, q_h = np.concatenate(ips), np.concatenate(eips), np.concatenate(qs)
    pad = 3 * int(np.ceil(compiled.params.mean.max())) + cfg.window
    grid = Grid(
        compiled,
        roles,
        int(min(ip_h.min(), 0)) - pad,
        int(ip_h.max()) + pad,
        int(eip_h.min()) - pad,
        int(eip_h.max()) + pad,
    )
    nets = {r: _make_net(compiled, r, exp, np.concatenate(rows[r])) for r in roles}
    log(
        f"dcl (network): {N} nodes, roles {sorted(roles)}; policy grid {grid.iv.size} x {grid.ev.size} "
        f"(installation x echelon position) per node"
    )
    keys_h, labels_h = {}, {}
    for r, nodes in roles.items():
        for n in nodes:
            n = int(n)
            k = _keys(ip_h[:, n], eip_h[:, n], n, grid)
            uk, inv, cnt = np.unique(k, return_inverse=True, return_counts=True)
            lv_all = _level_of_quantity(q_h[:, n], ip_h[:, n], L[r])
            # the heuristic's order is a function of the two positions; take the most common per cell
            lab = np.array([np.bincount(lv_all[inv == i]).argmax() for i in range(uk.size)])
            keys_h[n], labels_h[n] = (uk, cnt), lab
    bc = {}
    for r, nodes in roles.items():
        obs, lv, w = _dataset(grid, nodes, keys_h, labels_h)
        bc[r] = _fit(nets[r], obs, lv, w, cfg.bc_epochs, cfg.learning_rate, exp.seed)
    grid.refresh(nets)
    agree = float(
        np.mean(
            [
                np.average(grid.table[n].ravel()[keys_h[n][0]] == labels_h[n], weights=keys_h[n][1])
                for n in range(N)
            ]
        )
    )
    _, _, _, heur_cost = _visit_heuristic_cost(compiled, joint, cfg, exp.seed)
    log(
        f"dcl: cloned {exp.baseline} at every node (accuracy "
        + ", ".join(f"{r} {bc[r]['accuracy']:.3f}" for r in roles)
        + f"; same level in {agree:.1%} of visits); heuristic cost {heur_cost:.4f} per period on training paths"
    )
    monitor.log(
        0,
        {
            "charts/bc_accuracy": float(np.mean([b["accuracy"] for b in bc.values()])),
            "dcl/heuristic_cost_per_period": heur_cost,
        },
    )
    for r in roles:
        save_role(run_dir / "cloned", r, nets[r])
        write_features(run_dir / "cloned", r)
        write_features(run_dir, r)
        write_features(run_dir / "best", r)
    write_cloned_run(run_dir, sorted(roles))

    best: dict[str, Any] | None = None
    env_steps = 0
    summary: dict[str, Any] = {"roles": {}, "iterations": []}

    def held_out() -> dict:
        from restock.eval.rollout import rollout

        pols = dict(baseline.joint().policies)
        for r in roles:
            pols[r] = make_echelon_policy(nets[r])
        res = rollout(
            compiled,
            JointPolicy(pols),
            episodes=exp.eval_episodes,
            seed=10_000 + exp.seed,
            shield=shield_factory(compiled) if shield_factory else None,
            trace_sku=None,
        )
        cost = res.cost.sum(axis=(1, 2))
        return {"episodic_cost": float(cost.mean()), "episodic_cost_std": float(cost.std())}

    def consider(step: int, it: int) -> None:
        nonlocal best
        res = held_out()
        monitor.log(step, {f"eval/{k}": v for k, v in res.items()})
        if best is None or res["episodic_cost"] < best["eval_cost"]:
            best = {"env_steps": step, "iteration": it, "eval_cost": res["episodic_cost"]}
            for r in roles:
                save_role(run_dir / "best", r, nets[r])
                write_json_atomic(run_dir / "best" / f"{r}.json", best)
        log(f"dcl: iteration {it}: held-out greedy cost {res['episodic_cost']:,.1f} per episode")

    consider(0, 0)
    for r in roles:
        save_role(run_dir, r, nets[r])
    stopped_for_time = False
    rng = np.random.default_rng(exp.seed)
    for it in range(1, cfg.iterations + 1):
        if deadline is not None and time.perf_counter() > deadline:
            stopped_for_time = True
            break
        t_it = time.perf_counter()
        grid.refresh(nets)
        snap, ip_v, eip_v, pol_cost = _visit(
            compiled, grid, cfg.sample_envs, cfg.sample_periods, cfg.burn_in, exp.seed * 1_000
        )  # the heuristic's training paths every iteration: the policy cost curve is paired
        V = ip_v.shape[0]
        lv_v = np.zeros((V, N), np.int64)
        _lookup(ip_v[:, :, None], eip_v[:, :, None], grid.table, grid.ilo, grid.elo, lv_v[:, :, None])
        q_v = _quantity_of_level(lv_v, ip_v)
        M = int(min(cfg.max_rollouts, round(cfg.rollouts * cfg.rollouts_growth ** (it - 1))))
        sample = rng.choice(V, size=min(cfg.states, V), replace=False)
        # one block per (sampled state, node): the node's candidate orders x M common paths
        starts, nodes_r, firsts, paths_r, blocks = [], [], [], [], []
        block = 0
        for s in sample:
            for n in range(N):
                r = node_role(n, compiled.M)
                ipn, qn = int(ip_v[s, n]), int(q_v[s, n])
                top = L[r] - 1 - ipn
                allowed = [0] + list(range(max(1, 1 - ipn), top + 1)) if top >= 1 else [0]
                allowed = np.asarray(allowed)
                if cfg.window > 0:
                    allowed = allowed[np.abs(allowed - qn) <= cfg.window]
                if qn not in allowed:
                    allowed = np.union1d(allowed, [qn])
                k = allowed.size
                starts.append(np.full(k * M, s))
                nodes_r.append(np.full(k * M, n))
                firsts.append(np.repeat(allowed, M))
                paths_r.append(np.tile(block * M + np.arange(M), k))
                blocks.append((s, n, allowed))
                block += 1
        starts_a, nodes_a = np.concatenate(starts), np.concatenate(nodes_r)
        first_a, paths_a = np.concatenate(firsts), np.concatenate(paths_r).astype(np.int64)
        total = np.zeros(starts_a.size)
        seed_it = 7_919 * (exp.seed + 1) + it
        for lo in range(0, starts_a.size, cfg.chunk):
            hi = min(lo + cfg.chunk, starts_a.size)
            total[lo:hi] = _rollouts(
                horizon_c,
                grid,
                snap,
                starts_a[lo:hi],
                nodes_a[lo:hi],
                first_a[lo:hi],
                paths_a[lo:hi],
                seed_it,
            )
        env_steps += int(starts_a.size * cfg.horizon)
        # pool per (node, grid cell): paired differences candidate - own order, over the states there
        pooled: dict[tuple[int, int], dict] = {}
        pos_ = 0
        for s, n, allowed in blocks:
            k = allowed.size
            costs = total[pos_ : pos_ + k * M].reshape(k, M)
            pos_ += k * M
            own = int(np.flatnonzero(allowed == q_v[s, n])[0])
            cell = int(_keys(ip_v[s, n], eip_v[s, n], n, grid))
            d = pooled.setdefault((n, cell), {"q": {}, "own_q": int(q_v[s, n]), "ip": int(ip_v[s, n])})
            for ci, qc in enumerate(allowed):
                d["q"].setdefault(int(qc), []).append(costs[ci] - costs[own])
        relabel: dict[tuple[int, int], int] = {}
        gains = []
        for key, d in pooled.items():
            best_q, best_m, best_se = d["own_q"], 0.0, 0.0
            for qc, parts in d["q"].items():
                diff = np.concatenate(parts)
                if diff.size < 2 or qc == d["own_q"]:
                    continue
                m = diff.mean()
                if m < best_m:
                    best_q, best_m, best_se = qc, m, diff.std(ddof=1) / np.sqrt(diff.size)
            if best_q != d["own_q"] and best_m < -cfg.confidence * best_se:
                relabel[key] = best_q
                gains.append(-best_m)
        # dataset: every visited cell of every node, labelled by the policy unless relabelled
        keys_v, labels_v = {}, {}
        changed_w, all_w = 0.0, 0.0
        for n in range(N):
            r = node_role(n, compiled.M)
            k = _keys(ip_v[:, n], eip_v[:, n], n, grid)
            uk, first_idx, cnt = np.unique(k, return_index=True, return_counts=True)
            lab = lv_v[first_idx, n].copy()
            for i, cell in enumerate(uk):
                if (n, int(cell)) in relabel:
                    lab[i] = _level_of_quantity(
                        np.array([relabel[(n, int(cell))]]), np.array([ip_v[first_idx[i], n]]), L[r]
                    )[0]
                    changed_w += cnt[i]
                all_w += cnt[i]
            keys_v[n], labels_v[n] = (uk, cnt), lab
        fits = {}
        for r, nodes in roles.items():
            obs, lv, w = _dataset(grid, nodes, keys_v, labels_v)
            fits[r] = _fit(nets[r], obs, lv, w, cfg.epochs, cfg.learning_rate, exp.seed + it)
        dt = time.perf_counter() - t_it
        scal = {
            "charts/SPS": starts_a.size * cfg.horizon / max(dt, 1e-9),
            "dcl/policy_cost_per_period_training_paths": pol_cost,
            "losses/policy_loss": float(np.mean([f["loss"] for f in fits.values()])),
            "dcl/label_accuracy": float(np.mean([f["accuracy"] for f in fits.values()])),
            "dcl/labels_changed": changed_w / max(all_w, 1.0),
            "dcl/relabelled_cells": float(len(relabel)),
            "dcl/mean_rollout_gain": float(np.mean(gains)) if gains else 0.0,
            "dcl/states": float(sample.size),
            "dcl/candidates": float(np.mean([b[2].size for b in blocks])),
            "dcl/rollouts_per_candidate": float(M),
        }
        monitor.log(env_steps, scal)
        log(
            f"dcl: iteration {it}: {sample.size:,} states x {N} nodes, {starts_a.size:,} rollouts in {dt:.1f} s; "
            f"{len(relabel)} of {len(pooled)} (node, position) cells relabelled ({scal['dcl/labels_changed']:.1%} "
            f"of visits); fit accuracy {scal['dcl/label_accuracy']:.3f}; policy cost {pol_cost:.4f} per period "
            "on training paths"
        )
        if on_progress:
            on_progress({"env_steps": env_steps, "role": "store", **scal})
        for r in roles:
            save_role(run_dir, r, nets[r])
            _checkpoint(run_dir, r, nets[r], it, env_steps)
        summary["iterations"].append(
            {"iteration": it, "seconds": dt, "changed": scal["dcl/labels_changed"], "cost": pol_cost}
        )
        if stop_after_checkpoints is not None and it >= stop_after_checkpoints:
            break
        if it % max(1, cfg.eval_every_iterations) == 0 or it == cfg.iterations:
            consider(env_steps, it)
    for r in roles:
        summary["roles"][r] = {
            "env_steps": env_steps,
            "stopped_for_time": stopped_for_time,
            "seconds": time.perf_counter() - t_start,
        }
    if exp.keep_best and best is not None:
        for r in roles:
            best_net = load_role(run_dir / "best", r)
            net = copy.deepcopy(nets[r])
            net.load_state_dict(best_net.state_dict())
            save_role(run_dir, r, net)
            summary["roles"][r]["selected"] = dict(best)
        log(
            f"kept the weights of iteration {best['iteration']} (held-out greedy cost {best['eval_cost']:,.1f} per episode)"
        )
    summary["seconds"] = time.perf_counter() - t_start
    return summary


def _visit_heuristic_cost(compiled: Compiled, joint: JointPolicy, cfg, seed: int):
    """The heuristic's cost per period on the training paths (same set-up as `_visit`)."""
    c = compile_any(compiled.config, horizon=cfg.burn_in + cfg.sample_periods)
    env = ArrayEnv(c, num_envs=cfg.sample_envs, seed=seed * 1_000, features=True)
    env.reset()
    joint.bind(c)
    cost = 0.0
    for t in range(cfg.burn_in + cfg.sample_periods):
        _, _, _, _, info = env.step_qty(joint.propose(env).qty)
        if t >= cfg.burn_in:
            cost += float(info["cost"].sum())
    return None, None, None, cost / (cfg.sample_envs * cfg.sample_periods)


def _checkpoint(run_dir: Path, role: str, net: PerSkuNet, it: int, env_steps: int) -> None:
    d = run_dir / "checkpoints" / f"iter_{it:04d}"
    save_role(d, role, net)
    write_features(d, role)
    write_json_atomic(d / "meta.json", {"iteration": it, "env_steps": env_steps, "roles": role})
    write_json_atomic(
        run_dir / "checkpoints" / "latest.json", {"path": d.name, "role": role, "env_steps": env_steps}
    )
