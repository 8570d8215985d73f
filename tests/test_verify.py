"""Certificate verification (SPEC §4): the client checks the server, mutual TLS, and the
certificate-store errors SocketCreateSSL reports.

Servers whose certificate the store would refuse to serve (self-signed unknown, expired,
wrong host) are stdlib ``ssl`` servers in a thread; everything runs on 127.0.0.1.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

import sslsock
from sslsock._certs import generate as _certgen
from sslsock._faces.registry import REGISTRY

LOOPBACK = "127.0.0.1"
WAIT_MS = 10_000
PEER_TIMEOUT = 10.0
UTC = datetime.timezone.utc
VERSIONS = {"TLSv1.2": sslsock.ProtocolTLS1_2, "TLSv1.3": sslsock.ProtocolTLS1_3}
MODERN = sslsock.ProtocolTLS1_2 + sslsock.ProtocolTLS1_3
REFERENCE_HASH = "9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 of 24"


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


def port_of(name: str) -> int:
    return REGISTRY.get(name).obj.port


def code() -> int:
    return int(sslsock.ErrorInfo(sslsock.errCode))


def thumbprint(cert: Any) -> str:
    h = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - certmgr's thumbprint
    return " ".join(h[i:i + 2] for i in range(0, len(h), 2))


def write_split(issued: _certgen.Issued, where: Path) -> tuple[str, str]:
    cert, key = issued.write_pem(where, split=True)
    return str(cert), str(key)


class StdlibServer:
    """A one-connection stdlib TLS server in a thread: it sends one framed message.
    Whatever happens to its handshake is kept in `outcome` (the client may refuse it)."""

    def __init__(self, pool: Any, tmp: Path, issued: _certgen.Issued) -> None:
        cert, key = write_split(issued, tmp / "server")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server((LOOPBACK, 0))
        self.sock.settimeout(PEER_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.future = pool.submit(self._run)

    def _run(self) -> str:
        with self.sock:
            conn, _ = self.sock.accept()
        conn.settimeout(PEER_TIMEOUT)
        with conn:
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"2\r\nhi")
                    try:
                        tls.recv(1)  # until the client leaves
                    except (ssl.SSLError, OSError):
                        pass
                    return "ok"
            except (ssl.SSLError, OSError) as e:
                return f"handshake failed: {e}"

    def outcome(self) -> str:
        return self.future.result(timeout=PEER_TIMEOUT)


def expect_verify_failure(port: int, address: str, *reasons: str) -> None:
    assert sslsock.SocketConnectSSL("cli", port, address, timeout=WAIT_MS) is False
    assert code() == sslsock.ErrorCode.VERIFY, sslsock.ErrorInfo()
    system = str(sslsock.ErrorInfo(sslsock.errSystemMessage)).lower()
    assert any(r in system for r in reasons), system
    assert system in str(sslsock.ErrorInfo()).lower()  # errFullDetails shows it too
    assert not sslsock.SocketExist("cli")  # (a call that succeeds: it clears ErrorInfo)


# --- the client verifies the server ---------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(VERSIONS))
@pytest.mark.parametrize("address", [LOOPBACK, "localhost"])
def test_server_signed_by_the_stores_ca_is_accepted(pki: Any, protocol: str,
                                                    address: str) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN)
    assert sslsock.SocketConnectSSL("cli", port_of("srv"), address, VERSIONS[protocol],
                                    WAIT_MS), sslsock.ErrorInfo()
    assert sslsock.SocketWaitForConnection("srv", WAIT_MS)
    ch = sslsock.SocketAccept("srv")
    assert sslsock.SocketWrite(ch, b"verified")
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b"verified"
    assert sslsock.SocketClientInfo("cli", sslsock.SocketProtocol) == protocol
    info = sslsock.SocketClientInfo("cli", sslsock.SocketCertificate)
    assert "CN=localhost" in info and "CN=sslsock test CA" in info
    assert thumbprint(pki.server.certificate) in info.lower()
    # no client certificate was asked for
    assert sslsock.SocketClientInfo(ch, sslsock.SocketCertificate) == ""


def test_self_signed_server_not_in_store_is_refused(pki: Any, pool: Any, tmp_path: Path) -> None:
    server = StdlibServer(pool, tmp_path, _certgen.make_self_signed("localhost"))
    expect_verify_failure(server.port, LOOPBACK, "self-signed", "self signed")
    assert "handshake failed" in server.outcome()


def test_server_with_another_host_name_is_refused(pki: Any, pool: Any, tmp_path: Path) -> None:
    other = _certgen.make_leaf(pki.ca, "other.example", hosts=["other.example"])
    server = StdlibServer(pool, tmp_path, other)
    expect_verify_failure(server.port, "localhost", "hostname mismatch")
    assert "handshake failed" in server.outcome()


def test_server_with_another_ip_is_refused(pki: Any, pool: Any, tmp_path: Path) -> None:
    other = _certgen.make_leaf(pki.ca, "other", hosts=["other.example", "10.9.8.7"])
    server = StdlibServer(pool, tmp_path, other)
    expect_verify_failure(server.port, LOOPBACK, "ip address mismatch", "mismatch")
    assert "handshake failed" in server.outcome()


def test_expired_server_certificate_is_refused(pki: Any, pool: Any, tmp_path: Path) -> None:
    now = datetime.datetime.now(UTC)
    expired = _certgen.make_leaf(pki.ca, "localhost", not_before=now - datetime.timedelta(days=30),
                                 not_after=now - datetime.timedelta(days=1))
    server = StdlibServer(pool, tmp_path, expired)
    expect_verify_failure(server.port, LOOPBACK, "expired")
    assert "handshake failed" in server.outcome()


def test_not_yet_valid_server_certificate_is_refused(pki: Any, pool: Any,
                                                     tmp_path: Path) -> None:
    now = datetime.datetime.now(UTC)
    future = _certgen.make_leaf(pki.ca, "localhost", not_before=now + datetime.timedelta(days=2))
    server = StdlibServer(pool, tmp_path, future)
    expect_verify_failure(server.port, LOOPBACK, "not yet valid")
    assert "handshake failed" in server.outcome()


def test_no_verify_option_connects_anyway(pki: Any, pool: Any, tmp_path: Path) -> None:
    server = StdlibServer(pool, tmp_path, _certgen.make_self_signed("somewhere.else",
                                                                    hosts=["somewhere.else"]))
    assert sslsock.SocketConnectSSL("cli", server.port, LOOPBACK,
                                    sslsock.ProtocolTLS1_2 + sslsock.SSLNoVerify, WAIT_MS), \
        sslsock.ErrorInfo()
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b"hi"
    assert "CN=somewhere.else" in sslsock.SocketClientInfo("cli", sslsock.SocketCertificate)
    assert sslsock.SocketClose("cli")
    assert server.outcome() == "ok"


def test_self_signed_server_in_the_store_is_trusted(pki: Any, pool: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's certificates are trust anchors for the client (SPEC §4 client side)."""
    dev = _certgen.make_self_signed("localhost")
    store = tmp_path / "store"
    store.mkdir()
    (store / "dev.crt").write_bytes(dev.cert_pem())
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(store))
    server = StdlibServer(pool, tmp_path, dev)
    assert sslsock.SocketConnectSSL("cli", server.port, LOOPBACK, timeout=WAIT_MS), \
        sslsock.ErrorInfo()
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b"hi"
    assert sslsock.SocketClose("cli")
    assert server.outcome() == "ok"


