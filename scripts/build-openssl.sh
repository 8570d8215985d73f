#!/usr/bin/env bash
# Build a static OpenSSL 3 (libssl.a, libcrypto.a, headers, bin/openssl) into a prefix, for
# sslsock's self-contained wheels (SSLSOCK_OPENSSL_DIR=<prefix>, see src/_native/build.py
# and docs/wheels.md).  Prints the prefix on stdout; everything else goes to stderr.
#
#   scripts/build-openssl.sh [--legacy] [--prefix DIR] [--tarball FILE]
#                            [--source auto|debian|upstream] [--force]
#
#   --legacy      also build SSLv3 (enable-ssl3 enable-ssl3-method).  Nothing else is
#                 weakened: the default security level stays 1 (upstream's); sslsock sets
#                 level 0 per connection when it negotiates SSLv3/TLS 1.0/1.1.
#   --prefix DIR  where to install (default: the cache directory below, which then is the
#                 prefix).  A prefix is reused when its BUILDINFO names the same build.
#   --tarball F   use this source tarball (it must have the pinned sha256).
#   --source S    where to get the source when there is no --tarball and no cached copy:
#                 debian   = Debian's source package (apt-get source through a private apt
#                            configuration with deb-src entries for PIN_SUITE, under the
#                            cache; no root, the machine's apt sources are not touched),
#                 upstream = download (Debian's pool, then GitHub/openssl.org) with curl,
#                 auto     = debian when apt-get is there, else upstream (the default).
#   --force       rebuild even when the prefix is complete.
#
# Pinned: OpenSSL 3.5.7, upstream's long-term support branch (fixes until April 2030), as
# Debian 13 (trixie) ships it: source package openssl 3.5.7-1~deb13u2.  The sha256 is the one
# of Debian's openssl_3.5.7.orig.tar.gz, which is upstream's release tarball; when it comes
# from Debian's source package (apt-get source, or --source upstream from Debian's pool),
# this script checks upstream's signature (.asc) with the release key Debian ships in
# debian/upstream/signing-key.asc (gpg and gpgv needed; apt also checks the tarball against
# the signed Sources index).  From 3.5 on, TLS 1.3 offers and accepts the hybrid
# post-quantum group X25519MLKEM768 by default.
# SSLSOCK_OPENSSL_VERSION / SSLSOCK_OPENSSL_SHA256 override the pin (for trying a bump).
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/sslsock/ (override: SSLSOCK_CACHE):
#   src/openssl-<version>.tar.gz             the verified source tarball
#   openssl-<version>[-legacy]/              the default prefix, keyed by version + options
#   apt-<suite>/                             the private apt configuration and lists for
#                                            Debian's source package (--source debian)
# A second run with the same options finds BUILDINFO and returns at once.
#
# Reproducible: pinned source (sha256), fixed Configure options, SOURCE_DATE_EPOCH taken
# from the release date, LC_ALL=C, deterministic archives.  The prefix holds LICENSE.txt
# (OpenSSL's licence, which wheels must ship) and BUILDINFO (what was built, from what).
set -euo pipefail

PIN_VERSION=3.5.7
PIN_SHA256=a8c0d28a529ca480f9f36cf5792e2cd21984552a3c8e4aa11a24aa31aeac98e8
PIN_DEBIAN=3.5.7-1~deb13u2    # the Debian source package holding that orig tarball
PIN_SUITE=trixie              # the Debian release whose source package it is (Debian 13)
OPENSSLDIR=/etc/ssl           # CA certificates and openssl.cnf at run time (see docs/wheels.md)
SCRIPT_REV=1                  # bump when the build recipe below changes (invalidates caches)

VERSION=${SSLSOCK_OPENSSL_VERSION:-$PIN_VERSION}
SHA256=${SSLSOCK_OPENSSL_SHA256:-$PIN_SHA256}
if [ "$VERSION" != "$PIN_VERSION" ] && [ -z "${SSLSOCK_OPENSSL_SHA256:-}" ]; then
  echo "build-openssl: SSLSOCK_OPENSSL_VERSION=$VERSION needs SSLSOCK_OPENSSL_SHA256 too" >&2
  exit 2
