#!/usr/bin/env bash
# Defenses on the GPU (issue 7). Run from the repo root with IDLSEC_MIRROR set.
# Estimated H200 time: ~60 s training + ~5 minutes benchmark (benchmarks/defenses.yaml, capped: no new
# attack after 180 s).
# Estimates, not measurements: if time is short, drop the training to --epochs 1 (about 20 s), or run
# benchmarks/gpu/bench/defenses.sh alone (benchmark only, with the packaged robust model).
# Outputs go to $OUT/defenses/ (default: runs/gpu/defenses/). To adopt the GPU-trained robust model,
# copy $OUT/defenses/cifar10-resnet20-robust.{safetensors,json} to src/idlsec/models/weights/ and commit
# them (the JSON card holds the command, seed, accuracies and the SHA-256 that load_model verifies).
set -euo pipefail
OUTDIR="${OUT:-runs/gpu}/defenses"
mkdir -p "$OUTDIR"
PY=${PY:-.venv/bin/python}
IDLSEC=${IDLSEC:-.venv/bin/idlsec}

# 1. Interpretation-aware adversarial training (MapPGD-5 inner step + CAM map term, half clean loss),
#    fine-tuned from the standard cifar10-resnet20 weights for 3 full epochs (the CPU file: 60 batches).
"$IDLSEC" train --model cifar10-resnet20 --defense adv --epochs 3 --batch-size 256 --lr 0.05 \
  --clean-weight 0.5 --seed 0 --eval-n 10000 --robust-eval-n 1000 --device cuda \
  --checkpoint-dir "$OUTDIR/robust-ckpt" --out "$OUTDIR/cifar10-resnet20-robust.safetensors" \
  | tee "$OUTDIR/robust-train.json"

# 2. The benchmark at the sizes (as benchmarks/gpu/bench/defenses.sh, which runs it alone with
#    the packaged robust model): 128 attacked images per half, 3 x 500 benign, the IDLS attacks at
#    100 + 400 steps, QuScore with 1,000 queries, adaptive ADV^2/AdvEdge+ on 64 images;
#    the robust rows use the model trained in step 1.
RUN="$OUTDIR/run" bash benchmarks/gpu/bench/defenses.sh \
  --set "robustness.*.model_weights={cifar10-resnet20-robust: $OUTDIR/cifar10-resnet20-robust.safetensors}"
