"""Tune heuristic knobs by simulation optimisation on common random numbers.

Every candidate is simulated on the same sample paths, and many candidates x paths run as one batch of
the array env (one kernel call per period steps them all), so comparisons are paired and cheap.
The search is a coordinate search: for each knob in turn, a 1-D grid around the incumbent is evaluated
in one batch, the best value is kept, and the grid shrinks each round. The tuned knobs are then
re-evaluated on held-out paths (a different seed) to report an honest cost with its 95% interval.

Adaptive precision (``max_episodes``): each grid is a race. It starts on ``episodes`` common paths;
candidates that behave identically on every path so far (knob values that give the same integer
levels) count once, candidates whose paired 95% interval against the leader lies above zero are
dropped, and while a contender remains the paths double (new paths only, the same ones for every
candidate left) up to ``max_episodes``, or until the paired interval is narrower than ``indifference``
(a fraction of the leader's cost: a difference that small does not matter). The comparison of the
chosen value with the runner-up (paired mean difference per period, its 95% interval, paths) is kept
per grid; the last grid with two distinct candidates is the result's ``final_comparison``.

Objective: total cost per period by default. When the scenario's reward includes revenue
(``reward.include_revenue``) the tuner minimises cost - revenue (minus the profit), as the reward does;
with ``discount`` (``restock tune --discounted`` passes the scenario's ``discount``) period t's amount
is weighted by discount**t. The objective is reported per period (the weighted sum divided by the sum
of the weights), so it reads in the same units as the cost; ``cost_per_period`` stays the plain
undiscounted cost per period that ``restock eval`` reports.

Per-node knobs (``per_node``): one set of knobs per node (keyed by node id, e.g. ``dc_1``; see
`agents.heuristics._per_node`) instead of one per role; for small networks (serial_3).

Per-SKU knobs (``per_sku``, `restock tune --per-sku`): after the per-role search, one value of each
knob per role and SKU (``<knob>_by_sku`` lists, see `agents.heuristics._per_node`), found by `sku_stage`:
every SKU scored by its own cost in one batch per knob, moves checked on fresh paths, a price on shared
storage. The result is saved as ``<policy>_per_sku`` (``label``) and evaluated by that name.

Results go to parameter files with `agents.catalogue.save_params` (the format is described there).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from restock.agents.base import JointPolicy
from restock.agents.catalogue import make_policy, policy_classes
from restock.agents.heuristics import SKU_SUFFIX, TUNABLE
from restock.envs.array_env import ArrayEnv
from restock.envs.compile import Compiled
from restock.envs.kpis import mean_ci
from restock.envs.roles import agent_role, present_roles


@dataclass
class TuneResult:
    policy: str
    scenario: str
    config_hash: str
    knobs: dict[str, dict[str, float]]
    cost_per_period: dict[str, Any]  # held-out evaluation: mean and ci95
    train_cost_per_period: float | None  # plain cost only (else see objective)
    episodes: int
    eval_episodes: int
    seed: int
    eval_seed: int
    seconds: float
    evaluations: int
    history: list[dict] = field(default_factory=list)
    objective: dict[str, Any] = field(default_factory=dict)
    final_comparison: dict[str, Any] | None = None
    max_episodes: int | None = None
    per_node: bool = False
    per_sku: bool = False
    sku_episodes: int | None = None

    @property
    def label(self) -> str:
        """The name the result is saved under: the policy, or ``<policy>_per_sku`` for per-SKU knobs."""
        return f"{self.policy}_per_sku" if self.per_sku else self.policy

    def to_json(self) -> dict:
        return {
            "policy": self.policy,
            "knobs": self.knobs,
            "cost_per_period": self.cost_per_period,
            "train_cost_per_period": self.train_cost_per_period,
            "objective": self.objective,
            "final_comparison": self.final_comparison,
            "episodes": self.episodes,
            "max_episodes": self.max_episodes,
            "per_node": self.per_node,
            "per_sku": self.per_sku,
            "sku_episodes": self.sku_episodes,
            "eval_episodes": self.eval_episodes,
            "seed": self.seed,
            "eval_seed": self.eval_seed,
            "seconds": self.seconds,
            "evaluations": self.evaluations,
            "history": self.history,
        }


def _units(compiled: Compiled, per_node: bool) -> list[str]:
    """What the knobs are keyed by: roles, or node ids (stores first, then DCs downstream-up)."""
    if not per_node:
        return present_roles(compiled)
    ids = list(compiled.agent_ids)
    return ids[compiled.M :] + ids[: compiled.M][::-1]


@dataclass(frozen=True)
class Objective:
    """What the tuner minimises per path: sum_t w_t (cost_t - revenue_t if revenue) / sum_t w_t."""

    revenue: bool = False
    discount: float | None = None  # None or 1: undiscounted

    @classmethod
    def for_scenario(cls, compiled: Compiled, revenue: bool | None = None, discount: float | None = None):
        rev = bool(compiled.params.include_revenue) if revenue is None else bool(revenue)
        return cls(revenue=rev, discount=None if discount is None or discount >= 1.0 else float(discount))

    @property
    def plain(self) -> bool:
        return not self.revenue and self.discount is None

    def weights(self, horizon: int) -> np.ndarray:
        if self.discount is None:
            return np.ones(horizon)
        return self.discount ** np.arange(horizon, dtype=float)

    def describe(self) -> str:
        what = (
            "cost - revenue (minus the profit; the scenario's reward includes revenue)"
            if self.revenue
            else "cost"
        )
        if self.discount is None:
            return f"{what} per period, undiscounted"
        return (
            f"{what}, discounted by {self.discount} a period (per period: weighted sum / sum of the weights)"
        )

    def to_json(self) -> dict:
        return {
            "criterion": self.describe(),
            "revenue": self.revenue,
            "discount": self.discount,
        }


def _filled(cands: list[dict], unit: str, key: str, default: float) -> np.ndarray:
    """One value per candidate for a knob: its own, else (node ids) its role's, else the default."""
    role = agent_role(unit)
    out = []
    for c in cands:
        if key in c.get(unit, {}):
            out.append(c[unit][key])
        else:
            out.append(c.get(role, {}).get(key, default) if role else default)
    return np.asarray(out, float)


