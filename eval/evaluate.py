"""Evaluation as a digital twin: every policy on the same sample paths, KPIs with intervals, paired
differences against a baseline, and the gap to the perfect-information bound."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy, policy_classes
from restock.agents.heuristics import check_sku_knobs
from restock.envs.compile import Compiled
from restock.envs.kpis import HEADLINE, mean_ci
from restock.eval.kpis import discounted_kpis, episode_kpis, paired, summarise
from restock.eval.rollout import RolloutResult, rollout

ORACLE = "oracle"
ORACLE_SECONDS = 60.0  # time limit of the perfect-information bound per path (it stays valid when it binds)
BOUND_WORDS = "perfect-information bound: the least cost of a planner that knows the path's future; no policy can reach it"


@dataclass
class PolicySpec:
    """A policy to evaluate: its display name and how to build it for a compiled scenario."""

    name: str
    build: Callable[[Compiled], JointPolicy] | None  # None for the oracle
    tuned: bool = False
    source: str = ""
    roles: dict[str, str] | None = None  # run directories: role -> "learned" or "<policy> heuristic"
    run: str | None = None  # run directories: the directory's name


@dataclass
class EvalResult:
    scenario: str
    config_hash: str
    episodes: int
    seed: int
    horizon: int
    baseline: str | None
    per_episode: dict[str, dict[str, np.ndarray]]  # policy -> kpi -> [P]
    summary: dict[str, dict[str, dict]]  # policy -> kpi -> {mean, ci95, std, n}
    paired: dict[str, dict[str, dict]]  # policy -> kpi -> {mean, ci95} of (policy - baseline)
    oracle_gap: dict[str, dict]  # policy -> {mean, ci95} of (cost - oracle) / oracle on the oracle's paths
    rollouts: dict[str, RolloutResult] = field(default_factory=dict)
    oracle_paths: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    n_dcs: int = 0
    roles: dict[str, dict[str, str]] = field(default_factory=dict)  # policy -> role -> what played it
    criteria: dict[str, str] = field(default_factory=dict)  # discounted KPI -> what it is (--discounted)

    def kpis_json(self) -> dict[str, dict[str, dict]]:
        """{policy: {kpi: {"mean": m, "ci95": [lo, hi]}}}; the discounted KPIs also say their "criterion"."""
        return {
            pol: {
                k: {"mean": v["mean"], "ci95": v["ci95"]}
                | ({"criterion": self.criteria[k]} if k in self.criteria else {})
                for k, v in s.items()
            }
            for pol, s in self.summary.items()
        }


def heuristic_spec(name: str, knobs: dict | None, source: str = "", policy: str | None = None) -> PolicySpec:
    """A heuristic by name; ``policy`` is the heuristic when ``name`` labels a tuned variant of it (e.g.
    ``s_S_per_sku`` in a parameter file from `restock tune --per-sku`)."""
    return PolicySpec(
        name=name,
        build=lambda c, n=policy or name, kb=knobs: JointPolicy(make_policy(n, kb)),
        tuned=bool(knobs),
        source=source,
    )


def parse_policies(
    spec: str, compiled: Compiled, params: dict | None = None
) -> tuple[list[PolicySpec], list[str]]:
    """Turn ``zero,base_stock,...,oracle`` (and run directories of learned policies) into specs.

    Tuned knobs come from ``params`` (a `agents.catalogue.load_params` dict) when it has the policy;
    otherwise the policy runs with default knobs and a note says so.
    """
    notes: list[str] = []
    specs: list[PolicySpec] = []
    classes = policy_classes()
    pol_params = (params or {}).get("policies", {})
    if params and params.get("scenario") not in (None, compiled.config.name):
        notes.append(
            f"parameters were tuned on scenario {params.get('scenario')!r}, evaluated on {compiled.config.name!r}"
        )
    for raw in [s.strip() for s in spec.split(",") if s.strip()]:
        if raw == ORACLE:
            specs.append(PolicySpec(name=ORACLE, build=None))
        elif raw == "clark_scarf":
            from restock.agents.echelon import EchelonBaseStock

            specs.append(
                PolicySpec(
                    name=raw,
                    build=lambda c: JointPolicy(EchelonBaseStock.from_clark_scarf(c)),
                    source="restock.agents.optimal (exact)",
                )
            )
        elif raw == "dp_optimal":
            from restock.agents.single_node_scenario import DPOptimalPolicy, NotCovered, spec_from_scenario

            try:
                spec_from_scenario(compiled)
            except NotCovered as exc:
                raise ValueError(
                    f"--policies: dp_optimal does not cover {compiled.config.name!r}: {exc}"
                ) from None
            specs.append(
                PolicySpec(
                    name=raw,
                    build=lambda c: JointPolicy(DPOptimalPolicy()),
                    source="restock.agents.single_node_dp (exact DP)",
                )
            )
        elif raw in classes:
            knobs = pol_params.get(raw, {}).get("knobs")
            if raw not in ("zero", "random") and knobs is None:
                notes.append(
                    f"{raw}: not tuned (default knobs); run `restock tune {compiled.config.name} --policy {raw}`"
                )
            check_sku_knobs(knobs or {}, compiled, f"--params: policies.{raw}.knobs")
            specs.append(heuristic_spec(raw, knobs, source="params file" if knobs else "defaults"))
        elif isinstance(pol_params.get(raw), dict) and pol_params[raw].get("policy") in classes:
            # a tuned variant saved under its own name (restock tune --per-sku: "<policy>_per_sku")
            base = pol_params[raw]["policy"]
            check_sku_knobs(pol_params[raw].get("knobs") or {}, compiled, f"--params: policies.{raw}.knobs")
            specs.append(heuristic_spec(raw, pol_params[raw].get("knobs") or {}, "params file", policy=base))
        else:
            from pathlib import Path

            if Path(raw).exists():
                spec_, note = run_spec(raw, compiled)
                specs.append(spec_)
                if note:
                    notes.append(note)
            else:
                known = sorted({*classes, ORACLE, "clark_scarf", "dp_optimal", *pol_params})
                raise ValueError(
                    f"--policies: unknown policy {raw!r} (known: {', '.join(known)}, or a run directory)"
                )
    if not specs:
        raise ValueError("--policies: give at least one policy")
    return specs, notes


def run_roles(run_dir: str, compiled: Compiled) -> tuple[dict[str, str], str]:
    """What plays each role of ``compiled`` when the run directory is evaluated, and the baseline name.

    Returns ({role: "learned" or "<baseline> heuristic"} for the roles with nodes in the scenario, the
    baseline policy). Raises ValueError (naming the file) when the run claims a role (its experiment's
    ``roles`` in config.yaml, or ``roles`` in run.json) whose weights (``policies/<role>.pt`` and
    ``.json``) are missing, e.g. a run killed before its first save, or when no role would be played by
    learned weights at all. A role the run never claimed is played by its baseline heuristic.
    """
    import json
    from pathlib import Path

    from restock.envs.safeyaml import load_yaml_file

    d = Path(run_dir)
    if not d.is_dir():
        raise ValueError(f"--policies: {run_dir} is not a run directory")
    run_file = d / "run.json"
    try:
        run = json.loads(run_file.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"--policies: {run_dir} is not a restock run directory ({run_file} is missing)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"--policies: {run_file} cannot be read: {exc}") from None
    if not isinstance(run, dict):
        raise ValueError(f"--policies: {run_file} is not a run description (a JSON object)")
    # the roles the run claims: those its experiment trains (config.yaml, written when the run starts)
    # and those run.json lists when it finished; a role in either must have its weights
    claimed: set[str] = set()
    sources = []
    listed = run.get("roles")
    if listed is not None:
        sources.append((run_file, listed))
    cfg_file = d / "config.yaml"
    if cfg_file.exists():
        try:
            sources.append((cfg_file, load_yaml_file(cfg_file, "run config")["experiment"]["roles"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--policies: {cfg_file} does not name the run's roles ({exc})") from None
    for src, roles_ in sources:
        if not isinstance(roles_, list) or not all(r in ("store", "dc") for r in roles_):
            raise ValueError(f"--policies: {src} lists unknown roles {roles_!r}")
        claimed.update(roles_)
    pol_dir = d / "policies"
    if not sources:  # neither file says: whatever weights are there
        claimed = {p.stem for p in pol_dir.glob("*.pt")}
    status = run.get("status", "unknown")
    for role in sorted(claimed, reverse=True):  # store first
        for ext in ("pt", "json"):
            f = pol_dir / f"{role}.{ext}"
            if not f.is_file():
                raise ValueError(
                    f"--policies: {run_dir} claims the {role} role but {f} is missing (run status "
                    f"{status!r}; a run stopped before its first save has no weights); refusing to "
                    "evaluate the baseline under the run's name"
                )
    baseline = str((run.get("baseline") or {}).get("policy", "base_stock"))
    roles: dict[str, str] = {}
    for role, present in (("dc", compiled.M > 0), ("store", compiled.S > 0)):
        if not present:
            continue
        learned = (pol_dir / f"{role}.pt").is_file() and (pol_dir / f"{role}.json").is_file()
        roles[role] = "learned" if learned else f"{baseline} heuristic"
    if not any(v == "learned" for v in roles.values()):
        want = ", ".join(str(pol_dir / f"{r}.pt") for r in roles)
        raise ValueError(
            f"--policies: {run_dir} has no learned weights for this scenario's roles ({want} missing; run "
            f"status {status!r}); refusing to evaluate the baseline under the run's name"
        )
    return roles, baseline


def run_label(name: str, roles: dict[str, str]) -> str:
    """``name`` when every role is learned, else ``name [store learned; dc: s_S heuristic]``."""
    if all(v == "learned" for v in roles.values()):
        return name
    order = [r for r in ("store", "dc") if r in roles]
    learned = [r for r in order if roles[r] == "learned"]
    parts = [f"{', '.join(learned)} learned"] if learned else []
    parts += [f"{r}: {roles[r]}" for r in order if roles[r] != "learned"]
    return f"{name} [{'; '.join(parts)}]"


def run_spec(run_dir: str, compiled: Compiled) -> tuple[PolicySpec, str | None]:
    """A learned run as a policy spec, labelled when some role is played by the run's baseline."""
    from pathlib import Path

    roles, _ = run_roles(run_dir, compiled)
    try:
        from restock.agents.learned import load_learned_policy
    except ImportError as exc:  # pragma: no cover
        raise ValueError(f"cannot load learned policy {run_dir}: {exc}") from None
    try:  # load once now: weights that do not fit this scenario are an input error, not a crash later
        load_learned_policy(run_dir, compiled)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise ValueError(
            f"--policies: cannot use the run {run_dir} on {compiled.config.name!r}: {exc}"
        ) from None
    base = Path(run_dir).name
    name = run_label(base, roles)
    fallback = [f"{r} by the {v}" for r, v in roles.items() if v != "learned"]
    note = (
        f"{base}: {'; '.join(fallback)} (not trained in this run); only "
        f"{', '.join(r for r, v in roles.items() if v == 'learned')} learned"
        if fallback
        else None
    )
    spec = PolicySpec(
        name=name,
        build=lambda c, r=run_dir: load_learned_policy(r, c),
        source=str(run_dir),
        roles=roles,
        run=base,
    )
    return spec, note


