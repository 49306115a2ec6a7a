#!/usr/bin/env bash
# The QuScore stealth and released configurations at the sizes (benchmarks/quscore.yaml).
set -uo pipefail
OUT_DIR="${OUT:-runs/gpu}/quscore"
timeout 380 idlsec bench benchmarks/quscore.yaml --out "$OUT_DIR" --device cuda \
  --set n=100 --set params.max_queries=10000 --set params.stealth_queries=1000 \
  --only attack=quscore-stealth,quscore-stealth-t,quscore-released,quscore-released-t \
  || echo "benchmark stopped (rc=$?): the records so far are kept"
idlsec report "$OUT_DIR"
