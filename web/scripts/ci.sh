#!/usr/bin/env bash
# The lab's whole check, from a clean clone: install, check the API types against the committed
# OpenAPI schema, type-check and build (into src/idlsec/lab/static, which must then equal the
# committed build), unit tests (Vitest), end-to-end test in headless Chromium against
# `idlsec serve` from the repository's .venv. Needs Node >= 20.19, /usr/bin/chromium (Debian
# package `chromium`) and the CIFAR-10 mirror (IDLSEC_MIRROR, default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(cd .. && pwd)
if [[ -z "${IDLSEC_MIRROR:-}" && -d "$repo/../shared/models" ]]; then
  export IDLSEC_MIRROR=$(cd "$repo/../shared" && pwd)
fi
export IDLSEC_BIN=${IDLSEC_BIN:-$repo/.venv/bin/idlsec}
[[ -x "$IDLSEC_BIN" ]] || { echo "ci.sh: $IDLSEC_BIN not found (run make install first)" >&2; exit 1; }
[[ -x "${CHROMIUM:-/usr/bin/chromium}" ]] || { echo "ci.sh: no Chromium at ${CHROMIUM:-/usr/bin/chromium} (apt-get install chromium)" >&2; exit 1; }

echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "== API types match the committed OpenAPI schema"
npm run --silent check:api
echo "== type-check and build"
npm run --silent build -- --logLevel warn
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  if [[ -n "$(git -C "$repo" status --porcelain -- src/idlsec/lab/static)" ]]; then
    git -C "$repo" status --short -- src/idlsec/lab/static >&2
    echo "ci.sh: the committed build in src/idlsec/lab/static is stale; commit the rebuilt files" >&2
    exit 1
  fi
fi
echo "== unit tests (vitest)"
npx vitest run
echo "== end-to-end (headless Chromium)"
node --test --test-reporter=spec e2e/lab.e2e.mjs e2e/restart.e2e.mjs e2e/a11y.e2e.mjs
