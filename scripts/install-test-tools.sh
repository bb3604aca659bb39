#!/usr/bin/env bash
# The programs the tests drive besides Python packages, each installed only when missing:
#   chromium  the answer page's browser tests (Debian's package; no downloaded browser builds)
#   age       interop of encrypted dossiers with the real age CLI
#   azurite   Microsoft's Blob Storage emulator for the blob output's tests, pinned, from npm
#             into .ci-node/ beside this repository (tests/azurite.py looks there)
# Debian or Ubuntu; uses sudo when not run as root. Used by .ci/run and the README.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/age ] || missing+=(age)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x .ci-node/node_modules/.bin/azurite-blob ]; then
    echo "== installing azurite 3.37.0 (npm, into .ci-node/)"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix .ci-node azurite@3.37.0
fi
