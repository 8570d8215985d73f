"""Interoperability with independent TLS peers (SPEC §2, §3).

sslsock as a server (named face) against the stdlib ``ssl`` module, ``openssl s_client``
and pyOpenSSL (which carries its own OpenSSL); sslsock as a client against the stdlib
``ssl`` server, ``openssl s_server`` and a pyOpenSSL server.  Every exchange runs on
TLS 1.2 and TLS 1.3, on 127.0.0.1 only, and every wait is bounded.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import time
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import hashes

import sslsock
from sslsock._faces.registry import REGISTRY

OpenSSL_SSL = pytest.importorskip("OpenSSL.SSL")

LOOPBACK = "127.0.0.1"
WAIT_MS = 10_000  # generous bound for a peer to show up on a loaded 2-core machine
PEER_TIMEOUT = 10.0  # seconds: every blocking call of a peer gives up after this

VERSIONS = {
    "TLSv1.2": (ssl.TLSVersion.TLSv1_2, sslsock.ProtocolTLS1_2, "-tls1_2"),
    "TLSv1.3": (ssl.TLSVersion.TLSv1_3, sslsock.ProtocolTLS1_3, "-tls1_3"),
}
PY_VERSIONS = {"TLSv1.2": OpenSSL_SSL.TLS1_2_VERSION, "TLSv1.3": OpenSSL_SSL.TLS1_3_VERSION}
MODERN = sslsock.ProtocolTLS1_2 + sslsock.ProtocolTLS1_3

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl command is not installed")


# --- helpers ------------------------------------------------------------------------------


def port_of(name: str) -> int:
    """The port a named listener actually bound (it was created with port 0)."""
    return REGISTRY.get(name).obj.port


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """Threads for the peers; their own time-outs bound them, so shutdown cannot hang."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        yield ex


def legacy_client_context(pki: Any, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A stdlib client pinned to exactly `version`, at security level 0 (TLS 1.0/1.1 need
    it under OpenSSL 3), trusting the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.ca_file))
    with warnings.catch_warnings():  # ssl.TLSVersion.TLSv1/TLSv1_1 are deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def stdlib_exchange(ctx: ssl.SSLContext, port: int, send: bytes, expect_len: int) -> dict:
    """Connect, send `send`, read `expect_len` bytes; report what the client saw."""
    with socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(send)
            got = recv_exact(tls, expect_len)
            return {"got": got, "version": tls.version(), "cipher": tls.cipher()[0],
                    "local_port": tls.getsockname()[1]}


