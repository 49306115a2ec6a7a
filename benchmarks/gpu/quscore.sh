#!/usr/bin/env bash
# QuScore on the GPU (issue 6): the benchmark only. The cross-family target cifar10-vgg is packaged
# (trained once with `idlsec train --model cifar10-vgg --epochs 30 --batch-size 512 --lr 0.2 --seed 0
# --device cuda`, 0.8674 on the JPEG test split; see docs/quscore.md); nothing is trained here.
# Estimated wall time: <= 5.5 minutes on an H100 (capped; see bench/quscore.sh).
set -uo pipefail
exec bash "$(dirname "$0")/bench/quscore.sh"
