#!/usr/bin/env bash
# Run every fuzz harness for a bounded time and fail on any crash.
#
#   fuzz/run_all.sh            # 10 s each, 20 s for the C harness: about 1.5 minutes (CI)
#   fuzz/run_all.sh 600        # a longer hunt
#   FUZZ_ONLY="frames listener" fuzz/run_all.sh 60   # some harnesses only
#   FUZZ_C_SECONDS=120 fuzz/run_all.sh   # the C harness's time (default: twice the others')
#
# The C harness, "deframe" (fuzz/c/fuzz_deframe.c: the C core's deframer, read path and
# channel engine under libFuzzer + ASan + UBSan), is built and run by fuzz/c/run.sh, which
# installs clang and its libFuzzer run-time when missing.
#
# Each harness states its invariant at its top (fuzz/fuzz_*.py).  New inputs found during the
# run go to a temporary directory (the committed seeds in fuzz/corpus/ stay as they are);
# a crashing input is written to fuzz/crashes/<harness>-crash-<sha1> (gitignored) and can be
# replayed with: python fuzz/fuzz_<harness>.py fuzz/crashes/<harness>-crash-<sha1>
#
# Python: $PYTHON, else .venv/bin/python (made by scripts/bootstrap); atheris (the `fuzz`
# extra) is installed into it when missing.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-10}
case $SECONDS_EACH in ''|*[!0-9]*) echo "usage: fuzz/run_all.sh [SECONDS_EACH]" >&2; exit 2;; esac
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
PY_HARNESSES="thumbprint options frames certstore listener"
python_needed=0
for name in $PY_HARNESSES; do
  case " ${FUZZ_ONLY:-$name} " in *" $name "*) python_needed=1;; esac
done
if [ $python_needed = 1 ] && ! "$PY" -c 'import atheris' >/dev/null 2>&1; then
  echo "fuzz: installing atheris into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
  "$PY" -m pip install -q 'atheris>=2.3' || { echo "fuzz: cannot install atheris" >&2; exit 1; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sslsock-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tmp" fuzz/crashes
# Harnesses make temporary stores; libFuzzer ends the process without Python's clean-up,
# so they go in here and disappear with it.
export TMPDIR="$WORK/tmp"
if [ $python_needed = 1 ]; then
  "$PY" fuzz/make_corpus.py --fresh "$WORK/fresh" || { echo "fuzz: cannot make the fresh seeds" >&2; exit 1; }
fi

# harness and its extra libFuzzer flags
HARNESSES=(
  "thumbprint|-max_len=256"
  "options|-max_len=64"
  "frames|-max_len=512 -dict=fuzz/dicts/frames.dict"
  "certstore|-max_len=4096"
  "listener|-max_len=2048"
  "deframe|(C: fuzz/c/run.sh)"
)

failed=0
all=0
start=$(date +%s)
printf '%-12s %10s %14s  %s\n' harness "exec/s" executions result
for entry in "${HARNESSES[@]}"; do
  name=${entry%%|*}
  flags=${entry#*|}
  case " ${FUZZ_ONLY:-$name} " in *" $name "*) ;; *) continue;; esac
  log="$WORK/$name.log"
  if [ "$name" = deframe ]; then  # both C harnesses (deframe, proxy): one row each
    fuzz/c/run.sh "${FUZZ_C_SECONDS:-$(( 2 * SECONDS_EACH ))}" >"$log" 2>&1
    rc=$?
    for c in deframe proxy; do
      line=$(grep "^fuzz-c: $c " "$log" | tail -1)
      total=$(sed -n "s/^fuzz-c: $c \([0-9]*\) executions.*/\1/p" <<<"$line")
      rate=$(sed -n 's/.*, \([0-9]*\) exec\/s.*/\1/p' <<<"$line")
      case $line in *": ok") result=ok;; *) result="FAILED (exit $rc)"; failed=1;; esac
      printf '%-12s %10s %14s  %s\n' "$c" "${rate:-?}" "${total:-?}" "$result"
      all=$(( all + ${total:-0} ))
    done
    [ "$rc" -eq 0 ] || { result="FAILED (exit $rc)"; failed=1; }
    if [ "$result" != ok ]; then
      echo "---- $name: end of the log ----"
      tail -70 "$log"
      echo "----"
    fi
    continue
  fi
  mkdir -p "$WORK/corpus/$name"
  seeds=("fuzz/corpus/$name")
  [ -d "$WORK/fresh/$name" ] && seeds+=("$WORK/fresh/$name")
  # shellcheck disable=SC2086  # flags are words on purpose
  "$PY" "fuzz/fuzz_$name.py" -max_total_time="$SECONDS_EACH" -timeout=60 -print_final_stats=1 \
    -keep_seed=1 -artifact_prefix="fuzz/crashes/$name-" $flags \
    "$WORK/corpus/$name" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  total=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ -z "$total" ]; then  # the final stats are missing after a crash: the last "#N" line
    total=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
  fi
  if [ "$rc" -eq 0 ] && grep -q 'DONE' "$log"; then
    result=ok
  else
    result="FAILED (exit $rc)"
    failed=1
  fi
  printf '%-12s %10s %14s  %s\n' "$name" "${rate:-?}" "${total:-?}" "$result"
  all=$(( all + ${total:-0} ))
  if [ "$result" != ok ]; then
    echo "---- $name: end of the log ----"
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$log" | tail -40
    ls fuzz/crashes/"$name"-* 2>/dev/null | sed 's/^/crash input: /'
    echo "----"
  fi
done
printf '%-12s %10s %14s  %s\n' "all" "" "$all" "$(( $(date +%s) - start )) s"
exit $failed