def recv_exact(sock: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def bounded_socket(port: int) -> socket.socket:
    """A blocking socket whose kernel-level time-outs bound every recv/send (pyOpenSSL
    needs a blocking socket; SO_RCVTIMEO keeps it from waiting for ever)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT)
    sock.settimeout(None)
    set_kernel_timeouts(sock)
    return sock


def set_kernel_timeouts(sock: socket.socket) -> None:
    tv = struct.pack("ll", int(PEER_TIMEOUT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def pyopenssl_recv_exact(conn: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        buf += conn.recv(n - len(buf))
    return bytes(buf)


def accept_one(listener: str) -> str:
    assert sslsock.SocketWaitForConnection(listener, WAIT_MS), sslsock.ErrorInfo()
    channel = sslsock.SocketAccept(listener)
    assert channel, sslsock.ErrorInfo()
    return channel


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def is_listening(port: int) -> bool:
    """Whether something listens on `port`, read from /proc (no connection is made, so a
    one-shot server such as `s_server -naccept 1` is not used up by the probe)."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_until(cond: Callable[[], bool], timeout: float = PEER_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def read_fd_until(fd: int, n: int, timeout: float = PEER_TIMEOUT) -> bytes:
    """Read at least `n` bytes from a pipe, giving up after `timeout` seconds."""
    buf = b""
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def stop(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    try:
        return proc.communicate(timeout=PEER_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def certmgr_thumbprint(cert: Any) -> str:
    """What certmgr.msc shows: SHA-1 of the DER certificate, hex pairs separated by spaces."""
    h = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - certmgr's thumbprint
    return " ".join(h[i:i + 2] for i in range(0, len(h), 2))


def channel_info(channel: str) -> dict:
    """SocketClientInfo while the client is still connected (once it has left, every
    answer is "" with PEER_CLOSED)."""
    return {what: sslsock.SocketClientInfo(channel, what)
            for what in (sslsock.SocketAddress, sslsock.SocketPort, sslsock.SocketProtocol,
                         sslsock.SocketCipher)}


def check_channel_info(info: dict, client: dict, protocol: str) -> None:
    assert info[sslsock.SocketAddress] == LOOPBACK
    assert info[sslsock.SocketPort] == str(client["local_port"])
    assert info[sslsock.SocketProtocol] == protocol
    cipher = info[sslsock.SocketCipher]
    assert cipher and cipher == client["cipher"]


def check_client_info(name: str, pki: Any, port: int, protocol: str) -> None:
    assert sslsock.SocketClientInfo(name, sslsock.SocketAddress) == LOOPBACK
    assert sslsock.SocketClientInfo(name, sslsock.SocketPort) == str(port)
    assert sslsock.SocketClientInfo(name, sslsock.SocketProtocol) == protocol
    assert sslsock.SocketClientInfo(name, sslsock.SocketCipher)
    cert = sslsock.SocketClientInfo(name, sslsock.SocketCertificate)
    assert "CN=localhost" in cert
    assert certmgr_thumbprint(pki.server.certificate).lower() in cert.lower()


# --- sslsock server, independent clients ----------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_server_with_stdlib_client(pki: Any, pool: Any, protocol: str) -> None:
    std_version, _, _ = VERSIONS[protocol]
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN), sslsock.ErrorInfo()
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ctx.maximum_version = std_version
    reply = b"HELLO WORLD"
    fut = pool.submit(stdlib_exchange, ctx, port_of("srv"), b"11\r\nhello world",
                      len(b"11\r\n" + reply))
    channel = accept_one("srv")
    assert sslsock.SocketRead(channel, False, WAIT_MS) == b"hello world", sslsock.ErrorInfo()
    info = channel_info(channel)  # the client waits for its reply
    assert sslsock.SocketWrite(channel, reply)
    client = fut.result(timeout=PEER_TIMEOUT)
    assert client["got"] == b"11\r\nHELLO WORLD"
    assert client["version"] == protocol
    check_channel_info(info, client, protocol)
    assert sslsock.SocketClose(channel)


@needs_openssl
@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_server_with_openssl_s_client(pki: Any, protocol: str) -> None:
    _, _, flag = VERSIONS[protocol]
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN), sslsock.ErrorInfo()
    # -quiet implies -ign_eof: s_client keeps the connection after its stdin ends and
    # exits when the server closes, after printing everything it received.
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port_of('srv')}", flag,
         "-CAfile", str(pki.ca_file), "-verify_return_error", "-verify_hostname", "localhost",
         "-servername", "localhost", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"11\r\nhello world")
        proc.stdin.flush()
        channel = accept_one("srv")
        assert sslsock.SocketRead(channel, False, WAIT_MS) == b"hello world", sslsock.ErrorInfo()
        assert sslsock.SocketClientInfo(channel, sslsock.SocketProtocol) == protocol
        assert sslsock.SocketWrite(channel, b"hello world")
        assert sslsock.SocketClose(channel)  # close_notify: s_client leaves
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert out == b"11\r\nhello world"
    assert b"verify return:1" in err


