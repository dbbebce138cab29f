#!/usr/bin/env bash
# The runs behind docs/results/default_trainers.md: SB3 and RLlib on `default` (store role learned, DC on
# tuned (s,S)), the same experiment file and the same budget of 16,384 env steps, seeds 0-2, interleaved so
# both trainers see the same machine load; then each seed's behaviour-cloned start alone; then the held-out
# evaluation (200 paths, seed 9001) against tuned (s,S) and against each seed's cloned start.
# Needs out/params/default.json (restock tune default --policy s_S --out out/params/default.json, and the
# other heuristics for the table).
# Since 2026-12-05 `default` ships a wider store grid; configs/experiments/default.yaml pins the former one (16
# levels to 6 periods, scenario_overrides), and default_clone.py applies it too, so the runs, and the
# heuristics beside them, are judged on the scenario the runs saved (RUN/scenario.yaml: the same paths and costs).
set -euo pipefail
for s in 0 1 2; do
  for t in sb3 rllib; do
    restock train default --trainer "$t" --config configs/experiments/default.yaml --steps 16384 --seed "$s" --out runs/default_cmp
  done
  python docs/results/default_clone.py --seed "$s" --steps 16384 --out runs/default_clone
done
runs=$(ls -d runs/default_clone/* runs/default_cmp/* | paste -sd, -)
scen="$(ls -d runs/default_cmp/* | head -1)/scenario.yaml"  # a run on another action grid is refused by eval
restock eval "$scen" --policies s_S,base_stock,capped_base_stock,r_Q,"$runs" --params out/params/default.json \
  --episodes 200 --seed 9001 --baseline s_S --out out/eval/default_cmp200
for s in 0 1 2; do
  c=$(ls -d runs/default_clone/default__default__${s}__*); tr=$(ls -d runs/default_cmp/default__default__${s}__* | paste -sd, -)
  restock eval "$c/scenario.yaml" --policies "$c,$tr" --params out/params/default.json --episodes 200 --seed 9001 \
    --baseline "$(basename "$c") [store learned; dc: s_S heuristic]" --out out/eval/default_cmp200_clone$s
done
python docs/results/default_trainers.py out/eval/default_cmp200 runs/default_cmp runs/default_clone \
  out/eval/default_cmp200_clone0 out/eval/default_cmp200_clone1 out/eval/default_cmp200_clone2
