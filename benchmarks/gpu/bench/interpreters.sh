#!/usr/bin/env bash
# Interpreter throughput and RTS quality only (packaged RTS weights from benchmarks/gpu/interpreters.sh).
mkdir -p "$OUT/interpreters"
python benchmarks/interpreters.py --device cuda --repeats 20 --n-quality 10000 --out "$OUT/interpreters/interpreters.md"
