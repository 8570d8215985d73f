"""Fuzz the SSL-options mask: sslsock._tls.options.recipe.

Invariant: for any value passed as the mask,
  - recipe() either returns a Recipe or raises OptionsError (a bad mask) or TypeError (not
    an int) -- nothing else, and never with an empty message;
  - a Recipe's effective versions are a subset of its requested versions, in the same order;
    effective and dropped partition requested; version_bits are exactly the effective
    versions' bits and within what the linked OpenSSL supports;
  - no protocol bit means the default protocols, no identification bit CertificateName;
  - the result is the same for the int and for the SSLOption flag of the same value.

Input layout: byte 0 picks how the rest is read (an int of 1..16 bytes, signed or not; a
float; a str; a bool or None), the rest is the value.
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["sslsock"]):
    from sslsock._core.errors import OptionsError
    from sslsock._tls import options as _options
    from sslsock._tls.options import Recipe, SSLOption, recipe

_BITS = {name: core for _, name, core in _options._VERSIONS}


def _check(mask: object) -> None:
    try:
        rec = recipe(mask)
    except (OptionsError, TypeError) as e:
        assert str(e), f"empty message for {mask!r}"
        return
    assert isinstance(rec, Recipe)
    assert isinstance(mask, int) and not isinstance(mask, bool), mask
    assert set(rec.effective) <= set(rec.requested), rec
    assert [v for v in rec.requested if v in rec.effective] == list(rec.effective), rec
    assert set(rec.effective) | set(rec.dropped) == set(rec.requested), rec
    assert not set(rec.effective) & set(rec.dropped), rec
    assert all(reason for reason in rec.dropped.values()), rec
    bits = 0
    for name in rec.effective:
        bits |= _BITS[name]
    assert rec.version_bits == bits, rec
    assert rec.version_bits & ~_options._build()[0] == 0, rec
    if not mask & _options.PROTOCOL_BITS:
        assert rec.requested == ("TLSv1", "TLSv1.1", "TLSv1.2"), rec
    assert rec.by_hash == bool(mask & SSLOption.CertificateHash), rec
    # the enum form of the same mask gives the same recipe
    assert recipe(SSLOption(mask)) == rec


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind <= 3:
        value: object = fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 16))
    elif kind == 4:
        value = fdp.ConsumeUInt(fdp.ConsumeIntInRange(1, 4))
    elif kind == 5:
        value = fdp.ConsumeRegularFloat()
    elif kind == 6:
        value = fdp.ConsumeUnicodeNoSurrogates(8)
    else:
        value = (True, False, None, b"\x10")[fdp.ConsumeIntInRange(0, 3)]
    _check(value)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
