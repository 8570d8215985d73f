#!/usr/bin/env bash
# CI: the packaging jobs of docs/wheels.md, one after the other:
#   1. scripts/ci-wheel.sh   sdist + self-contained wheel (static OpenSSL 3.5), auditwheel, ldd,
#                            install into a fresh venv, handshake smoke test from /tmp, and
#                            X25519MLKEM768 handshakes with independent OpenSSL 3.5+ peers
#   2. scripts/ci-legacy.sh  sslsock on the SSLv3-capable OpenSSL: real SSLv3 handshakes
#                            with that build's openssl, TLS-only masks refusing them, and the
#                            options matrix with its SSLv3 column (docs/options-table-legacy.md)
# Both OpenSSL builds are cached in ~/.cache/sslsock/ (scripts/build-openssl.sh): for 3.5.7,
# 142 s for the first one (download included) and 6.5 minutes for both on a shared 2-core
# machine the first time, then about 2.5 minutes for the whole script.
# Each job is bounded by SSLSOCK_PACKAGING_TIMEOUT seconds (default 1200, which covers the
# cold builds).  Both jobs run even when the first fails; the exit status is non-zero when
# either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
limit=${SSLSOCK_PACKAGING_TIMEOUT:-1200}
t0=$(date +%s)
rc=0 summary=""
for job in ci-wheel ci-legacy; do
  t=$(date +%s)
  echo "ci-packaging: scripts/$job.sh (at most ${limit}s)" >&2
  timeout --kill-after=30 "$limit" "scripts/$job.sh"
  r=$?
  [ "$r" = 124 ] && echo "ci-packaging: $job timed out after ${limit}s" >&2
  [ "$r" = 0 ] || rc=1
  summary="$summary $job=$([ "$r" = 0 ] && echo ok || echo "FAILED($r)")/$(( $(date +%s) - t ))s"
done
echo "ci-packaging:$summary; total $(( $(date +%s) - t0 ))s" >&2
exit $rc