@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_server_with_pyopenssl_client(pki: Any, pool: Any, protocol: str) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN), sslsock.ErrorInfo()
    port = port_of("srv")

    def client() -> dict:
        SSL = OpenSSL_SSL
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(PY_VERSIONS[protocol])
        ctx.set_max_proto_version(PY_VERSIONS[protocol])
        ctx.load_verify_locations(str(pki.ca_file))
        ctx.set_verify(SSL.VERIFY_PEER)
        sock = bounded_socket(port)
        try:
            conn = SSL.Connection(ctx, sock)
            conn.set_tlsext_host_name(b"localhost")
            conn.set_connect_state()
            conn.do_handshake()
            conn.sendall(b"5\r\nhello")
            got = pyopenssl_recv_exact(conn, len(b"6\r\nhello!"))
            result = {"got": got, "version": conn.get_protocol_version_name(),
                      "cipher": conn.get_cipher_name(), "local_port": sock.getsockname()[1]}
            conn.shutdown()
            return result
        finally:
            sock.close()

    fut = pool.submit(client)
    channel = accept_one("srv")
    msg = sslsock.SocketRead(channel, False, WAIT_MS)
    assert msg == b"hello", sslsock.ErrorInfo()
    info = channel_info(channel)  # the client waits for its reply
    assert sslsock.SocketWrite(channel, msg + b"!")
    result = fut.result(timeout=PEER_TIMEOUT)
    assert result["got"] == b"6\r\nhello!"
    assert result["version"] == protocol
    check_channel_info(info, result, protocol)
    # the client sent close_notify and left: a clean end, b"" with PEER_CLOSED
    assert sslsock.SocketRead(channel, False, WAIT_MS) == b""
    assert sslsock.ErrorInfo(sslsock.errCode) == sslsock.ErrorCode.PEER_CLOSED


# --- sslsock client, independent servers ----------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_client_with_stdlib_server(pki: Any, pool: Any, protocol: str) -> None:
    std_version, _, _ = VERSIONS[protocol]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_cert_file), str(pki.server_key_file))
    ctx.minimum_version = ctx.maximum_version = std_version
    lsock = socket.create_server((LOOPBACK, 0))
    lsock.settimeout(PEER_TIMEOUT)
    port = lsock.getsockname()[1]

    def server() -> bytes:
        with lsock:
            conn, _ = lsock.accept()
            conn.settimeout(PEER_TIMEOUT)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                got = recv_exact(tls, len(b"11\r\nhello world"))
                tls.sendall(b"5\r\nreply")
                return got

    fut = pool.submit(server)
    # the store (SSLSOCK_CERT_STORE) holds the test CA: the server's certificate verifies
    assert sslsock.SocketConnectSSL("c", port, LOOPBACK, MODERN, WAIT_MS), sslsock.ErrorInfo()
    check_client_info("c", pki, port, protocol)  # while the server is there (it waits)
    assert sslsock.SocketWrite("c", b"hello world")
    assert sslsock.SocketRead("c", False, WAIT_MS) == b"reply", sslsock.ErrorInfo()
    assert fut.result(timeout=PEER_TIMEOUT) == b"11\r\nhello world"
    assert sslsock.SocketClose("c")


@needs_openssl
@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_client_with_openssl_s_server(pki: Any, protocol: str) -> None:
    _, bit, flag = VERSIONS[protocol]
    port = free_port()
    # s_server prints what it receives on stdout and sends what it reads on stdin.
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{LOOPBACK}:{port}", flag,
         "-cert", str(pki.server_cert_file), "-key", str(pki.server_key_file),
         "-naccept", "1", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: is_listening(port) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert sslsock.SocketConnectSSL("c", port, LOOPBACK, bit, WAIT_MS), sslsock.ErrorInfo()
        assert sslsock.SocketWrite("c", b"hello world")
        assert proc.stdout is not None and proc.stdin is not None
        assert read_fd_until(proc.stdout.fileno(), 15) == b"11\r\nhello world"
        proc.stdin.write(b"5\r\nreply")
        proc.stdin.flush()
        assert sslsock.SocketRead("c", False, WAIT_MS) == b"reply", sslsock.ErrorInfo()
        check_client_info("c", pki, port, protocol)
        assert sslsock.SocketClose("c")
    finally:
        _, err = stop(proc)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("protocol", sorted(VERSIONS))
