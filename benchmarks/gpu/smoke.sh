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
python benchmarks/defenses.py --full --device cuda --out-dir "$OUTDIR/defenses" \
  --size n=6 --size n_benign=40 --size warmup_steps=3 --size steps=5 --size quscore_queries=20 \
  --size adaptive_n=4 --size adaptive_steps=3 --size defend_n=4 --size clean_n=64 --size robust_n=32 || rc=1
echo "smoke rc=$rc"
exit $rc
