#!/usr/bin/env bash
# GPU smoke test (about a minute): every device path of the issue-6/7 benchmarks at tiny sizes, so that
# a device-only bug is found before a full run spends the session's GPU minutes. Run from the repo root:
# DEVOUT=$OUT bash benchmarks/gpu/run_all.sh smoke
set -u
OUTDIR="${OUT:-runs/gpu}/smoke"
mkdir -p "$OUTDIR"
rc=0
python benchmarks/quscore.py --device cuda --n 4 --budget 40 --stealth-queries 20 --targets cifar10-vgg \
  --interpreters cam,grad --modes untargeted,targeted --defenses jpeg,rp --max-minutes 1 \
  --out "$OUTDIR/quscore.md" --json "$OUTDIR/quscore.json" || rc=1
python benchmarks/defenses.py --full --device cuda --out-dir "$OUTDIR/defenses" \
  --size n=6 --size n_benign=40 --size warmup_steps=3 --size steps=5 --size quscore_queries=20 \
  --size adaptive_n=4 --size adaptive_steps=3 --size defend_n=4 --size clean_n=64 --size robust_n=32 || rc=1
echo "smoke rc=$rc"
exit $rc