fi
CACHE=${SSLSOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sslsock}

legacy=0 prefix="" tarball="" source=auto force=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --legacy) legacy=1 ;;
    --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
    --prefix=*) prefix=${1#*=} ;;
    --tarball) tarball=${2:?--tarball needs a file}; shift ;;
    --tarball=*) tarball=${1#*=} ;;
    --source) source=${2:?--source needs auto, debian or upstream}; shift ;;
    --source=*) source=${1#*=} ;;
    --force) force=1 ;;
    -h|--help) usage 0 ;;
    *) echo "build-openssl: unknown argument $1" >&2; usage ;;
  esac
  shift
done
case "$source" in auto|debian|upstream) ;; *) echo "build-openssl: --source $source?" >&2; exit 2 ;; esac

log() { echo "build-openssl: $*" >&2; }
die() { log "error: $*"; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    log "need root (or sudo) for: $*"; return 1; fi
}

# --- what we build, and the key that names it ------------------------------------------
name="openssl-$VERSION"
opts=(no-shared -fPIC --libdir=lib "--openssldir=$OPENSSLDIR" no-tests)
if [ "$legacy" = 1 ]; then
  name="$name-legacy"
  opts+=(enable-ssl3 enable-ssl3-method)
fi
# BUILD_METADATA ends up in OpenSSL_version(): "OpenSSL 3.0.22+sslsock ..." tells a bundled
# build from a system one in `sslsock debug` and in the test reports.
metadata="sslsock$([ "$legacy" = 1 ] && echo .legacy || true)"
arch=$(uname -m)
key="version=$VERSION sha256=$SHA256 arch=$arch metadata=$metadata rev=$SCRIPT_REV options=${opts[*]}"
[ -n "$prefix" ] || prefix="$CACHE/$name"
mkdir -p "$(dirname "$prefix")"
prefix=$(cd "$(dirname "$prefix")" && pwd)/$(basename "$prefix")

cached() {
  [ "$force" = 0 ] && [ -f "$prefix/BUILDINFO" ] && grep -qxF "key: $key" "$prefix/BUILDINFO" \
    && [ -f "$prefix/lib/libssl.a" ] && [ -f "$prefix/lib/libcrypto.a" ]
}
if cached; then
  log "cached: $prefix ($name)"
  echo "$prefix"
  exit 0
fi

if [ -e "$prefix" ] && [ ! -f "$prefix/BUILDINFO" ] && [ -n "$(ls -A "$prefix")" ]; then
  die "$prefix exists and is not a prefix made by this script: choose another --prefix"
fi

mkdir -p "$CACHE/src"
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
  # Another run may have built the same prefix while this one waited for the lock.
  if cached; then log "cached: $prefix ($name, built meanwhile)"; echo "$prefix"; exit 0; fi
fi

# --- the source tarball -------------------------------------------------------------------
cached_src="$CACHE/src/openssl-$VERSION.tar.gz"
origin=""
check_tarball() {  # file -> ok if it has the pinned sha256
  local got
  got=$(sha256_of "$1")
  [ "$got" = "$SHA256" ] || { log "sha256 mismatch for $1: $got, want $SHA256"; return 1; }
}

# Debian's source package comes through a private apt configuration: deb-src entries for the
# pinned suite (PIN_SUITE, its -updates and -security) in a directory under the cache, with
# its own package lists, checked against Debian's archive keyring.  The machine's apt
# sources, lists and cache are not touched, and no root is needed.
APT_DIR=""
APT_OPTS=()  # set by setup_apt_private: the options that make apt use that configuration
setup_apt_private() {
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || { log "no $keyring (package debian-archive-keyring)"; return 1; }
  APT_DIR="$CACHE/apt-$PIN_SUITE"
  mkdir -p "$APT_DIR/parts" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
  : >"$APT_DIR/status"
  cat >"$APT_DIR/parts/debian-src.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $PIN_SUITE $PIN_SUITE-updates
Components: main
Signed-By: $keyring

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $PIN_SUITE-security
Components: main
Signed-By: $keyring
SRC
  APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/parts"
            -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
            -o "Dir::State::status=$APT_DIR/status" -o "Debug::NoLocking=1")
  log "apt-get update with deb-src entries for $PIN_SUITE (private configuration in $APT_DIR)"
  apt-get "${APT_OPTS[@]}" update -q >&2
}

