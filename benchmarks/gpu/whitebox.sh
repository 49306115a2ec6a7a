#!/usr/bin/env bash
# White-box attacks (issue 4) at full size on a GPU: 100 correctly classified CIFAR-10 test images
# x cifar10-resnet20/56 x CAM, Grad-CAM, Grad, RTS x PGD, ADV^2, AdvEdge, AdvEdge+ (papers'
# schedules: 300 + 1000 steps, Grad 300 + 704), AdvEdge(+) also with edge_stages=warmup on
# resnet20/CAM, MASK on 20 images of resnet20 (100 + 200 steps); step costs at batch 100 and PGD vs
# torchattacks. Run from the repo root with IDLSEC_MIRROR set.
#
# The grid runs through `idlsec bench benchmarks/paper.yaml` (one process, configurations in turn;
# its GPU time has not been measured this way: the former script ran 17 processes in parallel in
# ~4 minutes). It is resumable: rerun to finish what CAP (seconds, default 480) cut.
# Output: $OUT/whitebox/paper (records, report) and $OUT/whitebox/whitebox.md (step costs).
set -uo pipefail
OUTDIR="${OUT:-runs/gpu}/whitebox"
mkdir -p "$OUTDIR"
PY=${PY:-.venv/bin/python}
B=benchmarks/whitebox.py
CAP=${CAP:-480}

"$PY" $B --device cuda --parts cost,torchattacks --cost-models cifar10-resnet20,cifar10-resnet56 \
    --cost-batch 100 --cost-steps 30 --ta-n 100 --ta-steps 100 --reps 3 \
    --jsonl "$OUTDIR/cost.jsonl" --out "$OUTDIR/cost.md" --fresh > "$OUTDIR/cost.log" 2>&1

# the papers' grid (benchmarks/paper.yaml), resumable: rerun to finish what the cap cut
timeout "$CAP" idlsec bench benchmarks/paper.yaml --out "$OUTDIR/paper" --device cuda > "$OUTDIR/paper.log" 2>&1 \
  || echo "paper grid stopped (rc=$?): the records so far are kept"
idlsec report "$OUTDIR/paper"
"$PY" $B --report-only --jsonl "$OUTDIR/cost.jsonl" --out "$OUTDIR/whitebox.md" \
    --notes benchmarks/results/whitebox_notes.md
echo "wrote $OUTDIR/whitebox.md"
