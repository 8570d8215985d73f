"""cffi build script for sslsock's C core (wired by setup.py's ``cffi_modules``).

Which OpenSSL:
- ``SSLSOCK_OPENSSL_DIR=/prefix``: headers in ``/prefix/include``, libraries in
  ``/prefix/lib64`` or ``/prefix/lib``; linked statically when ``libssl.a`` is there and
  ``SSLSOCK_OPENSSL_STATIC`` is not ``0``, else dynamically with an rpath.  A static build
  hides OpenSSL's symbols (``--exclude-libs``) and ships the prefix's ``LICENSE.txt`` (put
  there by scripts/build-openssl.sh) as ``sslsock/OPENSSL_LICENSE.txt``; any other build
  removes a stale copy.
- otherwise ``pkg-config openssl`` (the system's libssl), falling back to the compiler's
  default paths.
Without OpenSSL's headers the build stops with a message naming the package to install.
The OpenSSL a build links is part of the generated C source (``openssl_identity``): building
again in the same checkout with another ``SSLSOCK_OPENSSL_DIR`` recompiles and relinks
instead of reusing objects in ``build/`` made against the previous one.

``SSLSOCK_SANITIZE=address,undefined`` builds the core with those sanitizers (for CI).
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["errors.c", "ctx.c", "conn.c", "listener.c", "hub.c", "closing.c", "proxy.c",
           "tlsext.c", "groups.c"]
LICENSE_COPY = HERE.parent / "sslsock" / "OPENSSL_LICENSE.txt"  # package data (pyproject)


def _pkg_config(*args: str) -> list[str] | None:
    try:
        out = subprocess.run(
            ["pkg-config", *args, "openssl"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return shlex.split(out)


def _missing_headers(message: str) -> None:
    sys.stderr.write(
        "\n*** sslsock: cannot build the C core: " + message + "\n"
        "*** Install OpenSSL's development files (Debian/Ubuntu: apt-get install libssl-dev "
        "pkg-config; Fedora: dnf install openssl-devel), or point SSLSOCK_OPENSSL_DIR at an "
        "OpenSSL prefix.\n\n"
    )
    raise SystemExit(1)


def openssl_flags() -> dict[str, list[str]]:
    prefix = os.environ.get("SSLSOCK_OPENSSL_DIR")
    if prefix:
        p = Path(prefix)
        inc = p / "include"
        if not (inc / "openssl" / "ssl.h").exists():
            _missing_headers(f"SSLSOCK_OPENSSL_DIR={prefix} has no include/openssl/ssl.h")
        libdir = next((d for d in (p / "lib64", p / "lib") if d.is_dir()), p / "lib")
        static = (libdir / "libssl.a").exists() and os.environ.get("SSLSOCK_OPENSSL_STATIC") != "0"
        if static:
            return {
                "include_dirs": [str(inc)],
                "extra_objects": [str(libdir / "libssl.a"), str(libdir / "libcrypto.a")],
                "libraries": ["pthread", "dl"],
                "library_dirs": [],
                # OpenSSL stays private to the module: no symbol clash with the system
                # libssl that Python's ssl module (or anything else) loads.
                "extra_link_args": ["-Wl,--exclude-libs,ALL"],
                "licence": [str(p / "LICENSE.txt")],
            }
        return {
            "include_dirs": [str(inc)],
            "extra_objects": [],
            "libraries": ["ssl", "crypto"],
            "library_dirs": [str(libdir)],
            "extra_link_args": [f"-Wl,-rpath,{libdir}"],
        }
    cflags = _pkg_config("--cflags")
    libs = _pkg_config("--libs")
    include_dirs = [f[2:] for f in cflags or [] if f.startswith("-I")]
    library_dirs = [f[2:] for f in libs or [] if f.startswith("-L")]
    candidates = include_dirs + ["/usr/include", "/usr/local/include"]
    if not any((Path(d) / "openssl" / "ssl.h").exists() for d in candidates):
        _missing_headers("openssl/ssl.h was not found (pkg-config openssl: "
                         + ("not found" if cflags is None else "no usable include path") + ")")
    return {
        "include_dirs": include_dirs,
        "extra_objects": [],
        "libraries": ["ssl", "crypto"],
        "library_dirs": library_dirs,
        "extra_link_args": [],
    }


def _bundle_licence(files: list[str]) -> None:
    """OpenSSL linked in means OpenSSL's licence shipped with it; otherwise no copy."""
    if not files:
        LICENSE_COPY.unlink(missing_ok=True)
        return
    src = Path(files[0])
    if src.is_file():
        if not LICENSE_COPY.exists() or LICENSE_COPY.read_bytes() != src.read_bytes():
            LICENSE_COPY.write_bytes(src.read_bytes())
    else:
        sys.stderr.write(f"*** sslsock: warning: {src} is missing: a wheel built now would "
                         "carry OpenSSL without its licence (use scripts/build-openssl.sh)\n")


