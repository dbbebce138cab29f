"""Behaviour-cloning warm start: teach the per-SKU network the tuned baseline before PPO.

PPO from a random network spends most of a small budget rediscovering base-stock. Instead we roll out
the tuned baseline, express each of its orders as the action level that comes closest to it under
the scenario's action mapping, and fit the policy head by cross-entropy (masked like the real policy)
and the value head to the discounted returns of the same (scaled) rewards PPO will see. PPO then
starts at the baseline's cost and only has to learn the improvements. This is the residual idea of
docs/design.md#policies-and-learning done through the initial weights, so export and serving stay one plain network.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from restock.agents.base import JointPolicy
from restock.agents.networks import PerSkuNet
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import Compiled
from restock.envs.roles import role_nodes
from restock.envs.types import MODE_QUANTITY

from restock.progress import Progress


def levels_for_quantities(env: ArrayEnv, nodes: np.ndarray, qty: np.ndarray) -> np.ndarray:
    """The allowed level [E, n, K] whose quantity is closest to qty[E, n, K] (ties to the lower level)."""
    p = env.params
    E, K = qty.shape[0], env.K
    ip = np.empty((E, env.N, K), np.int64)
    kn.inventory_positions(p, env.state, env.work, ip)
    t = min(env.t, p.horizon)
    out = np.zeros((E, len(nodes), K), np.int64)
    for i, n in enumerate(nodes):
        L = int(p.levels[n])
        ls = np.arange(L)
        if p.mode[n] == MODE_QUANTITY:
            cand = ls[None, None, :] * p.qstep[n][None, :, None]
        else:
            fc = p.mean[n] * p.season[t]
            gap = ls[None, None, :] * p.cover_step[n] * fc[None, :, None] - ip[:, n, :, None]
            q = np.maximum(np.ceil(gap - 1e-9), 0)
            lot = p.lot[None, :, None]
            q = np.ceil(q / lot) * lot
            moq = np.ceil(p.moq / p.lot)[None, :, None] * lot
            cand = np.where((q > 0) & (q < moq), moq, q)
            cand[..., 0] = 0
        err = np.abs(cand - qty[:, i, :, None]).astype(float)
        err = np.where(env.mask[:, n, :, :L] == 1, err, np.inf)
        out[:, i] = err.argmin(axis=-1)
    return out


def collect(
    compiled: Compiled,
    role: str,
    baseline: JointPolicy,
    episodes: int,
    seed: int,
    gamma: float,
    reward_scale: float,
    shield=None,
) -> dict[str, np.ndarray]:
    """(obs, mask, level, return) rows of the role's agents under the baseline."""
    env = ArrayEnv(compiled, num_envs=episodes, seed=seed, shield=shield)
    env.reset()
    baseline.bind(compiled)
    nodes = role_nodes(compiled, role)
    L = int(compiled.params.levels[nodes[0]])
    obs, masks, levels, rewards = [], [], [], []
    for _ in range(compiled.horizon):
        out = baseline.propose(env)
        lv = levels_for_quantities(env, nodes, out.qty[:, nodes])
        obs.append(env.obs[:, nodes].copy())
        masks.append(env.mask[:, nodes, :, :L].reshape(episodes, len(nodes), -1).copy())
        levels.append(lv)
        _, _, r, _, _ = env.step_qty(out.qty)
        rewards.append(r[:, nodes] / reward_scale)
    R = np.zeros_like(rewards[0])
    rets = []
    for r in reversed(rewards):
        R = r + gamma * R
        rets.append(R.copy())
    rets.reverse()
    cat = lambda xs: np.concatenate([x.reshape(-1, *x.shape[2:]) for x in xs])  # noqa: E731
    return {
        "obs": cat(obs).astype(np.float32),
        "mask": cat(masks).astype(np.float32),
        "level": cat(levels),
        "ret": cat(rets).astype(np.float32),
    }


