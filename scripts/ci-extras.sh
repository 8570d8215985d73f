#!/usr/bin/env bash
# CI extras for hostile input, after scripts/bootstrap has made .venv (or with $PYTHON):
#   1. every fuzz harness for a bounded time (fuzz/run_all.sh: 10 s each for the atheris
#      harnesses, 20 s for the C libFuzzer harness of the deframer and channel engine,
#      fuzz/c/run.sh; about 1.5 minutes), with a table of executions per second and total
#      executions;
#   2. the whole test suite against the C core built with clang's AddressSanitizer +
#      UndefinedBehaviorSanitizer, then 200 handshakes under LeakSanitizer
#      (scripts/sanitize-tests.sh);
#   3. 200 handshakes under valgrind --leak-check=full (the valgrind test of
#      tests/test_hostile.py, made mandatory).
# Fails on any crash, sanitizer or valgrind report, or failed test.  About 5-6 minutes on
# two cores.  Installs what it needs when missing: atheris (pip, into the venv), and the
# Debian packages clang, libclang-rt-dev (ASan, UBSan and libFuzzer run-times) and valgrind
# (apt-get, as root or through sudo).
#
#   scripts/ci-extras.sh
#   FUZZ_SECONDS=600 scripts/ci-extras.sh   # a longer fuzz run (or: fuzz/run_all.sh 600)
#   FUZZ_C_SECONDS=60 scripts/ci-extras.sh  # the C harness's time (default: 2 x FUZZ_SECONDS)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=$PWD/.venv/bin/python; else PY=python3; fi
fi
export PYTHON=$PY

if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "ci-extras: valgrind is needed: apt-get install valgrind" >&2; exit 1
  fi
  echo "ci-extras: installing valgrind" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends valgrind >/dev/null
fi

step() { echo; echo "==== ci-extras: $* ($(( $(date +%s) - start )) s)"; }

step "fuzzing"
fuzz/run_all.sh "${FUZZ_SECONDS:-10}"

step "sanitizers"
scripts/sanitize-tests.sh

step "valgrind"
SSLSOCK_REQUIRE_VALGRIND=1 SSLSOCK_VALGRIND_HANDSHAKES=${VALGRIND_HANDSHAKES:-200} \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_hostile.py -k valgrind -rs

echo "ci-extras: passed in $(( $(date +%s) - start )) s"
