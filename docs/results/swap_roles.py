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
    # check everything before writing anything: the weights of each role, one scenario for all runs
    hashes = {}
    for r, d in roles.items():
        for f in (
            d / "run.json",
            d / "scenario.yaml",
            d / "policies" / f"{r}.pt",
            d / "policies" / f"{r}.json",
        ):
            if not f.is_file():
                raise SystemExit(f"--{r}: {f} is missing (not a finished run with {r} weights)")
        try:
            hashes[r] = json.loads((d / "run.json").read_text()).get("scenario_hash")
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--{r}: {d / 'run.json'} cannot be read: {exc}") from None
    if len(set(hashes.values())) > 1:
        raise SystemExit(
            f"the runs were trained on different scenarios (scenario_hash {hashes}): refusing to mix them"
        )
    if a.out.exists():
        raise SystemExit(f"{a.out} exists: give a new folder")
    first = next(iter(roles.values()))
    a.out.mkdir(parents=True)
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
        for f in (d / "policies").glob(f"{r}.*"):  # the weights, the network config, echelon features
            if f.is_file():
                shutil.copy(f, a.out / "policies" / f.name)
    print(f"{a.out}: " + ", ".join(f"{r} from {d}" for r, d in roles.items()))


if __name__ == "__main__":
    main()