# --- mutual TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_mutual_tls_client_certificate_accepted(pki: Any, protocol: str) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN + sslsock.SSLClientCertificate)
    assert sslsock.SocketConnectSSL("cli", port_of("srv"), LOOPBACK, VERSIONS[protocol],
                                    WAIT_MS, client_cert="sslsock test client"), \
        sslsock.ErrorInfo()
    assert sslsock.SocketWaitForConnection("srv", WAIT_MS), sslsock.ErrorInfo()
    ch = sslsock.SocketAccept("srv")
    info = sslsock.SocketClientInfo(ch, sslsock.SocketCertificate)
    assert "CN=sslsock test client" in info
    assert thumbprint(pki.client.certificate) in info.lower()
    assert sslsock.SocketClientInfo(ch, sslsock.SocketProtocol) == protocol
    assert sslsock.SocketWrite("cli", b"it is me")
    assert sslsock.SocketRead(ch, False, WAIT_MS) == b"it is me"


@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_mutual_tls_client_without_certificate_refused(pki: Any, protocol: str) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN + sslsock.SSLClientCertificate)
    connected = sslsock.SocketConnectSSL("cli", port_of("srv"), LOOPBACK, VERSIONS[protocol],
                                         WAIT_MS)
    if connected:
        # TLS 1.3: the client finishes its handshake before the server checks; the
        # server's alert arrives with the first read
        assert protocol == "TLSv1.3"
        assert sslsock.SocketRead("cli", False, WAIT_MS) == b""
        assert code() == sslsock.ErrorCode.TLS
        assert "certificate" in str(sslsock.ErrorInfo(sslsock.errSystemMessage)).lower()
    else:
        assert code() == sslsock.ErrorCode.TLS, sslsock.ErrorInfo()
    assert not sslsock.SocketWaitForConnection("srv", 300)
    lst = REGISTRY.get("srv").obj
    deadline = time.monotonic() + PEER_TIMEOUT
    while lst.stats().failed_tls < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = lst.stats()
    assert stats.failed_tls == 1 and stats.handshakes == 0
    assert "certificate" in stats.last_failure


