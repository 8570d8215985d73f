"""Downgrade protection (RFC 8446 §4.1.3, RFC 7507) for every option mask.

A raw TCP client sends a TLS ClientHello it builds itself and reads the ServerHello (or the
alert) bytes itself: no TLS library in between decides what it sees.  For each mask the
server must behave as OpenSSL does for its highest enabled version: ServerHello.random ends
with the downgrade sentinel when it negotiates below what it supports, a fallback SCSV
hello below its highest version gets an inappropriate_fallback alert, and the version is
still exactly inside the mask.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from typing import Any, Optional

import pytest

import sslsock
from sslsock._tls.options import recipe

O = sslsock.SSLOption
TLS10, TLS11, TLS12 = 0x0301, 0x0302, 0x0303
SENTINEL_12 = bytes.fromhex("444F574E47524401")  # "DOWNGRD" 01: TLS 1.3 server, 1.2 chosen
SENTINEL_11 = bytes.fromhex("444F574E47524400")  # "DOWNGRD" 00: TLS 1.2+ server, <= 1.1 chosen
ALERT_INAPPROPRIATE_FALLBACK = 86
ALERT_PROTOCOL_VERSION = 70
FALLBACK_SCSV = 0x5600
# ECDHE-ECDSA/RSA with AES-GCM (TLS 1.2) and AES-CBC-SHA (all versions)
SUITES = [0xC02B, 0xC02F, 0xC009, 0xC013, 0xC00A, 0xC014]


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(version: int, *, fallback: bool = False) -> bytes:
    """A TLS record with a ClientHello offering `version` as its highest (no
    supported_versions extension: TLS 1.2 and below only)."""
    suites = SUITES + ([FALLBACK_SCSV] if fallback else [])
    groups = struct.pack("!HHH", 4, 0x001D, 0x0017)             # x25519, secp256r1
    sigalgs = struct.pack("!H", 8) + bytes.fromhex("0403080404010201")
    exts = (_ext(0x000A, groups) + _ext(0x000B, b"\x01\x00") + _ext(0x000D, sigalgs)
            + _ext(0xFF01, b"\x00"))
    body = (struct.pack("!H", version) + os.urandom(32) + b"\x00"
            + struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", s) for s in suites)
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16" + struct.pack("!HH", TLS10, len(hs)) + hs


def _read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def exchange(port: int, hello: bytes) -> tuple[str, Any]:
    """("hello", (version, random)) or ("alert", description)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(hello)
        kind, _, length = struct.unpack("!BHH", _read_exact(s, 5))
        record = _read_exact(s, length)
    if kind == 21:
        return "alert", record[1]
    assert kind == 22 and record[0] == 2, f"expected a ServerHello, got record {kind}"
    version = struct.unpack("!H", record[4:6])[0]
    return "hello", (version, record[6:38])


MASKS = {
    "TLS1.2+1.3": O.ProtocolTLS1_2 | O.ProtocolTLS1_3,
    "default (1.0-1.2)": 0,
    "1.0+1.2+1.3 (hole)": O.ProtocolTLS1 | O.ProtocolTLS1_2 | O.ProtocolTLS1_3,
    "1.2 only": O.ProtocolTLS1_2,
    "1.0-1.3": O.ProtocolTLS1 | O.ProtocolTLS1_1 | O.ProtocolTLS1_2 | O.ProtocolTLS1_3,
}
NAMES = {TLS10: "TLSv1", TLS11: "TLSv1.1", TLS12: "TLSv1.2"}


def _expected(mask: int, offered: int) -> tuple[Optional[int], Optional[bytes]]:
    """What OpenSSL's own server does with this set of versions: the version negotiated
    (None: refused) and the sentinel it must carry."""
    effective = recipe(mask).effective
    candidates = [v for v in (TLS12, TLS11, TLS10) if v <= offered and NAMES[v] in effective]
    if not candidates:
        return None, None
    chosen = candidates[0]
    if chosen == TLS12 and "TLSv1.3" in effective:
        return chosen, SENTINEL_12
    if chosen < TLS12 and "TLSv1.2" in effective:
        return chosen, SENTINEL_11
    return chosen, None


@pytest.fixture
def listener(pki: Any, request: pytest.FixtureRequest) -> Any:
    with sslsock.Listener(0, "localhost", host="127.0.0.1", options=request.param) as lst:
        yield lst


@pytest.mark.parametrize("offered", [TLS12, TLS11, TLS10], ids=NAMES.get)
@pytest.mark.parametrize("listener", MASKS.values(), ids=MASKS.keys(), indirect=True)
def test_server_hello_carries_the_sentinel_and_stays_inside_the_mask(listener: Any,
                                                                      offered: int) -> None:
    mask = int(listener.recipe.mask)
    version, sentinel = _expected(mask, offered)
    kind, what = exchange(listener.port, client_hello(offered))
    if version is None:
        assert (kind, what) == ("alert", ALERT_PROTOCOL_VERSION)
        return
    assert kind == "hello", f"alert {what}"
    got, random = what
    assert got == version
    if sentinel is None:
        assert random[-8:] not in (SENTINEL_11, SENTINEL_12)
    else:
        assert random[-8:] == sentinel


@pytest.mark.parametrize("offered", [TLS12, TLS11, TLS10], ids=NAMES.get)
@pytest.mark.parametrize("listener", MASKS.values(), ids=MASKS.keys(), indirect=True)
def test_fallback_scsv_below_the_highest_version_is_refused(listener: Any, offered: int) -> None:
    effective = listener.recipe.effective
    version, _ = _expected(int(listener.recipe.mask), offered)
    kind, what = exchange(listener.port, client_hello(offered, fallback=True))
    if version is None:
        assert (kind, what) == ("alert", ALERT_PROTOCOL_VERSION)
    elif NAMES[version] == effective[-1]:  # the server's highest: a fallback is legitimate
        assert kind == "hello" and what[0] == version
    else:
        assert (kind, what) == ("alert", ALERT_INAPPROPRIATE_FALLBACK)


def test_openssl_s_client_fallback_is_refused(pki: Any) -> None:
    """The issue's own reproduction: `s_client -tls1_2 -fallback_scsv` against a
    TLS 1.2 + 1.3 listener must fail with inappropriate_fallback."""
    exe = shutil.which("openssl")
    if not exe:
        pytest.skip("no openssl command")
    with sslsock.Listener(0, "localhost", host="127.0.0.1",
                          options=O.ProtocolTLS1_2 | O.ProtocolTLS1_3) as lst:
        run = subprocess.run([exe, "s_client", "-connect", f"127.0.0.1:{lst.port}", "-tls1_2",
                              "-fallback_scsv"], input=b"", capture_output=True, timeout=20)
    assert run.returncode != 0
    assert b"inappropriate fallback" in run.stderr + run.stdout
