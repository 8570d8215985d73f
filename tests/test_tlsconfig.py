"""The TLS configuration unit (sslsock._tls.contexts): cached contexts, session resumption on
both sides, mutual TLS trusting only the store, and the alert of a failed handshake."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sslsock
from sslsock._certs import generate as _certgen

O = sslsock.SSLOption
VERSIONS = {"TLSv1.2": O.ProtocolTLS1_2, "TLSv1.3": O.ProtocolTLS1_3}


def _store_with(tmp_path: Path, *issued: tuple[str, _certgen.Issued]) -> sslsock.CertStore:
    d = tmp_path / "store"
    d.mkdir(mode=0o700, exist_ok=True)
    for name, cert in issued:
        cert.write_pem(d / f"{name}.pem")
    return sslsock.CertStore(d)


# ---- 1. contexts built once ------------------------------------------------------------


def test_connects_with_the_same_settings_share_one_context(pki: Any) -> None:
    from sslsock._tls import contexts as _tlsconfig

    store = sslsock.CertStore(pki.store_dir)
    rec = sslsock._tls.options.recipe(0)
    args: dict[str, Any] = dict(verify=True, store=store, cafile_pem=None,
                                client_certificate=None, password=None, resume=True,
                                load_identity=lambda: None)
    first = _tlsconfig.client_context(rec, **args)
    assert _tlsconfig.client_context(rec, **args) is first
    assert _tlsconfig.client_context(rec, **{**args, "verify": False}) is not first
    assert _tlsconfig.client_context(sslsock._tls.options.recipe(O.ProtocolTLS1_3), **args) \
        is not first


def test_a_store_change_is_seen_by_the_next_connect(tmp_path: Path) -> None:
    """A server whose CA enters the store after a first (refused) connect is trusted by the
    next connect: the cached context was rebuilt."""
    ca = _certgen.make_ca("later CA")
    server = _certgen.make_leaf(ca, "localhost", hosts=["localhost", "127.0.0.1"])
    pem = tmp_path / "server.pem"
    server.write_pem(pem)
    store = _store_with(tmp_path)
    with sslsock.Listener(0, str(pem), host="127.0.0.1") as lst:
        with pytest.raises(sslsock.VerificationError):
            sslsock.connect("127.0.0.1", lst.port, store=store, server_hostname="localhost",
                            timeout=10)
        (store.path / "later-ca.pem").write_bytes(ca.cert_pem())
        with sslsock.connect("127.0.0.1", lst.port, store=store, server_hostname="localhost",
                             timeout=10) as c:
            assert c.protocol
        (store.path / "later-ca.pem").unlink()
        with pytest.raises(sslsock.VerificationError):
            sslsock.connect("127.0.0.1", lst.port, store=store, server_hostname="localhost",
                            resume=False, timeout=10)


def test_a_verified_connect_costs_little_cpu(pki: Any) -> None:
    """The client's own CPU per verified TLS 1.3 connect (this thread only: the listener's
    handshakes run in its C threads).  Building a context and parsing the system's CA
    bundle per connect cost 58-82 ms; a cached context leaves the handshake (~2 ms)."""
    with sslsock.Listener(0, "localhost", host="127.0.0.1",
                          options=O.ProtocolTLS1_3) as lst:
        sslsock.connect("127.0.0.1", lst.port, server_hostname="localhost",
                        options=O.ProtocolTLS1_3, resume=False, timeout=10).close()
        n = 20
        start = time.thread_time()
        for _ in range(n):
            sslsock.connect("127.0.0.1", lst.port, server_hostname="localhost",
                            options=O.ProtocolTLS1_3, resume=False, timeout=10).close()
            lst.accept(10).close()
        per_connect_ms = (time.thread_time() - start) * 1000 / n
    assert per_connect_ms < 15, f"{per_connect_ms:.1f} ms of CPU per connect"


# ---- 2. sessions resume --------------------------------------------------------------


def _stdlib_client(pki: Any, version: str, cert: bool) -> ssl.SSLContext:
    ctx = pki.client_context()
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
    if cert:
        ctx.load_cert_chain(str(pki.client_cert_file), str(pki.client_key_file))
    return ctx


def _listener_stats(name: str) -> Any:
    from sslsock._faces.registry import REGISTRY

    return REGISTRY.get(name).obj.stats()  # type: ignore[union-attr]


@pytest.mark.parametrize("mtls", [False, True], ids=["server-auth", "mutual"])
@pytest.mark.parametrize("version,tickets", [("TLSv1.2", True), ("TLSv1.2", False),
                                             ("TLSv1.3", True)],
                         ids=["TLSv1.2-ticket", "TLSv1.2-session-id", "TLSv1.3-ticket"])
def test_the_server_resumes_stdlib_sessions(pki: Any, version: str, tickets: bool,
                                            mtls: bool) -> None:
    """A stdlib client reusing its session, through a ticket or (TLS 1.2 without tickets)
    the server's session cache: resumed (no 'session id context uninitialized' internal
    error), and a resumed mutual-TLS session still has the client's certificate, in
    SocketClientInfo too."""
    options = VERSIONS[version] | (O.SSLClientCertificate if mtls else 0)
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", options)
    port = int(sslsock.SocketClientInfo("srv", sslsock.SocketPort))
    ctx = _stdlib_client(pki, version, mtls)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    session = None
    for attempt in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                # (a TLS 1.3 server finishes after the client's Finished: wait for it, and
                # say what the listener saw if it never does)
                assert sslsock.SocketWaitForConnection("srv", 30), (
                    attempt, sslsock.ErrorInfo(), _listener_stats("srv"))
                channel = sslsock.SocketAccept("srv")
                assert sslsock.SocketWrite(channel, b"hi")
                s.recv(16)  # TLS 1.3: the tickets come before this record
                assert s.session_reused == (attempt == 1)
                resumed = sslsock.SocketClientInfo(channel, sslsock.SocketResumed)
                assert resumed == ("1" if attempt == 1 else "0")
                summary = sslsock.SocketClientInfo(channel, sslsock.SocketCertificate)
                if mtls:
                    assert "sslsock test client" in summary
                session = s.session
                sslsock.SocketClose(channel)


@pytest.fixture
def stdlib_server(pki: Any) -> Iterator[Any]:
    """A stdlib TLS server (tickets on, its own session cache) answering each connection
    with one line, for both versions; yields a function version -> port."""
    servers = []

    def start(version: str) -> int:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
        ctx.load_cert_chain(str(pki.server_cert_file), str(pki.server_key_file))
        sock = socket.create_server(("127.0.0.1", 0))
        sock.settimeout(0.2)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    raw, _ = sock.accept()
                except OSError:
                    continue
                try:
                    raw.settimeout(10)
                    with ctx.wrap_socket(raw, server_side=True) as s:
                        s.sendall(b"5\r\nhello")
                        s.recv(1)
                except (OSError, ssl.SSLError):
                    pass

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        servers.append((sock, stop, t))
        return int(sock.getsockname()[1])

    yield start
    for sock, stop, t in servers:
        stop.set()
        t.join(5)
        sock.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_the_client_resumes_by_default(pki: Any, stdlib_server: Any, version: str) -> None:
    port = stdlib_server(version)
    got = []
    for _ in range(3):
        assert sslsock.SocketConnectSSL("cli", port, "localhost", VERSIONS[version])
        assert sslsock.SocketRead("cli", False, 10_000) == b"hello"  # TLS 1.3: tickets read with it
        got.append(sslsock.SocketClientInfo("cli", sslsock.SocketResumed))
        sslsock.SocketClose("cli")
    assert got == ["0", "1", "1"]
    with sslsock.connect("localhost", port, options=VERSIONS[version], resume=False,
                         timeout=10) as c:
        assert c.read(10) == b"hello"
        assert not c.resumed


def test_a_session_is_only_offered_to_the_server_it_came_from(pki: Any,
                                                               stdlib_server: Any) -> None:
    first, second = stdlib_server("TLSv1.2"), stdlib_server("TLSv1.2")
    for port, expected in ((first, False), (second, False), (first, True), (second, True)):
        with sslsock.connect("localhost", port, options=O.ProtocolTLS1_2, timeout=10) as c:
            c.read(10)
            assert c.resumed is expected, port


# ---- 6. the alert of a failed handshake reaches the client ---------------------------


def test_a_failed_handshake_alert_is_not_lost_to_a_reset(pki: Any) -> None:
    """Mutual TLS, a client without a certificate that sends data right after its
    Finished (TLS 1.3 lets it): the server fails the handshake with unread data.  A plain
    close() would reset the connection and the client's write fails before it can read
    the alert; the server must shut down its side and drain instead."""
    results = []
    with sslsock.Listener(0, "localhost", host="127.0.0.1",
                          options=O.ProtocolTLS1_3 | O.SSLClientCertificate) as lst:
        ctx = pki.client_context()
        for _ in range(8):
            with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
                try:
                    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                        s.sendall(b"x" * 300_000)
                        s.recv(1)
                    results.append("no error")
                except ssl.SSLError as exc:
                    results.append(exc.reason or type(exc).__name__)
                except OSError as exc:
                    results.append(type(exc).__name__)
    assert results == ["TLSV13_ALERT_CERTIFICATE_REQUIRED"] * 8


# ---- 8. mutual TLS trusts the store, not the system ----------------------------------

_MTLS_PROBE = r"""
import json, socket, ssl, sys, time
import sslsock
server_pem, client_cert, client_key, options = sys.argv[1:5]
with sslsock.Listener(0, server_pem, host="127.0.0.1", options=int(options),
                      store=sslsock.CertStore(sys.argv[5])) as lst:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(client_cert, client_key)
    try:
        with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                conn = lst.accept(10)
                conn.write(b"ok")
                s.recv(16)
                who = conn.peer_certificate().subject.rfc4514_string()
        print(json.dumps({"accepted": True, "client": who}))
    except (OSError, ssl.SSLError, sslsock.Error) as exc:
        deadline = time.monotonic() + 10  # the alert can reach us before the stats move
        while lst.stats().failed_tls < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps({"accepted": False, "error": str(exc),
                          "server": lst.stats().last_failure}))