def _batch_knobs(name: str, candidates: list[dict], P: int) -> dict[str, dict[str, np.ndarray]]:
    """The knobs of G candidates as arrays with one row per environment (G x P paths, candidate-major):
    [G*P] for a knob, [G*P, K] for a per-SKU knob (``key + "_by_sku"``)."""
    defaults = make_policy(name).knob_defaults
    knobs: dict[str, dict[str, np.ndarray]] = {}
    for unit in {u for c in candidates for u in c}:
        for key in {k for c in candidates for k in c.get(unit, {})}:
            if key.endswith(SKU_SUFFIX):
                K = next(len(c[unit][key]) for c in candidates if key in c.get(unit, {}))
                plain = key[: -len(SKU_SUFFIX)]
                base = _filled(candidates, unit, plain, defaults[plain])
                # a candidate without per-SKU values has its knob's value for every SKU
                rows = np.stack(
                    [
                        np.asarray(c[unit][key], float) if key in c.get(unit, {}) else np.full(K, base[g])
                        for g, c in enumerate(candidates)
                    ]
                )  # [G, K]
                knobs.setdefault(unit, {})[key] = np.repeat(rows, P, axis=0)
            else:
                vals = _filled(candidates, unit, key, defaults[key])
                knobs.setdefault(unit, {})[key] = np.repeat(vals, P)
    return knobs


