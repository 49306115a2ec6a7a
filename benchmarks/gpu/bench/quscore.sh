#!/usr/bin/env bash
# QuScore benchmark only (issue 6), run from the repo root with IDLSEC_MIRROR set; no training (the
# packaged cifar10-vgg weights were trained by benchmarks/gpu/quscore.sh).
# Issue sizes: 100 images, budget 10,000, CAM and Grad, untargeted and targeted, resnet20 ->
# resnet56 and -> cifar10-vgg: QuScore (idlsec preset), Square side by side, the defenses
# (benchmarks/quscore.yaml, resumable: rerun the same command to finish). `timeout` stops it at
# 5.5 minutes; the records written so far are kept and `idlsec report` tabulates them.
set -uo pipefail
OUT_DIR="${OUT:-runs/gpu}/quscore"
timeout 330 idlsec bench benchmarks/quscore.yaml --out "$OUT_DIR" --device cuda \
  --set n=100 --set params.max_queries=10000 --set params.stealth_queries=1000 \
  --only attack=quscore-idlsec,square,quscore-idlsec-t,square-t,quscore-rp,quscore-bitdepth,quscore-jpeg,quscore-median \
  || echo "benchmark stopped (rc=$?): the records so far are kept"
idlsec report "$OUT_DIR"
