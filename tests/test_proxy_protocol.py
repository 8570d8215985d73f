"""[extension] The PROXY protocol on a listener: headers written byte for byte as the
specification (and HAProxy) writes them, sent ahead of a real TLS handshake by the stdlib
client; refusals counted, other connections undisturbed.  HAProxy itself sends them in
tests/test_haproxy.py."""
from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sslsock
from sslsock import Listener
from sslsock._faces.registry import REGISTRY

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src: str, sport: int, dst: str = "10.0.0.1", dport: int = 443, *,
       command: int = 1, tlvs: bytes = b"") -> bytes:
    if ":" in src:
        body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                + struct.pack("!HH", sport, dport))
        fam = 0x21
    else:
        body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
        fam = 0x11
    body += tlvs
    return V2_SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


@pytest.fixture
def client_ctx(pki: Any) -> ssl.SSLContext:
    return pki.client_context()


@pytest.fixture
def listener(pki: Any) -> Iterator[Listener]:
    with Listener(0, "localhost", host="127.0.0.1", proxy_protocol=True, threads=1,
                  handshake_timeout=1.0) as lst:
        yield lst


def handshake_after(lst: Listener, ctx: ssl.SSLContext, *chunks: bytes,
                    pause: float = 0.0) -> tuple[sslsock.Connection, ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", lst.port), timeout=10)
    for chunk in chunks:
        raw.sendall(chunk)
        time.sleep(pause)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    conn = lst.accept(timeout=10)
    return conn, tls


def refused(lst: Listener, before: int, timeout: float = 5.0) -> sslsock.ListenerStats:
    deadline = time.monotonic() + timeout
    while True:
        st = lst.stats()
        if st.proxy_refused > before or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


@pytest.mark.parametrize("header, address, port", [
    (b"PROXY TCP4 192.0.2.10 10.0.0.1 40001 443\r\n", "192.0.2.10", 40001),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 40002 443\r\n", "2001:db8::7", 40002),
    (v2("198.51.100.20", 40003), "198.51.100.20", 40003),
    (v2("2001:db8::20", 40004, "2001:db8::1"), "2001:db8::20", 40004),
    # TLVs (here an ALPN and a unique id) are skipped
    (v2("198.51.100.21", 40005, tlvs=b"\x01\x00\x02h2\x05\x00\x04abcd"), "198.51.100.21",
     40005),
])
def test_the_client_named_by_the_header_is_the_peer(listener: Listener,
                                                    client_ctx: ssl.SSLContext,
                                                    header: bytes, address: str,
                                                    port: int) -> None:
    conn, tls = handshake_after(listener, client_ctx, header)
    with conn, tls:
        info = conn.info()
        assert (info.peer_address, info.peer_port) == (address, port)
        assert info.proxy_address == "127.0.0.1"
        assert info.proxy_port == tls.getsockname()[1]
        conn.write(b"hello")
        assert tls.recv(64) == b"5\r\nhello"


def test_header_in_pieces_and_local_and_unknown(listener: Listener,
                                                client_ctx: ssl.SSLContext) -> None:
    header = v2("192.0.2.99", 5555)
    conn, tls = handshake_after(listener, client_ctx, header[:5], header[5:14], header[14:],
                                pause=0.05)
    with conn, tls:
        assert conn.info().peer_address == "192.0.2.99"
    # LOCAL (a health check) and UNKNOWN keep the connection's own address
    for header in (v2("192.0.2.1", 1, command=0), b"PROXY UNKNOWN\r\n",
                   b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        conn, tls = handshake_after(listener, client_ctx, header)
        with conn, tls:
            info = conn.info()
            assert info.peer_address == "127.0.0.1"
            assert info.peer_port == tls.getsockname()[1]
    assert listener.stats().proxy_refused == 0


@pytest.mark.parametrize("payload, reason", [
    (None, "started the TLS handshake directly"),
    (b"GET / HTTP/1.0\r\n\r\n", "no PROXY header"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 99999 443\r\n", "port that is not a number"),
    (b"PROXY TCP4 2001:db8::1 10.0.0.1 1 443\r\n", "not IPv4"),
    (b"PROXY TCP5 192.0.2.1 10.0.0.1 1 443\r\n", "unknown protocol"),
    (b"PROXY TCP4 192.0.2.1\r\n", "malformed PROXY v1 header"),
    (b"PROXY TCP4 " + b"1" * 120, "within 107 bytes"),
    (V2_SIG + b"\x31\x11\x00\x0c" + bytes(12), "unknown version"),
    (V2_SIG + b"\x21\x11\x00\x04" + bytes(4), "too short"),
    (V2_SIG + b"\x21\x11\x08\x00" + bytes(2048), "over this listener's limit"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 1 ", "within the handshake time-out"),
    (b"", "ended before any PROXY header"),
])
def test_bad_headers_are_refused_and_counted(listener: Listener, client_ctx: ssl.SSLContext,
                                             payload: bytes | None, reason: str) -> None:
    before = listener.stats().proxy_refused
    raw = socket.create_connection(("127.0.0.1", listener.port), timeout=10)
    with raw:
        if payload is None:
            with pytest.raises((ssl.SSLError, OSError)):
                client_ctx.wrap_socket(raw, server_hostname="localhost")
        elif payload == b"":
            raw.shutdown(socket.SHUT_WR)
        else:
            raw.sendall(payload)
        st = refused(listener, before)
    assert st.proxy_refused == before + 1, st
    assert reason in st.last_failure and "127.0.0.1" in st.last_failure, st.last_failure
    assert st.handshakes == 0 or st.failed_tls == 0
    # nothing else disturbed: the next client through the proxy is served
    conn, tls = handshake_after(listener, client_ctx, b"PROXY TCP4 192.0.2.5 10.0.0.1 7 443\r\n")
    with conn, tls:
        assert conn.info().peer_address == "192.0.2.5"


def test_only_allowed_proxies(pki: Any, client_ctx: ssl.SSLContext) -> None:
    with Listener(0, "localhost", host="127.0.0.1", proxy_protocol=True, threads=1,
                  proxy_allow=["10.0.0.0/8", "::1"]) as lst:
        raw = socket.create_connection(("127.0.0.1", lst.port), timeout=10)
        with raw:
            raw.sendall(b"PROXY TCP4 192.0.2.1 10.0.0.1 1 443\r\n")
            st = refused(lst, 0)
        assert st.proxy_refused == 1 and "not one of the proxies allowed" in st.last_failure
    with Listener(0, "localhost", host="127.0.0.1", proxy_protocol=True, threads=1,
                  proxy_allow="127.0.0.0/8") as lst:
        conn, tls = handshake_after(lst, client_ctx, b"PROXY TCP4 192.0.2.1 10.0.0.1 1 443\r\n")
        with conn, tls:
            assert conn.info().peer_address == "192.0.2.1"
    with pytest.raises(sslsock.ArgumentError, match="not an IP address or network"):
        Listener(0, "localhost", proxy_protocol=True, proxy_allow=["proxy.example"])
    with pytest.raises(sslsock.ArgumentError, match="needs proxy_protocol=True"):
        Listener(0, "localhost", proxy_allow=["127.0.0.1"])


def test_a_listener_without_the_option_is_unchanged(pki: Any,
                                                    client_ctx: ssl.SSLContext) -> None:
    with Listener(0, "localhost", host="127.0.0.1", threads=1) as lst:
        raw = socket.create_connection(("127.0.0.1", lst.port), timeout=10)
        raw.sendall(b"PROXY TCP4 192.0.2.1 10.0.0.1 1 443\r\n")
        with pytest.raises((ssl.SSLError, OSError)):
            client_ctx.wrap_socket(raw, server_hostname="localhost")
        raw.close()
        conn, tls = handshake_after(lst, client_ctx)
        with conn, tls:
            info = conn.info()
            assert info.peer_address == "127.0.0.1" and info.proxy_address == ""
        assert lst.stats().proxy_refused == 0


def test_plain_tcp_listener_with_proxy(pki: Any) -> None:
    with Listener(0, tls=False, host="127.0.0.1", proxy_protocol=True, threads=1) as lst:
        raw = socket.create_connection(("127.0.0.1", lst.port), timeout=10)
        with raw:
            raw.sendall(v2("203.0.113.9", 999) + b"3\r\nabc")
            conn = lst.accept(timeout=10)
            with conn:
                assert conn.info().peer_address == "203.0.113.9"
                assert conn.read(timeout=10) == b"abc"


def test_named_face(pki: Any, client_ctx: ssl.SSLContext) -> None:
    sslsock.Socket.Option = sslsock.SocketProxyProtocol
    assert sslsock.SocketCreateSSL("srv", 0, "localhost"), sslsock.ErrorInfo()
    port = REGISTRY.get("srv").obj.port
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(b"PROXY TCP4 192.0.2.44 10.0.0.1 4444 443\r\n")
    with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert sslsock.SocketWaitForConnection("srv", 5000), sslsock.ErrorInfo()
        channel = sslsock.SocketAccept("srv")
        assert sslsock.SocketClientInfo(channel, sslsock.SocketAddress) == "192.0.2.44"
        assert sslsock.SocketClientInfo(channel, sslsock.SocketPort) == "4444"
        assert sslsock.SocketClientInfo(channel, sslsock.SocketProxyAddress) == "127.0.0.1"
        assert (sslsock.SocketClientInfo(channel, sslsock.SocketProxyPort)
                == str(tls.getsockname()[1]))
        sslsock.SocketClose(channel)
    # a server created without the option: no proxy, as before
    sslsock.Socket.Option = 0
    assert sslsock.SocketCreateSSL("direct", 0, "localhost"), sslsock.ErrorInfo()
    assert sslsock.SocketConnectSSL("cli", REGISTRY.get("direct").obj.port, "localhost")
    assert sslsock.SocketWaitForConnection("direct", 5000)
    channel = sslsock.SocketAccept("direct")
    assert sslsock.SocketClientInfo(channel, sslsock.SocketProxyAddress) == ""
    assert sslsock.SocketClientInfo(channel, sslsock.SocketProxyPort) == ""


VALID = [b"PROXY TCP4 192.0.2.10 10.0.0.1 40001 443\r\n",
         b"PROXY TCP6 2001:db8::7 2001:db8::1 40002 443\r\n", b"PROXY UNKNOWN\r\n",
         v2("198.51.100.20", 40003), v2("2001:db8::20", 40004, "2001:db8::1"),
         v2("192.0.2.1", 1, command=0, tlvs=b"\x05\x00\x02ab")]


def _mutated(t: tuple[bytes, int, int, int]) -> bytes:
    header, pos, value, cut = t
    b = bytearray(header)
    b[pos % len(b)] = value
    return bytes(b[:cut % (len(b) + 1)] if cut % 3 == 0 else b)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200),
                 st.tuples(st.sampled_from(VALID), st.integers(0, 255), st.integers(0, 255),
                           st.integers(0, 255)).map(_mutated)))
def test_any_bytes_end_in_one_counted_outcome(listener: Listener, data: bytes) -> None:
    """Whatever arrives before EOF: exactly one outcome is counted (refused for the header,
    or, after a valid header, a failed handshake), and nothing hangs."""
    def outcomes(s: sslsock.ListenerStats) -> int:
        return s.proxy_refused + s.failed_io + s.failed_tls + s.timed_out + s.handshakes

    before = listener.stats()
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as raw:
        try:
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already refused on its first bytes
        deadline = time.monotonic() + 5
        while outcomes(listener.stats()) == outcomes(before):
            assert time.monotonic() < deadline, (data, listener.stats())
            time.sleep(0.005)
    after = listener.stats()
    assert outcomes(after) == outcomes(before) + 1, (data, after)
    assert after.handshakes == before.handshakes


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(VALID[:2] + VALID[3:5]), st.integers(1, 60))
def test_a_valid_header_cut_anywhere_is_read_whole(listener: Listener,
                                                   client_ctx: ssl.SSLContext,
                                                   header: bytes, cut: int) -> None:
    """A header split over two TCP segments (at any byte) waits for its end: it is never
    refused for being incomplete, and the ClientHello behind it is left for OpenSSL."""
    cut = min(cut, len(header) - 1)
    conn, tls = handshake_after(listener, client_ctx, header[:cut], header[cut:], pause=0.01)
    with conn, tls:
        assert conn.info().peer_address in ("192.0.2.10", "2001:db8::7", "198.51.100.20",
                                            "2001:db8::20")
    assert listener.stats().proxy_refused == 0