def test_client_with_pyopenssl_server(pki: Any, pool: Any, protocol: str) -> None:
    SSL = OpenSSL_SSL
    bit = VERSIONS[protocol][1]
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(PY_VERSIONS[protocol])
    ctx.set_max_proto_version(PY_VERSIONS[protocol])
    ctx.use_certificate_chain_file(str(pki.server_cert_file))
    ctx.use_privatekey_file(str(pki.server_key_file))
    lsock = socket.create_server((LOOPBACK, 0))
    lsock.settimeout(PEER_TIMEOUT)
    port = lsock.getsockname()[1]

    def server() -> tuple[bytes, str]:
        with lsock:
            sock, _ = lsock.accept()
        sock.settimeout(None)
        set_kernel_timeouts(sock)
        with sock:
            conn = SSL.Connection(ctx, sock)
            conn.set_accept_state()
            conn.do_handshake()
            got = pyopenssl_recv_exact(conn, len(b"3\r\nabc"))
            conn.sendall(b"3\r\n" + got[3:].upper())
            try:  # wait for the client's close_notify, then answer it
                conn.recv(1)
            except SSL.ZeroReturnError:
                conn.shutdown()
            return got, conn.get_protocol_version_name()

    fut = pool.submit(server)
    assert sslsock.SocketConnectSSL("c", port, LOOPBACK, bit, WAIT_MS), sslsock.ErrorInfo()
    check_client_info("c", pki, port, protocol)  # while the server is there (it waits)
    assert sslsock.SocketWrite("c", "abc")
    assert sslsock.SocketRead("c", False, WAIT_MS) == b"ABC", sslsock.ErrorInfo()
    assert sslsock.SocketClose("c")
    got, version = fut.result(timeout=PEER_TIMEOUT)
    assert got == b"3\r\nabc"
    assert version == protocol


# --- protocol versions chosen by the options mask ----------------------------------------------

LEGACY = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def try_version(pki: Any, port: int, protocol: str) -> dict | ssl.SSLError:
    ctx = legacy_client_context(pki, LEGACY[protocol])
    try:
        return stdlib_exchange(ctx, port, b"2\r\nhi", len(b"2\r\nok"))
    except ssl.SSLError as e:
        return e


def serve_one(listener: str) -> str:
    """Accept one client, answer its message; the channel's negotiated version."""
    channel = accept_one(listener)
    assert sslsock.SocketRead(channel, False, WAIT_MS) == b"hi", sslsock.ErrorInfo()
    protocol = sslsock.SocketClientInfo(channel, sslsock.SocketProtocol)  # before it leaves
    assert sslsock.SocketWrite(channel, b"ok")
    sslsock.SocketClose(channel)
    return protocol


@pytest.mark.parametrize("protocol", ["TLSv1", "TLSv1.1", "TLSv1.2"])
def test_default_options_negotiate_tls10_to_12(pki: Any, pool: Any, protocol: str) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost"), sslsock.ErrorInfo()
    assert sslsock.SocketClientInfo("srv", sslsock.SocketProtocol) == "TLSv1,TLSv1.1,TLSv1.2"
    fut = pool.submit(try_version, pki, port_of("srv"), protocol)
    assert serve_one("srv") == protocol
    result = fut.result(timeout=PEER_TIMEOUT)
    assert isinstance(result, dict), result
    assert result["version"] == protocol
    assert result["got"] == b"2\r\nok"


