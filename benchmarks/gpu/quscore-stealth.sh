#!/usr/bin/env bash
# The QuScore stealth configuration with the prune search at the sizes (benchmarks/quscore.yaml).
set -uo pipefail
OUT_DIR="${OUT:-runs/gpu}/quscore"
timeout 330 idlsec bench benchmarks/quscore.yaml --out "$OUT_DIR" --device cuda \
  --set n=100 --set params.max_queries=10000 --set params.stealth_queries=1000 \
  --only attack=quscore-stealth,quscore-stealth-t \
  || echo "benchmark stopped (rc=$?): the records so far are kept"
idlsec report "$OUT_DIR"
