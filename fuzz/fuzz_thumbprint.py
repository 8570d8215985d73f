"""Fuzz the certificate identifier readers: parse_thumbprint and CertStore.find.

Invariant: for any text (and any bytes decoded as text),
  - parse_thumbprint returns ("sha1", 40 upper-case hex digits) or ("sha256", 64 of them),
    made of the hex digits of the text in order; otherwise it raises CertificateError
    (ArgumentError for a non-str) with a message that is not empty;
  - CertStore.find on an empty store, by hash and by name, raises only CertificateError or
    ArgumentError, with a message that is not empty (nothing is ever found in an empty
    store, and an identifier that looks like a path must not escape as OSError,
    RuntimeError, ValueError ...).

Input layout: the bytes decoded as UTF-8 (invalid sequences replaced), and also as Latin-1
so that every byte value reaches the parser as a character.
"""
from __future__ import annotations

import atexit
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["sslsock"]):
    from sslsock._certs.store import CertStore, parse_thumbprint
    from sslsock._core.errors import ArgumentError, CertificateError

_HEX = set("0123456789abcdefABCDEF")
_DIR = tempfile.mkdtemp(prefix="sslsock-fuzz-store-")
atexit.register(shutil.rmtree, _DIR, True)
STORE = CertStore(_DIR)


def _check_parse(text: str) -> None:
    try:
        algorithm, digits = parse_thumbprint(text)
    except CertificateError as e:
        assert e.message and str(e), f"empty message for {text!r}"
        return
    expected = "".join(ch for ch in text if ch in _HEX).upper()
    assert digits == expected, (text, digits)
    assert (algorithm, len(digits)) in (("sha1", 40), ("sha256", 64)), (algorithm, digits)


def _check_find(text: str) -> None:
    for by in ("hash", "name"):
        try:
            entry = STORE.find(text, by)
        except (CertificateError, ArgumentError) as e:
            assert e.message and str(e), f"empty message for find({text!r}, {by!r})"
        else:
            # Only an identifier that is a path to an existing certificate file can be found.
            assert by == "name", (text, entry)


def TestOneInput(data: bytes) -> None:
    seen = set()
    for text in (data.decode("utf-8", "replace"), data.decode("latin-1")):
        if text in seen:
            continue
        seen.add(text)
        _check_parse(text)
        _check_find(text)


def main() -> None:
    try:
        parse_thumbprint(b"00")
    except ArgumentError as e:
        assert e.message
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
