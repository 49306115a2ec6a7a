#!/usr/bin/env bash
# SingleADV at full size on the GPU (issue 5). Run from the repo root with IDLSEC_MIRROR set.
# Estimated H200 time: ~2 min in all (data loading ~15 s; 19 fits of <= 1000 iterations, most stopping early, batch
# 64 + 64 at ~5-8 ms per iteration plus the evaluations; the CLI example ~10 s).
# Outputs: $OUT/singleadv/singleadv.md (the results section: replaces benchmarks/results/singleadv.md),
# singleadv.json (every row), cat-truck/ (the CLI's delta.safetensors, summary.json, universal.png).
set -euo pipefail
OUT_DIR="${OUT:+$OUT/singleadv}"
OUT_DIR="${OUT_DIR:-runs/gpu/singleadv}"
mkdir -p "$OUT_DIR"
python benchmarks/singleadv.py --full --device cuda --threads 4 \
  --out "$OUT_DIR/singleadv.md" --json "$OUT_DIR/singleadv.json"
idlsec universal --model cifar10-resnet20 --dataset cifar10 --interpreter cam --source cat --target truck \
  --eps 8/255 --transfer-to cifar10-resnet56 --device cuda --out "$OUT_DIR/cat-truck"
