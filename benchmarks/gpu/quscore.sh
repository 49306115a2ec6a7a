#!/usr/bin/env bash
# QuScore on the GPU (issue 6). Run from the repo root with IDLSEC_MIRROR set.
# Estimated H200 time: ~60-90 s for the cifar10-vgg training (30 epochs of 98 batches of 512, data
# resident on the GPU, bf16 autocast) + the benchmark capped at QUSCORE_SECONDS (default 150 s):
# <= 4 minutes in all. The markdown is rewritten after every measured row and the cheap rows come
# first (QuScore-released and Square for every setting, then the defenses, then the stealth
# configuration), so a capped run keeps what it measured. Uncapped, the full grid (24 rows + 5
# defense rows at 10,000 queries, each image that is never fooled costing 10,000 generations of
# ~5 ms) is an estimated 10-20 minutes: raise QUSCORE_SECONDS if the session has the time.
set -euo pipefail
OUT_DIR="${OUT:+$OUT/quscore}"
OUT_DIR="${OUT_DIR:-benchmarks/results}"
mkdir -p "$OUT_DIR"

# 1. cifar10-vgg, the cross-family target (target >= 85% on the JPEG test split). Replaces the
#    CPU-trained packaged weights: commit src/idlsec/models/weights/cifar10-vgg.{safetensors,json}.
idlsec train --model cifar10-vgg --epochs 30 --batch-size 512 --lr 0.2 --seed 0 --device cuda \
  | tee "$OUT_DIR/cifar10-vgg-train.json"
cp src/idlsec/models/weights/cifar10-vgg.{safetensors,json} "$OUT_DIR/"

# 2. The benchmark at the sizes: 100 images, budget 10,000, CAM and Grad, untargeted and
#    targeted, resnet20 -> resnet56 and -> cifar10-vgg, Square side by side, the four defenses.
#    Copy $OUT_DIR/quscore.md to benchmarks/results/quscore.md.
timeout "${QUSCORE_SECONDS:-150}" python benchmarks/quscore.py --device cuda --n 100 --budget 10000 \
  --out "$OUT_DIR/quscore.md" --json "$OUT_DIR/quscore.json" || echo "benchmark stopped (rc=$?): partial rows kept"
