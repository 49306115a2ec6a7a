#!/usr/bin/env bash
# SingleADV on the GPU (issue 5): benchmarks/singleadv.yaml at the GPU size. Run from the repo root
# with IDLSEC_MIRROR set. The former script's full run of the main, L2 and curve fits took 4.8 min
# on an H200 (benchmarks/results/singleadv-gpu.md); the suite adds the 6 adaptive-inhibition fits
# (<= 1000 iterations, stopping 200 after the fooling target; estimated ~2-3 min, not measured):
# about 7-8 min in all (run_all.sh caps it at 540 s); finished jobs are skipped, so a stopped run
# resumes where it stopped.
# Outputs: $OUT/singleadv/run (jobs/*.json, table.md), cat-truck/ (the CLI example's
# delta.safetensors, summary.json, universal.png).
set -euo pipefail
OUT_DIR="${OUT:+$OUT/singleadv}"
OUT_DIR="${OUT_DIR:-runs/gpu/singleadv}"
mkdir -p "$OUT_DIR"
idlsec bench benchmarks/singleadv.yaml --out "$OUT_DIR/run" --device cuda \
  --set 'universal.*.n_train=2000' --set 'universal.*.n_inhibition=4000' \
  --set 'universal.*.n_test_other=9000' --set 'universal.*.params.iterations=1000' \
  --set 'universal.*.params.eval_every=10'
idlsec report "$OUT_DIR/run"
idlsec universal --model cifar10-resnet20 --dataset cifar10 --interpreter cam --source cat --target truck \
  --eps 8/255 --transfer-to cifar10-resnet56 --device cuda --out "$OUT_DIR/cat-truck"
