"""Security levels and suites around legacy versions (docs/tls-versions.md)."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sslsock
from sslsock._certs import generate as _certgen


def _stdlib_server(cert: Path, key: Path, version: ssl.TLSVersion) -> tuple[socket.socket, int]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(str(cert), str(key))
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(10)

    def serve() -> None:
        try:
            raw, _ = sock.accept()
            with ctx.wrap_socket(raw, server_side=True) as s:
                s.recv(1)
        except (OSError, ssl.SSLError):
            pass

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_legacy_capable_client_holds_tls12_to_the_normal_level(tmp_path: Path, pki: Any) -> None:
    """Default options (TLS 1.0-1.2): the handshake runs at level 0, but a TLS 1.2 result
    with a 1024-bit RSA server key is refused, as with ProtocolTLS1_2 alone."""
    ca = _certgen.make_ca("weak test CA", key_type="rsa2048")
    weak = _certgen.make_leaf(ca, "localhost", key_type="rsa1024")
    cert, key = weak.write_pem(tmp_path / "weak", split=True)
    sock, port = _stdlib_server(cert, key, ssl.TLSVersion.TLSv1_2)
    with sock:
        with pytest.raises(sslsock.TLSError, match="EE certificate key too weak"):
            sslsock.connect("localhost", port, cafile_pem=ca.cert_pem(), timeout=10)


@pytest.mark.parametrize("options", [0, sslsock.ProtocolTLS1_2,
                                     sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3])
def test_a_weak_ca_is_refused_on_tls12_whatever_the_mask(tmp_path: Path, options: int) -> None:
    """A strong leaf under a 1024-bit RSA CA: the whole chain is checked at the level of the
    version negotiated (TLS 1.2: level 2), also when the mask allows legacy versions."""
    ca = _certgen.make_ca("weak test CA", key_type="rsa1024")
    leaf = _certgen.make_leaf(ca, "localhost", key_type="rsa2048")
    cert, key = leaf.write_pem(tmp_path / "leaf", split=True)
    sock, port = _stdlib_server(cert, key, ssl.TLSVersion.TLSv1_2)
    with sock:
        with pytest.raises(sslsock.TLSError, match="CA certificate key too weak"):
            sslsock.connect("localhost", port, options=options, cafile_pem=ca.cert_pem(),
                            timeout=10)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_a_weak_ca_still_serves_tls10_when_the_mask_asks_for_it(tmp_path: Path) -> None:
    """The same chain on TLS 1.0 is verified at the legacy level (0): accepted."""
    ca = _certgen.make_ca("weak test CA", key_type="rsa1024")
    leaf = _certgen.make_leaf(ca, "localhost", key_type="rsa2048")
    cert, key = leaf.write_pem(tmp_path / "leaf", split=True)
    sock, port = _stdlib_server(cert, key, ssl.TLSVersion.TLSv1)
    with sock:
        with sslsock.connect("localhost", port, cafile_pem=ca.cert_pem(), timeout=10) as c:
            assert c.protocol == "TLSv1"


def test_a_server_refuses_a_client_chain_too_weak_for_tls12(tmp_path: Path) -> None:
    """Mutual TLS with the default mask (legacy versions allowed): a TLS 1.2 client whose
    certificate comes from a 1024-bit RSA CA is refused."""
    server = _certgen.make_self_signed("localhost", key_type="ec")
    pem = tmp_path / "server.pem"
    server.write_pem(pem)
    ca = _certgen.make_ca("weak client CA", key_type="rsa1024")
    client = _certgen.make_leaf(ca, "client", key_type="rsa2048", client=True)
    ccert, ckey = client.write_pem(tmp_path / "client", split=True)
    with sslsock.Listener(0, str(pem), host="127.0.0.1",
                          options=sslsock.SSLClientCertificate,
                          client_ca_pem=ca.cert_pem()) as lst:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client may send the chain
        ctx.load_cert_chain(str(ccert), str(ckey))
        with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with ctx.wrap_socket(raw) as s:
                    s.recv(1)
        deadline = time.monotonic() + 3
        while lst.stats().failed_tls < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "too weak" in lst.stats().last_failure, lst.stats().last_failure


def test_dhe_suites_work_with_an_rsa_certificate(tmp_path: Path) -> None:
    rsa = _certgen.make_self_signed("localhost", key_type="rsa2048")
    pem = tmp_path / "rsa.pem"
    rsa.write_pem(pem)
    with sslsock.Listener(0, str(pem), options=sslsock.ProtocolTLS1_2, host="127.0.0.1") as lst:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("DHE-RSA-AES256-GCM-SHA384")
        with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                assert s.cipher()[0] == "DHE-RSA-AES256-GCM-SHA384"


def test_a_refused_version_is_explained_in_the_listener_stats(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", options=sslsock.ProtocolTLS1_2,
                          host="127.0.0.1") as lst:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw)
        deadline = time.monotonic() + 3
        while lst.stats().failed_tls < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        last = lst.stats().last_failure
        assert "the client offered TLSv1.3" in last, last
        assert "allow TLSv1.2" in last, last


def _legacy_client(maximum: ssl.TLSVersion, ciphers: str = "DEFAULT:@SECLEVEL=0") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = maximum
    ctx.set_ciphers(ciphers)
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext) -> tuple[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            version, cipher = s.version(), s.cipher()
    assert version and cipher
    return version, cipher[0]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_a_weak_certificate_serves_only_the_versions_it_can(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 1024-bit RSA certificate under the default options: TLS 1.2 is dropped with a
    warning (logged, and in the listener's recipe), so a TLS 1.2-capable client lands on
    TLS 1.1 instead of an internal_error alert."""
    weak = _certgen.make_self_signed("localhost", key_type="rsa1024")
    pem = tmp_path / "weak.pem"
    weak.write_pem(pem)
    with caplog.at_level("WARNING", logger="sslsock"):
        assert sslsock.SocketCreateSSL("weak", 0, str(pem))
    assert sslsock.SocketClientInfo("weak", sslsock.SocketProtocol) == "TLSv1,TLSv1.1"
    assert "80 bits of security" in caplog.text and "TLSv1.2" in caplog.text
    port = int(sslsock.SocketClientInfo("weak", sslsock.SocketPort))
    assert _handshake(port, _legacy_client(ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.1"


def test_a_weak_certificate_with_no_version_left_is_refused(tmp_path: Path) -> None:
    weak = _certgen.make_self_signed("localhost", key_type="rsa1024")
    pem = tmp_path / "weak.pem"
    weak.write_pem(pem)
    for options in (sslsock.ProtocolTLS1_2, sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3):
        with pytest.raises(sslsock.Error, match="too weak|bits of security"):
            sslsock.Listener(0, str(pem), host="127.0.0.1", options=options)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_legacy_connections_accept_rsa_key_exchange(tmp_path: Path) -> None:
    """A client limited to AES128-SHA (RSA key exchange, AES-CBC), as old Windows and Java
    clients are: served on TLS 1.0; on TLS 1.2 the same listener keeps its suites."""
    cert = _certgen.make_self_signed("localhost", key_type="rsa2048")
    pem = tmp_path / "rsa.pem"
    cert.write_pem(pem)
    with sslsock.Listener(0, str(pem), host="127.0.0.1") as lst:
        old = _legacy_client(ssl.TLSVersion.TLSv1, "AES128-SHA:@SECLEVEL=0")
        assert _handshake(lst.port, old) == ("TLSv1", "AES128-SHA")
        assert _handshake(lst.port, _legacy_client(ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"
        new = _legacy_client(ssl.TLSVersion.TLSv1_2, "AES128-SHA:@SECLEVEL=0")
        new.minimum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|handshake failure"):
            _handshake(lst.port, new)
