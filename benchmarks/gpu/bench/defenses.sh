#!/usr/bin/env bash
# Defenses benchmark only (the packaged robust weights were trained by benchmarks/gpu/defenses.sh).
mkdir -p "$OUT/defenses"
python benchmarks/defenses.py --full --device cuda --out-dir "$OUT/defenses"
