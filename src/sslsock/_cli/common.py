"""What the command line's commands share: exit statuses, the parsers of option values
(ports, seconds, masks, modes), the certificate store of a command, and how errors and
warnings are printed.  Both :mod:`sslsock._cli.main` and :mod:`sslsock._cli.cert` build on
it (neither imports the other's helpers).
"""
from __future__ import annotations

import argparse
import codecs
import sys
import warnings
from typing import Any

from sslsock._core import errors as _errors

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CERT = 3
EXIT_INTERRUPTED = 130

EPILOG = """\
exit status:
  0    success
  1    runtime failure: network, TLS or the peer (connection refused, handshake
       failed, port already in use, time-out, ...)
  2    usage error: unknown command or option, bad value
  3    certificate or store error: unknown certificate ID, wrong password, no
       private key, unreadable or invalid certificate file, ...
  130  interrupted (Ctrl-C)

The certificate store is $SSLSOCK_CERT_STORE, else $XDG_DATA_HOME/sslsock/certs,
else ~/.local/share/sslsock/certs (--store DIR overrides all three).  Encrypted
files in it are opened with $SSLSOCK_CERT_PASSWORD."""

# CLI defaults: modern versions only.  (The library's WLanguage default, TLS 1.0 + 1.1 +
# 1.2, stays the default of SocketCreateSSL; a development tool should not lower the
# security level unless asked to.)
DEFAULT_OPTIONS_TEXT = "TLS1_2+TLS1_3"
DEV_CERT_NAME = "sslsock-dev"
DEFAULT_PORT = 5043


class UsageError(Exception):
    """A bad command line found after parsing (exit 2)."""


# ---------------------------------------------------------------------------------------
# Argument types


def _norm_option(word: str) -> str:
    w = word.strip().lower().replace(".", "_").replace("-", "_").replace(" ", "")
    for prefix in ("protocole", "protocol"):
        if w.startswith(prefix):
            w = w[len(prefix):]
            break
    w = w.lstrip("_")
    for a, b in (("tlsv", "tls"), ("sslv", "ssl")):
        if w.startswith(a):
            w = b + w[len(a):]
    if w == "tls1_0":
        w = "tls1"
    return w


def _option_names() -> dict[str, int]:
    from sslsock._tls.options import SSLOption

    names = {_norm_option(m.name): int(m) for m in SSLOption if m.name}
    names.update({
        "tls1_0": int(SSLOption.ProtocolTLS1),
        "noverify": int(SSLOption.SSLNoVerify),
        "clientcertificate": int(SSLOption.SSLClientCertificate),
        "hashcertificat": int(SSLOption.CertificateHash),
        "nomcertificat": int(SSLOption.CertificateName),
    })
    return names


