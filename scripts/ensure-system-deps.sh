#!/usr/bin/env bash
# The system packages the tests need, installed if missing (the first step of `make test`).
#   dataset-fashion-mnist  Fashion-MNIST, read from /usr/share/datasets/fashion-mnist
#   chromium               headless browser: report rendering, the lab's end-to-end tests
# Debian/Ubuntu as root: `apt-get install` what is missing. Otherwise: stop at once, naming the
# exact command. IDLSEC_SYSTEM_DEPS=skip runs the tests without them (they then skip, loudly).
set -euo pipefail
PACKAGES=(${IDLSEC_SYSTEM_PACKAGES:-dataset-fashion-mnist chromium})

if [[ "${IDLSEC_SYSTEM_DEPS:-}" == skip ]]; then
  echo "ensure-system-deps: IDLSEC_SYSTEM_DEPS=skip: not checking ${PACKAGES[*]}" >&2
  exit 0
fi

installed() {  # a Debian package, or (no dpkg) the file or command it provides
  if command -v dpkg-query >/dev/null; then
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
  else
    case "$1" in
      dataset-fashion-mnist) [[ -d /usr/share/datasets/fashion-mnist ]] ;;
      chromium) command -v chromium >/dev/null || command -v chromium-browser >/dev/null ;;
      *) command -v "$1" >/dev/null ;;
    esac
  fi
}

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
[[ ${#missing[@]} -eq 0 ]] && exit 0

cmd="apt-get update && apt-get install -y ${missing[*]}"
if command -v apt-get >/dev/null && [[ "$(id -u)" -eq 0 ]]; then
  echo "ensure-system-deps: installing ${missing[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  for p in "${missing[@]}"; do
    installed "$p" || { echo "ensure-system-deps: $p is still missing after apt-get" >&2; exit 1; }
  done
  exit 0
fi

{
  echo "ensure-system-deps: the tests need these system packages: ${missing[*]}"
  if command -v apt-get >/dev/null; then
    echo "  install them:   sudo sh -c '$cmd'"
  else
    echo "  (no apt-get here: install the equivalents of the Debian packages ${missing[*]})"
  fi
  echo "  or run without: IDLSEC_SYSTEM_DEPS=skip make test   (the tests that need them then skip)"
} >&2
exit 1