def resolve_name(specs: list[PolicySpec], name: str) -> str | None:
    """The evaluated policy ``name`` refers to: its exact name, or a run directory's name or path."""
    for s in specs:
        if name == s.name:
            return s.name
    for s in specs:
        if s.run is not None and name in (s.run, s.source, s.source.rstrip("/")):
            return s.name
    return None


def evaluate(
    compiled: Compiled,
    specs: list[PolicySpec],
    episodes: int = 20,
    seed: int = 0,
    baseline: str | None = None,
    shield_factory: Callable[[Compiled], Any] | None = None,
    oracle_episodes: int | None = None,
    progress: Callable[[int], None] | bool | None = None,
    notes: list[str] | None = None,
    discount: float | None = None,
) -> EvalResult:
    """Run every policy on paths 0..episodes-1 of ``seed`` (common random numbers) and summarise.

    ``discount`` (``restock eval --discounted`` passes the scenario's): also the discounted cost per
    period of every simulated policy (`eval.kpis.discounted_kpis`), as ``restock tune --discounted``
    measures it; paired differences include it. The oracle's bound stays undiscounted.

    ``progress``: a callback given the periods simulated (oracle: paths solved); None shows
    `restock.progress` (a bar on a terminal, a line every ~10 s otherwise); False shows nothing."""
    if progress is None:
        from restock.progress import Progress, jit_notice

        jit_notice()
        n_or = episodes if oracle_episodes is None else min(oracle_episodes, episodes)
        total = sum(compiled.horizon * episodes for s in specs if s.name != ORACLE)
        total += n_or * any(s.name == ORACLE for s in specs)
        with Progress(total, f"evaluating {compiled.config.name}") as bar:
            return evaluate(
                compiled, specs, episodes, seed, baseline, shield_factory, oracle_episodes, bar.advance, notes,
                discount,
            )  # fmt: skip
    progress = progress or None  # False: silent
    t0 = time.perf_counter()
    paths = np.arange(episodes, dtype=np.int64)
    per_episode: dict[str, dict[str, np.ndarray]] = {}
    rollouts: dict[str, RolloutResult] = {}
    notes = list(notes or [])
    oracle_costs = None
    oracle_paths = None
    criteria: dict[str, str] = {}
    for spec in specs:
        if spec.name == ORACLE:
            from restock.eval.bound import bound_paths

            n_or = episodes if oracle_episodes is None else min(oracle_episodes, episodes)
            oracle_paths = paths[:n_or]
            t_or = time.perf_counter()
            results = bound_paths(compiled, seed, oracle_paths, progress=progress, time_limit=ORACLE_SECONDS)
            oracle_costs = np.array([r.cost for r in results])
            per_episode[ORACLE] = {"total_cost": oracle_costs}
            n_exact = sum(r.exact for r in results)
            n_sku, n_closed = sum(r.skus for r in results), sum(r.skus_optimal for r in results)
            notes.append(
                f"oracle = {BOUND_WORDS}. Computed as the perfect-information MILP (binary order lines) per "
                f"SKU with Lagrangian prices on shared storage and lanes: {len(results)} path(s), exact on "
                f"{n_exact}; {n_closed} of {n_sku} SKU MILPs closed within the {ORACLE_SECONDS:.0f} s limit per "
                f"path, the others count their proven dual bound or their LP relaxation (still valid). Mean "
                f"{oracle_costs.mean():,.1f} per episode (LP relaxation alone: "
                f"{np.mean([r.lp_cost for r in results]):,.1f}), {time.perf_counter() - t_or:.0f} s"
            )
            continue
        pol = spec.build(compiled)
        shield = shield_factory(compiled) if shield_factory else None
        res = rollout(compiled, pol, paths=paths, seed=seed, shield=shield, progress=progress)
        rollouts[spec.name] = res
        per_episode[spec.name] = episode_kpis(res, compiled)
        if discount is not None:
            disc, criteria = discounted_kpis(res, compiled, discount)
            per_episode[spec.name].update(disc)
    notes += [f"{k}: {v}, as `restock tune --discounted` measures it" for k, v in criteria.items()]
    summary = {name: summarise(v) for name, v in per_episode.items()}
    pair: dict[str, dict[str, dict]] = {}
    if baseline is not None and baseline in per_episode and baseline != ORACLE:
        for name, v in per_episode.items():
            if name not in (baseline, ORACLE):
                pair[name] = paired(v, per_episode[baseline], keys=(*HEADLINE, *criteria))
    gaps: dict[str, dict] = {}
    if oracle_costs is not None:
        for name, v in per_episode.items():
            if name == ORACLE:
                continue
            c = v["total_cost"][: len(oracle_costs)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rel = (c - oracle_costs) / np.where(oracle_costs > 0, oracle_costs, np.nan)
            gaps[name] = mean_ci(rel)
            if np.any(c < oracle_costs - 1e-6 * np.maximum(1.0, np.abs(oracle_costs))):
                notes.append(
                    f"WARNING: {name} beat the perfect-information bound on some path: the bound is wrong"
                )
    return EvalResult(
        scenario=compiled.config.name,
        config_hash=compiled.config_hash,
        episodes=episodes,
        seed=seed,
        horizon=compiled.horizon,
        baseline=baseline,
        per_episode=per_episode,
        summary=summary,
        paired=pair,
        oracle_gap=gaps,
        rollouts=rollouts,
        oracle_paths=oracle_paths,
        notes=notes,
        seconds=time.perf_counter() - t0,
        n_dcs=compiled.M,
        roles={s.name: dict(s.roles) for s in specs if s.roles},
        criteria=criteria,
    )