def options_mask(text: str) -> int:
    """argparse type: "TLS1_2+TLS1_3", "ProtocolTLS1_2|CertificateHash", "0x30", "48"."""
    from sslsock._tls.options import recipe

    names = _option_names()
    mask = 0
    words = [w for w in text.replace("|", "+").split("+")]
    if not text.strip() or any(not w.strip() for w in words):
        raise argparse.ArgumentTypeError(f"empty option in {text!r}: join names with + or |")
    for word in words:
        w = word.strip()
        try:
            mask |= int(w, 0)
            continue
        except ValueError:
            pass
        bit = names.get(_norm_option(w))
        if bit is None:
            raise argparse.ArgumentTypeError(
                f"unknown SSL option {w!r}: use SSL3, TLS1, TLS1_1, TLS1_2, TLS1_3 "
                "(or ProtocolTLS1_2 ...), CertificateHash, CertificateName, NoVerify, "
                "ClientCertificate, or a number")
        mask |= bit
    try:
        recipe(mask)
    except (_errors.OptionsError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return mask


MODE_NAMES = {
    "size": "SocketSizeAtBeginning",
    "endtag": "SocketEndTag",
    "endtagbuffer": "SocketEndTagBuffer",
    "raw": "SocketNoEndTag",
}


def transmission_mode(text: str) -> Any:
    """argparse type: size | endtag | endtagbuffer | raw (or the WLanguage constant)."""
    from sslsock._core.connection import Mode

    w = text.strip().lower().replace("-", "").replace("_", "")
    aliases = {"sizeatbeginning": "size", "socketsizeatbeginning": "size",
               "socketendtag": "endtag", "socketendtagbuffer": "endtagbuffer",
               "noendtag": "raw", "socketnoendtag": "raw"}
    w = aliases.get(w, w)
    if w not in MODE_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown transmission mode {text!r}: use size, endtag, endtagbuffer or raw")
    return Mode[MODE_NAMES[w]]


def end_tag(text: str) -> bytes:
    """argparse type: the end tag, with backslash escapes (\\r\\n, \\x00) understood."""
    try:
        tag = codecs.escape_decode(text.encode("utf-8"))[0]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad escape in end tag {text!r}: {e}") from None
    if not 1 <= len(tag) <= 64:
        raise argparse.ArgumentTypeError(f"the end tag must be 1 to 64 bytes, got {len(tag)}")
    return tag


def port_number(text: str, *, allow_zero: bool = True) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, not {text!r}") from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not a TCP port ({low}..65535)")
    return port


def server_port(text: str) -> int:
    """argparse type: a port for a server, under SocketCreateSSL's rule (one rule for the
    library and the command): 5000..65000, or 0 for any free port."""
    from sslsock._faces.named import PORT_MAX, PORT_MIN

    port = port_number(text)
    if port != 0 and not PORT_MIN <= port <= PORT_MAX:
        raise argparse.ArgumentTypeError(
            f"port {port} is outside {PORT_MIN}..{PORT_MAX}, the range SocketCreateSSL allows "
            "for the sockets an application creates (0: any free port)")
    return port


def client_port(text: str) -> int:
    return port_number(text, allow_zero=False)


def worker_count(text: str) -> int:
    """argparse type: a number of worker processes (0: one per usable CPU)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r}") from None
    if not 0 <= n <= 1024:
        raise argparse.ArgumentTypeError(f"{n} workers? 1 to 1024 (0: one per usable CPU)")
    return n


def _number_of_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


def seconds(text: str) -> float:
    value = _number_of_seconds(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"time-out must be > 0 seconds, got {text}")
    return value


def interval(text: str) -> float:
    value = _number_of_seconds(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"an interval is 0 (never) or a number of seconds > 0, got {text}")
    return value


# ---------------------------------------------------------------------------------------
# Helpers shared with _cli_cert


def store_of(args: argparse.Namespace, password: Any = None) -> Any:
    from sslsock._certs.store import CertStore

    return CertStore(getattr(args, "store", None), password=password)


def lookup_kind(identifier: str, by_hash: bool = False, by_name: bool = False) -> str:
    """"hash" or "name", as SocketCreateSSL takes an identifier: by name unless asked, or
    unless the identifier reads as a 40/64-digit thumbprint."""
    from sslsock._certs.store import parse_thumbprint

    if by_hash:
        return "hash"
    if by_name:
        return "name"
    try:
        parse_thumbprint(identifier)
    except _errors.Error:
        # A thumbprint with a typo (the reference's own example has "of" for "0f") is
        # still read as one, so that the error says which characters are wrong.
        digits = sum(ch in "0123456789abcdefABCDEF" for ch in identifier)
        others = sum(not (ch in "0123456789abcdefABCDEF" or ch.isspace() or ch == ":")
                     for ch in identifier)
        return "hash" if digits >= 32 and others <= 4 else "name"
    return "hash"


def err(text: str) -> None:
    """A line for the user on stderr."""
    print(f"sslsock: {text}", file=sys.stderr, flush=True)


def show_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        err(f"warning: {w.message}")
