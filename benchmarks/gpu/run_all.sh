#!/usr/bin/env bash
# Runs the GPU scripts of benchmarks/gpu/ concurrently on one GPU machine, each capped, and packs
# their outputs into $DEVOUT/gpu.tar.gz. Works on a machine with python3 + torch and no project venv
# (the package is used from src/). Usage: DEVOUT=/some/dir bash benchmarks/gpu/run_all.sh [names...]
# Names: the scripts of this folder (training + benchmark) or bench/<topic> (benchmark only).
set -u
cd "$(dirname "$0")/../.."
DEVOUT=${DEVOUT:-runs/gpu-all}
export OUT="$DEVOUT/w"
mkdir -p "$OUT"
export IDLSEC_MIRROR=${IDLSEC_MIRROR:-$PWD/.gpu/mirror} IDLSEC_CACHE=${IDLSEC_CACHE:-/tmp/idlsec-cache}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ ! -x .venv/bin/python ]; then
  mkdir -p .venv/bin
  # a wrapper, not a symlink: a symlinked venv python would lose its venv (and torch)
  printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > .venv/bin/python
  chmod +x .venv/bin/python
  printf '#!/bin/sh\nexec python3 -m idlsec "$@"\n' > .venv/bin/idlsec
  chmod +x .venv/bin/idlsec
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
    export PYTHONPATH=${PYTHONPATH:-$PWD/src}:/tmp/site
fi
export PATH=$PWD/.venv/bin:$PATH
{ git rev-parse HEAD 2>/dev/null; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader;
  python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } > "$OUT/machine.txt" 2>&1
python -c "from idlsec.data import load_dataset; load_dataset('cifar10', 'train'); load_dataset('cifar10', 'test')"

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(quscore interpreters defenses whitebox singleadv)
declare -A CAPS=([quscore]=420 [interpreters]=480 [defenses]=420 [whitebox]=380 [singleadv]=540 [harness]=300 [smoke]=150 [speed]=470 [bench/quscore-rest]=390 [bench/defenses-default-steps]=340
                [bench/quscore]=340 [bench/defenses]=370 [bench/interpreters]=240)
for name in "${names[@]}"; do
  ( start=$(date +%s)
    CAP=${CAP:-270} timeout "${CAPS[$name]:-300}" bash "benchmarks/gpu/$name.sh" > "$OUT/${name//\//-}.log" 2>&1
    echo "rc=$? seconds=$(( $(date +%s) - start ))" >> "$OUT/${name//\//-}.log" ) &
done
wait
tar czf "$DEVOUT/gpu.tar.gz" -C "$OUT" .
ls -la "$DEVOUT"
tail -n 3 "$OUT"/*.log
