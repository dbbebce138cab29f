#!/usr/bin/env bash
# The pair_ppo runs and evaluations behind docs/results/pair_ppo.md. Needs out/params/default.json and
# out/params/network_2e.json (`restock tune`, commands in default_trainers.md and network_2e.md).
#   docs/results/pair_ppo_runs.sh train-default | train-n2e | eval-default | eval-n2e
# SEEDS (default "0 1 2") picks the training seeds; runs land in runs/pair_ppo and runs/pair_ppo_n2e.
# Since 2026-12-05 `default` ships a wider store grid; default_pair_ppo.yaml pins the former one (16 levels to
# 6 periods, scenario_overrides), so its runs, and the heuristics beside them, are judged on the scenario the
# runs saved (RUN/scenario.yaml: the same paths and costs).
set -euo pipefail
seeds=${SEEDS:-0 1 2}
link_clones() {  # each run's cloned start under a name of its own, for restock eval
  mkdir -p out/pp_clones
  for r in "$@"; do ln -sfn "$(realpath "$r/cloned")" "out/pp_clones/$(basename "$r")__cloned"; done
}
case ${1:-} in
  train-default)
    for s in $seeds; do
      echo "=== default_pair_ppo seed $s $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
      restock train default --trainer pair_ppo --config configs/experiments/default_pair_ppo.yaml --seed "$s" --out runs/pair_ppo
    done ;;
  train-n2e)
    for s in $seeds; do
      for e in network_2e_pair_ppo network_2e_pair_ppo_store network_2e_pair_ppo_dc; do
        echo "=== $e seed $s $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
        restock train network_2e --trainer pair_ppo --config configs/experiments/$e.yaml --seed "$s" --out runs/pair_ppo_n2e
      done
    done ;;
  eval-default)
    runs=(runs/pair_ppo/default__default_pair_ppo*)
    link_clones "${runs[@]}"
    pols="s_S,base_stock"
    for r in "${runs[@]}"; do pols="$pols,out/pp_clones/$(basename "$r")__cloned,$r"; done
    # the first run's scenario for all (a run on another action grid is refused by restock eval, naming the field)
    restock eval "${runs[0]}/scenario.yaml" --policies "$pols" --params out/params/default.json --episodes 200 \
      --seed 9001 --baseline s_S --out out/eval/pp_default
    for r in "${runs[@]}"; do
      restock eval "$r/scenario.yaml" --policies "out/pp_clones/$(basename "$r")__cloned,$r" --episodes 200 --seed 9001 \
        --params out/params/default.json --out "out/eval/pp_default_added_$(basename "$r")"
    done
    python docs/results/pair_ppo_table.py out/eval/pp_default out/eval/pp_default_added_* ;;
  eval-n2e)
    runs=(runs/pair_ppo_n2e/network_2e__*)
    link_clones "${runs[@]}"
    pols="echelon_base_stock,base_stock,s_S"
    for r in "${runs[@]}"; do pols="$pols,out/pp_clones/$(basename "$r")__cloned,$r"; done
    restock eval network_2e --policies "$pols" --params out/params/network_2e.json --episodes 40 --seed 9001 \
      --baseline echelon_base_stock --out out/eval/pp_n2e
    for r in "${runs[@]}"; do
      restock eval network_2e --policies "out/pp_clones/$(basename "$r")__cloned,$r" --episodes 40 --seed 9001 \
        --params out/params/network_2e.json --out "out/eval/pp_n2e_added_$(basename "$r")"
    done
    python docs/results/pair_ppo_table.py out/eval/pp_n2e out/eval/pp_n2e_added_* ;;
  *) echo "usage: $0 train-default|train-n2e|eval-default|eval-n2e" >&2; exit 2 ;;
esac
