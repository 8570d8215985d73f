"""What this sslsock is built on: ``sslsock debug`` and ``python -m sslsock.debug``.

Paste its output into a bug report: the versions of sslsock, Python, cffi and
cryptography, the OpenSSL the C core was compiled against and the one it runs with, whether
that OpenSSL is the system's shared libssl or one linked into sslsock (the wheels,
docs/wheels.md), the protocol versions this build can negotiate (the legacy ones named),
OpenSSL's default security level, which key-exchange groups the linked OpenSSL knows
(post-quantum X25519MLKEM768 needs 3.5 or later) and whether ``SSLSOCK_TLS_GROUPS`` replaces
its defaults, where the certificate store is, and whether a key log ($SSLKEYLOGFILE) is on.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any, Optional

from sslsock import _version
from sslsock._tls.options import CORE_VERSIONS

__all__ = ["GROUPS", "VERSION_BITS", "groups_available", "info", "lines", "main"]

#: ``ss_versions_supported()`` bit -> OpenSSL's name for the version.
VERSION_BITS = CORE_VERSIONS


def _version_of(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception as e:  # pragma: no cover - both are dependencies
        return f"not importable ({e})"
    return str(getattr(mod, "__version__", "?"))


def supported_versions() -> tuple[list[str], list[str]]:
    """(versions this build negotiates, versions it cannot), oldest first."""
    from sslsock._core.binding import lib

    bits = int(lib.ss_versions_supported())
    can = [name for bit, name in VERSION_BITS if bits & bit]
    cannot = [name for bit, name in VERSION_BITS if not bits & bit]
    return can, cannot


#: scripts/build-openssl.sh puts this build metadata into OpenSSL's version text.
BUNDLED_MARK = "+sslsock"
LEGACY = ("SSLv3", "TLSv1", "TLSv1.1")


def openssl_build(linked: str) -> str:
    """Where the OpenSSL the core runs with comes from."""
    if BUNDLED_MARK in linked:
        lic = os.path.join(os.path.dirname(os.path.abspath(__file__)), "OPENSSL_LICENSE.txt")
        return ("static, linked into sslsock's C core by scripts/build-openssl.sh"
                + (f" (OpenSSL's licence: {lic})" if os.path.isfile(lic) else ""))
    try:
        with open("/proc/self/maps") as maps:
            libs = sorted({line.split()[-1] for line in maps
                           if "/libssl.so" in line or "/libssl-" in line})
    except OSError:
        libs = []
    return "shared library" + (f" {', '.join(libs)}" if libs else "")


#: Key-exchange groups worth knowing about: the post-quantum hybrids (OpenSSL 3.5+) and the
#: classical group they extend.
GROUPS = ("X25519MLKEM768", "SecP256r1MLKEM768", "SecP384r1MLKEM1024", "X25519")
GROUPS_ENV = "SSLSOCK_TLS_GROUPS"


def groups_available() -> dict[str, bool]:
    """Which of :data:`GROUPS` the linked OpenSSL knows (asked at run time)."""
    from sslsock._core.binding import lib

    return {g: bool(lib.ss_openssl_group_available(g.encode())) for g in GROUPS}


def info() -> dict[str, Any]:
    """Everything the report shows, as a dict (the ``--json`` form)."""
    import ssl

    from sslsock._certs.store import STORE_ENV, default_store_path
    from sslsock._core.binding import lib, openssl_versions
    from sslsock._tls.contexts import keylog_path

    compiled, linked = openssl_versions()
    can, cannot = supported_versions()
    store = default_store_path()
    source = (f"${STORE_ENV}" if os.environ.get(STORE_ENV) else "default")
    if store.is_dir():
        try:
            n = sum(1 for p in store.iterdir() if not p.name.startswith("."))
            state = f"{n} file{'s' if n != 1 else ''}"
        except OSError as e:
            state = f"unreadable ({e.strerror or e})"
    elif store.exists():
        state = "not a directory"
    else:
        state = "does not exist yet"
    return {
        "sslsock": _version.__version__,
        "sslsock_path": os.path.dirname(os.path.abspath(_version.__file__)),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cffi": _version_of("cffi"),
        "cryptography": _version_of("cryptography"),
        "openssl_compiled": compiled,
        "openssl_linked": linked,
        "openssl_build": openssl_build(linked),
        "python_ssl_openssl": ssl.OPENSSL_VERSION,
        "versions_supported": can,
        "legacy_versions_supported": [v for v in LEGACY if v in can],
        "versions_unsupported": cannot,
        "security_level_default": int(lib.ss_openssl_security_level_default()),
        "groups_available": groups_available(),
        "groups_override": os.environ.get(GROUPS_ENV) or None,
        "cert_store": str(store),
        "cert_store_source": source,
        "cert_store_state": state,
        "keylog_file": keylog_path(),
    }


def lines() -> list[str]:
    """The report, one line per fact."""
    d = info()
    cannot = f" (not: {', '.join(d['versions_unsupported'])})" if d["versions_unsupported"] else ""
    return [
        f"sslsock {d['sslsock']} ({d['sslsock_path']})",
        f"Python {d['python']} {d['python_implementation']} ({d['python_executable']})",
        f"platform {d['platform']}",
        f"cffi {d['cffi']}",
        f"cryptography {d['cryptography']}",
        f"OpenSSL compiled against: {d['openssl_compiled']}",
        f"OpenSSL linked:           {d['openssl_linked']}",
        f"OpenSSL build:            {d['openssl_build']}",
        f"OpenSSL of Python's ssl:  {d['python_ssl_openssl']}",
        f"protocol versions this build can negotiate: "
        f"{', '.join(d['versions_supported']) or 'none'}{cannot}",
        "legacy versions this build can do: "
        + (", ".join(d["legacy_versions_supported"]) or "none")
        + ("" if "SSLv3" in d["legacy_versions_supported"]
           else " (SSLv3 needs an OpenSSL built with it: scripts/build-openssl.sh --legacy)"),
        f"OpenSSL default security level: {d['security_level_default']}"
        + (" (TLS 1.0/1.1 need level 0; sslsock lowers it per connection when asked to)"
           if d["security_level_default"] > 0 else ""),
        "post-quantum key exchange (X25519MLKEM768): "
        + (("available, offered and accepted by default in TLS 1.3" if not d["groups_override"]
            else f"available; ${GROUPS_ENV} decides whether it is offered and accepted")
           if d["groups_available"]["X25519MLKEM768"]
           else "not in this OpenSSL (it needs 3.5 or later, as the wheels bundle)"),
        "key-exchange groups known: "
        + (", ".join(g for g, ok in d["groups_available"].items() if ok) or "none of")
        + f" (of {', '.join(GROUPS)})",
        "key-exchange groups offered and accepted: "
        + (f"{d['groups_override']} (${GROUPS_ENV})" if d["groups_override"]
           else f"OpenSSL's defaults (${GROUPS_ENV} unset)"),
        f"certificate store: {d['cert_store']} ({d['cert_store_source']}; "
        f"{d['cert_store_state']})",
        "key log: " + (f"ON, TLS secrets are appended to {d['keylog_file']} ($SSLKEYLOGFILE); "
                       "unset it outside debugging" if d["keylog_file"]
                       else "off ($SSLKEYLOGFILE is not set)"),
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m sslsock.debug",
        description="Versions of sslsock, its dependencies and OpenSSL, the protocol "
                    "versions this build can negotiate, and the certificate store path "
                    "(the same as `sslsock debug`).")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(info(), indent=2))
    else:
        print("\n".join(lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
