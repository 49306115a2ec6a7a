#!/usr/bin/env bash
# Defenses on the GPU (issue 7). Run from the repo root with IDLSEC_MIRROR set.
# Estimated H200 time: ~60 s training + ~120 s benchmark (<= 3 minutes in all).
set -euo pipefail
OUT_DIR="${OUT:+$OUT/defenses}"
OUT_DIR="${OUT_DIR:-benchmarks/results}"
mkdir -p "$OUT_DIR"

# 1. The robust model: interpretation-aware adversarial training (MapPGD-5 inner step + CAM map term),
#    fine-tuned from the standard cifar10-resnet20 weights for 3 full epochs; replaces the CPU-trained
#    packaged weights (commit src/idlsec/models/weights/cifar10-resnet20-robust.{safetensors,json}).
idlsec train --model cifar10-resnet20 --defense adv --epochs 3 --batch-size 256 --lr 0.05 \
  --clean-weight 0.5 --seed 0 --eval-n 10000 --robust-eval-n 1000 --device cuda \
  --checkpoint-dir "$OUT_DIR/robust-ckpt" \
  --out src/idlsec/models/weights/cifar10-resnet20-robust.safetensors | tee "$OUT_DIR/robust-train.json"
cp src/idlsec/models/weights/cifar10-resnet20-robust.{safetensors,json} "$OUT_DIR/" 2>/dev/null || true

# 2. The benchmark at the issue's sizes (128 attacked images per half, 500+500 benign, the attacks'
#    full step counts, QuScore with 2,000 queries, adaptive attacks on 128 images with 150 joint steps).
python benchmarks/defenses.py --full --device cuda --out-dir "$OUT_DIR"
