#!/usr/bin/env bash
# CI: sslsock against an OpenSSL that can do SSLv3 (scripts/build-openssl.sh --legacy,
# cached), in its own venv so the editable install of the source tree is left alone.
# Runs tests/test_legacy_ssl3.py (real SSLv3 handshakes with that build's own
# `openssl s_client` / `s_server`) and tests/test_options_matrix.py, which on this build has
# an SSLv3 column and checks docs/options-table-legacy.md (SSLSOCK_WRITE_DOCS=1 rewrites
# it); the table observed is kept as build/options-table-legacy.md.  See docs/wheels.md.
#
#   scripts/ci-legacy.sh [pytest arguments...]
#
# Environment: PYTHON (default python3), SSLSOCK_CI_DIR (work directory; default
# build/ci-legacy).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=${PYTHON:-python3}
work=${SSLSOCK_CI_DIR:-$root/build/ci-legacy}
log() { echo "ci-legacy: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
t0=$(date +%s)

prefix=$(scripts/build-openssl.sh --legacy)
"$prefix/bin/openssl" s_client -help 2>&1 | grep -q -- '-ssl3' || die "$prefix cannot do SSLv3"

# Build from a copy of the working tree: nothing is written into src/ (no OPENSSL_LICENSE.txt,
# no build/ directory, no .so), whatever the editable install there is.
rm -rf "$work/tree" "$work/wheel"
mkdir -p "$work/tree" "$work/wheel"
tar --exclude=./.git --exclude=./build --exclude=./.venv --exclude=./dist \
    --exclude='./.hypothesis' --exclude='./.pytest_cache' --exclude='*.so' \
    --exclude='*.egg-info' --exclude='__pycache__' -cf - . | tar -xf - -C "$work/tree"
[ -x "$work/venv/bin/python" ] || "$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
t1=$(date +%s)
SSLSOCK_OPENSSL_DIR=$prefix "$work/venv/bin/python" -m pip wheel -q --no-deps \
  -w "$work/wheel" "$work/tree" >"$work/wheel.log" 2>&1 || { tail -n 40 "$work/wheel.log" >&2; die "wheel"; }
wheel=$(ls "$work"/wheel/sslsock-*.whl)
"$work/venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
"$work/venv/bin/python" -m pip install -q "$wheel[test]"
log "built and installed $(basename "$wheel") in $(( $(date +%s) - t1 ))s"
(cd /tmp && "$work/venv/bin/python" -m sslsock.debug) >&2
(cd /tmp && "$work/venv/bin/python" -c 'import sys
from sslsock._core.binding import lib
sys.exit(0 if lib.ss_versions_supported() & 1 else "this sslsock cannot do SSLv3")') \
  || die "the legacy build cannot do SSLv3"

# The matrix test writes build/options-table.md: keep the main run's copy.
table=$root/build/options-table.md
saved=""
if [ -f "$table" ]; then saved=$(mktemp); cp "$table" "$saved"; fi
restore() { if [ -n "$saved" ]; then mv "$saved" "$table"; else rm -f "$table"; fi; }
trap restore EXIT
# Two runs: the SSLv3 tests with their output shown (the s_client lines are the evidence),
# then the matrix (its SSLv3 column uses the same openssl).
rc=0
export SSLSOCK_LEGACY_OPENSSL=$prefix/bin/openssl
"$work/venv/bin/python" -m pytest -p no:cacheprovider -rP tests/test_legacy_ssl3.py "$@" || rc=$?
"$work/venv/bin/python" -m pytest -p no:cacheprovider tests/test_options_matrix.py "$@" || rc=$?
if [ -f "$table" ] && grep -q "core bits 0x1f" "$table"; then
  mv "$table" "$root/build/options-table-legacy.md"
  log "mask table for this build: build/options-table-legacy.md"
fi
log "done in $(( $(date +%s) - t0 ))s (rc $rc)"
exit $rc
