#!/usr/bin/env bash
# The detection benchmark with the IDLS attacks at their default step counts (300 + 1000; the first
# GPU run showed they fit): --full with warmup_steps/steps left to the attacks' defaults.
OUTDIR="${OUT:-runs/gpu}/defenses-default"
mkdir -p "$OUTDIR"
timeout 330 python benchmarks/defenses.py --full --device cuda --time-cap 300 --out-dir "$OUTDIR" \
  --size warmup_steps=null --size steps=null --size adaptive_steps=300 \
  || echo "benchmark stopped (rc=$?): the rows written so far are kept"
