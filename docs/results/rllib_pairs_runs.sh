#!/usr/bin/env bash
# The RLlib pair-credit runs and evaluations behind docs/results/rllib_pairs.md: RLlib PPO with per-(node,
# SKU) credit on `default`, store + DC learned jointly (configs/experiments/default_rllib_pairs_joint.yaml)
# the store role alone (default_rllib_pairs.yaml) and the DC role alone (default_rllib_pairs_dc.yaml), 43,680
# env steps, each run cloning tuned (s,S) itself.
# Needs out/params/default.json: `restock tune default --policy P --out out/params/default.json` for P in
# s_S, base_stock, echelon_base_stock, capped_base_stock, r_Q (the joint heuristics the runs are judged by).
#   docs/results/rllib_pairs_runs.sh train "joint:0 joint:1" | eval-heuristics | eval [RUN ...] | table
# Runs land in runs/rllib_pairs (joint), runs/rllib_pairs_store (store only) and runs/rllib_pairs_dc (DC only).
# The wide store grid (default_wide_rllib_pairs*.yaml: 31 levels to 12 periods of cover) has its own
# heuristics report and table: train "wide:0 widejoint:0" | eval-heuristics-wide | eval | table-wide.
# Since 2026-12-05 `default` ships the wide store grid; the narrow-grid experiment files pin the former grid
# (16 levels to 6 periods) through scenario_overrides, so every run is judged on the scenario it saved
# (RUN/scenario.yaml), and each heuristics report on a run's scenario of the matching grid (same paths).
set -euo pipefail
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
link_clones() {  # each run's cloned start under a name of its own, for restock eval
  mkdir -p out/rp_clones
  for r in "$@"; do  # a pattern that matched no run (a job not trained yet) is skipped
    [ -d "$r/cloned" ] || continue
    ln -sfn "$(realpath "$r/cloned")" "out/rp_clones/$(basename "$r")__cloned"
  done
}
case ${1:-} in
  train)
    for job in ${2:-joint:0 joint:1 joint:2 store:0 store:1 store:2 dc:0 dc:1 dc:2}; do
      kind=${job%%:*}; s=${job##*:}
      case $kind in
        joint) cfg=default_rllib_pairs_joint; out=runs/rllib_pairs ;;
        store) cfg=default_rllib_pairs; out=runs/rllib_pairs_store ;;
        dc) cfg=default_rllib_pairs_dc; out=runs/rllib_pairs_dc ;;
        dcfloor) cfg=default_rllib_pairs_joint_dcfloor; out=runs/rllib_pairs_dcfloor ;;
        dcown) cfg=default_rllib_pairs_dc_own; out=runs/rllib_pairs_dc_own ;;
        wide) cfg=default_wide_rllib_pairs; out=runs/rllib_pairs_wide ;;
        widejoint) cfg=default_wide_rllib_pairs_joint; out=runs/rllib_pairs_wide_joint ;;
        *) echo "unknown job $job (joint:N, store:N, dc:N, dcfloor:N, dcown:N, wide:N or widejoint:N)" >&2; exit 2 ;;
      esac
      echo "=== $cfg seed $s $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
      restock train default --trainer rllib --config configs/experiments/$cfg.yaml --seed "$s" --out "$out"
      echo "=== done $cfg seed $s $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    done ;;
  eval-heuristics)  # the tuned joint heuristics on the 200 held-out paths (seed 9001), on the narrow grid
    # (the scenario a narrow-grid run saved: default's former store grid, same paths, same costs)
    n=$(ls -d runs/rllib_pairs/default__* runs/rllib_pairs_store/default__* runs/rllib_pairs_dc/default__* 2>/dev/null | head -1 || true)  # ls fails when a folder is missing
    [ -n "$n" ] || { echo "no narrow-grid run yet: train joint:0 first (its scenario.yaml is the narrow grid)" >&2; exit 2; }
    restock eval "$n/scenario.yaml" --policies s_S,base_stock,echelon_base_stock,capped_base_stock,r_Q \
      --params out/params/default.json --episodes 200 --seed 9001 --baseline s_S --out out/eval/rp_default_heur ;;
  eval-heuristics-wide)  # the same on the wide store grid (the scenario a wide run saved; same paths, same costs)
    w=$(ls -d runs/rllib_pairs_wide/default__* runs/rllib_pairs_wide_joint/default__* 2>/dev/null | head -1 || true)  # ls fails when a folder is missing
    [ -n "$w" ] || { echo "no wide run yet: train wide:0 first (its scenario.yaml is the wide grid)" >&2; exit 2; }
    restock eval "$w/scenario.yaml" --policies s_S,base_stock,echelon_base_stock,capped_base_stock,r_Q \
      --params out/params/default.json --episodes 200 --seed 9001 --baseline s_S --out out/eval/rpw_default_heur ;;
  eval)  # each finished run and its cloned start on the same paths, one report each: eval [RUN ...]
    shift; runs=("$@")
    [ ${#runs[@]} -gt 0 ] || runs=(runs/rllib_pairs/default__* runs/rllib_pairs_store/default__* runs/rllib_pairs_dc/default__* runs/rllib_pairs_dcfloor/default__* runs/rllib_pairs_dc_own/default__* runs/rllib_pairs_wide/default__* runs/rllib_pairs_wide_joint/default__*)
    link_clones "${runs[@]}"
    for r in "${runs[@]}"; do
      [ -d "$r" ] || continue
      scen="$r/scenario.yaml"  # every run is judged on the scenario it saved (its grid; default's paths)
      case $r in
        *rllib_pairs_wide*) o="out/eval/rpw_default_run_$(basename "$r")" ;;
        *) o="out/eval/rp_default_run_$(basename "$r")" ;;
      esac
      [ -f "$o/per_episode.csv" ] && continue  # evaluated already
      restock eval "$scen" --policies "out/rp_clones/$(basename "$r")__cloned,$r" --episodes 200 --seed 9001 \
        --params out/params/default.json --baseline "$(basename "$r")__cloned" --out "$o"
    done ;;
  table)  # paired across the reports: they share scenario, seed and paths (checked)
    python docs/results/rllib_pairs_table.py s_S out/eval/rp_default_heur out/eval/rp_default_run_* ;;
  table-wide)  # the wide-grid runs against the heuristics on the wide grid
    python docs/results/rllib_pairs_table.py s_S out/eval/rpw_default_heur out/eval/rpw_default_run_* ;;
  *) echo "usage: $0 train [\"joint:0 store:1 wide:0 ...\"] | eval-heuristics | eval-heuristics-wide | eval [RUN ...] | table | table-wide" >&2; exit 2 ;;
esac
