#!/usr/bin/env bash
# The wheel users get: `python -m build` on a copy of this tree (tracked and untracked, not ignored,
# files: what a clean clone plus your changes holds), then
#   1. every file of src/idlsec that git tracks is in the wheel (the .py files and the data: lab
#      assets, packaged weights and cards, ...), and no __pycache__/.pyc;
#   2. the wheel installs into a clean venv, and from there `idlsec info` runs, the packaged weights
#      load, and the lab serves its page from the installed assets.
# The venv is fresh but, so that torch is not installed again, sees the dependencies of the
# project's venv (.venv, or $VENV) through a .pth file pointing at symlinks to its site-packages
# (idlsec's own editable install left out); pip installs the wheel with --no-index, so a declared
# dependency that is missing fails the check. `--full`: a really clean venv, dependencies
# installed from the index with constraints.txt (minutes, downloads torch).
# Usage: scripts/check-wheel.sh [--full] [--keep]      (make wheel-check)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
full=0 keep=0
for a in "$@"; do
  case "$a" in
    --full) full=1 ;; --keep) keep=1 ;;
    *) echo "usage: $0 [--full] [--keep]" >&2; exit 2 ;;
  esac
done
venv=${VENV:-$repo/.venv}
[[ $venv == /* ]] || venv=$repo/$venv   # relative to the repository (make passes VENV=.venv)
py=$venv/bin/python
[[ -x "$py" ]] || { echo "check-wheel: $py not found (run make install first)" >&2; exit 2; }
"$py" -c "import build" 2>/dev/null || { echo "check-wheel: the 'build' package is missing from $venv (pip install -e '.[dev]')" >&2; exit 2; }
unset PYTHONPATH
tmp=$(mktemp -d "${TMPDIR:-/tmp}/idlsec-wheel.XXXXXX")
[[ $keep == 1 ]] && echo "check-wheel: keeping $tmp" || trap 'rm -rf "$tmp"' EXIT
t0=$SECONDS

echo "== build (python -m build) from a copy of the tree"
mkdir "$tmp/src"
(cd "$repo" && git ls-files -co --exclude-standard -z -- pyproject.toml README.md LICENSE src \
   | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
   | tar -cf - --null -T -) | tar -xf - -C "$tmp/src"
(cd "$tmp/src" && "$py" -m build -o "$tmp/dist" . >"$tmp/build.log" 2>&1) \
  || { tail -30 "$tmp/build.log" >&2; echo "check-wheel: python -m build failed" >&2; exit 1; }
whl=$(ls "$tmp"/dist/*.whl)
echo "   $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB), $((SECONDS - t0)) s"

echo "== contents: every tracked file of src/idlsec"
(cd "$repo" && git ls-files -z -- src/idlsec | while IFS= read -r -d '' f; do
   [[ -e "$f" ]] && echo "${f#src/}"; done) | sort >"$tmp/expected"
"$py" - "$whl" "$tmp/expected" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
expected = open(sys.argv[2]).read().split()
missing = [f for f in expected if f not in names]
junk = [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
data = [f for f in expected if not f.endswith(".py")]
if missing or junk:
    for f in missing:
        print(f"check-wheel: not in the wheel: {f} (add its pattern to [tool.setuptools.package-data])")
    for f in junk:
        print(f"check-wheel: junk in the wheel: {f}")
    sys.exit(1)
print(f"   {len(expected)} tracked files present ({len(data)} non-.py data files)")
EOF

echo "== install into a clean venv"
if [[ $full == 1 ]]; then
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install -q -c "$repo/constraints.txt" "$whl[lab]"
else
  "$py" -m venv --without-pip "$tmp/venv"
  site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  base=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  mkdir "$tmp/deps"
  links=()
  for e in "$base"/*; do
    case "${e##*/}" in idlsec|idlsec-*|__editable__*idlsec*|*.pth) continue ;; esac
    links+=("$e")
  done
  ln -s "${links[@]}" "$tmp/deps/"
  echo "$tmp/deps" >"$site/_idlsec_check_deps.pth"
  # pip from the project's venv, acting on the new one; --no-index: every dependency must be there
  "$py" -m pip --python "$tmp/venv/bin/python" install -q --no-index --no-build-isolation "$whl[lab]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$tmp/venv/bin/python" -c "import idlsec" 2>/dev/null \
    || { echo "check-wheel: the wheel did not install" >&2; exit 1; }
fi

echo "== run it from the installed wheel"
cd "$tmp"
"$tmp/venv/bin/python" - <<'EOF'
import pathlib, sys
import idlsec
root = pathlib.Path(idlsec.__file__).parent
assert str(root).startswith(sys.prefix), f"idlsec imported from {root}, not from the venv {sys.prefix}"
idlsec.load_model("fmnist-cnn")  # packaged weights, SHA-256 checked
from fastapi.testclient import TestClient
from idlsec.lab import create_app
client = TestClient(create_app(run_jobs=False))
page = client.get("/")
assert page.status_code == 200 and "<html" in page.text.lower(), page.status_code
print(f"   imported from {root}; packaged weights load; the lab serves its page")
# `idlsec info` through the installed console script's entry point (in this process: torch once)
from importlib.metadata import entry_points
script = pathlib.Path(sys.prefix, "bin", "idlsec")
assert script.is_file() and script.read_text().startswith(f"#!{sys.executable}"), f"bad script {script}"
(main,) = [e.load() for e in entry_points(group="console_scripts") if e.name == "idlsec"]
import contextlib, io, os
os.environ["IDLSEC_OFFLINE"] = "1"
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["info"])
assert rc in (0, None) and "cifar10-resnet20" in out.getvalue(), (rc, out.getvalue()[-500:])
print("   idlsec info:", out.getvalue().splitlines()[0])
EOF
echo "check-wheel: ok ($((SECONDS - t0)) s)"
