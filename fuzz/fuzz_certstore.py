"""Fuzz the certificate store's file loader with arbitrary file contents.

Invariant: whatever bytes a store file holds (PEM, DER, PKCS#12, or garbage shaped like
them),
  - CertStore.entries() never raises: an unreadable file becomes a line in .problems;
  - CertStore.load_identity() raises only CertificateError, with a message that is not
    empty; when it succeeds the key it returns belongs to the certificate;
  - a certificate that entries() lists is found again by its SHA-1 thumbprint.

Input layout: byte 0 bits 0-1 pick the files written into an otherwise empty store --
fuzz.pem, fuzz.pfx, fuzz.der, or fuzz.crt + fuzz.key (then bytes 1-2 are the length of the
.crt part) -- and bit 2 whether the store has a password; the rest is the contents.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import warnings
from typing import Any

import atheris

with atheris.instrument_imports(include=["sslsock"]):
    from cryptography.hazmat.primitives import serialization

    from sslsock._certs.store import CertStore, Identity, InsecureKeyFileWarning
    from sslsock._core.errors import CertificateError

_DIR = tempfile.mkdtemp(prefix="sslsock-fuzz-store-")
atexit.register(shutil.rmtree, _DIR, True)
STORES = (CertStore(_DIR, password=None), CertStore(_DIR, password="fuzz-password"))


def _write(name: str, data: bytes) -> None:
    fd = os.open(os.path.join(_DIR, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _layout(data: bytes) -> None:
    for name in os.listdir(_DIR):
        os.unlink(os.path.join(_DIR, name))
    which = data[0] & 3
    body = data[1:]
    if which == 0:
        _write("fuzz.pem", body)
    elif which == 1:
        _write("fuzz.pfx", body)
    elif which == 2:
        _write("fuzz.der", body)
    else:
        split = int.from_bytes(body[:2], "big") if len(body) >= 2 else 0
        body = body[2:]
        _write("fuzz.crt", body[:split])
        _write("fuzz.key", body[split:])


def _public(obj: Any) -> bytes:
    der: bytes = obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    _layout(data)
    store = STORES[(data[0] >> 2) & 1]
    entries = store.entries()
    assert all(p for p in store.problems), store.problems
    for entry in entries:
        assert entry.names(), entry
        assert store.find(entry.sha1, "hash") is not None
    try:
        ident = store.load_identity("fuzz")
    except CertificateError as e:
        assert e.message and str(e), "empty CertificateError message"
        return
    assert isinstance(ident, Identity)
    with ident:
        key = serialization.load_pem_private_key(bytes(ident.key_pem), None)
        assert _public(key) == _public(ident.certificate.certificate)


def main() -> None:
    # cryptography's notices about odd but parseable files (a serial number <= 0, a BER
    # PKCS#12 ...) are not findings; sslsock's own warnings are (the files are mode 0600)
    warnings.simplefilter("ignore")
    warnings.simplefilter("error", InsecureKeyFileWarning)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