# apt-get source into the current directory, its output filtered: files that the mirror no
# longer has (a .dsc or .debian.tar of an older pin: "404  Not Found") are expected, since
# only the orig tarball is needed; they are counted in one line instead of printed as errors.
apt_source() {
  local out rc=0 missing
  out=$(apt-get ${APT_OPTS[@]+"${APT_OPTS[@]}"} source -q --download-only "$@" 2>&1) || rc=$?
  missing=$(grep -c '^E: Failed to fetch .*404 *Not Found' <<<"$out" || true)
  # apt says "Err:N URL" then "  404  Not Found ...": drop both lines, and the summary lines
  awk '/^Err:/ { held = $0; next }
       held != "" { if ($0 !~ /404 *Not Found/) print held; held = "" }
       /404 *Not Found/ || /^E: Some files failed to download/ { next }
       { print }
       END { if (held != "") print held }' <<<"$out" >&2
  if [ "$missing" != 0 ]; then
    log "apt-get source $*: $missing file(s) not on the mirror (404), expected when the" \
        "pin is older than the mirror's package; only the orig tarball is needed"
  fi
  return "$rc"
}

# Check upstream's signature (.asc) on a tarball with the release key Debian ships in its
# debian.tar (debian/upstream/signing-key.asc).  Fails only on a bad signature; when a piece
# or a tool (gpg, gpgv) is missing it says so and the pinned sha256 is what holds.
verify_signature() {  # tarball asc debian-tar
  local tarball=$1 asc=$2 deb=$3
  if [ ! -f "$asc" ] || [ -z "$deb" ] || [ ! -f "$deb" ] || ! command -v gpgv >/dev/null 2>&1 \
     || ! command -v gpg >/dev/null 2>&1; then
    log "upstream signature not checked (needs the .asc, Debian's debian.tar, gpg and gpgv);" \
        "relying on the pinned sha256"
    return 0
  fi
  local keys out rc=0
  keys=$(mktemp -d)
  if tar -xf "$deb" -C "$keys" debian/upstream/signing-key.asc 2>/dev/null \
     && gpg --batch --quiet --homedir "$keys" --dearmor -o "$keys/k.gpg" \
            "$keys/debian/upstream/signing-key.asc" 2>/dev/null; then
    if out=$(gpgv --keyring "$keys/k.gpg" "$asc" "$tarball" 2>&1); then
      log "upstream signature verified: $(grep -m1 'Good signature' <<<"$out" || true)"
    else
      echo "$out" >&2; rc=1
    fi
  else
    log "could not read the upstream signing key from $(basename "$deb"); relying on the sha256"
  fi
  rm -rf "$keys"
  return $rc
}