def test_mutual_tls_client_with_unknown_certificate_refused(pki: Any, pool: Any,
                                                            tmp_path: Path) -> None:
    stranger = _certgen.make_self_signed("stranger", hosts=["stranger.test"], client=True)
    cert, key = write_split(stranger, tmp_path / "stranger")
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN + sslsock.SSLClientCertificate)
    port = port_of("srv")

    def client() -> str:
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        ctx.load_cert_chain(cert, key)
        try:
            with socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"2\r\nhi")
                    return repr(tls.recv(10))
        except (ssl.SSLError, OSError) as e:
            return f"refused: {e}"

    assert "refused" in pool.submit(client).result(timeout=PEER_TIMEOUT)
    assert not sslsock.SocketWaitForConnection("srv", 300)
    assert REGISTRY.get("srv").obj.stats().handshakes == 0


# --- certificate-store errors through SocketCreateSSL -------------------------------------------


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty store directory the named face uses for the length of one test."""
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(path))
    return path


@pytest.fixture(scope="module")
def other_ca() -> _certgen.Issued:
    return _certgen.make_ca("store test CA")


def create_fails(cert_id: str, options: int = sslsock.DEFAULT) -> str:
    assert sslsock.SocketCreateSSL("srv", 0, cert_id, options) is False
    assert sslsock.ErrorOccurred()
    assert "srv" not in REGISTRY.names()  # (not SocketExist: it would clear ErrorInfo)
    return str(sslsock.ErrorInfo(sslsock.errMessage))


def test_store_good_certificate_by_name_and_hash(store: Path, other_ca: Any) -> None:
    good = _certgen.make_leaf(other_ca, "good server")
    good.write_pem(store / "good.pem")
    assert sslsock.SocketCreateSSL("srv", 0, "good server"), sslsock.ErrorInfo()
    assert sslsock.SocketClose("srv")
    shown = thumbprint(good.certificate).upper()  # spaces and case ignored
    assert sslsock.SocketCreateSSL("srv", 0, shown, sslsock.CertificateHash), sslsock.ErrorInfo()
    assert sslsock.SocketClientInfo("srv", sslsock.SocketProtocol) == "TLSv1,TLSv1.1,TLSv1.2"


def test_store_unknown_name(store: Path, other_ca: Any) -> None:
    _certgen.make_leaf(other_ca, "present").write_pem(store / "present.pem")
    msg = create_fails("absent")
    assert code() == sslsock.ErrorCode.CERTIFICATE
    assert "absent" in msg
    assert str(store) in msg  # says where it looked
    assert "present.pem" in msg


def test_store_reference_hash_with_typo(store: Path) -> None:
    msg = create_fails(REFERENCE_HASH, sslsock.CertificateHash)
    assert code() == sslsock.ErrorCode.CERTIFICATE
    assert "'o'" in msg
    assert "of" in msg and "0f" in msg


@pytest.mark.parametrize("digits", ["9da484", "9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45"])
def test_store_hash_of_wrong_length(store: Path, digits: str) -> None:
    msg = create_fails(digits, sslsock.CertificateHash)
    n = len(digits.replace(" ", ""))
    assert str(n) in msg and "40" in msg


def test_store_certificate_without_key(store: Path, other_ca: Any) -> None:
    lonely = _certgen.make_leaf(other_ca, "lonely")
    (store / "lonely.crt").write_bytes(lonely.cert_pem())
    msg = create_fails("lonely")
    assert "lonely" in msg and "private key" in msg


def test_store_key_that_does_not_match(store: Path, other_ca: Any) -> None:
    cert = _certgen.make_leaf(other_ca, "mismatch")
    stranger = _certgen.make_leaf(other_ca, "stranger")
    (store / "mismatch.crt").write_bytes(cert.cert_pem())
    key = store / "mismatch.key"
    key.write_bytes(stranger.key_pem())
    os.chmod(key, 0o600)
    msg = create_fails("mismatch")
    assert "does not match" in msg
    assert thumbprint(cert.certificate) in msg.lower()


def test_store_expired_certificate(store: Path, other_ca: Any) -> None:
    now = datetime.datetime.now(UTC)
    old = _certgen.make_leaf(other_ca, "old", not_before=now - datetime.timedelta(days=60),
                             not_after=now - datetime.timedelta(days=2))
    old.write_pem(store / "old.pem")
    msg = create_fails("old")
    assert "expired" in msg
    assert old.certificate.not_valid_after_utc.strftime("%Y-%m-%d") in msg


def test_store_not_yet_valid_certificate(store: Path, other_ca: Any) -> None:
    now = datetime.datetime.now(UTC)
    early = _certgen.make_leaf(other_ca, "early", not_before=now + datetime.timedelta(days=3))
    early.write_pem(store / "early.pem")
    msg = create_fails("early")
    assert "not valid before" in msg or "not yet valid" in msg, msg


def test_store_hash_and_name_together(store: Path, other_ca: Any) -> None:
    _certgen.make_leaf(other_ca, "good").write_pem(store / "good.pem")
    msg = create_fails("good", sslsock.CertificateHash + sslsock.CertificateName)
    assert code() == sslsock.ErrorCode.OPTIONS
    assert "CertificateHash" in msg and "CertificateName" in msg


def test_store_empty_certificate_id(store: Path) -> None:
    msg = create_fails("")
    assert "certificate" in msg


def test_store_several_matches(store: Path, other_ca: Any) -> None:
    _certgen.make_leaf(other_ca, "twin").write_pem(store / "a.pem")
    _certgen.make_leaf(other_ca, "twin").write_pem(store / "b.pem")
    msg = create_fails("twin")
    assert "ambiguous" in msg and "a.pem" in msg and "b.pem" in msg


def test_store_encrypted_key(store: Path, other_ca: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _certgen.make_leaf(other_ca, "locked").write_pem(store / "locked.pem", password=b"s3cret")
    monkeypatch.delenv("SSLSOCK_CERT_PASSWORD", raising=False)
    msg = create_fails("locked")
    assert "encrypted" in msg and "SSLSOCK_CERT_PASSWORD" in msg
    monkeypatch.setenv("SSLSOCK_CERT_PASSWORD", "wrong")
    msg = create_fails("locked")
    assert "password" in msg
    monkeypatch.setenv("SSLSOCK_CERT_PASSWORD", "s3cret")
    assert sslsock.SocketCreateSSL("srv", 0, "locked"), sslsock.ErrorInfo()
