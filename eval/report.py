"""Evaluation reports: report.md, kpis.json, kpis.csv, paired.json, per_episode.csv and PNG plots."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from restock.envs.kpis import HEADLINE
from restock.envs.types import COST_NAMES
from restock.eval.evaluate import BOUND_WORDS, ORACLE, EvalResult
from restock.eval.kpis import DISCOUNTED, DISCOUNTED_NET

GAP_LABEL = "gap to perfect-information bound (unreachable)"

# the discounted KPIs appear only with `restock eval --discounted` (absent KPIs are left out)
TABLE_KPIS = [HEADLINE[0], DISCOUNTED, DISCOUNTED_NET, *HEADLINE[1:], "bullwhip_0", "bullwhip_1"]


def fmt(x: float) -> str:
    if x is None or x != x:
        return "-"
    a = abs(x)
    if a >= 1e4:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:,.1f}"
    if a >= 1:
        return f"{x:.3f}"
    return f"{x:.4f}"


def cell(s: dict | None) -> str:
    if not s:
        return "-"
    lo, hi = s["ci95"]
    return f"{fmt(s['mean'])} ± {fmt((hi - lo) / 2)}"


def markdown_table(res: EvalResult, kpis: list[str] | None = None) -> str:
    kpis = [k for k in (kpis or TABLE_KPIS) if any(k in s for s in res.summary.values())]
    head = "| policy | " + " | ".join(kpis) + (f" | {GAP_LABEL} |" if res.oracle_gap else " |")
    sep = "|---" * (len(kpis) + 1 + (1 if res.oracle_gap else 0)) + "|"
    rows = [head, sep]
    for pol, s in res.summary.items():
        row = f"| {pol} | " + " | ".join(cell(s.get(k)) for k in kpis)
        if res.oracle_gap:
            g = res.oracle_gap.get(pol)
            row += " | " + (
                f"{100 * g['mean']:.1f}% ± {100 * (g['ci95'][1] - g['ci95'][0]) / 2:.1f}%" if g else "-"
            )
        rows.append(row + " |")
    return "\n".join(rows)


def paired_table(res: EvalResult) -> str:
    if not res.paired:
        return ""
    keys = [HEADLINE[0], *res.criteria, *HEADLINE[1:], "total_cost_relative"]
    rows = [
        f"Paired differences against **{res.baseline}** (policy minus baseline, same paths):",
        "",
        "| policy | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for pol, d in res.paired.items():
        cells = []
        for k in keys:
            if k not in d:
                cells.append("-")
            elif k == "total_cost_relative":
                m, (lo, hi) = d[k]["mean"], d[k]["ci95"]
                cells.append(f"{100 * m:+.2f}% [{100 * lo:+.2f}%, {100 * hi:+.2f}%]")
            else:
                m, (lo, hi) = d[k]["mean"], d[k]["ci95"]
                cells.append(f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]")
        rows.append(f"| {pol} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_per_episode(res: EvalResult, path: Path) -> Path:
    """Every policy's KPIs per sample path (long format: policy, path, kpi, value), so a paired
    comparison between any two policies of the report, or of two reports on the same scenario, seed and
    episodes, can be made afterwards. ``path`` is the path's index in the evaluation (the oracle's are
    the indices it was solved on)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["policy", "path", "kpi", "value"])
        for pol, kpis in res.per_episode.items():
            for k, v in kpis.items():
                v = np.asarray(v, float).ravel()
                idx = range(len(v))
                if (
                    len(v) != res.episodes
                    and res.oracle_paths is not None
                    and len(v) == len(res.oracle_paths)
                ):
                    idx = [int(i) for i in res.oracle_paths]
                for i, x in zip(idx, v, strict=True):
                    w.writerow([pol, i, k, repr(float(x))])
    os.replace(tmp, path)
    return path


