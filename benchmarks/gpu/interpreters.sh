#!/usr/bin/env bash
# Interpreters on the GPU: better-trained RTS masking models, then the full-size benchmark.
# Run from the repo root with IDLSEC_MIRROR set. Estimated time on one H200: about 4 minutes
# (RTS training ~1 min for resnet20 and ~1.5 min for resnet56 at 5 epochs of batch 128, i.e. ~1950
# steps each, versus 265 / 589 steps for the CPU-trained packaged files; benchmark ~1 min). These are
# estimates, not measurements: if time is short, drop to --epochs 2.
# Outputs go to $OUT/interpreters/ (default: runs/gpu/interpreters/). To adopt the new RTS weights,
# copy $OUT/interpreters/rts-cifar10-resnet{20,56}.{safetensors,json} to src/idlsec/models/weights/
# and commit them (the JSON card holds the SHA-256 RTS verifies), then re-run the benchmark line.
set -euo pipefail
OUTDIR="${OUT:-runs/gpu}/interpreters"
mkdir -p "$OUTDIR"
PY=${PY:-.venv/bin/python}
IDLSEC=${IDLSEC:-.venv/bin/idlsec}
for m in cifar10-resnet20 cifar10-resnet56; do
  "$IDLSEC" train-rts --model "$m" --dataset cifar10 --epochs 5 --batch-size 128 --seed 0 \
      --n-eval 10000 --device cuda --out "$OUTDIR/rts-$m.safetensors" | tee "$OUTDIR/train-rts-$m.json"
done
# full-size throughput comparison side by side, and the quality of the GPU-trained RTS models
"$PY" benchmarks/interpreters.py --device cuda --repeats 20 --n-quality 10000 --rts-dir "$OUTDIR" \
    --out "$OUTDIR/interpreters.md"
