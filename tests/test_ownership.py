"""One owner per channel: a channel that a channel engine serves is read, written and
closed through that engine, whatever face the program uses, and every message handed out
is its own channel's bytes.

The stress tests run 24 stdlib-ssl clients at once, each sending bursts of framed messages
of random sizes and checking that every echo is its own, byte for byte and in order, while
the server's handlers sometimes read their channel again before answering (the pattern
that used to hang, and to hand one client's bytes to another).  They run in the default
suite and under AddressSanitizer (scripts/sanitize-tests.sh).  Every loop is bounded in
time; every client thread has socket time-outs.
"""
from __future__ import annotations

import asyncio
import random
import socket
import ssl
import threading
import time
from typing import Any, Callable

import pytest

import sslsock
import sslsock.aio as aio
from sslsock._core.connection import _fast_read

LOOPBACK = "127.0.0.1"
TLS = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
PEER_TIMEOUT = 20.0
CLIENTS = 24
MESSAGES = 30  # per client, in bursts of 1 to 8


def frame(data: bytes) -> bytes:
    return b"%d\r\n%s" % (len(data), data)


def tls_client(pki: Any, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT)
    return pki.client_context().wrap_socket(raw, server_hostname="localhost")


def recv_exactly(s: ssl.SSLSocket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise AssertionError(f"the server closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def run_clients(pki: Any, port: int, min_size: int) -> None:
    """CLIENTS threads, each with its own connection and its own random messages (sizes
    min_size to 3,000), sent in bursts (one write per burst); each checks its echoes."""
    errors: list[BaseException] = []

    def client(i: int) -> None:
        rng = random.Random(i)
        msgs = [rng.randbytes(rng.randint(min_size, 3000)) for _ in range(MESSAGES)]
        with tls_client(pki, port) as s:
            j = 0
            while j < len(msgs):
                burst = msgs[j:j + rng.randint(1, 8)]
                s.sendall(b"".join(frame(m) for m in burst))
                for k, m in enumerate(burst):
                    echo = recv_exactly(s, len(frame(m)))
                    assert echo == frame(m), (
                        f"client {i}, message {j + k}: the echo is not its own message "
                        f"({len(echo)} bytes back for {len(m)})")
                j += len(burst)

    def guarded(i: int) -> None:
        try:
            client(i)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PEER_TIMEOUT * 3)
        assert not t.is_alive(), "a client waited for an echo that never came"
    if errors:
        raise errors[0]


def named_pool(name: str, threads: int, handler: Callable[[str], None]
               ) -> tuple[threading.Event, list[threading.Thread], list[BaseException]]:
    stop = threading.Event()
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                ch = sslsock.SocketWaitForMessage(name, 100)
                if ch:
                    handler(ch)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            failures.append(e)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    return stop, pool, failures


def stop_pool(stop: threading.Event, pool: list[threading.Thread],
              failures: list[BaseException]) -> None:
    stop.set()
    for t in pool:
        t.join(PEER_TIMEOUT)
        assert not t.is_alive(), "a pool thread did not stop"
    if failures:
        raise failures[0]


def test_a_handler_that_reads_again_before_answering_gets_every_message(pki: Any) -> None:
    """The documented pool pattern: one thread on SocketWaitForMessage, whose handler asks
    for more with a short SocketRead before answering.  Three messages in one write give
    three echoes; so do one message and, while the handler waits for more, two in one write
    (the third of those used to stay in the channel's buffer, never handed out: the client
    waited forever)."""
    ss = sslsock
    assert ss.SocketCreateSSL("again", 0, "localhost", TLS)
    port = int(ss.SocketClientInfo("again", ss.SocketPort))

    def handler(ch: str) -> None:
        m = ss.SocketRead(ch)
        if ss.ErrorOccurred():
            ss.SocketClose(ch)
            return
        more = ss.SocketRead(ch, False, 300)  # anything more?
        ss.SocketWrite(ch, m)
        if more:
            ss.SocketWrite(ch, more)

    stop, pool, failures = named_pool("again", 1, handler)
    try:
        with tls_client(pki, port) as s:
            s.sendall(b"5\r\nhello" * 3)
            assert recv_exactly(s, 8 * 3) == b"5\r\nhello" * 3
        with tls_client(pki, port) as s:
            s.sendall(b"3\r\none")
            time.sleep(0.1)  # the handler has the first and waits for more
            s.sendall(b"3\r\ntwo5\r\nthree")
            assert recv_exactly(s, 6 + 6 + 8) == b"3\r\none3\r\ntwo5\r\nthree"
    finally:
        stop_pool(stop, pool, failures)
        ss.SocketClose("again")


def test_pool_stress_with_handlers_that_read_again(pki: Any) -> None:
    """Four pool threads, 24 clients, bursts of random sizes; a handler reads its channel
    again (for 0 to 5 ms) about one time in three.  Sizes start at 1: the named face's
    SocketRead returns b"" both for an empty message and for a time-out."""
    ss = sslsock
    assert ss.SocketCreateSSL("stress", 0, "localhost", TLS)
    port = int(ss.SocketClientInfo("stress", ss.SocketPort))
    rng = random.Random(7)
    rng_lock = threading.Lock()

    def handler(ch: str) -> None:
        m = ss.SocketRead(ch)
        if ss.ErrorOccurred():
            ss.SocketClose(ch)
            return
        with rng_lock:
            again, wait_ms = rng.random() < 0.35, rng.randint(0, 5)
        more = ss.SocketRead(ch, False, wait_ms) if again else b""
        failed = ss.ErrorOccurred()
        ss.SocketWrite(ch, m)
        if more:
            ss.SocketWrite(ch, more)
        if failed:
            ss.SocketClose(ch)

    stop, pool, failures = named_pool("stress", 4, handler)
    try:
        run_clients(pki, port, min_size=1)
    finally:
        stop_pool(stop, pool, failures)
        ss.SocketClose("stress")


def test_messages_stress_with_a_body_that_reads_again(pki: Any) -> None:
    """Listener.messages() on one thread, 24 clients, sizes from 0; the loop body reads the
    same connection again (Connection.read with a short time-out) about one time in three."""
    rng = random.Random(11)
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        done = threading.Event()
        failures: list[BaseException] = []

        def serve() -> None:
            try:
                for conn, message in listener.messages(timeout=0.2):
                    if done.is_set():
                        break
                    if not message and not conn.alive:
                        continue  # an end (b"" is also an empty message: alive says which)
                    more = None
                    if rng.random() < 0.35:
                        try:
                            more = conn.read(rng.randint(0, 5) / 1000)
                        except sslsock.SocketTimeout:
                            pass
                        except sslsock.ConnectionFailure:
                            more = None
                    conn.write(message)
                    if more is not None:
                        conn.write(more)
            except BaseException as e:  # noqa: BLE001 - reported below
                failures.append(e)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        try:
            run_clients(pki, listener.port, min_size=0)
        finally:
            done.set()
            server.join(PEER_TIMEOUT)
        assert not server.is_alive()
        if failures:
            raise failures[0]


def test_aio_stress(pki: Any) -> None:
    """sslsock.aio: 24 clients, sizes from 0, each channel echoed by its own task."""

    async def handle(ch: aio.Channel) -> None:
        async for message in ch:
            await ch.write(message)

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            await asyncio.get_running_loop().run_in_executor(
                None, run_clients, pki, server.port, 0)

    asyncio.run(asyncio.wait_for(main(), PEER_TIMEOUT * 4))


def test_reading_an_engine_channel_past_the_engine_is_refused(pki: Any) -> None:
    """The core refuses a direct read of a channel that an engine serves (two owners), with
    an error that says where to read it; the channel and the engine carry on."""
    if _fast_read is None:
        pytest.skip("this build has no sslsock._fastio (the direct C read path)")
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        with tls_client(pki, listener.port) as s:
            loop = listener.messages(timeout=5)
            s.sendall(frame(b"one"))
            conn, message = next(loop)
            assert message == b"one"
            err = _fast_read(conn._g, 0, 4096)
            assert isinstance(err, int)
            with pytest.raises(sslsock.ArgumentError, match="served by a channel engine"):
                from sslsock._core.connection import _fast_error
                _fast_error(err)
            s.sendall(frame(b"two"))
            assert next(loop) == (conn, b"two")
            conn.write(b"still here")
            assert recv_exactly(s, len(frame(b"still here"))) == frame(b"still here")
            loop.close()


def test_closing_a_channel_from_another_thread_while_the_engine_polls(pki: Any) -> None:
    """Channels closed by pool threads while another thread polls: the engine forgets them
    (no end reported for a channel its owner closed) and serves the rest."""
    ss = sslsock
    assert ss.SocketCreateSSL("closer", 0, "localhost", TLS)
    port = int(ss.SocketClientInfo("closer", ss.SocketPort))

    def handler(ch: str) -> None:
        m = ss.SocketRead(ch)
        if ss.ErrorOccurred() or m == b"bye":
            ss.SocketClose(ch)
        else:
            ss.SocketWrite(ch, m)

    stop, pool, failures = named_pool("closer", 3, handler)
    try:
        deadline = time.monotonic() + PEER_TIMEOUT
        for _ in range(40):
            assert time.monotonic() < deadline
            with tls_client(pki, port) as s:
                s.sendall(frame(b"hi"))
                assert recv_exactly(s, len(frame(b"hi"))) == frame(b"hi")
                s.sendall(frame(b"bye"))
                assert s.recv(16) == b""  # closed by its handler
        entry = sslsock._faces.registry.REGISTRY.get("closer")
        assert entry.engine is not None
        hub = entry.engine.hub
        t = time.monotonic() + 5
        while hub.channels and time.monotonic() < t:
            time.sleep(0.02)
        assert not hub.channels, f"{len(hub.channels)} closed channels still in the engine"
    finally:
        stop_pool(stop, pool, failures)
        ss.SocketClose("closer")