def openssl_identity(flags: dict[str, list[str]], extra: list[str]) -> str:
    """What names the OpenSSL (and flags) a build links: the prefix or the system's paths,
    a digest of opensslv.h, of the prefix's BUILDINFO and of the size and time of each
    library file.  It goes into the generated C source (``set_source`` below), so cffi
    rewrites that file when it changes and setuptools then rebuilds the extension instead
    of reusing objects in build/ linked against another OpenSSL."""
    h = hashlib.sha256()
    parts = [os.environ.get("SSLSOCK_OPENSSL_DIR", "") or "system"] + sorted(extra)
    for key in ("include_dirs", "library_dirs", "extra_objects", "libraries",
                "extra_link_args"):
        parts.append(key + "=" + " ".join(flags.get(key, [])))
    h.update("\n".join(parts).encode())
    for inc in flags["include_dirs"] + ["/usr/include", "/usr/local/include"]:
        v = Path(inc) / "openssl" / "opensslv.h"
        if v.is_file():
            h.update(v.read_bytes())
            break
    prefix = os.environ.get("SSLSOCK_OPENSSL_DIR")
    if prefix and (Path(prefix) / "BUILDINFO").is_file():
        h.update((Path(prefix) / "BUILDINFO").read_bytes())
    for f in flags["extra_objects"]:
        try:
            st = Path(f).stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            pass
    return h.hexdigest()[:24]


def _sanitize_flags() -> list[str]:
    which = os.environ.get("SSLSOCK_SANITIZE", "").strip()
    if not which:
        return []
    return [f"-fsanitize={which}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", "-g"]


def cdef_from_header(text: str) -> str:
    """cffi's cdef, derived from the public header so the two cannot drift apart: comments
    and preprocessor lines go, and each ``#define SS_...`` becomes ``#define SS_... ...``
    (cffi then takes the value from the compiled header)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*#\s*define\s+(SS_\w+)\s+\S", line)
        if m:
            out.append(f"#define {m.group(1)} ...")
        elif not line.lstrip().startswith("#"):
            out.append(line)
    return "\n".join(out)


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header((HERE / "sslsock_core.h").read_text()))
_flags = openssl_flags()
_bundle_licence(_flags.get("licence", []))
_san = _sanitize_flags()
ffibuilder.set_source(
    "sslsock._native",
    '#include "sslsock_core.h"\n'
    f"/* OpenSSL build identity: {openssl_identity(_flags, _san)} */",
    sources=[str((HERE / s).relative_to(Path.cwd())) if HERE.is_relative_to(Path.cwd())
             else str(HERE / s) for s in SOURCES],
    include_dirs=[str(HERE)] + _flags["include_dirs"],
    libraries=_flags["libraries"] + ["pthread"],
    library_dirs=_flags["library_dirs"],
    extra_objects=_flags["extra_objects"],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        # error messages are truncated on purpose to fit their records
                        "-Wno-format-truncation"] + _san,
    extra_link_args=_flags["extra_link_args"] + _san,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