from_debian() {
  command -v apt-get >/dev/null 2>&1 || { log "no apt-get here"; return 1; }
  if ! command -v dpkg-source >/dev/null 2>&1; then
    log "installing dpkg-dev (for apt-get source)"
    as_root apt-get install -y -q --no-install-recommends dpkg-dev >&2 || return 1
  fi
  setup_apt_private || return 1
  # (Read whole, never piped into grep -q: with pipefail, grep leaving early is a failure.)
  local showsrc
  showsrc=$(apt-cache "${APT_OPTS[@]}" showsrc openssl 2>/dev/null || true)
  grep -q '^Package: openssl' <<<"$showsrc" || { log "no openssl source package in $PIN_SUITE"; return 1; }
  local dl
  dl=$(mktemp -d "$CACHE/src/apt.XXXXXX")
  chmod 0755 "$dl"
  # apt-get source runs as the calling user into the current directory.  Only the orig
  # tarball is needed: a mirror that lacks the .dsc/.debian.tar.xz (or a pin that left the
  # archive, when the current package still has the same upstream version) is fine.
  (cd "$dl" && apt_source "openssl=$PIN_DEBIAN") \
    || (cd "$dl" && apt_source openssl) \
    || log "apt-get source did not fetch everything; looking for the orig tarball anyway"
  local orig="$dl/openssl_$VERSION.orig.tar.gz"
  [ -f "$orig" ] || { log "Debian's source package does not hold OpenSSL $VERSION:" \
                        "$(cd "$dl" && ls)"; rm -rf "$dl"; return 1; }
  # The pinned sha256 is also the one apt's signed Sources index records for the tarball.
  if grep -q " $SHA256 [0-9]* openssl_$VERSION.orig.tar.gz" <<<"$showsrc"; then
    log "sha256 $SHA256 matches Debian's signed Sources index"
  fi
  # Upstream's signature, with the release keys Debian ships in debian/upstream/.
  local deb
  deb=$(ls "$dl"/openssl_*.debian.tar.* 2>/dev/null | head -n1 || true)
  verify_signature "$orig" "$orig.asc" "$deb" || { rm -rf "$dl"; die "bad upstream signature on $orig"; }
  check_tarball "$orig" || { rm -rf "$dl"; return 1; }
  # The Debian version actually fetched: its .dsc's, else the version whose Sources stanza
  # lists this orig tarball (apt-cache showsrc lists every suite's version, oldest or not).
  local debver
  debver=$(cd "$dl" && ls openssl_*.dsc 2>/dev/null | sed -n 's/^openssl_\(.*\)\.dsc$/\1/p' | head -n1 || true)
  [ -n "$debver" ] || debver=$(awk -v f="openssl_$VERSION.orig.tar.gz" \
      '/^Package:/ {v = ""} /^Version:/ {v = $2} v != "" && $NF == f {print v; exit}' <<<"$showsrc")
  mv "$orig" "$cached_src"
  rm -rf "$dl"
  origin="Debian source package openssl ${debver:-?}, orig tarball openssl_$VERSION.orig.tar.gz"
}