def write_report(
    res: EvalResult,
    out: str | Path,
    stress: dict[str, EvalResult] | None = None,
    title: str | None = None,
    extra_md: str = "",
) -> dict[str, Path]:
    """Write the report folder; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["kpis.json"] = _atomic_json(out / "kpis.json", res.kpis_json())
    files["paired.json"] = _atomic_json(
        out / "paired.json",
        {
            "baseline": res.baseline,
            "paired": res.paired,
            "oracle_gap": res.oracle_gap,
            "oracle_paths": None if res.oracle_paths is None else res.oracle_paths.tolist(),
            "scenario": res.scenario,
            "config_hash": res.config_hash,
            "episodes": res.episodes,
            "seed": res.seed,
            "notes": res.notes,
            "roles": res.roles,
            "criteria": res.criteria,
        },
    )
    with open(out / "kpis.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["stress", "policy", "kpi", "mean", "ci95_lo", "ci95_hi", "n"])
        for name, r in [("none", res), *((stress or {}).items())]:
            for pol, s in r.summary.items():
                for k, v in s.items():
                    w.writerow([name, pol, k, v["mean"], v["ci95"][0], v["ci95"][1], v["n"]])
    files["kpis.csv"] = out / "kpis.csv"
    files["per_episode.csv"] = write_per_episode(res, out / "per_episode.csv")
    try:
        import matplotlib  # noqa: F401  (an extra: a serving-only install has none)

        plots = plot_all(res, out)
    except ImportError:
        plots = {}
        res.notes.append("no plots: matplotlib is not installed (pip install 'restock[plot]')")
    files.update(plots)
    if stress:
        files["stress.json"] = _atomic_json(
            out / "stress.json", {k: r.kpis_json() for k, r in stress.items()}
        )
    md = [
        f"# {title or f'Evaluation: {res.scenario}'}",
        "",
        f"Scenario `{res.scenario}` (config {res.config_hash}), {res.episodes} sample paths of {res.horizon} periods, "
        f"seed {res.seed}; every policy ran on the same paths (common random numbers). Values are means over paths "
        "± the half-width of a 95% Student-t interval.",
        "",
    ]
    if res.oracle_paths is not None:
        md.append(
            f"`oracle` is the {BOUND_WORDS} (the exact perfect-information MILP, `restock.eval.bound`), "
            f"solved on {len(res.oracle_paths)} path(s); gaps to it are paired on those paths and measure "
            "what a policy might still gain plus the value of knowing the future, not a reachable target."
        )
        md.append("")
    md += [markdown_table(res), ""]
    rl = roles_lines(res)
    if rl:
        md += [
            "What played each role of the learned runs (a role a run did not train is played by its baseline):",
            "",
        ]
        md += rl + [""]
    pt = paired_table(res)
    if pt:
        md += [pt, ""]
    md += ["## Cost breakdown (total per episode)", "", _cost_table(res), ""]
    st = safety_table(res)
    if st:
        md += ["## Safety (per episode; the shield runs unless `--no-shield`)", "", st, ""]
    if stress:
        md += ["## Stress tests", ""]
        for name, r in stress.items():
            md += [
                f"### {name}",
                "",
                markdown_table(
                    r,
                    [
                        "total_cost",
                        "fill_rate",
                        "cycle_service_level",
                        "stockout_days",
                        "lost_sales",
                        "avg_on_hand",
                    ],
                ),
                "",
            ]
    if extra_md:
        md += [extra_md, ""]
    md += ["## Plots", ""]
    for k, p in plots.items():
        md.append(f"![{k}]({p.name})")
    if res.notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    md += ["", "KPI definitions: `eval/kpis.py`."]
    (out / "report.md").write_text("\n".join(md) + "\n")
    files["report.md"] = out / "report.md"
    return files


def roles_lines(res: EvalResult) -> list[str]:
    """One bullet per evaluated run directory: each role and whether learned weights or a heuristic played it."""
    out = []
    for pol, roles in res.roles.items():
        parts = [f"{r}: {'learned weights' if v == 'learned' else v}" for r, v in roles.items()]
        out.append(f"- `{pol}`: " + "; ".join(parts))
    return out


def safety_table(res: EvalResult) -> str:
    """Per policy and constraint: intervention rate, raw (proposed) and executed violations."""
    from restock.envs.constraints import CONSTRAINTS

    have = [p for p, s in res.summary.items() if any(k.startswith("safety_") for k in s)]
    if not have:
        return ""
    rows = [
        "| policy | constraint | intervention rate | raw violations | executed violations |",
        "|---|---|---|---|---|",
    ]
    for pol in have:
        s = res.summary[pol]
        for c in CONSTRAINTS:
            ir, rv, ev = (
                s.get(f"safety_{k}_{c}")
                for k in ("intervention_rate", "raw_violations", "executed_violations")
            )
            if not any((v or {}).get("mean") for v in (ir, rv, ev)):
                continue
            rows.append(f"| {pol} | {c} | {cell(ir)} | {cell(rv)} | {cell(ev)} |")
        tot = s.get("safety_executed_violations")
        rows.append(
            f"| {pol} | **all** | {cell(s.get('safety_intervention_rate'))} | {cell(s.get('safety_raw_violations'))} "
            f"| {cell(tot)} |"
        )
    return "\n".join(rows)


def _cost_table(res: EvalResult) -> str:
    keys = [f"cost_{c}" for c in COST_NAMES]
    rows = ["| policy | " + " | ".join(COST_NAMES) + " |", "|---" * (len(keys) + 1) + "|"]
    for pol, s in res.summary.items():
        rows.append(f"| {pol} | " + " | ".join(fmt(s[k]["mean"]) if k in s else "-" for k in keys) + " |")
    return "\n".join(rows)


def _atomic_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_np_default))
    tmp.replace(path)
    return path


def _np_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _figure(w: float, h: float, rows: int = 1, sharex: bool = False):
    """A figure drawn by its own Agg canvas: matplotlib's global backend is left alone (notebooks keep
    their inline plots)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=sharex)
    return fig, axes


