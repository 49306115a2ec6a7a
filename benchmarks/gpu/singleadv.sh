#!/usr/bin/env bash
# SingleADV on the GPU (issue 5). Run from the repo root with IDLSEC_MIRROR set.
# The full default run (main, L2, trade-off curve; `--parts main,l2,curve`) was measured on an H200
# in 4.8 min (benchmarks/results/singleadv-gpu.md). What is still to run at full size is the
# adaptive-inhibition part: 6 fits of <= 1000 iterations that stop 200 iterations after the fooling
# target (~20-40 s each at the measured ~25 ms per iteration): estimated ~2-3 min on an H200, plus
# ~20 s for the CLI example.
# Outputs: $OUT/singleadv/singleadv-adaptive.md and .json, cat-truck/ (the CLI's delta.safetensors,
# summary.json, universal.png).
set -euo pipefail
OUT_DIR="${OUT:+$OUT/singleadv}"
OUT_DIR="${OUT_DIR:-runs/gpu/singleadv}"
mkdir -p "$OUT_DIR"
python benchmarks/singleadv.py --full --device cuda --threads 4 --parts adaptive \
  --out "$OUT_DIR/singleadv-adaptive.md" --json "$OUT_DIR/singleadv-adaptive.json"
idlsec universal --model cifar10-resnet20 --dataset cifar10 --interpreter cam --source cat --target truck \
  --eps 8/255 --transfer-to cifar10-resnet56 --device cuda --out "$OUT_DIR/cat-truck"