def evaluate_sku_candidates(
    compiled: Compiled,
    name: str,
    candidates: list[dict],
    paths: np.ndarray,
    seed: int,
    shield=None,
    progress: Callable[[int], None] | None = None,
    objective: Objective | None = None,
    volumes: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Objective per period of each SKU, [G, P, K]: G knob settings on the same P paths in one batch.
    With ``volumes``, also each SKU's volume on hand at the end of a period, summed over the nodes with
    a storage limit, per period [G, P, K] (what a SKU takes of the storage the SKUs share).

    A SKU's objective is the cost its (node, SKU) pairs incurred at every node (`envs.pair_costs`, minus
    the revenue when the scenario's reward includes it), summed over the periods (discounted with the
    objective's discount) and divided by the sum of the weights. Costs charged at reset do not depend on
    the knobs and are left out. Every period checks that the pairs add up to the kernel's node costs."""
    from restock.envs.pair_costs import check_pair_costs, pair_costs

    p = compiled.params
    obj = objective or Objective()
    if obj.revenue != bool(p.include_revenue):
        raise ValueError(
            "per-SKU tuning scores SKUs by their pair costs, which include revenue exactly when the "
            "scenario's reward does (reward.include_revenue); the objective asks otherwise"
        )
    G, P, K = len(candidates), len(paths), compiled.K
    E = G * P
    env = ArrayEnv(
        compiled,
        num_envs=E,
        seed=seed,
        shield=shield(compiled) if callable(shield) and not hasattr(shield, "decide") else shield,
    )
    env.reset(paths=np.tile(paths, G))
    joint = JointPolicy(make_policy(name, _batch_knobs(name, candidates, P)))
    joint.bind(compiled)
    w = obj.weights(compiled.horizon)
    acc = np.zeros((E, K))
    vol = np.zeros((E, K))
    capped = np.flatnonzero(np.isfinite(p.storage_cap).any(axis=0))
    for t in range(compiled.horizon):
        before = env.state.on_hand.copy()
        tc = min(int(env.t), compiled.horizon)
        env.step_qty(joint.propose(env).qty)
        pc = pair_costs(p, env.state, before, tc)
        check_pair_costs(
            pc, env.out, bool(p.include_revenue), compiled.config.name, who="restock tune --per-sku"
        )
        acc += w[t] * pc.sum(axis=1)
        if volumes and capped.size:
            oh_end = env.state.on_hand[:, capped] - env.state.arrived[:, capped]
            vol += oh_end.sum(axis=1) * p.volume[None, :]
        if progress:
            progress(1)
    per = (acc / w.sum()).reshape(G, P, K)
    if volumes:
        return per, (vol / compiled.horizon).reshape(G, P, K)
    return per


def evaluate_candidates(
    compiled: Compiled,
    name: str,
    candidates: list[dict],
    paths: np.ndarray,
    seed: int,
    shield=None,
    progress: Callable[[int], None] | None = None,
    objective: Objective | None = None,
) -> np.ndarray:
    """Total cost [G, P] of G knob settings on the same P paths, all in one batched simulation.

    With an ``objective`` that is not plain cost, returns (total cost [G, P], objective per period
    [G, P])."""
    G, P = len(candidates), len(paths)
    E = G * P
    # ``shield`` is a factory (compiled -> shield): each batch needs its own, sized to the batch
    env = ArrayEnv(
        compiled,
        num_envs=E,
        seed=seed,
        shield=shield(compiled) if callable(shield) and not hasattr(shield, "decide") else shield,
    )
    env.reset(paths=np.tile(paths, G))
    joint = JointPolicy(make_policy(name, _batch_knobs(name, candidates, P)))
    joint.bind(compiled)
    plain = objective is None or objective.plain
    if not plain:
        w = objective.weights(compiled.horizon)
        acc = env.episode_cost.sum(axis=(1, 2)).copy()  # anything charged at reset: period 0
    for t in range(compiled.horizon):
        env.step_qty(joint.propose(env).qty)
        if not plain:
            amount = env.out.cost.sum(axis=(1, 2))
            if objective.revenue:
                amount = amount - env.out.revenue.sum(axis=1)
            acc += w[t] * amount
        if progress:
            progress(1)
    total = env.episode_cost.sum(axis=(1, 2)).reshape(G, P)
    if plain:
        return total
    return total, (acc / w.sum()).reshape(G, P)


def _objective_per_period(compiled, name, cands, paths, seed, shield, progress, objective) -> np.ndarray:
    if objective.plain:
        return evaluate_candidates(compiled, name, cands, paths, seed, shield, progress) / compiled.horizon
    return evaluate_candidates(compiled, name, cands, paths, seed, shield, progress, objective)[1]


def paired_ci(diff: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) of a paired difference sample (t interval)."""
    from scipy import stats

    n = len(diff)
    m = float(diff.mean())
    if n < 2:
        return m, -math.inf, math.inf
    h = float(stats.t.ppf(0.5 + level / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    return m, m - h, m + h


def race(
    evaluate: Callable[[list[int], np.ndarray], np.ndarray],
    G: int,
    episodes: int,
    max_episodes: int | None,
    indifference: float = 0.0,
) -> tuple[int, dict | None, int, int]:
    """Pick the best of G candidates by paired comparisons on common paths, adding paths while needed.

    ``evaluate(idx, paths)`` gives the objective per period [len(idx), len(paths)]. Returns (best
    index, comparison with the runner-up or None when every candidate behaved alike, paths used by
    the best, candidate evaluations)."""
    P = episodes
    cap = episodes if max_episodes is None else max(episodes, int(max_episodes))
    rows: dict[int, np.ndarray] = {}
    first = evaluate(list(range(G)), np.arange(P, dtype=np.int64))
    evals = G
    # candidates that behave identically on every path (same integer levels) count once: the first
    alive: list[int] = []
    for g in range(G):
        if not any(np.array_equal(first[g], first[a]) for a in alive):
            alive.append(g)
        rows[g] = first[g]
    dropped: list[int] = []
    while True:
        means = {g: rows[g].mean() for g in alive}
        best = min(alive, key=lambda g: (means[g], g))
        contenders, widths = [], []
        for g in alive:
            if g == best:
                continue
            m, lo, hi = paired_ci(rows[g] - rows[best])
            widths.append(hi - lo)
            if lo > 0:
                dropped.append(g)
            else:
                contenders.append(g)
        alive = [best] + contenders
        scale = max(abs(means[best]), 1e-12)
        if not contenders or P >= cap or (indifference > 0 and max(widths) / 2 <= indifference * scale):
            break
        newP = min(2 * P, cap)
        more = evaluate(alive, np.arange(P, newP, dtype=np.int64))
        evals += len(alive)
        for i, g in enumerate(alive):
            rows[g] = np.concatenate([rows[g], more[i]])
        P = newP
    others = [g for g in alive + dropped if g != best]
    if not others:
        return best, None, P, evals

    def gap(g):
        n = min(len(rows[g]), len(rows[best]))
        return (rows[g][:n] - rows[best][:n]).mean()

    runner = min(others, key=gap)
    n = min(len(rows[runner]), len(rows[best]))
    m, lo, hi = paired_ci(rows[runner][:n] - rows[best][:n])
    comp = {
        "runner_up_minus_best": m,
        "ci95": [lo, hi],
        "paths": n,
        "separated": bool(lo > 0),
        "best_per_period": float(rows[best][:n].mean()),
        "runner_up": runner,
    }
    return best, comp, P, evals


def tune(
    compiled: Compiled,
    name: str,
    episodes: int = 16,
    seed: int = 1000,
    eval_episodes: int = 32,
    eval_seed: int = 2000,
    rounds: int = 4,
    grid: int = 5,
    shield=None,
    progress: Callable[[int], None] | bool | None = None,
    max_episodes: int | None = None,
    indifference: float = 0.0,
    per_node: bool = False,
    revenue: bool | None = None,
    discount: float | None = None,
    per_sku: bool = False,
    sku_episodes: int = 64,
) -> TuneResult:
    """Coordinate search over the policy's knobs per role (or node); returns the tuned knobs and held-out
    cost. ``per_sku``: then one value of each knob per role and SKU (`sku_stage`), refined from the
    per-role result on ``sku_episodes`` common paths.

    ``max_episodes`` > ``episodes`` turns each grid into a race that doubles the common paths while the
    leader is not separated from a contender (see the module docstring); ``revenue`` None follows the
    scenario's ``reward.include_revenue``; ``discount`` < 1 discounts the objective.

    ``progress``: a callback given the periods simulated; None shows `restock.progress` (a bar on a
    terminal, a line every ~10 s otherwise); False shows nothing."""
    if name not in TUNABLE:
        raise ValueError(f"policy {name!r} has nothing to tune (tunable: {', '.join(TUNABLE)})")
    if progress is None:
        from restock.progress import Progress, jit_notice

        jit_notice()
        work = tune_work(
            compiled, name, episodes, eval_episodes, rounds, grid, max_episodes, per_node, per_sku
        )
        with Progress(work, f"tuning {name} on {compiled.config.name}") as bar:
            return tune(
                compiled, name, episodes, seed, eval_episodes, eval_seed, rounds, grid, shield,
                bar.advance, max_episodes, indifference, per_node, revenue, discount, per_sku, sku_episodes,
            )  # fmt: skip
    if per_sku and per_node:
        raise ValueError("per-SKU knobs are per role: --per-sku and --per-node cannot be combined")
    progress = progress or None  # False: silent
    cls = policy_classes()[name]
    t0 = time.perf_counter()
    obj = Objective.for_scenario(compiled, revenue, discount)
    history: list[dict] = []
    evals = 0
    best_cost = float("inf")
    final = None
    offsets = np.linspace(-1.0, 1.0, grid)
    # per node: first per role, then each node's knobs refined from its role's (a coordinate search
    # started at the defaults per node can stall where the per-role one does not)
    x: dict[str, dict[str, float]] = {r: dict(cls.knob_defaults) for r in present_roles(compiled)}
    for stage_nodes in [False] + ([True] if per_node else []):
        units = _units(compiled, stage_nodes)
        if stage_nodes:
            x = {u: dict(x[agent_role(u) or "store"]) for u in units}
        step = {k: (hi - lo) / 8.0 for k, (lo, hi) in cls.knob_bounds.items()}
        for _rnd in range(rounds):
            for unit in units:
                for key, (lo, hi) in cls.knob_bounds.items():
                    vals = np.unique(np.clip(x[unit][key] + offsets * step[key] * (grid // 2), lo, hi))
                    cands = []
                    for v in vals:
                        c = {r: dict(d) for r, d in x.items()}
                        c[unit][key] = float(v)
                        cands.append(c)

                    def run(idx, paths, cands=cands):
                        return _objective_per_period(
                            compiled, name, [cands[i] for i in idx], paths, seed, shield, progress, obj
                        )

                    j, comp, used, n = race(run, len(cands), episodes, max_episodes, indifference)
                    evals += n
                    x = cands[j]
                    entry = {
                        "node" if stage_nodes else "role": unit,
                        "knob": key,
                        "values": vals.tolist(),
                        "chosen": float(vals[j]),
                        "paths": used,
                    }
                    if comp is not None:
                        best_cost = comp["best_per_period"]
                        comp = {
                            "knob": f"{unit}.{key}",
                            "best": float(vals[j]),
                            "runner_up": float(vals[comp.pop("runner_up")]),
                            **comp,
                        }
                        entry["comparison"] = comp
                        final = comp
                    history.append(entry)
            step = {k: v / 2.0 for k, v in step.items()}
    if per_sku:
        x, sku_history = sku_stage(compiled, name, x, seed, sku_episodes, rounds, grid, shield, progress, obj)
        history += sku_history
        evals += sum(h["candidates"] for h in sku_history)
        final = None  # the per-role race's comparison no longer describes the result
    if final is None:  # every grid behaved alike (or per SKU): the incumbent's objective on the first paths
        best_cost = float(
            _objective_per_period(
                compiled, name, [x], np.arange(episodes, dtype=np.int64), seed, shield, None, obj
            )[0].mean()
        )
    # honest figure: the tuned knobs on held-out paths
    held_paths = np.arange(eval_episodes, dtype=np.int64)
    if obj.plain:
        held_cost = evaluate_candidates(compiled, name, [x], held_paths, eval_seed, shield, progress)[0]
        held_obj = held_cost / compiled.horizon
    else:
        tot, per = evaluate_candidates(compiled, name, [x], held_paths, eval_seed, shield, progress, obj)
        held_cost, held_obj = tot[0], per[0]
    ci = mean_ci(held_cost / compiled.horizon)
    oci = mean_ci(held_obj)
    objective = {
        **obj.to_json(),
        "tuning_per_period": best_cost,
        "held_out_per_period": {"mean": oci["mean"], "ci95": oci["ci95"]},
    }
    return TuneResult(
        policy=name,
        scenario=compiled.config.name,
        config_hash=compiled.config_hash,
        knobs=x,
        cost_per_period={"mean": ci["mean"], "ci95": ci["ci95"]},
        train_cost_per_period=best_cost if obj.plain else None,
        episodes=episodes,
        eval_episodes=eval_episodes,
        seed=seed,
        eval_seed=eval_seed,
        seconds=time.perf_counter() - t0,
        evaluations=evals,
        history=history,
        objective=objective,
        final_comparison=final,
        max_episodes=max_episodes,
        per_node=per_node,
        per_sku=per_sku,
        sku_episodes=sku_episodes if per_sku else None,
    )


ACCEPT_PATHS = 1_000_000  # first path index of the acceptance checks of per-SKU moves (tuning seed)
PRICE_MULTIPLES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # storage prices tried (x mean holding per volume)


def sku_stage(
    compiled: Compiled,
    name: str,
    x: dict,
    seed: int,
    episodes: int,
    rounds: int,
    grid: int,
    shield,
    progress,
    obj: Objective,
) -> tuple[dict, list[dict]]:
    """Per-SKU coordinate search from the per-role knobs ``x``: each knob gets one value per role and SKU.

    SKUs share nothing in the heuristics, and their costs are separable up to the limits they share
    (storage, budgets, the DC's stock), so one batch scores every SKU at once: for a knob of a role,
    G candidate batches give each SKU G values around its incumbent (offsets -2..+2 grid steps), each SKU
    scored by its own cost over all nodes (`evaluate_sku_candidates`) on ``episodes`` common paths. The
    offsets are spread over the batches in a balanced (Latin) design, a random cyclic shift per SKU, so
    every batch carries about the incumbent's total stock and the shared limits bind in each batch as
    they would for the incumbent. Each SKU takes its best value; the move of all SKUs together is then
    checked against the incumbent on fresh paths (never used to score: indices from ``ACCEPT_PATHS``).

    A SKU's own cost does not charge it for the storage it takes from the others: moved together, SKUs
    that each gained by holding more can overflow the storage they share. So the check runs several
    proposals, each SKU's pick under a price on its volume on hand at storage-limited nodes (a
    Lagrangian relaxation of the shared storage): prices ``PRICE_MULTIPLES`` x the mean holding cost per
    unit of volume there (0: no price). The proposal with the lowest total objective on the check paths
    is taken if it is below the incumbent's. The step halves each round."""
    cls = policy_classes()[name]
    K = compiled.K
    G = grid
    rng = np.random.default_rng([seed, 7919])  # the design's shifts: reproducible from the tuning seed
    units = present_roles(compiled)
    x = {u: dict(d) for u, d in x.items()}
    for u in units:
        for key in cls.knob_bounds:
            x[u][key + SKU_SUFFIX] = [float(x[u].get(key, cls.knob_defaults[key]))] * K
    step = {k: (hi - lo) / 8.0 for k, (lo, hi) in cls.knob_bounds.items()}
    offsets = np.linspace(-1.0, 1.0, G) * (G // 2)
    paths = np.arange(episodes, dtype=np.int64)
    next_accept = ACCEPT_PATHS
    p = compiled.params
    capped = np.isfinite(p.storage_cap).any(axis=0)  # [N] nodes with a storage limit
    prices = PRICE_MULTIPLES if capped.any() else (0.0,)
    unit_price = float(np.mean(p.hold[capped] / p.volume[None, :])) if capped.any() else 0.0
    history: list[dict] = []
    for rnd in range(rounds):
        for unit in units:
            for key, (lo, hi) in cls.knob_bounds.items():
                skey = key + SKU_SUFFIX
                cur = np.asarray(x[unit][skey], float)
                idx = (np.arange(G)[:, None] + rng.integers(0, G, size=K)[None, :]) % G  # [G, K]
                vals = np.clip(cur[None, :] + offsets[idx] * step[key], lo, hi)
                cands = []
                for g in range(G):
                    c = {u: dict(d) for u, d in x.items()}
                    c[unit][skey] = vals[g].tolist()
                    cands.append(c)
                per, vol = evaluate_sku_candidates(
                    compiled, name, cands, paths, seed, shield, progress, obj, volumes=True
                )
                mean, mvol = per.mean(axis=1), vol.mean(axis=1)  # [G, K]
                props: list[tuple[float, np.ndarray]] = []
                for mult in prices:
                    pick = np.argmin(mean + mult * unit_price * mvol, axis=0)  # per SKU, its best batch
                    prop = vals[pick, np.arange(K)]
                    if np.any(prop != cur) and not any(np.array_equal(prop, q) for _, q in props):
                        props.append((float(mult), prop))
                entry = {
                    "stage": "sku",
                    "round": rnd,
                    "role": unit,
                    "knob": key,
                    "step": step[key],
                    "paths": episodes,
                    "candidates": G,
                    "moved_skus": 0,
                    "accepted": False,
                }
                if props:
                    news = []
                    for _, prop in props:
                        nx = {u: dict(d) for u, d in x.items()}
                        nx[unit][skey] = prop.tolist()
                        news.append(nx)
                    check = np.arange(next_accept, next_accept + episodes, dtype=np.int64)
                    next_accept += episodes
                    tot = _objective_per_period(
                        compiled, name, [x, *news], check, seed, shield, progress, obj
                    )
                    diffs = tot[1:] - tot[0][None]  # [proposals, paths]
                    b = int(np.argmin(diffs.mean(axis=1)))
                    m, clo, chi = paired_ci(diffs[b])
                    entry.update(
                        {
                            "candidates": G + 1 + len(news),
                            "accept_paths": [int(check[0]), int(check[-1]) + 1],
                            "proposals": [
                                {
                                    "price_multiple": mu,
                                    "moved_skus": int(np.sum(q != cur)),
                                    "minus_incumbent": float(d),
                                }
                                for (mu, q), d in zip(props, diffs.mean(axis=1), strict=True)
                            ],
                            "price_multiple": props[b][0],
                            "moved_skus": int(np.sum(props[b][1] != cur)),
                            "new_minus_incumbent": m,
                            "ci95": [clo, chi],
                            "accepted": bool(m < 0),
                        }
                    )
                    if m < 0:
                        x = news[b]
                history.append(entry)
        step = {k: v / 2.0 for k, v in step.items()}
    return x, history


def tune_work(
    compiled: Compiled,
    name: str,
    episodes: int,
    eval_episodes: int,
    rounds: int,
    grid: int,
    max_episodes: int | None = None,
    per_node: bool = False,
    per_sku: bool = False,
) -> int:
    """Periods simulated by `tune` (for progress bars): batches x horizon (races: at most)."""
    cls = policy_classes()[name]
    doublings = 0
    if max_episodes and max_episodes > episodes:
        doublings = math.ceil(math.log2(max_episodes / episodes))
    units = len(present_roles(compiled)) + (len(_units(compiled, True)) if per_node else 0)
    n_batches = rounds * units * len(cls.knob_bounds) * (1 + doublings) + 1
    if per_sku:  # a scoring batch and an acceptance check per role, knob and round; the final score
        n_batches += rounds * len(present_roles(compiled)) * len(cls.knob_bounds) * 2 + 1
    return n_batches * compiled.horizon