OFF_SCALE = 5.0  # the cost breakdown leaves out policies costing more than this times the cheapest


def breakdown_policies(res: EvalResult) -> tuple[list[str], list[str]]:
    """(shown, left out) for the cost breakdown: policies costing more than OFF_SCALE x the cheapest
    policy other than the perfect-information bound (``zero`` often costs 1,000 times more) would
    squash every other bar to a sliver, so they are named on the figure instead of drawn."""
    tot = {p: s["total_cost"]["mean"] for p, s in res.summary.items() if "total_cost" in s}
    pos = [v for p, v in tot.items() if v > 0 and p != ORACLE] or [v for v in tot.values() if v > 0]
    if not pos:
        return list(tot), []
    cap = OFF_SCALE * min(pos)
    shown = [p for p, v in tot.items() if v <= cap]
    return shown, [p for p in tot if p not in shown]


def cost_breakdown_figure(res: EvalResult):
    """Stacked horizontal bars of each policy's cost parts per episode, cheapest at the top, with the
    total and its interval; policies off the scale (`breakdown_policies`) are named in the title. A
    `matplotlib.figure.Figure` (a notebook shows it)."""
    shown, left_out = breakdown_policies(res)
    shown = sorted(shown, key=lambda p: res.summary[p]["total_cost"]["mean"], reverse=True)
    fig, ax = _figure(9, max(3.0, 0.45 * len(shown) + 1.8))
    left = np.zeros(len(shown))
    for c in COST_NAMES:
        vals = np.array([res.summary[p].get(f"cost_{c}", {"mean": 0.0})["mean"] for p in shown])
        if np.allclose(vals, 0):
            continue
        ax.barh(shown, vals, left=left, label=c.replace("_", " "))
        left += vals
    for y, p in enumerate(shown):
        s = res.summary[p]["total_cost"]
        ax.annotate(
            f" {fmt(s['mean'])} ± {fmt((s['ci95'][1] - s['ci95'][0]) / 2)}",
            (s["mean"], y),
            va="center",
            fontsize=8,
        )
    ax.set_xlabel(f"cost per episode of {res.horizon} periods (money units, mean over {res.episodes} paths)")
    title = f"{res.scenario}: cost breakdown"
    if left_out:
        title += f"\nnot drawn (over {OFF_SCALE:g}x the cheapest): " + ", ".join(
            f"{p} {fmt(res.summary[p]['total_cost']['mean'])}" for p in left_out
        )
    ax.set_title(title, fontsize=10)
    if shown:
        ax.set_xlim(0, 1.3 * float(max(res.summary[p]["total_cost"]["mean"] for p in shown) or 1.0))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="cost", title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_all(res: EvalResult, out: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    pols = list(res.summary)
    # 1. cost breakdown per policy
    files["cost_breakdown"] = _save(cost_breakdown_figure(res), out / "cost_breakdown.png")
    # 2. fill rate against average inventory
    fig, ax = _figure(6, 4.5)
    for p in pols:
        s = res.summary[p]
        if "fill_rate" not in s:
            continue
        x, y = s["avg_on_hand"], s["fill_rate"]
        ax.errorbar(
            x["mean"],
            y["mean"],
            xerr=(x["ci95"][1] - x["ci95"][0]) / 2,
            yerr=(y["ci95"][1] - y["ci95"][0]) / 2,
            fmt="o",
            capsize=3,
            label=p,
        )
    ax.set_xlabel("average units on hand (all nodes, units)")
    ax.set_ylabel("unit fill rate at the stores (share of demand)")
    ax.set_title(f"{res.scenario}: service against inventory (95% intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["fill_vs_inventory"] = _save(fig, out / "fill_vs_inventory.png")
    # 3. one SKU's inventory and orders over time (path 0, first store and its parent)
    with_trace = [p for p in pols if p in res.rollouts and res.rollouts[p].trace]
    if with_trace:
        store = res.n_dcs  # the first store
        fig, axes = _figure(9, 6, rows=2, sharex=True)
        for p in with_trace:
            tr = res.rollouts[p].trace
            axes[0].plot(tr["on_hand"][:, store], ".-", label=p, lw=1.2, ms=3)
            axes[1].step(
                np.arange(len(tr["ordered"])), tr["ordered"][:, store], where="post", label=p, lw=1.0
            )
        axes[0].plot(res.rollouts[with_trace[0]].trace["demand"][:, store], "k:", lw=0.8, label="demand")
        axes[0].set_ylabel("on hand, start of period (units)")
        axes[1].set_ylabel("ordered (units)")
        axes[1].set_xlabel("period")
        axes[0].set_title(f"{res.scenario}: SKU 0 at the first store, path 0")
        axes[0].legend(fontsize=8, ncol=2)
        fig.tight_layout()
        files["sku_trace"] = _save(fig, out / "sku_trace.png")
    return files


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------------
# Plain-text tables for a terminal or a log: never wider than ``width`` columns, numbers never cut.


def _wrap_header(text: str, width: int) -> list[str]:
    """Split a header into lines of at most ``width`` characters, at '_', ' ' or '/' where possible."""
    import re

    parts = [p for p in re.split(r"(?<=[_ /])", text) if p]
    lines, cur = [], ""
    for part in parts:
        while len(part) > width:  # one word longer than the column: cut it (headers only, never cells)
            if cur:
                lines.append(cur)
                cur = ""
            lines.append(part[:width])
            part = part[width:]
        if len(cur) + len(part) > width:
            lines.append(cur)
            cur = part
        else:
            cur += part
    if cur:
        lines.append(cur)
    return [ln.rstrip("_ ") or ln for ln in lines] or [""]


def fit_table(header: list[str], rows: list[list[str]], width: int = 80, min_col: int = 8) -> str:
    """A right-aligned plain-text table no wider than ``width``: each column is as wide as its widest
    cell (cells are never cut) or ``min_col``; headers wrap onto several lines to fit their column;
    when the columns still do not fit, the table is split into blocks of columns, each repeating the
    first column. A single column wider than ``width`` is printed whole (cells are never cut)."""
    first_w = max([len(header[0]), *(len(r[0]) for r in rows)]) if rows else len(header[0])
    first_w = min(first_w, max(12, width // 3))
    col_w = [max([min_col, *(len(r[j]) for r in rows)]) for j in range(1, len(header))]
    blocks: list[list[int]] = []
    cur: list[int] = []
    used = first_w
    for j, w in enumerate(col_w, start=1):
        if cur and used + 2 + w > width:
            blocks.append(cur)
            cur, used = [], first_w
        cur.append(j)
        used += 2 + w
    if cur or not blocks:
        blocks.append(cur)
    out: list[str] = []
    for b in blocks:
        heads = [_wrap_header(header[0], first_w)] + [_wrap_header(header[j], col_w[j - 1]) for j in b]
        n_lines = max(len(h) for h in heads)
        heads = [[""] * (n_lines - len(h)) + h for h in heads]  # headers sit on the rule
        for i in range(n_lines):
            line = heads[0][i].ljust(first_w) + "".join(
                "  " + heads[k + 1][i].rjust(col_w[j - 1]) for k, j in enumerate(b)
            )
            out.append(line.rstrip())
        out.append("-" * (first_w + sum(2 + col_w[j - 1] for j in b)))
        for r in rows:
            label = r[0] if len(r[0]) <= first_w else r[0][: first_w - 1] + "~"
            out.append((label.ljust(first_w) + "".join("  " + r[j].rjust(col_w[j - 1]) for j in b)).rstrip())
        out.append("")
    return "\n".join(out).rstrip("\n")


def text_table(res: EvalResult, kpis: list[str] | None = None, width: int = 80) -> str:
    """The KPI table of `markdown_table` for a terminal or a log: at most ``width`` columns (headers
    wrap, wide tables split into blocks of columns, numbers whole); long run labels are shortened in
    the table and listed in full below it."""
    kpis = [k for k in (kpis or TABLE_KPIS) if any(k in s for s in res.summary.values())]
    header = ["policy", *kpis] + ([GAP_LABEL] if res.oracle_gap else [])
    rows, legend = [], []
    short_w = max(12, width // 3)
    for n, (pol, s) in enumerate(res.summary.items()):
        label = pol
        if len(pol) > short_w:
            label = f"[{n + 1}] " + pol[: short_w - 6] + "~"
            legend.append(f"[{n + 1}] {pol}")
        row = [label, *(cell(s.get(k)) for k in kpis)]
        if res.oracle_gap:
            g = res.oracle_gap.get(pol)
            row.append(
                f"{100 * g['mean']:.1f}% ± {100 * (g['ci95'][1] - g['ci95'][0]) / 2:.1f}%" if g else "-"
            )
        rows.append(row)
    text = fit_table(header, rows, width=width)
    return text + ("\n" + "\n".join(legend) if legend else "")


__all__ = ["write_report", "markdown_table", "text_table", "fit_table", "ORACLE"]
