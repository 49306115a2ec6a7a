#!/usr/bin/env bash
# Defenses benchmark only (issue 7; no training: the robust model is the packaged
# cifar10-resnet20-robust): benchmarks/defenses.yaml at the GPU size. Run from the repo root with
# IDLSEC_MIRROR set. 128 attacked images per half, 3 x 500 benign, the IDLS attacks at 100 + 400
# steps (issue 4's reference configuration; the defaults 300 + 1000: defenses-default-steps.sh),
# QuScore 1,000 queries, adaptive ADV^2/AdvEdge+ on 64 images (100 + 100 steps), then the robustness
# job (100 images). No new attack starts after 180 s in the detection job, no new transform after
# 60 s in the robustness job; the run is killed at $TIMEOUT s (default 300). Extra --set arguments are passed on
# (defenses.sh: the GPU-trained robust model).
OUTDIR="${OUT:-runs/gpu}/defenses"
mkdir -p "$OUTDIR"
RUN=${RUN:-$OUTDIR/run}
timeout "${TIMEOUT:-300}" idlsec bench benchmarks/defenses.yaml --out "$RUN" --device cuda \
  --set 'detection.*.n_benign=500' --set 'detection.*.warmup_steps=100' \
  --set 'detection.*.steps=400' --set 'detection.*.quscore_queries=1000' \
  --set 'detection.*.adaptive_n=64' --set 'detection.*.adaptive_steps=100' \
  --set 'detection.*.batch_size=256' --set 'detection.*.time_cap=180' \
  --set 'robustness.*.n=100' --set 'robustness.*.warmup_steps=100' --set 'robustness.*.steps=400' \
  --set 'robustness.*.clean_n=10000' --set 'robustness.*.robust_n=1000' \
  --set 'robustness.*.batch_size=256' --set 'robustness.*.time_cap=60' "$@" \
  || echo "benchmark stopped (rc=$?): the finished jobs are kept"
idlsec report "$RUN" || true
