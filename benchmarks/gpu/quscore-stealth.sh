#!/usr/bin/env bash
# QuScore stealth configuration with the prune search (issue 6, map-stealth target) at the issue's
# sizes: 100 images, budget 10,000, 1,000 stealth queries (GA for 200 after the first fooling
# query, then pruning), CAM and Grad, resnet20 -> resnet56 / -> cifar10-vgg, untargeted first, then
# targeted. Run from the repo root with IDLSEC_MIRROR set. Estimated wall time: ~4 minutes on an
# H100/H200 for the four untargeted rows (the earlier GA-only stealth rows took 48-60 s each at these
# sizes); no row starts after 4 minutes and `timeout` stops at 5.5 (rows left are listed as not run).
# Copy $OUT/quscore-stealth/quscore-stealth.md beside benchmarks/results/quscore-stealth.md.
set -uo pipefail
OUT_DIR="${OUT:-runs/gpu}/quscore-stealth"
mkdir -p "$OUT_DIR"
timeout 330 python benchmarks/quscore.py --device cuda --n 100 --budget 10000 --stealth-queries 1000 \
  --max-minutes 4 --configs stealth --no-square --defenses "" \
  --title "QuScore stealth configuration with the prune search, GPU, issue sizes" \
  --out "$OUT_DIR/quscore-stealth.md" --json "$OUT_DIR/quscore-stealth.json" \
  || echo "benchmark stopped (rc=$?): partial rows kept"
