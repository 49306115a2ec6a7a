#!/usr/bin/env bash
# Issue 19's GPU speed figures in one run (under 8 minutes on one H100/H200; the budget below caps
# each part): the CUDA-graph agreement test, PGD vs torchattacks at batch 100 on cifar10-resnet20
# (ours eager, cuda_graph, compiled, compiled+cuda_graph), one ADV^2 (CAM) step vs a bare
# forward+backward (eager, cuda_graph, amp fp16, both), and the maps' tolerance to bf16 and fp16
# autocast (benchmarks/amp_tolerance.py). Run it alone on the GPU (timings), from the repo root:
#   DEVOUT=$OUT bash benchmarks/gpu/run_all.sh speed        # or: OUT=/some/dir bash benchmarks/gpu/speed.sh
# Writes $OUT/speed/: speed_gpu.json, amp_tolerance.{json,md}, pytest.log, nvidia-smi.txt.
# To publish: copy amp_tolerance.{json,md} to benchmarks/results/amp_tolerance-gpu.{json,md} and
# the ratios of speed_gpu.json into docs/attacks.md (CUDA graphs), then make benchmarks-md.
set -u
OUTDIR="${OUT:-runs/gpu}/speed"
mkdir -p "$OUTDIR"
PY=${PY:-python}
rc=0
nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1 || true
# 1. graph replays agree with the eager steps (1e-5), a new shape recaptures (tests/test_cuda_graph.py)
timeout 90 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_graph.py > "$OUTDIR/pytest.log" 2>&1 || rc=1
tail -n 3 "$OUTDIR/pytest.log"
# 2. speed: PGD vs torchattacks, ADV^2 step vs bare forward+backward (compile: ~1-2 min of Inductor)
timeout 300 "$PY" benchmarks/speed_gpu.py --device cuda --n 100 --pgd-steps 20 --steps 50 --reps 10 \
  --out "$OUTDIR/speed_gpu.json" || rc=1
# 3. the maps' tolerance to autocast, and ADV^2 with and without it (100 images, 50 + 50 steps)
timeout 150 "$PY" benchmarks/amp_tolerance.py --device cuda --dtypes bf16 fp16 --n 100 \
  --warmup-steps 50 --steps 50 --out-dir "$OUTDIR" > /dev/null || rc=1
echo "speed rc=$rc"
exit $rc
