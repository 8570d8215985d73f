#!/usr/bin/env bash
# Build the C core with AddressSanitizer + UndefinedBehaviorSanitizer (clang's, or gcc's
# with CC=gcc) into a directory of its own, and run the whole test suite against it; then a
# leak check of a few hundred handshakes with LeakSanitizer.  Fails on any sanitizer report
# or test failure.  About 3-4 minutes on two cores.  Installs clang and its run-time
# (apt-get, as root or through sudo) when missing.
#
#   scripts/sanitize-tests.sh                        # the whole suite, then the leak check
#   scripts/sanitize-tests.sh tests/test_hostile.py  # other pytest arguments instead
#   CC=gcc scripts/sanitize-tests.sh                 # gcc's sanitizers
#
# The editable install (src/sslsock/_native*.so) is not touched: the sanitized copy of the
# package lives in a temporary directory put first on PYTHONPATH, and the script checks that
# the tests really imported it.  Python: $PYTHON, else .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
CC=${CC:-clang}
export CC

# What the build needs: the compiler and its sanitizer run-time library (Debian: clang and
# libclang-rt-dev, or gcc and libasan8/libubsan1), and setuptools (cffi's compiler driver)
# in the Python that builds.
case $CC in
  *clang*) runtime_of() { "$CC" -print-file-name="libclang_rt.asan-$(uname -m).so"; }
           pkgs=(clang libclang-rt-dev)
           # clang links no sanitizer run-time into a shared object by default; this makes
           # the core depend on the shared one, which LD_PRELOAD below puts first.
           export LDFLAGS="${LDFLAGS:+$LDFLAGS }-shared-libasan";;
  *)       runtime_of() { "$CC" -print-file-name=libasan.so; }
           pkgs=(gcc libasan8 libubsan1);;
esac
have_runtime() { command -v "$CC" >/dev/null 2>&1 && [ -e "$(runtime_of)" ]; }
if ! have_runtime; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "sanitize: $CC with its ASan run-time is needed: apt-get install ${pkgs[*]}" >&2; exit 1
  fi
  echo "sanitize: installing ${pkgs[*]}" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
  have_runtime || { echo "sanitize: still no ASan run-time for $CC" >&2; exit 1; }
fi
"$PY" -c 'import setuptools, cffi' 2>/dev/null || "$PY" -m pip install -q setuptools cffi
LIBASAN=$(readlink -f "$(runtime_of)")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sslsock-sanitize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site
mkdir -p "$SITE/sslsock" "$WORK/build" "$WORK/src/sslsock"  # build.py copies a prefix's licence there
# The package's Python files, and the core compiled with the sanitizers next to them.  The
# build script runs from a copy, so nothing it writes lands in the work tree.
# The whole package, subpackages included, without the editable install's compiled modules
(cd src/sslsock && tar --exclude='*.so' --exclude=__pycache__ -cf - .) | tar -xf - -C "$SITE/sslsock"
cp -r src/_native "$WORK/src/_native"
echo "sanitize: building the C core with -fsanitize=address,undefined ($("$CC" --version | head -1))" >&2
(cd "$WORK/build" && SSLSOCK_SANITIZE=address,undefined "$PY" -c '
import os, shutil, sys
sys.path.insert(0, sys.argv[1])
import build
so = build.ffibuilder.compile(tmpdir=".", verbose=False)
shutil.copy(so, os.path.join(sys.argv[2], "sslsock"))
' "$WORK/src/_native" "$SITE") >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
# The C-API module of the channel threads' reads and writes, instrumented too.
pyinc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
"$CC" -shared -fPIC -std=gnu11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=all -I"$pyinc" -I"$WORK/src/_native" "$WORK/src/_native/fastio.c" \
  "$WORK/src/_native/fastio_inbox.c" \
  -o "$SITE/sslsock/_fastio$suffix" >>"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }

export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
# Reports also go to files: pytest captures the output of a test, and a process that the
# sanitizer aborts never gets to show it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$WORK/asan}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:log_path=$WORK/ubsan}
export SSLSOCK_SANITIZED=1   # the tests scale down and skip RSS and valgrind checks
# Under LD_PRELOAD the sanitizer runtime is in every process the tests start (openssl
# s_client ...): that is fine, they are only intercepted, not instrumented.
run() { LD_PRELOAD=$LIBASAN "$PY" "$@"; }
reports() {  # print what the sanitizers wrote, fail if they wrote anything
  local found=0 f
  for f in "$WORK"/asan.* "$WORK"/ubsan.*; do
    [ -e "$f" ] || continue
    found=1; echo "---- $f" >&2; grep -v -E 'in _?Py|Python/|Objects/|Modules/' "$f" | head -80 >&2
  done
  return $found
}
tests() { run -m pytest -q -p no:cacheprovider "$@" || { reports; echo "sanitize: tests failed" >&2; exit 1; }; }

where=$(run -c 'import sslsock._native as n; print(n.__file__)')
case $where in "$SITE"/*) ;; *) echo "sanitize: imported $where, not the sanitized build" >&2; exit 1;; esac
fast=$(run -c 'import sslsock._core.connection as o; print(o._fastio.__file__)')
case $fast in "$SITE"/*) ;; *) echo "sanitize: imported $fast, not the sanitized _fastio" >&2; exit 1;; esac
undefined=$(nm -D --undefined-only "$where")
for sym in __asan_report_load8 __ubsan_handle_; do  # really instrumented, by both
  grep -q "$sym" <<<"$undefined" || { echo "sanitize: $where lacks $sym" >&2; exit 1; }
done
run -c 'import sslsock._native as n, sys; sys.exit(0 if n.lib.ss_versions_supported() else 1)'

start=$(date +%s)
if [ $# -gt 0 ]; then
  echo "sanitize: pytest $*" >&2
  tests "$@"
else
  # The whole suite: every test drives the sanitized core (the benchmarks' C reference
  # server and the other programs the tests start are only intercepted, not instrumented).
  echo "sanitize: pytest tests/ (the whole suite)" >&2
  tests tests
fi
reports || { echo "sanitize: the sanitizers reported errors" >&2; exit 1; }

# Leaks: a few hundred handshakes, echoes and failures with LeakSanitizer on.  Python itself
# leaves much allocated at exit; only leaks with a frame of sslsock's core count.  The slow
# unwinder is needed to see through libssl (built without frame pointers) to the core.
HANDSHAKES=${SANITIZE_HANDSHAKES:-200}
echo "sanitize: leak check of the C core over $HANDSHAKES handshakes (LeakSanitizer)" >&2
set +e
ASAN_OPTIONS=detect_leaks=1:exitcode=0:fast_unwind_on_malloc=0:malloc_context_size=16 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  LD_PRELOAD=$LIBASAN "$PY" "$ROOT/scripts/handshake_loop.py" "$HANDSHAKES" >"$WORK/lsan.log" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ] || ! grep -q "handshake loop: done" "$WORK/lsan.log"; then
  tail -50 "$WORK/lsan.log" >&2; echo "sanitize: the handshake loop failed" >&2; exit 1
fi
"$PY" "$ROOT/scripts/leaks_in_core.py" "$WORK/lsan.log"
echo "sanitize: clean ($(( $(date +%s) - start )) s)" >&2
