"""Build a run directory whose roles come from different runs, for `restock eval` (a diagnostic: which
role's weights cost what). Each role is taken from a run (its policies/<role>.pt and .json) or left to
the run's baseline heuristic (omit the role):

    python docs/results/swap_roles.py OUT --store RUN_A [--dc RUN_B]

OUT gets run.json, config.yaml and scenario.yaml of the first run named (its baseline, scenario and
experiment), with `roles` rewritten to the roles given, and the weights of each role from its run.
Used in docs/results/rllib_pairs.md: a joint run's stores with the DC on tuned (s,S) (`--store JOINT`),
and a store-only run's stores beside a joint run's learned DC (`--store STORE_RUN --dc JOINT`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--store", type=Path, help="run whose store weights play the stores")
    ap.add_argument("--dc", type=Path, help="run whose DC weights play the DC")
    a = ap.parse_args()
    roles = {r: d for r, d in (("store", a.store), ("dc", a.dc)) if d is not None}
    if not roles:
        raise SystemExit("give --store RUN, --dc RUN or both")
    first = next(iter(roles.values()))
    a.out.mkdir(parents=True, exist_ok=False)
    (a.out / "policies").mkdir()
    shutil.copy(first / "scenario.yaml", a.out / "scenario.yaml")
    run = json.loads((first / "run.json").read_text())
    run["roles"] = sorted(roles)
    run["swapped_from"] = {r: str(d) for r, d in roles.items()}
    (a.out / "run.json").write_text(json.dumps(run, indent=2))
    cfg = yaml.safe_load((first / "config.yaml").read_text())
    cfg["experiment"]["roles"] = sorted(roles)
    (a.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for r, d in roles.items():
        for ext in ("pt", "json"):
            shutil.copy(d / "policies" / f"{r}.{ext}", a.out / "policies" / f"{r}.{ext}")
    print(f"{a.out}: " + ", ".join(f"{r} from {d}" for r, d in roles.items()))


if __name__ == "__main__":
    main()
