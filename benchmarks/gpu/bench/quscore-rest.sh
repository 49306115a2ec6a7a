#!/usr/bin/env bash
# The QuScore rows that bench/quscore.sh leaves for last (the stealth and released configurations),
# at the sizes, as a second GPU run. Copy $OUT/quscore-rest/quscore.md beside the first table.
set -uo pipefail
OUT_DIR="${OUT:-runs/gpu}/quscore-rest"
mkdir -p "$OUT_DIR"
timeout 380 python benchmarks/quscore.py --device cuda --n 100 --budget 10000 --max-minutes 5 \
  --configs stealth,released --no-square --defenses "" \
  --title "QuScore stealth and released configurations, GPU, issue sizes" \
  --out "$OUT_DIR/quscore.md" --json "$OUT_DIR/quscore.json" || echo "benchmark stopped (rc=$?): partial rows kept"
