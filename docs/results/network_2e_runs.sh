#!/usr/bin/env bash
# The RLlib runs behind docs/results/network_2e.md: three training seeds of store+DC jointly and of the
# two ablations (store only, DC only), one run at a time (6 minutes each, wall clock, from the shared cloned start).
# Needs out/params/network_2e.json (restock tune) and out/n2e_clone (docs/results/network_2e_clone.py).
set -euo pipefail
out=${OUT:-runs/n2e}
for seed in ${SEEDS:-0 1 2}; do
  for exp in network_2e network_2e_store network_2e_dc; do
    echo "=== $exp seed $seed $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    restock train network_2e --trainer rllib --config configs/experiments/$exp.yaml --seed "$seed" --out "$out"
  done
done
