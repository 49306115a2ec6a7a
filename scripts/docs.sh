#!/usr/bin/env bash
# The docs site: MkDocs Material + mkdocstrings, in its own venv (.venv-docs) pinned by
# docs/requirements.txt (kept apart from .venv: mkdocs-material's requests conflicts with
# torchattacks' pin). mkdocstrings reads src/ statically (griffe): torch is not needed here.
# Usage: scripts/docs.sh serve [mkdocs args]   (make docs: http://127.0.0.1:8000)
#        scripts/docs.sh build --strict        (make docs-build: into site/)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-docs
if [[ ! -f $venv/.installed || docs/requirements.txt -nt $venv/.installed ]]; then
  test -x $venv/bin/python || python3 -m venv $venv
  $venv/bin/pip install -q --disable-pip-version-check -r docs/requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  $venv/bin/python -c "import mkdocs, material, mkdocstrings_handlers.python"
  touch $venv/.installed
fi
export NO_MKDOCS_2_WARNING=1
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
exec $venv/bin/mkdocs "${@:-build}"
