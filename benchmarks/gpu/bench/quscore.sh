#!/usr/bin/env bash
# QuScore benchmark only (the packaged cifar10-vgg weights were trained by benchmarks/gpu/quscore.sh).
mkdir -p "$OUT/quscore"
timeout 320 python benchmarks/quscore.py --device cuda --n 100 --budget 10000 \
  --out "$OUT/quscore/quscore.md" --json "$OUT/quscore/quscore.json" || echo "benchmark stopped (rc=$?): partial rows kept"
