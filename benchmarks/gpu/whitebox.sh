#!/usr/bin/env bash
# White-box attacks (issue 4) at full size on a GPU: 100 correctly classified CIFAR-10 test images
# x cifar10-resnet20/56 x CAM, Grad-CAM, Grad, RTS x PGD, ADV^2, AdvEdge, AdvEdge+ (papers'
# schedules: 300 + 1000 steps, Grad 300 + 704), AdvEdge(+) also with edge_stages=warmup on
# resnet20/CAM, MASK on 20 images of resnet20 (100 + 200 steps); step costs at batch 100 and PGD vs
# torchattacks. Run from the repo root with IDLSEC_MIRROR set.
#
# Estimated time on one H200: ~4 minutes (CUDA start-up ~20 s; cost + torchattacks ~20 s; then 17
# attack jobs (model x interpreter x {pgd+adv2, advedge+advedge+}, and MASK) as parallel processes,
# since these small models leave the GPU launch-bound; the longest, resnet56 x Grad, ~2-3 min).
# Each job is capped at CAP=200 s; rows finished before a cap are kept and reported. RTS uses the
# packaged masking models when present (an untrained one otherwise, flagged in the note column).
# Output: $OUT/whitebox/whitebox.md (CPU + GPU rows; copy it to benchmarks/results/whitebox.md and
# $OUT/whitebox/all.jsonl to benchmarks/results/whitebox.jsonl) and the per-job JSONL rows and logs.
set -uo pipefail
OUTDIR="${OUT:-runs/gpu}/whitebox"
mkdir -p "$OUTDIR"
PY=${PY:-.venv/bin/python}
B=benchmarks/whitebox.py
CAP=${CAP:-200}

"$PY" $B --device cuda --parts cost,torchattacks --cost-models cifar10-resnet20,cifar10-resnet56 \
    --cost-batch 100 --cost-steps 30 --ta-n 100 --ta-steps 100 --reps 3 \
    --jsonl "$OUTDIR/cost.jsonl" --out "$OUTDIR/cost.md" --fresh > "$OUTDIR/cost.log" 2>&1

pids=()
for m in cifar10-resnet20 cifar10-resnet56; do
  for i in cam gradcam grad rts; do
    for a in pgd,adv2 advedge,advedge+; do
      tag="$m-$i-${a/,/-}"
      timeout "$CAP" "$PY" $B --device cuda --parts full --models "$m" --interps "$i" --attacks "$a" --n 100 \
          --jsonl "$OUTDIR/full-$tag.jsonl" --out "$OUTDIR/full-$tag.md" --fresh > "$OUTDIR/full-$tag.log" 2>&1 &
      pids+=($!)
    done
  done
done
timeout "$CAP" "$PY" $B --device cuda --parts full --models cifar10-resnet20 --interps mask --mask-n 20 \
    --mask-warmup 100 --mask-steps 200 --jsonl "$OUTDIR/full-mask.jsonl" --out "$OUTDIR/full-mask.md" \
    --fresh > "$OUTDIR/full-mask.log" 2>&1 &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done

# the committed CPU rows (reference configuration) + the GPU rows -> one section
cat benchmarks/results/whitebox.jsonl "$OUTDIR"/full-*.jsonl "$OUTDIR/cost.jsonl" > "$OUTDIR/all.jsonl" 2>/dev/null
"$PY" $B --report-only --jsonl "$OUTDIR/all.jsonl" --out "$OUTDIR/whitebox.md" \
    --notes benchmarks/results/whitebox_notes.md
echo "wrote $OUTDIR/whitebox.md"
