#!/usr/bin/env bash
# Build the libFuzzer harnesses of the C core (fuzz/c/fuzz_deframe.c: the deframer, read
# path and channel engine; fuzz/c/fuzz_proxy.c: the PROXY protocol parser), each compiled
# with the core's C files, src/_native/*.c but the CPython bridge fastio.c, by clang with
# -fsanitize=fuzzer,address,undefined, linked against the system libssl through pkg-config,
# then run each for a bounded time (the PROXY parser a quarter of it, at least 5 s).  Fails
# (non-zero) on any crash, sanitizer report, leak or broken invariant.  Prints executions
# and executions per second per harness.
#
#   fuzz/c/run.sh             # 20 s (CI)
#   fuzz/c/run.sh 3600        # a longer hunt
#   fuzz/c/run.sh 0 FILE...   # replay inputs (a crash, the seeds) once each, no fuzzing
#                             # (HARNESS=proxy fuzz/c/run.sh 0 ... for the PROXY parser's)
#
# The committed seeds (fuzz/c/corpus/NAME/, written by fuzz/c/make_seeds.py) are read, not
# written; new inputs go to a temporary directory ($FUZZ_C_CORPUS to keep them).  A crashing
# input is written to fuzz/crashes/NAME-crash-<sha1> (gitignored); the binaries stay in
# fuzz/c/build/ (gitignored) to replay it: fuzz/c/build/fuzz_NAME FILE.
# Installs clang and its run-time libraries (Debian: clang libclang-rt-dev; libssl-dev and
# pkg-config if missing) with apt-get, as root or through sudo.  CC=clang-NN picks a clang.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}
case $SECS in ''|*[!0-9]*) echo "usage: fuzz/c/run.sh [SECONDS] [FILE...]" >&2; exit 2;; esac
shift $(( $# > 0 ? 1 : 0 ))
CC=${CC:-clang}

fuzzer_rt() { "$CC" -print-file-name="libclang_rt.fuzzer-$(uname -m).a" 2>/dev/null; }
have_tools() {
  command -v "$CC" >/dev/null 2>&1 && [ -e "$(fuzzer_rt)" ] &&
    command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl
}
if ! have_tools; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "fuzz-c: clang with its libFuzzer run-time is needed: apt-get install clang libclang-rt-dev libssl-dev pkg-config" >&2
    exit 1
  fi
  echo "fuzz-c: installing clang libclang-rt-dev libssl-dev pkg-config" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    clang libclang-rt-dev libssl-dev pkg-config >/dev/null
  have_tools || { echo "fuzz-c: still no $CC with libclang_rt.fuzzer ($(fuzzer_rt))" >&2; exit 1; }
fi

BUILD=fuzz/c/build
mkdir -p "$BUILD" fuzz/crashes
# The core's C files: every src/_native/*.c but fastio*.c, the CPython bridge (it needs
# Python.h and is covered by scripts/sanitize-tests.sh instead).
core_c=()
for f in src/_native/*.c; do
  case "$f" in src/_native/fastio*.c) ;; *) core_c+=("$f") ;; esac
done

# build NAME: fuzz/c/fuzz_NAME.c with the core, rebuilt when a source is newer than the
# binary (a build takes 15-30 s on two busy cores).
build() {
  local bin=$BUILD/fuzz_$1
  if [ -x "$bin" ] && [ -z "$(find "fuzz/c/fuzz_$1.c" src/_native fuzz/c/run.sh -newer "$bin" \
         -name '*.[ch]' -o -newer "$bin" -name run.sh 2>/dev/null)" ]; then
    return 0
  fi
  # shellcheck disable=SC2046  # pkg-config's words
  if ! nice -n 10 "$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
       -fno-sanitize-recover=all -Wall -Wextra -Isrc/_native \
       -DSS_HUB_SCRATCH=28672 -DSS_HUB_SHARE=20480 \
       "fuzz/c/fuzz_$1.c" "${core_c[@]}" $(pkg-config --cflags --libs openssl) -lpthread \
       -o "$bin" 2>"$BUILD/build-$1.log"; then
    cat "$BUILD/build-$1.log" >&2
    echo "fuzz-c: the build of $1 failed" >&2
    return 1
  fi
}

# A smaller quarantine and allocation context than ASan's defaults: OpenSSL allocates a
# lot per TLS connection (speed, and RSS on a shared machine).  Leaks are checked
# (libFuzzer's -detect_leaks, on by default).
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=10:quarantine_size_mb=64:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

HARNESSES=(deframe proxy)
for h in "${HARNESSES[@]}"; do build "$h" || exit 1; done

if [ "$SECS" = 0 ]; then  # replay (HARNESS=proxy for the PROXY parser's inputs)
  h=${HARNESS:-deframe}
  [ $# -gt 0 ] || set -- fuzz/c/corpus/"$h"/*
  exec "$BUILD/fuzz_$h" -runs=1 "$@"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sslsock-fuzz-c.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# fuzz NAME SECONDS MAX_LEN: one harness for a bounded time; prints one line; 1 on failure.
fuzz() {
  local name=$1 secs=$2 max_len=$3 bin=$BUILD/fuzz_$1
  local corpus=${FUZZ_C_CORPUS:-$WORK/corpus}/$name log=$WORK/$name.log dict=()
  mkdir -p "$corpus"
  [ -f "fuzz/c/$name.dict" ] && dict=(-dict="fuzz/c/$name.dict")
  local t0; t0=$(date +%s)
  nice -n 10 "$bin" -max_total_time="$secs" -max_len="$max_len" -len_control=20 -timeout=30 \
    -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="fuzz/crashes/$name-" "$corpus" "fuzz/c/corpus/$name" >"$log" 2>&1
  local rc=$? elapsed=$(( $(date +%s) - t0 )) total rate cov result
  total=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  [ -n "$total" ] || total=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
  cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ "$rc" -eq 0 ] && grep -q '^Done [0-9]* runs' "$log" && ! grep -q -E '^(==[0-9]+==ERROR|SUMMARY: )' "$log"; then
    result=ok
  else
    result="FAILED (exit $rc)"
  fi
  printf 'fuzz-c: %s %s executions in %s s, %s exec/s, %s edges covered: %s\n' \
    "$name" "${total:-?}" "$elapsed" "${rate:-?}" "${cov:-?}" "$result"
  if [ "$result" != ok ]; then
    echo "---- $name: end of the log ----"
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$log" | tail -60
    ls fuzz/crashes/"$name"-* 2>/dev/null | sed "s|^|crash input (replay: $bin FILE): |"
    echo "----"
    return 1
  fi
}

# The deframer gets most of the time: its state space (modes, cuts, TLS, the engine) is far
# larger than the PROXY parser's.
proxy_secs=$(( SECS / 4 > 5 ? SECS / 4 : 5 ))
failed=0
fuzz deframe "$SECS" 8192 || failed=1
fuzz proxy "$proxy_secs" 600 || failed=1
exit $failed
