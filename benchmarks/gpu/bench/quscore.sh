#!/usr/bin/env bash
# QuScore benchmark only (issue 6), run from the repo root with IDLSEC_MIRROR set; no training (the
# packaged cifar10-vgg weights were trained by benchmarks/gpu/quscore.sh).
# Issue sizes: 100 images, budget 10,000, CAM and Grad, untargeted and targeted, resnet20 ->
# resnet56 and -> cifar10-vgg, QuScore (idlsec preset), Square side by side, the defenses, then
# the stealth and released configurations. Rows run most important first and the markdown/JSON
# are rewritten after every row; no row starts after 4 minutes (--max-minutes), and `timeout`
# stops a row still running at 5.5 minutes. Estimated wall time on an H100 shared with one other
# benchmark: <= 5.5 minutes (the rows that do not fit are listed as "not run" in the markdown).
# Copy $OUT/quscore/quscore.md to benchmarks/results/quscore-gpu.md.
set -uo pipefail
OUT_DIR="${OUT:+$OUT/quscore}"
OUT_DIR="${OUT_DIR:-benchmarks/results}"
mkdir -p "$OUT_DIR"
timeout 330 python benchmarks/quscore.py --device cuda --n 100 --budget 10000 --max-minutes 4 \
  --title "QuScore (black-box, score oracle) vs Square, GPU, issue sizes" \
  --out "$OUT_DIR/quscore.md" --json "$OUT_DIR/quscore.json" || echo "benchmark stopped (rc=$?): partial rows kept"
