#!/usr/bin/env bash
# The detection benchmark with the IDLS attacks at their default step counts (300 + 1000; the first
# GPU run showed they fit): bench/defenses.sh with warmup_steps/steps left to the attacks'
# defaults and 300 adaptive steps.
TIMEOUT=330 RUN="${OUT:-runs/gpu}/defenses-default/run" bash "$(dirname "$0")/defenses.sh" \
  --set 'detection.*.warmup_steps=null' --set 'detection.*.steps=null' \
  --set 'detection.*.adaptive_steps=300' --set 'detection.*.time_cap=300'
