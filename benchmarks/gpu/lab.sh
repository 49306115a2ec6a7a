#!/usr/bin/env bash
# The lab's job overhead over the engine on the GPU (PGD x CAM, 10 and 100 steps, one image).
# Run from the repo root with IDLSEC_MIRROR set. Estimated time on one H200: under 1 minute.
# Output: $OUT/lab/lab.md (default: runs/gpu/lab/lab.md).
set -euo pipefail
OUTDIR="${OUT:-runs/gpu}/lab"
mkdir -p "$OUTDIR"
PY=${PY:-.venv/bin/python}
"$PY" benchmarks/lab.py --device cuda --steps 10 100 1000 --repeats 9 --out "$OUTDIR/lab.md"
