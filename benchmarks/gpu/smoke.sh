#!/usr/bin/env bash
# GPU smoke test (about a minute): every device path of the issue-6/7 benchmarks at tiny sizes, so that
# a device-only bug is found before a full run spends the session's GPU minutes. Run from the repo root:
# DEVOUT=$OUT bash benchmarks/gpu/run_all.sh smoke
set -u
OUTDIR="${OUT:-runs/gpu}/smoke"
mkdir -p "$OUTDIR"
rc=0
idlsec bench benchmarks/quscore.yaml --out "$OUTDIR/quscore" --device cuda --set n=4 \
  --set params.max_queries=40 --set params.stealth_queries=20 --only model=cifar10-vgg || rc=1
idlsec bench benchmarks/defenses.yaml --out "$OUTDIR/defenses" --device cuda \
  --set 'detection.*.n=6' --set 'detection.*.n_benign=40' --set 'detection.*.warmup_steps=3' \
  --set 'detection.*.steps=5' --set 'detection.*.quscore_queries=20' --set 'detection.*.adaptive_n=4' \
  --set 'detection.*.adaptive_steps=3' --set 'detection.*.batch_size=256' --set 'robustness.*.n=4' \
  --set 'robustness.*.warmup_steps=3' --set 'robustness.*.steps=5' --set 'robustness.*.clean_n=64' \
  --set 'robustness.*.robust_n=32' || rc=1
echo "smoke rc=$rc"
exit $rc
