#!/usr/bin/env bash
# Defenses benchmark only (issue 7; no training: the robust model is the packaged cifar10-resnet20-robust).
# Run from the repo root with IDLSEC_MIRROR set. --full: 128 attacked images per half (100+ per row),
# 3 x 500 benign, the IDLS attacks' default steps (300 + 1000), QuScore 1,000 queries, adaptive
# ADV^2/AdvEdge+ on 128 images (150 joint steps), then the adversarial-training/transform section.
# Estimate (not measured on a GPU): 4-5 minutes on an H100 shared with another benchmark. The script
# stops starting new attacks after 180 s (75% of --time-cap 240) and is killed at 300 s; the tables
# in $OUT/defenses/defenses.md are rewritten after every row, so a stopped run keeps what it measured.
OUTDIR="${OUT:-runs/gpu}/defenses"
mkdir -p "$OUTDIR"
timeout 300 python benchmarks/defenses.py --full --device cuda --time-cap 240 --out-dir "$OUTDIR" \
  || echo "benchmark stopped (rc=$?): the rows written so far are kept"