from_upstream() {
  local part="$cached_src.part" url
  if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 && as_root apt-get install -y -q --no-install-recommends \
      curl ca-certificates >&2 || { log "neither curl nor wget: pass --tarball FILE"; return 1; }
  fi
  for url in \
      "https://deb.debian.org/debian-security/pool/updates/main/o/openssl/openssl_$VERSION.orig.tar.gz" \
      "https://deb.debian.org/debian/pool/main/o/openssl/openssl_$VERSION.orig.tar.gz" \
      "https://github.com/openssl/openssl/releases/download/openssl-$VERSION/openssl-$VERSION.tar.gz" \
      "https://www.openssl.org/source/openssl-$VERSION.tar.gz" \
      "https://www.openssl.org/source/old/${VERSION%.*}/openssl-$VERSION.tar.gz"; do
    log "downloading $url"
    if command -v curl >/dev/null 2>&1; then
      curl -fsSL --retry 3 --connect-timeout 20 -o "$part" "$url" || continue
    else
      wget -q -O "$part" "$url" || continue
    fi
    if check_tarball "$part"; then
      case "$url" in
        https://deb.debian.org/*/pool/*)  # Debian's source package: its .asc and key beside it
          local pool=${url%/*} deb="$part.debian.tar.xz"
          curl -fsSL --retry 3 --connect-timeout 20 -o "$part.asc" "$url.asc" 2>/dev/null \
            || rm -f "$part.asc"
          curl -fsSL --retry 3 --connect-timeout 20 -o "$deb" \
               "$pool/openssl_$PIN_DEBIAN.debian.tar.xz" 2>/dev/null || rm -f "$deb"
          verify_signature "$part" "$part.asc" "$deb" \
            || { rm -f "$part" "$part.asc" "$deb"; die "bad upstream signature on $url"; }
          rm -f "$part.asc" "$deb" ;;
      esac
      mv "$part" "$cached_src"
      origin="$url"
      return 0
    fi
  done
  rm -f "$part"
  return 1
}

if [ -n "$tarball" ]; then
  [ -f "$tarball" ] || die "no such tarball: $tarball"
  check_tarball "$tarball" || die "$tarball is not OpenSSL $VERSION as pinned"
  src_tar=$tarball
  origin="local tarball $(basename "$tarball")"
elif [ -f "$cached_src" ] && check_tarball "$cached_src"; then
  src_tar=$cached_src
  origin="cached tarball"
  [ -f "$cached_src.origin" ] && origin="$(cat "$cached_src.origin") (cached)"
else
  rm -f "$cached_src"
  case "$source" in
    debian) from_debian || die "could not get OpenSSL $VERSION from Debian's source package" ;;
    upstream) from_upstream || die "could not download OpenSSL $VERSION (sha256 $SHA256)" ;;
    auto)
      if command -v apt-get >/dev/null 2>&1 && from_debian; then :; else
        from_upstream || die "could not get OpenSSL $VERSION: pass --tarball FILE"; fi ;;
  esac
  echo "$origin" >"$cached_src.origin"
  src_tar=$cached_src
fi

# --- build ----------------------------------------------------------------------------------
# The toolchain: a compiler, make, and a full perl (Configure uses IPC::Cmd and friends,
# which Debian's essential perl-base lacks).  Installed when missing, on Debian.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
perl -MIPC::Cmd -e 1 >/dev/null 2>&1 || missing+=(perl)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "install these first: ${missing[*]} (with IPC::Cmd for perl)"
  log "installing ${missing[*]}"
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || die "could not install ${missing[*]}"
fi
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$src_tar" -C "$work"
srcdir="$work/openssl-$VERSION"
[ -x "$srcdir/Configure" ] || die "$src_tar does not unpack to openssl-$VERSION/"
# Build metadata (a semver "+..." suffix OpenSSL provides for builders).
sed -i "s/^BUILD_METADATA=.*/BUILD_METADATA=$metadata/" "$srcdir/VERSION.dat"
release_date=$(sed -n 's/^RELEASE_DATE="\(.*\)"/\1/p' "$srcdir/VERSION.dat")
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(date -u -d "$release_date" +%s 2>/dev/null || echo 0)
export LC_ALL=C TZ=UTC ZERO_AR_DATE=1
jobs=$(nproc 2>/dev/null || echo 2)

start=$(date +%s)
log "building $name for $arch in $srcdir (make -j$jobs; Configure ${opts[*]})"
(
  cd "$srcdir"
  ./Configure "${opts[@]}" "--prefix=$prefix" >"$work/configure.log" 2>&1 \
    || { tail -n 30 "$work/configure.log" >&2; exit 1; }
  make -j"$jobs" build_sw >"$work/make.log" 2>&1 || { tail -n 40 "$work/make.log" >&2; exit 1; }
  rm -rf "$work/dest"
  make install_sw DESTDIR="$work/dest" >"$work/install.log" 2>&1 \
    || { tail -n 30 "$work/install.log" >&2; exit 1; }
)
stage="$work/dest$prefix"
cp "$srcdir/LICENSE.txt" "$stage/LICENSE.txt"
"$stage/bin/openssl" version -a >"$work/version.txt" 2>&1 || true
{
  echo "key: $key"
  echo "openssl: $VERSION"
  echo "sha256: $SHA256"
  echo "source: $origin"
  echo "configure: ${opts[*]} --prefix=$prefix"
  echo "metadata: +$metadata"
  echo "arch: $arch"
  echo "source_date_epoch: $SOURCE_DATE_EPOCH"
  echo "built_seconds: $(( $(date +%s) - start ))"
  echo "libssl.a sha256: $(sha256_of "$stage/lib/libssl.a")"
  echo "libcrypto.a sha256: $(sha256_of "$stage/lib/libcrypto.a")"
  sed 's/^/version: /' "$work/version.txt"
} >"$stage/BUILDINFO"
rm -rf "$prefix.old"
if [ -e "$prefix" ]; then
  # Only ever replace a prefix this script made (never, say, --prefix /usr/local).
  [ -f "$prefix/BUILDINFO" ] || [ -z "$(ls -A "$prefix")" ] \
    || die "$prefix exists and is not a prefix made by this script: choose another --prefix"
  mv "$prefix" "$prefix.old"
fi
mv "$stage" "$prefix"
rm -rf "$prefix.old"
log "built $name in $(( $(date +%s) - start ))s: $prefix"
echo "$prefix"
