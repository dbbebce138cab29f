"""Learned policies as `Policy` objects: torch networks saved per role, loaded for evaluation.

A run directory (from `restock train`) holds ``policies/<role>.pt`` (a plain state_dict, loaded with
``weights_only=True``) and ``policies/<role>.json`` (the `NetConfig`), plus ``run.json`` naming the
baseline heuristic that plays any role the run did not train. Both trainers write this layout, so
evaluation and export never depend on which trainer produced the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy
from restock.agents.networks import NetConfig, PerSkuNet
from restock.envs.roles import role_nodes


class TorchPolicy:
    """A `PerSkuNet` acting greedily (or by sampling) on the masked logits of its role's agents."""

    output = "levels"

    def __init__(
        self,
        net: PerSkuNet,
        name: str = "learned",
        version: str = "1",
        deterministic: bool = True,
        seed: int = 0,
    ):
        self.net = net.eval()
        self.name = name
        self.version = version
        self.deterministic = deterministic
        self.last_confidence: np.ndarray | None = None
        self._gen = torch.Generator().manual_seed(seed)

    def act(self, ctx, nodes: np.ndarray) -> np.ndarray:
        nodes = np.asarray(nodes)
        E, K = ctx.obs.shape[0], ctx.compiled.K
        L = self.net.cfg.levels
        obs = torch.as_tensor(ctx.obs[:, nodes].reshape(E * len(nodes), -1))
        mask = torch.as_tensor(ctx.mask[:, nodes, :, :L].reshape(E * len(nodes), K * L).astype(np.float32))
        with torch.no_grad():
            logits = self.net.forward_logits(obs, mask).reshape(-1, K, L)
            probs = torch.softmax(logits, dim=-1)
            if self.deterministic:
                lv = probs.argmax(dim=-1)
            else:
                lv = torch.multinomial(probs.reshape(-1, L), 1, generator=self._gen).reshape(-1, K)
            chosen = probs.gather(-1, lv.unsqueeze(-1)).squeeze(-1)  # [B, K]
        self.last_confidence = chosen.mean(dim=-1).reshape(E, len(nodes)).numpy()
        return lv.reshape(E, len(nodes), K).numpy().astype(np.int64)


def save_role(run_dir: str | Path, role: str, net: PerSkuNet) -> Path:
    """Write policies/<role>.pt and .json atomically."""
    d = Path(run_dir) / "policies"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{role}.pt.tmp"
    torch.save(net.state_dict(), tmp)
    tmp.replace(d / f"{role}.pt")
    tj = d / f".{role}.json.tmp"
    tj.write_text(json.dumps(net.cfg.to_dict(), indent=2))
    tj.replace(d / f"{role}.json")
    return d / f"{role}.pt"


def load_role(run_dir: str | Path, role: str) -> PerSkuNet:
    d = Path(run_dir) / "policies"
    cfg = NetConfig.from_dict(json.loads((d / f"{role}.json").read_text()))
    net = PerSkuNet(cfg)
    net.load_state_dict(torch.load(d / f"{role}.pt", map_location="cpu", weights_only=True))
    return net.eval()


def read_run(run_dir: str | Path) -> dict:
    p = Path(run_dir) / "run.json"
    if not p.exists():
        raise ValueError(f"{run_dir}: not a restock run directory (no run.json)")
    return json.loads(p.read_text())


def check_action_grid(run_dir: str | Path, compiled, roles: list[str]) -> None:
    """Refuse to play each of ``roles``' networks on an action grid other than the one it was trained on: its levels
    would map to other quantities (a network trained to 12 periods of cover, played on a 6-period grid
    of the same level count, orders half of what it learned, silently). Compares the role's ``action``
    block of the scenario the run saved (scenario.yaml) with ``compiled``'s; a run without a readable
    scenario.yaml is not checked (older or hand-made run directories)."""
    from restock.envs.config import load_scenario

    f = Path(run_dir) / "scenario.yaml"
    if not f.is_file():
        return
    try:
        action = load_scenario(f).action  # read once for all roles
    except Exception:  # a run saved under an older schema: its grid cannot be read back
        return
    for role in roles:
        saved = getattr(action, role).model_dump()
        here = getattr(compiled.config.action, role).model_dump()
        diff = [
            f"action.{role}.{k}: {saved[k]!r} in the run, {here.get(k)!r} here"
            for k in saved
            if saved[k] != here.get(k)
        ]
        if diff:
            raise ValueError(
                f"{run_dir}: the {role} network was trained on another action grid ({'; '.join(diff)}); "
                f"evaluate it on the scenario the run saved ({f}) or one with the same action.{role}"
            )


def load_learned_policy(run_dir: str | Path, compiled, deterministic: bool = True) -> JointPolicy:
    """The run's learned roles plus its baseline heuristic for the other roles, as one JointPolicy."""
    run = read_run(run_dir)
    name = Path(run_dir).name
    base = run.get("baseline", {})
    pols = {}
    learned = []  # the roles played by the run's networks
    for role in ("store", "dc"):
        if (Path(run_dir) / "policies" / f"{role}.pt").exists():
            learned.append(role)
            net = load_role(run_dir, role)
            L = (
                int(compiled.params.levels[role_nodes(compiled, role)[0]])
                if len(role_nodes(compiled, role))
                else 0
            )
            if len(role_nodes(compiled, role)) and net.cfg.levels != L:
                raise ValueError(
                    f"{run_dir}: the {role} network has {net.cfg.levels} levels but scenario "
                    f"{compiled.config.name!r} uses {L}"
                )
            from restock.agents.echelon_features import make_echelon_policy, uses_echelon

            cls = make_echelon_policy if uses_echelon(run_dir, role) else TorchPolicy
            pols[role] = cls(
                net, name=f"{name}:{role}", version=run.get("version", "1"), deterministic=deterministic
            )
        else:
            pols[role] = make_policy(base.get("policy", "base_stock"), base.get("knobs"))
    check_action_grid(run_dir, compiled, learned)
    return JointPolicy(pols, name=name)
