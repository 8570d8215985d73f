"""SPEC §3: the versions a socket negotiates are exactly the protocol bits given,
intersected with what the linked OpenSSL can do, for every one of the 64 protocol sets
and with each identification bit, on the server side and on the client side.

Peers are the stdlib ``ssl`` module (an independent OpenSSL user), each limited to exactly
one version at security level 0 so that legacy versions are possible on their side.  The
run writes the observed table to ``build/options-table.md``; ``docs/options-table.md`` is
that table for Debian's OpenSSL build and is checked against it (set
``SSLSOCK_WRITE_DOCS=1`` to regenerate it).

On a build that can do SSLv3 (scripts/ci-legacy.sh), with ``SSLSOCK_LEGACY_OPENSSL`` naming
that build's ``openssl`` command, the table gains an SSLv3 column: the stdlib's OpenSSL
cannot speak SSLv3, so that peer is ``openssl s_client -ssl3`` / ``s_server -ssl3``, and
the certificate is an RSA one (SSLv3 has no ECDSA or ECDHE suites).  That table is
``docs/options-table-legacy.md``.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sslsock
from sslsock import SSLOption as O
from sslsock._certs import generate as _certgen
from sslsock._core.binding import lib, openssl_versions
from sslsock._tls.options import ALL_BITS, PROTOCOL_BITS, recipe

ROOT = Path(__file__).resolve().parent.parent
BITS = [O.ProtocolSSL2, O.ProtocolSSL3, O.ProtocolTLS1, O.ProtocolTLS1_1, O.ProtocolTLS1_2,
        O.ProtocolTLS1_3]
NAMES = {O.ProtocolSSL2: "SSLv2", O.ProtocolSSL3: "SSLv3", O.ProtocolTLS1: "TLSv1",
         O.ProtocolTLS1_1: "TLSv1.1", O.ProtocolTLS1_2: "TLSv1.2", O.ProtocolTLS1_3: "TLSv1.3"}
PEER_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
TIMEOUT = 10.0
CORE_BITS = {"SSLv3": 0x01, "TLSv1": 0x02, "TLSv1.1": 0x04, "TLSv1.2": 0x08, "TLSv1.3": 0x10}


def _ssl3_peer() -> str | None:
    """The openssl command for the SSLv3 column, when this build and it can do SSLv3."""
    exe = os.environ.get("SSLSOCK_LEGACY_OPENSSL")
    if not exe or not lib.ss_versions_supported() & CORE_BITS["SSLv3"]:
        return None
    out = subprocess.run([exe, "s_client", "-help"], capture_output=True, text=True,
                         timeout=TIMEOUT)
    if "-ssl3" not in out.stdout + out.stderr:
        raise RuntimeError(f"SSLSOCK_LEGACY_OPENSSL={exe} cannot do SSLv3")
    return exe


SSL3_PEER = _ssl3_peer()
COLUMNS = (["SSLv3"] if SSL3_PEER else []) + list(PEER_VERSIONS)
# The SSLv3 column's sets exist only where that column can be filled (otherwise each of
# its two tests is one skip, not 128 and 64).
SSL3_SETS = range(64) if SSL3_PEER else range(0)


def eventually(read, expected, within: float = 3.0) -> bool:
    """True once read() == expected (polled), False if it never gets there in time."""
    deadline = time.monotonic() + within
    while read() != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def protocol_set(i: int) -> int:
    return sum(int(b) for k, b in enumerate(BITS) if i >> k & 1)


def mask_name(bits: int) -> str:
    return " + ".join(b.name for b in BITS if bits & b) or "(none: default protocols)"


def _pinned(ctx: ssl.SSLContext, version: str) -> ssl.SSLContext:
    with warnings.catch_warnings():  # the stdlib deprecates naming TLS 1.0/1.1
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = PEER_VERSIONS[version]
        ctx.maximum_version = PEER_VERSIONS[version]
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def stdlib_client(port: int, version: str, ca_file: Path) -> str | None:
    """Handshake limited to exactly `version`; the negotiated version, or None."""
    ctx = _pinned(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), version)
    ctx.load_verify_locations(str(ca_file))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.version()
    except (ssl.SSLError, OSError):
        return None


class PinnedServer:
    """A stdlib TLS server accepting exactly one version, one connection at a time."""

    def __init__(self, version: str, pki) -> None:
        self.ctx = _pinned(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), version)
        self.ctx.load_cert_chain(str(pki.server_cert_file), str(pki.server_key_file))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            raw.settimeout(TIMEOUT)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as s:
                    s.recv(1)  # until the client leaves
            except (ssl.SSLError, OSError):
                pass
            finally:
                raw.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def pinned_servers(pki):
    servers = {v: PinnedServer(v, pki) for v in PEER_VERSIONS}
    yield servers
    for s in servers.values():
        s.close()


@dataclass
class RSAServer:
    name: str
    sha1: str
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="module")
def rsa_server(pki) -> RSAServer:
    """An RSA certificate for localhost, signed by the test CA, in the store (SSLv3 only)."""
    if not SSL3_PEER:
        pytest.skip("no SSLv3 column on this build")
    from cryptography.hazmat.primitives import hashes

    leaf = _certgen.make_leaf(pki.ca, "localhost-rsa", hosts=["localhost", "127.0.0.1"],
                              key_type="rsa2048")
    leaf.write_pem(pki.store_dir / "localhost-rsa.pem")
    cert, key = leaf.write_pem(pki.dir / "localhost-rsa", split=True)
    return RSAServer("localhost-rsa", leaf.certificate.fingerprint(hashes.SHA1()).hex(),  # noqa: S303
                     cert, key)


def ssl3_client(port: int, ca_file: Path) -> str | None:
    """`openssl s_client -ssl3`: the negotiated version, or None."""
    assert SSL3_PEER
    out = subprocess.run(
        [SSL3_PEER, "s_client", "-connect", f"127.0.0.1:{port}", "-ssl3",
         "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", str(ca_file), "-verify_return_error"],
        input=b"", capture_output=True, timeout=TIMEOUT).stdout.decode(errors="replace")
    if "Cipher is (NONE)" in out:
        return None
    m = re.search(r"^\s*Protocol\s*:\s*(\S+)", out, re.M)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def ssl3_server(rsa_server: RSAServer,
                openssl_s_server: Callable[..., AbstractContextManager[int]]) -> Iterator[int]:
    """`openssl s_server -ssl3` of the legacy build."""
    assert SSL3_PEER
    with openssl_s_server(SSL3_PEER, rsa_server.cert_file, rsa_server.key_file, "-ssl3",
                          "-cipher", "DEFAULT@SECLEVEL=0", timeout=TIMEOUT) as port:
        yield port


RESULTS: dict[int, dict[str, object]] = {}


@pytest.mark.parametrize("ident", [O.CertificateName, O.CertificateHash], ids=["name", "hash"])
@pytest.mark.parametrize("index", range(64), ids=lambda i: f"set{i:02d}")
def test_server_negotiates_exactly_the_mask(pki, index: int, ident: O) -> None:
    bits = protocol_set(index)
    mask = bits | ident
    cert_id = "localhost" if ident is O.CertificateName else pki.server_sha1
    asked = {NAMES[b] for b in BITS if bits & b} if bits else {"TLSv1", "TLSv1.1", "TLSv1.2"}
    available = {v for v, bit in CORE_BITS.items() if lib.ss_versions_supported() & bit}
    expected = asked & available
    if not expected:  # creation fails, naming the versions and why
        with pytest.raises(sslsock.OptionsError, match="none of the protocol versions"):
            sslsock.Listener(0, cert_id, options=mask, host="127.0.0.1")
        RESULTS.setdefault(bits, {})["server"] = {v: None for v in PEER_VERSIONS}
        return
    rec = recipe(mask)
    assert set(rec.effective) == expected
    assert set(rec.dropped) == asked - expected
    listener = sslsock.Listener(0, cert_id, options=mask, host="127.0.0.1")
    with listener:
        assert set(listener.protocols) == expected
        with cf.ThreadPoolExecutor(4) as pool:
            got = dict(zip(PEER_VERSIONS, pool.map(
                lambda v: stdlib_client(listener.port, v, pki.ca_file), PEER_VERSIONS)))
        # drain the accepted connections so the listener closes cleanly
        while listener.wait(0):
            listener.accept(0).close()
        for version, negotiated in got.items():
            if version in expected:
                assert negotiated == version, f"{version} client refused by {mask_name(bits)}"
            else:
                assert negotiated is None, f"{version} client accepted by {mask_name(bits)}"
        refused = sum(1 for v in PEER_VERSIONS if v not in expected)
        # the client can see the alert before the server's handshake thread counts it
        assert eventually(lambda: (lambda st: st.failed_tls + st.failed_io)(listener.stats()),
                          refused)
    RESULTS.setdefault(bits, {})["server"] = got


@pytest.mark.skipif(not SSL3_PEER, reason="no SSLv3 column on this build")
@pytest.mark.parametrize("ident", [O.CertificateName, O.CertificateHash], ids=["name", "hash"])
@pytest.mark.parametrize("index", SSL3_SETS, ids=lambda i: f"set{i:02d}")
def test_server_ssl3_column(pki, rsa_server: RSAServer, index: int, ident: O) -> None:
    """The SSLv3 column, server side: `s_client -ssl3` completes iff the set has SSLv3."""
    bits = protocol_set(index)
    cert_id = rsa_server.name if ident is O.CertificateName else rsa_server.sha1
    try:
        effective = recipe(bits | ident).effective
    except sslsock.OptionsError:
        RESULTS.setdefault(bits, {})["server-ssl3"] = None
        return
    with sslsock.Listener(0, cert_id, options=bits | ident, host="127.0.0.1") as listener:
        got = ssl3_client(listener.port, pki.ca_file)
        while listener.wait(0):
            listener.accept(0).close()
    assert got == ("SSLv3" if "SSLv3" in effective else None), mask_name(bits)
    RESULTS.setdefault(bits, {})["server-ssl3"] = got


@pytest.mark.parametrize("index", range(64), ids=lambda i: f"set{i:02d}")
def test_client_negotiates_exactly_the_mask(pki, pinned_servers, index: int) -> None:
    bits = protocol_set(index)
    got: dict[str, str | None] = {}
    try:
        rec = recipe(bits)
    except sslsock.OptionsError:
        with pytest.raises(sslsock.OptionsError):
            sslsock.connect("localhost", pinned_servers["TLSv1.2"].port, options=bits)
        RESULTS.setdefault(bits, {})["client"] = {v: None for v in PEER_VERSIONS}
        return
    for version, server in pinned_servers.items():
        try:
            conn = sslsock.connect("localhost", server.port, options=bits, timeout=TIMEOUT)
        except sslsock.TLSError as e:
            got[version] = None
            assert version not in rec.effective, f"{version} server refused: {e}"
            continue
        with conn:
            got[version] = conn.protocol
        assert version in rec.effective, f"{version} server accepted by {mask_name(bits)}"
        assert got[version] == version
    RESULTS.setdefault(bits, {})["client"] = got


@pytest.mark.skipif(not SSL3_PEER, reason="no SSLv3 column on this build")
@pytest.mark.parametrize("index", SSL3_SETS, ids=lambda i: f"set{i:02d}")
def test_client_ssl3_column(ssl3_server: int, index: int) -> None:
    """The SSLv3 column, client side: an SSLv3-only server is reached iff the set has SSLv3."""
    bits = protocol_set(index)
    try:
        effective = recipe(bits).effective
    except sslsock.OptionsError:
        RESULTS.setdefault(bits, {})["client-ssl3"] = None
        return
    got: str | None
    try:
        with sslsock.connect("localhost", ssl3_server, options=bits, timeout=TIMEOUT) as conn:
            got = conn.protocol
    except sslsock.TLSError:
        got = None
    assert got == ("SSLv3" if "SSLv3" in effective else None), mask_name(bits)
    RESULTS.setdefault(bits, {})["client-ssl3"] = got


def test_no_available_version_fails_with_reasons(pki) -> None:
    for bits in (O.ProtocolSSL2, O.ProtocolSSL3, O.ProtocolSSL2 | O.ProtocolSSL3):
        if lib.ss_versions_supported() & 0x01 and bits & O.ProtocolSSL3:
            continue  # a legacy build can do SSLv3
        assert not sslsock.SocketCreateSSL("s", 0, "localhost", bits)
        msg = sslsock.ErrorInfo(sslsock.errMessage)
        assert "SSLv2" in msg or "SSLv3" in msg
        assert "removed" in msg or "built without" in msg
        assert sslsock.ErrorInfo(sslsock.errCode) == sslsock.ErrorCode.OPTIONS


def test_lost_versions_are_logged(pki, caplog) -> None:
    if lib.ss_versions_supported() & 0x01:
        pytest.skip("this build can do SSLv3")
    with caplog.at_level("WARNING", logger="sslsock"):
        with sslsock.Listener(0, "localhost", options=O.ProtocolSSL3 | O.ProtocolTLS1_2) as lst:
            assert lst.protocols == ("TLSv1.2",)
    assert "SSLv3" in caplog.text and "TLSv1.2" in caplog.text


def test_refused_client_gets_protocol_alert_and_server_goes_on(pki) -> None:
    with sslsock.Listener(0, "localhost", options=O.ProtocolTLS1_2) as lst:
        ctx = _pinned(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), "TLSv1.3")
        ctx.load_verify_locations(str(pki.ca_file))
        with socket.create_connection(("127.0.0.1", lst.port), timeout=TIMEOUT) as raw:
            with pytest.raises(ssl.SSLError, match="(?i)protocol.version"):
                ctx.wrap_socket(raw, server_hostname="localhost")
        assert stdlib_client(lst.port, "TLSv1.2", pki.ca_file) == "TLSv1.2"
        assert eventually(lambda: lst.stats().failed_tls, 1)


@given(st.integers(min_value=0, max_value=(1 << 20) - 1))
def test_mask_validation(mask: int) -> None:
    """Any integer: unknown bits and contradictions fail with the reason, else a recipe
    whose effective set is the requested one minus what the build lacks."""
    unknown = mask & ~int(ALL_BITS)
    both = mask & O.CertificateHash and mask & O.CertificateName
    try:
        rec = recipe(mask)
    except sslsock.OptionsError as e:
        if unknown:
            assert "unknown bits" in str(e)
        elif both:
            assert "CertificateHash and CertificateName" in str(e)
        else:
            assert "none of the protocol versions" in str(e)
        return
    assert not unknown and not both
    bits = mask & int(PROTOCOL_BITS) or int(O.ProtocolTLS1 | O.ProtocolTLS1_1 | O.ProtocolTLS1_2)
    assert set(rec.effective) | set(rec.dropped) == {NAMES[b] for b in BITS if bits & b}
    assert rec.by_hash == bool(mask & O.CertificateHash)
    assert "SSLv2" not in rec.effective


def test_write_table() -> None:
    """Runs last in this module: the observed table, and the docs copy checked against it."""
    sides = 4 if SSL3_PEER else 2
    if len(RESULTS) < 64 or any(len(r) < sides for r in RESULTS.values()):
        pytest.skip("the full matrix did not run (selected tests only)")
    compiled, linked = openssl_versions()
    supported = lib.ss_versions_supported()
    heads = " ".join({"SSLv3": "3", "TLSv1": "1.0"}.get(c, c.replace("TLSv", "")) for c in COLUMNS)
    lines = [
        "# What each SSL-options mask negotiates on this build",
        "",
        "Generated by `tests/test_options_matrix.py` from real handshakes: for each set of",
        "protocol bits (with `CertificateName` and with `CertificateHash`), an sslsock server",
        "against stdlib-ssl clients each limited to one version, and an sslsock client against",
        "stdlib-ssl servers each limited to one version. ✓ = handshake completed on that version,",
        "· = refused."
        + (" The SSLv3 column (3) is `openssl s_client -ssl3` / `s_server -ssl3` of this"
           " build, with an RSA certificate." if SSL3_PEER else ""),
        "",
        f"Build: {linked} (compiled against {compiled}); versions available: "
        + ", ".join(n for n, bit in (("SSLv3", 1), ("TLSv1", 2), ("TLSv1.1", 4),
                                     ("TLSv1.2", 8), ("TLSv1.3", 16)) if supported & bit)
        + f" (core bits {supported:#04x}).",
        "",
        "| protocol bits | effective set | server: " + heads + " | client: " + heads + " |",
        "|---|---|---|---|",
    ]
    for i in range(64):
        bits = protocol_set(i)
        try:
            effective = ", ".join(recipe(bits).effective)
        except sslsock.OptionsError:
            effective = "— (creation fails: no available version)"
        cells = []
        for side in ("server", "client"):
            got = dict(RESULTS[bits][side])  # type: ignore[call-overload]
            if SSL3_PEER:
                got["SSLv3"] = RESULTS[bits][side + "-ssl3"]
            cells.append(" ".join("✓" if got[v] else "·" for v in COLUMNS))
        lines.append(f"| {mask_name(bits)} | {effective} | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines) + "\n"
    out = ROOT / "build" / "options-table.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table)
    docs = ROOT / "docs" / ("options-table-legacy.md" if SSL3_PEER else "options-table.md")
    if os.environ.get("SSLSOCK_WRITE_DOCS") == "1":
        docs.write_text(table)
    elif docs.exists() and f"core bits {supported:#04x}" in docs.read_text():
        assert docs.read_text().split("Build:")[1].split("\n", 2)[2] == table.split("Build:")[1].split("\n", 2)[2], (
            f"docs/{docs.name} is stale: regenerate with SSLSOCK_WRITE_DOCS=1 "
            + ("scripts/ci-legacy.sh" if SSL3_PEER
               else ".venv/bin/python -m pytest tests/test_options_matrix.py"))
