"""`restock train --trainer pair_ppo`: PPO with per-SKU credit for the many-SKU store role.

Why a third trainer. On `default` a store agent orders 100 SKUs a period and the sb3/rllib trainers give
PPO one reward per agent and period: the node's cost summed over its SKUs. The per-SKU network is shared,
so every SKU's action is then credited with the other 99 SKUs' noise, and 16k-190k environment steps
moved the behaviour-cloned start by less than a point (docs/results/default_trainers.md). Here each
(store, SKU) pair is one decision maker with **its own reward**: the cost that pair incurred in the
period, rebuilt from the kernel's state after the step (`pair_costs`; every step checks that the pairs
of a node add up to the kernel's cost of that node, so a scenario feature this decomposition does not
cover stops training with a clear error instead of training on a wrong signal). The policy is the same
`PerSkuNet` (one MLP over every SKU, the logits per SKU), trained with PPO's clipped objective per
pair; a per-pair critic (an MLP over the same normalised per-SKU features and node context) gives
per-pair advantages (GAE). This is parameter-shared independent PPO over the pairs: a pair's reward
ignores what its orders do to the other SKUs of its store through shared storage (the overflow cost is
shared out over the pairs in proportion to their volume on hand) and to its siblings through the DC.

Everything else is the other trainers': behaviour-cloned start of the tuned baseline (``bc_episodes``;
``cloned/`` holds it as a run of its own), the other roles play the baseline, masks and the shield in
every step, greedy held-out evaluation on the trainer's evaluation paths at ``eval_every`` and
``keep_best``, TensorBoard tags (``charts/``, ``losses/``, ``eval/``, ``safety/``), ``policies/store.pt``
and ``checkpoints/``. Each iteration collects whole episodes (``num_envs`` environments x the horizon),
so there is no bootstrapping at the horizon; ``ppo.rollout_steps`` therefore does not apply.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from restock.agents.learned import load_role, save_role
from restock.agents.networks import CLIP, PerSkuNet
from restock.envs import kernel as kn
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import Compiled
from restock.envs.pair_costs import check_pair_costs, pair_costs, subtree_costs
from restock.envs.roles import role_nodes
from restock.training.checkpoints import prune_checkpoints
from restock.training.common import (
    Baseline,
    Monitor,
    make_eval,
    net_config,
    observation_stats,
    safety_scalars,
    seed_everything,
    write_cloned_run,
    write_json_atomic,
)
from restock.training.experiment import ExperimentConfig

WARMUP_ITERATIONS = 2  # critic-only iterations: advantages from an untrained critic would undo the clone
# ------------------------------------------------------------------------------------------------
# the per-pair critic


class PairCritic(torch.nn.Module):
    """Value of each (node, SKU) pair: an MLP over the pair's normalised features and the node context
    (the policy network's fixed normalisation), [B, K*F + G] -> [B, K]."""

    def __init__(self, net: PerSkuNet, hidden: tuple[int, ...]):
        super().__init__()
        F, G = net.cfg.sku_features, net.cfg.node_features
        self.F, self.G = F, G
        self.register_buffer("mean", net.feat_mean.detach().clone())
        self.register_buffer("std", net.feat_std.detach().clone())
        sizes = [F + G, *hidden]
        layers: list[torch.nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
        self.body = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(sizes[-1], 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        F, G = self.F, self.G
        B = obs.shape[0]
        K = (obs.shape[1] - G) // F
        sku = ((obs[:, : K * F].reshape(B, K, F) - self.mean[:F]) / self.std[:F]).clamp(-CLIP, CLIP)
        ctx = ((obs[:, K * F :] - self.mean[F:]) / self.std[F:]).clamp(-CLIP, CLIP)
        x = torch.cat([sku, ctx.unsqueeze(1).expand(-1, K, -1)], dim=-1)
        return self.head(self.body(x)).squeeze(-1)


# ------------------------------------------------------------------------------------------------
# rollouts


def _masked_logits(net: PerSkuNet, obs: torch.Tensor, mask: torch.Tensor, K: int, L: int) -> torch.Tensor:
    return net.forward_logits(obs, mask.reshape(obs.shape[0], K * L)).reshape(obs.shape[0], K, L)


@dataclass
class _Role:
    """One trained role: its nodes, policy network, per-pair critic and optimiser."""

    name: str
    nodes: np.ndarray
    net: PerSkuNet
    critic: PairCritic
    opt: torch.optim.Optimizer
    L: int
    scale: float | None = None  # reward scale, fixed on the first batch


def _rollout(env: ArrayEnv, roles: list[_Role], other, compiled, gen: torch.Generator) -> dict:
    """One batch of whole episodes. Per role: observation rows, masks, sampled levels, their log-probs
    and the per-pair credit [T, E, n, K] (a store pair's own cost; a DC pair's cost plus that of the
    same SKU at every node below it)."""
    p = env.params
    E, T, K, D = env.E, compiled.horizon, env.K, env.obs_dim
    buf = {}
    for r in roles:
        S = len(r.nodes)
        buf[r.name] = {
            "obs": np.empty((T, E, S, D), np.float32),
            "mask": np.empty((T, E, S, K, r.L), np.int8),
            "act": np.empty((T, E, S, K), np.int64),
            "logp": np.empty((T, E, S, K), np.float32),
            "cost": np.empty((T, E, S, K), np.float32),
        }
    levels = np.zeros((E, env.N, K), np.int64)
    qmine = np.zeros((E, env.N, K), np.int64)
    env.reset()
    safety = {"safety/intervention_rate": 0.0, "safety/violations": 0.0}
    for t in range(T):
        for r in roles:
            b = buf[r.name]
            S = len(r.nodes)
            b["obs"][t] = env.obs[:, r.nodes]
            b["mask"][t] = env.mask[:, r.nodes, :, : r.L]
            with torch.no_grad():
                o = torch.from_numpy(b["obs"][t].reshape(E * S, D))
                m = torch.from_numpy(b["mask"][t].reshape(E * S, K, r.L))
                logp_all = torch.log_softmax(_masked_logits(r.net, o, m, K, r.L), dim=-1)
                a = torch.multinomial(logp_all.exp().reshape(-1, r.L), 1, generator=gen).reshape(E * S, K)
                lp = logp_all.gather(-1, a.unsqueeze(-1)).squeeze(-1)
            b["act"][t] = a.numpy().reshape(E, S, K)
            b["logp"][t] = lp.numpy().reshape(E, S, K)
            levels[:, r.nodes] = b["act"][t]
        qty = other.propose(env).qty.astype(np.int64)
        kn.levels_to_qty(p, env.state, env.work, levels, qmine)
        for r in roles:
            qty[:, r.nodes] = qmine[:, r.nodes]
        before = env.state.on_hand.copy()
        tc = min(int(env.t), compiled.horizon)
        _, _, _, _, info = env.step_qty(qty)
        pc = pair_costs(p, env.state, before, tc)
        check_pair_costs(pc, env.out, bool(p.include_revenue), compiled.config.name)
        sub = None
        for r in roles:
            if r.name == "dc":
                sub = subtree_costs(p, pc) if sub is None else sub
                buf[r.name]["cost"][t] = sub[:, r.nodes]
            else:
                buf[r.name]["cost"][t] = pc[:, r.nodes]
        sc = safety_scalars(info)
        safety["safety/intervention_rate"] += sc["safety/intervention_rate"] / T
        safety["safety/violations"] += sc["safety/violations"]
    ep = env.episode_summary()
    return {"roles": buf, "episodic_cost": float(ep["cost"].sum(axis=(1, 2)).mean()), "safety": safety}


def _values(critic: PairCritic, obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    flat = obs.reshape(-1, obs.shape[-1])
    out = np.empty((flat.shape[0], (obs.shape[-1] - critic.G) // critic.F), np.float32)
    with torch.no_grad():
        for lo in range(0, flat.shape[0], chunk):
            out[lo : lo + chunk] = critic(torch.from_numpy(flat[lo : lo + chunk])).numpy()
    return out.reshape(*obs.shape[:-1], -1)


def _gae(rew: np.ndarray, val: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns [T, ...] of whole episodes (value 0 after the horizon)."""
    adv = np.zeros_like(rew)
    last = np.zeros_like(rew[0])
    for t in range(rew.shape[0] - 1, -1, -1):
        nxt = val[t + 1] if t + 1 < rew.shape[0] else 0.0
        delta = rew[t] + gamma * nxt - val[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, adv + val


# ------------------------------------------------------------------------------------------------
# the trainer


BC_MIN_STEPS = 1500  # pretrain's own default minimum (level accuracy ~0.8 on `default`)


def _bc_caps(exp: ExperimentConfig, pairs: int) -> dict:
    from restock.training.bc import bc_budget

    caps = bc_budget(exp, pairs)
    if caps["max_updates"] is not None:
        caps["max_updates"] = max(caps["max_updates"], BC_MIN_STEPS)
    return caps


def check_experiment(exp: ExperimentConfig) -> None:
    """Refuse what this trainer does not do (ValueError naming the field)."""
    if exp.network.centralised_critic:
        raise ValueError("network.centralised_critic: pair_ppo's critic is per (node, SKU) pair (use rllib)")
    if "rollout_steps" in exp.ppo.model_fields_set:
        raise ValueError("ppo.rollout_steps: pair_ppo collects whole episodes (num_envs x the horizon)")
    if exp.shield.penalty:
        raise ValueError("shield.penalty: not supported by pair_ppo (its rewards are per-pair costs)")
    if exp.dcl.model_fields_set:
        raise ValueError(f"dcl.{sorted(exp.dcl.model_fields_set)[0]}: a dcl setting (use --trainer dcl)")


def _ppo_update(r: _Role, data: dict, adv: np.ndarray, ret: np.ndarray, ppo, train_policy: bool, rng) -> dict:
    """PPO's clipped objective per pair (or, in the critic warm-up, the value regression alone)."""
    K = adv.shape[-1]
    rows = adv.size // K
    D = data["obs"].shape[-1]
    obs = torch.from_numpy(data["obs"].reshape(rows, D))
    mask = torch.from_numpy(data["mask"].reshape(rows, K, r.L))
    act = torch.from_numpy(data["act"].reshape(rows, K))
    old = torch.from_numpy(data["logp"].reshape(rows, K))
    advt = torch.from_numpy(adv.reshape(rows, K).astype(np.float32))
    advt = (advt - advt.mean()) / (advt.std() + 1e-8)
    rett = torch.from_numpy(ret.reshape(rows, K).astype(np.float32))
    # the gradient norm is clipped per network: the critic's regression gradients must not shrink the
    # policy's step (one joint clip made the policy step depend on how wrong the values were)
    groups = (list(r.net.parameters()), list(r.critic.parameters()))
    mb_rows = max(1, ppo.minibatch_size // K)
    st: dict[str, list[float]] = {"pl": [], "vl": [], "ent": [], "kl": [], "cf": []}
    r.net.train()
    for _epoch in range(ppo.n_epochs if train_policy else 2 * ppo.n_epochs):
        perm = rng.permutation(rows)
        kls = []
        for lo in range(0, rows, mb_rows):
            idx = torch.from_numpy(perm[lo : lo + mb_rows])
            v_loss = ((r.critic(obs[idx]) - rett[idx]) ** 2).mean()
            loss = v_loss
            if train_policy:
                logp_all = torch.log_softmax(_masked_logits(r.net, obs[idx], mask[idx], K, r.L), dim=-1)
                lp = logp_all.gather(-1, act[idx].unsqueeze(-1)).squeeze(-1)
                ratio = torch.exp(lp - old[idx])
                a = advt[idx]
                pg = -torch.min(ratio * a, ratio.clamp(1 - ppo.clip_range, 1 + ppo.clip_range) * a).mean()
                probs = logp_all.exp()
                ent = -(probs * torch.where(probs > 0, logp_all, torch.zeros_like(logp_all))).sum(-1).mean()
                loss = pg - ppo.ent_coef * ent + ppo.vf_coef * v_loss
                with torch.no_grad():
                    lr_ = lp - old[idx]
                    kl = float(((torch.exp(lr_) - 1) - lr_).mean())
                st["pl"].append(float(pg.detach()))
                st["ent"].append(float(ent.detach()))
                st["kl"].append(kl)
                st["cf"].append(float(((ratio.detach() - 1).abs() > ppo.clip_range).float().mean()))
                kls.append(kl)
            st["vl"].append(float(v_loss.detach()))
            r.opt.zero_grad()
            loss.backward()
            for g in groups:
                torch.nn.utils.clip_grad_norm_(g, ppo.max_grad_norm)
            r.opt.step()
        if train_policy and ppo.target_kl is not None and kls and np.mean(kls) > 1.5 * ppo.target_kl:
            break
    r.net.eval()
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {
        "losses/value_loss": mean(st["vl"]),
        "losses/policy_loss": mean(st["pl"]),
        "losses/entropy": mean(st["ent"]),
        "losses/approx_kl": mean(st["kl"]),
        "losses/clip_fraction": mean(st["cf"]),
    }


def train_pair_ppo(
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
    if resume is not None:
        raise ValueError(
            "--resume is not supported by --trainer pair_ppo yet (checkpoints hold the policies only)"
        )
    check_experiment(exp)
    seed_everything(exp.seed)
    threads = torch.get_num_threads()
    t_start = time.perf_counter()
    deadline = t_start + 60 * exp.minutes if exp.minutes else None
    ppo = exp.ppo
    gamma = float(ppo.gamma if ppo.gamma is not None else 0.99)
    shield = shield_factory(compiled) if shield_factory else None
    other = baseline.joint()
    other.bind(compiled)

    roles: list[_Role] = []
    # behaviour cloning's budget: `bc_budget` of the role with the most pair decisions, and at least
    # BC_MIN_STEPS gradient steps. A DC role given its own share (100 pairs on `default`, 40 on
    # `network_2e`) got 106-266 gradient steps and a clone that cost up to 36 times the heuristic.
    bc_pairs = max(len(role_nodes(compiled, r)) for r in exp.roles) * compiled.K
    for name in sorted(exp.roles, key=lambda x: x != "dc"):
        nodes = role_nodes(compiled, name)
        net = PerSkuNet(net_config(compiled, name, exp, observation_stats(compiled, name, baseline)))
        if exp.bc_episodes and exp.bc_epochs:  # warm start: behaviour cloning of the tuned baseline
            from restock.training.bc import collect, pretrain

            data = collect(
                compiled, name, baseline.joint(), exp.bc_episodes, seed=exp.seed + 500, gamma=gamma,
                reward_scale=baseline.reward_scale, shield=shield_factory(compiled) if shield_factory else None,
            )  # fmt: skip
            res = pretrain(
                net,
                data,
                epochs=exp.bc_epochs,
                seed=exp.seed,
                log=log,
                **_bc_caps(exp, bc_pairs),
            )
            monitor.log(0, {f"charts/bc_accuracy/{name}": res["accuracy"]})
        save_role(run_dir / "cloned", name, net)
        critic = PairCritic(net, tuple(exp.network.value_hidden) or (64,))
        opt = torch.optim.Adam(list(net.parameters()) + list(critic.parameters()), lr=ppo.learning_rate)
        roles.append(_Role(name, nodes, net, critic, opt, int(net.cfg.levels)))
        net.eval()
    write_cloned_run(run_dir, sorted(r.name for r in roles))

    env = ArrayEnv(compiled, num_envs=exp.num_envs, seed=exp.seed, shield=shield)
    gen = torch.Generator().manual_seed(exp.seed)
    np_rng = np.random.default_rng(exp.seed)
    held_out = make_eval(compiled, exp, baseline, shield_factory)
    best: dict[str, Any] | None = None

    last_eval = -1

    def consider(step: int, it: int) -> None:
        nonlocal best, last_eval
        last_eval = step
        res = held_out({r.name: r.net for r in roles})
        monitor.log(step, {f"eval/{k}": v for k, v in res.items()})
        if best is None or res["episodic_cost"] < best["eval_cost"]:
            best = {"env_steps": step, "iteration": it, "eval_cost": res["episodic_cost"]}
            for r in roles:
                save_role(run_dir / "best", r.name, r.net)
            write_json_atomic(run_dir / "best" / "best.json", best)
        log(f"pair_ppo: {step:,} env steps: held-out greedy cost {res['episodic_cost']:,.1f} per episode")

    consider(0, 0)
    for r in roles:
        save_role(run_dir, r.name, r.net)
    per_iter = exp.num_envs * compiled.horizon
    total = exp.steps or 10**12
    env_steps, it, next_eval, next_ckpt = 0, 0, exp.eval_every, exp.checkpoint_every
    last_ckpt = -1
    warmup = WARMUP_ITERATIONS
    stopped_for_time = False
    while env_steps < total:
        if deadline is not None and time.perf_counter() > deadline:
            stopped_for_time = True
            break
        it += 1
        t_it = time.perf_counter()
        # the process's math threads as they were at the start: a parallel numba call (demand for a big
        # batch) can raise torch's OpenMP thread count (`restock train` caps numba's threads as well)
        torch.set_num_threads(threads)
        ro = _rollout(env, roles, other, compiled, gen)
        env_steps += per_iter
        t_roll = time.perf_counter() - t_it
        train_policy = it > warmup
        scal: dict[str, float] = {"charts/episodic_cost": ro["episodic_cost"], **ro["safety"]}
        for r in roles:
            data = ro["roles"][r.name]
            cost = data["cost"].astype(np.float64)
            if r.scale is None:  # fixed once: rewards scaled so that the first batch's returns have std 1
                _, mc = _gae(-cost, np.zeros(cost.shape), gamma, 1.0)
                r.scale = float(max(mc.std(), 1e-9))
            adv, ret = _gae(
                -cost / r.scale, _values(r.critic, data["obs"]).astype(np.float64), gamma, ppo.gae_lambda
            )
            upd = _ppo_update(r, data, adv, ret, ppo, train_policy, np_rng)
            suffix = "" if len(roles) == 1 else f"/{r.name}"
            scal.update({k + suffix: v for k, v in upd.items()})
        dt = time.perf_counter() - t_it
        scal["charts/SPS"] = per_iter / max(dt, 1e-9)
        monitor.log(env_steps, scal)
        vl = np.mean([v for k, v in scal.items() if k.startswith("losses/value_loss")])
        kls = [v for k, v in scal.items() if k.startswith("losses/approx_kl") and np.isfinite(v)]
        kl = float(np.mean(kls)) if kls else float("nan")
        log(
            f"pair_ppo: iteration {it} ({'PPO' if train_policy else 'critic warm-up'}): {env_steps:,} env "
            f"steps, training cost {ro['episodic_cost']:,.1f} per episode, value loss {vl:.4f}, kl {kl:.4f}; "
            f"rollout {t_roll:.1f} s, update {dt - t_roll:.1f} s"
        )
        if on_progress:
            on_progress({"env_steps": env_steps, "role": "+".join(r.name for r in roles), **scal})
        for r in roles:
            save_role(run_dir, r.name, r.net)
        if exp.checkpoint_every and env_steps >= next_ckpt:
            _checkpoint(run_dir, roles, it, env_steps, exp.keep_checkpoints)
            last_ckpt = env_steps
            next_ckpt += exp.checkpoint_every
            if stop_after_checkpoints is not None:
                stop_after_checkpoints -= 1
                if stop_after_checkpoints <= 0:
                    break
        if exp.eval_every and env_steps >= next_eval:
            consider(env_steps, it)
            next_eval += exp.eval_every
    if last_eval != env_steps:  # the last weights are always judged
        consider(env_steps, it)
    if last_ckpt != env_steps:  # (saving the same steps again would replace the folder latest.json names)
        _checkpoint(run_dir, roles, it, env_steps, exp.keep_checkpoints)
    summary: dict[str, Any] = {"roles": {}}
    for r in roles:
        summary["roles"][r.name] = {
            "env_steps": env_steps,
            "iterations": it,
            "stopped_for_time": stopped_for_time,
            "seconds": time.perf_counter() - t_start,
            "reward_scale": r.scale,
        }
    if exp.keep_best and best is not None:
        for r in roles:
            save_role(run_dir, r.name, load_role(run_dir / "best", r.name))
            summary["roles"][r.name]["selected"] = dict(best)
        log(
            f"kept the weights of {best['env_steps']:,} env steps (held-out greedy cost "
            f"{best['eval_cost']:,.1f} per episode)"
        )
    summary["seconds"] = time.perf_counter() - t_start
    return summary


def _checkpoint(run_dir: Path, roles: list[_Role], it: int, env_steps: int, keep: int | None) -> None:
    """``checkpoints/<env steps, 12 digits>/`` (the policies and meta.json), written under a temporary
    name and renamed, then latest.json, then the oldest pruned to ``keep`` (`training.checkpoints`)."""
    root = run_dir / "checkpoints"
    final, tmp = root / f"{env_steps:012d}", root / f".tmp-{env_steps:012d}"
    shutil.rmtree(tmp, ignore_errors=True)
    for r in roles:
        save_role(tmp, r.name, r.net)
    names = [r.name for r in roles]
    write_json_atomic(tmp / "meta.json", {"iteration": it, "env_steps": env_steps, "roles": names})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_json_atomic(root / "latest.json", {"path": final.name, "roles": names, "env_steps": env_steps})
    prune_checkpoints(root, keep)