"""


@pytest.mark.parametrize("option", [0, 0x4000], ids=["default", "system-CA"])
def test_mutual_tls_trusts_the_system_authorities_only_on_request(tmp_path: Path,
                                                                 option: int) -> None:
    """A client certificate from a CA that is 'in the system trust store' (SSL_CERT_FILE
    of the server's process) but not in the server's store: refused by default, accepted
    with SSLClientSystemCA."""
    public_ca = _certgen.make_ca("public CA in the system bundle")
    bundle = tmp_path / "system-bundle.pem"
    bundle.write_bytes(public_ca.cert_pem())
    stranger = _certgen.make_leaf(public_ca, "stranger", hosts=["stranger.test"], client=True)
    ccert, ckey = stranger.write_pem(tmp_path / "stranger", split=True)
    server = _certgen.make_self_signed("localhost")
    store = _store_with(tmp_path, ("server", server))
    env = {**os.environ, "SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(tmp_path / "none")}
    run = subprocess.run(
        [sys.executable, "-c", _MTLS_PROBE, str(store.path / "server.pem"), str(ccert),
         str(ckey), str(int(O.SSLClientCertificate | option)), str(store.path)],
        env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    if option:
        assert result == {"accepted": True, "client": "CN=stranger"}
    else:
        assert not result["accepted"]
        assert "did not verify" in result["server"], result
