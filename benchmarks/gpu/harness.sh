#!/usr/bin/env bash
# GPU checks of the benchmark harness (run from the repo root with IDLSEC_MIRROR set).
# Estimated time on one H200: ~1.5 min for harness.py (process start-ups, a local Ray instance)
# plus ~1-3 min for the ResNet-20 x CAM slice of paper.yaml (4 attacks x 100 images, batches of 50).
# Outputs: $OUT/harness/harness-gpu.md (a results section), $OUT/harness/paper-r20-cam/ (a bench
# run with table.md and report.html; include it with
#   python benchmarks/make_benchmarks_md.py --from-run $OUT/harness/paper-r20-cam).
set -euo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT/harness"
python benchmarks/harness.py --device cuda --results "$OUT/harness/harness-gpu.md"
idlsec bench benchmarks/paper.yaml --only model=cifar10-resnet20 --only interpreter=cam \
    --out "$OUT/harness/paper-r20-cam" --device cuda
idlsec report "$OUT/harness/paper-r20-cam"