def test_default_options_refuse_tls13_and_keep_serving(pki: Any, pool: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost"), sslsock.ErrorInfo()
    port = port_of("srv")
    result = pool.submit(try_version, pki, port, "TLSv1.3").result(timeout=PEER_TIMEOUT)
    assert isinstance(result, ssl.SSLError)
    assert "PROTOCOL_VERSION" in str(result).upper()
    # nothing reaches the program, the failure is counted, and the next client is served
    assert not sslsock.SocketWaitForConnection("srv", 200)
    wait_until(lambda: REGISTRY.get("srv").obj.stats().failed_tls >= 1)
    fut = pool.submit(try_version, pki, port, "TLSv1.2")
    assert serve_one("srv") == "TLSv1.2"
    assert isinstance(fut.result(timeout=PEER_TIMEOUT), dict)


@pytest.mark.parametrize("protocol,accepted", [
    ("TLSv1", False), ("TLSv1.1", False), ("TLSv1.2", True), ("TLSv1.3", True)])
def test_tls12_plus_tls13_mask(pki: Any, pool: Any, protocol: str, accepted: bool) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", MODERN), sslsock.ErrorInfo()
    assert sslsock.SocketClientInfo("srv", sslsock.SocketProtocol) == "TLSv1.2,TLSv1.3"
    fut = pool.submit(try_version, pki, port_of("srv"), protocol)
    if accepted:
        assert serve_one("srv") == protocol
        assert fut.result(timeout=PEER_TIMEOUT)["version"] == protocol  # type: ignore[index]
    else:
        result = fut.result(timeout=PEER_TIMEOUT)
        assert isinstance(result, ssl.SSLError), result
        assert not sslsock.SocketWaitForConnection("srv", 100)


@pytest.mark.parametrize("protocol,accepted", [
    ("TLSv1", True), ("TLSv1.1", False), ("TLSv1.2", False), ("TLSv1.3", True)])
def test_mask_with_a_hole(pki: Any, pool: Any, protocol: str, accepted: bool) -> None:
    """SPEC §3: exactly the bits given, holes included (TLS 1.0 + 1.3, nothing between)."""
    mask = sslsock.ProtocolTLS1 + sslsock.ProtocolTLS1_3
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", mask), sslsock.ErrorInfo()
    assert sslsock.SocketClientInfo("srv", sslsock.SocketProtocol) == "TLSv1,TLSv1.3"
    fut = pool.submit(try_version, pki, port_of("srv"), protocol)
    if accepted:
        assert serve_one("srv") == protocol
        assert fut.result(timeout=PEER_TIMEOUT)["version"] == protocol  # type: ignore[index]
    else:
        assert isinstance(fut.result(timeout=PEER_TIMEOUT), ssl.SSLError)
        assert not sslsock.SocketWaitForConnection("srv", 100)


@pytest.mark.parametrize("mask", [
    sslsock.ProtocolSSL2, sslsock.ProtocolSSL3, sslsock.ProtocolSSL2 + sslsock.ProtocolSSL3])
def test_ssl2_ssl3_only_mask_fails(pki: Any, mask: int) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", mask) is False
    assert sslsock.ErrorOccurred()
    assert sslsock.ErrorInfo(sslsock.errCode) == sslsock.ErrorCode.OPTIONS
    message = sslsock.ErrorInfo(sslsock.errMessage)
    assert not sslsock.SocketExist("srv")  # (which clears ErrorInfo: it succeeds)
    assert "OpenSSL" in message
    if mask & sslsock.ProtocolSSL2:
        assert "SSLv2" in message
    if mask & sslsock.ProtocolSSL3:
        assert "SSLv3" in message
    # the client side refuses the same mask the same way
    assert sslsock.SocketConnectSSL("c", 5000, LOOPBACK, mask, 1000) is False
    assert sslsock.ErrorInfo(sslsock.errCode) == sslsock.ErrorCode.OPTIONS


def test_partly_unavailable_mask_uses_the_rest(pki: Any, pool: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """SSLv3 + TLS 1.2: the listener works with TLS 1.2 and says (log) what it dropped."""
    with caplog.at_level(logging.WARNING, logger="sslsock"):
        ok = sslsock.SocketCreateSSL("srv", 0, "localhost",
                                     sslsock.ProtocolSSL3 + sslsock.ProtocolTLS1_2)
    assert ok, sslsock.ErrorInfo()
    assert sslsock.SocketClientInfo("srv", sslsock.SocketProtocol) == "TLSv1.2"
    assert any("SSLv3" in r.getMessage() for r in caplog.records)
    fut = pool.submit(try_version, pki, port_of("srv"), "TLSv1.2")
    assert serve_one("srv") == "TLSv1.2"
    assert isinstance(fut.result(timeout=PEER_TIMEOUT), dict)