def pretrain(
    net: PerSkuNet,
    data: dict[str, np.ndarray],
    epochs: int = 8,
    batch: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    log=None,
    min_updates: int = 1500,
    max_updates: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, float]:
    """Fit policy logits (cross-entropy to the baseline's levels) and values (MSE to returns).

    Runs ``epochs`` passes, or more until ``min_updates`` gradient steps (small data sets need them),
    but never more than ``max_updates`` gradient steps or (checked after each step) ``max_seconds``
    of wall time: a warm start proportionate to the run (`bc_budget`).
    """
    t_end = time.perf_counter() + max_seconds if max_seconds is not None else None
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    obs, mask = torch.as_tensor(data["obs"]), torch.as_tensor(data["mask"])
    lv, ret = torch.as_tensor(data["level"]), torch.as_tensor(data["ret"])
    n = obs.shape[0]
    K, L = lv.shape[1], net.cfg.levels
    per_epoch = max(1, -(-n // batch))
    epochs = max(epochs, -(-min_updates // per_epoch))
    if max_updates is not None:
        epochs = max(1, min(epochs, -(-max_updates // per_epoch)))
    updates, out_of_time = 0, False
    total = epochs * per_epoch if max_updates is None else min(epochs * per_epoch, max_updates)
    net.train()
    acc, ce_avg, v_avg = 0.0, float("nan"), float("nan")
    # one bar (a line every ~10 s when not on a terminal), then one summary line; silent without ``log``
    with Progress(total, "behaviour cloning", mode=None if log else "off") as bar:
        for _ep in range(epochs):
            perm = torch.randperm(n, generator=g)
            tot_ce, tot_v, hits, cnt = 0.0, 0.0, 0, 0
            for i in range(0, n, batch):
                if (max_updates is not None and updates >= max_updates) or out_of_time:
                    break
                idx = perm[i : i + batch]
                logits = net.forward_logits(obs[idx], mask[idx]).reshape(-1, K, L)
                ce = torch.nn.functional.cross_entropy(logits.reshape(-1, L), lv[idx].reshape(-1))
                v = net.forward_value(obs[idx])
                loss = ce + 0.5 * torch.mean((v - ret[idx]) ** 2)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                tot_ce += float(ce.detach()) * len(idx)
                tot_v += float(torch.mean((v.detach() - ret[idx]) ** 2)) * len(idx)
                hits += int((logits.argmax(-1) == lv[idx]).sum())
                cnt += len(idx) * K
                updates += 1
                bar.advance(1)
                out_of_time = t_end is not None and time.perf_counter() > t_end
            acc = hits / max(cnt, 1)
            rows = max(1, cnt // K)  # rows fitted in this epoch (fewer when a budget cut it short)
            ce_avg, v_avg = tot_ce / rows, tot_v / rows
            if (max_updates is not None and updates >= max_updates) or out_of_time:
                break
    if log:
        cut = " (stopped at its budget)" if updates < epochs * per_epoch else ""
        log(
            f"behaviour cloning: {updates} gradient steps{cut}; last epoch: cross-entropy {ce_avg:.4f}, "
            f"value MSE {v_avg:.4f}, level accuracy {acc:.3f}"
        )
    return {"accuracy": acc, "updates": updates}


BC_UPDATE_SHARE = 0.25  # behaviour cloning's gradient steps, at most this share of PPO's in the run
BC_TIME_SHARE = 0.1  # and at most this share of a timed run's minutes
BC_MIN_UPDATES = 50


def bc_budget(exp, n_agents: int) -> dict[str, float | int | None]:
    """Caps for `pretrain` in proportion to the run: ``max_updates`` from the run's ``steps`` (PPO's
    minibatch updates over the run: env steps x agents / minibatch x epochs, times BC_UPDATE_SHARE),
    ``max_seconds`` from its ``minutes`` (times BC_TIME_SHARE). None where the run sets no such limit."""
    out: dict[str, float | int | None] = {"max_updates": None, "max_seconds": None}
    if exp.steps:
        ppo_updates = -(-exp.steps * n_agents // exp.ppo.minibatch_size) * exp.ppo.n_epochs
        out["max_updates"] = max(BC_MIN_UPDATES, int(BC_UPDATE_SHARE * ppo_updates))
    if exp.minutes:
        out["max_seconds"] = BC_TIME_SHARE * 60.0 * exp.minutes
    return out
