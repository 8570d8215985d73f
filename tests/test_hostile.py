"""Hostile and broken peers: resource limits, resets, oversized frames, races on close,
many cycles, leaks, and the secure defaults a TLS server owes its other clients.

Every test is bounded in time; the file takes well under 90 s on two cores.  Under the
sanitizer build (scripts/sanitize-tests.sh sets SSLSOCK_SANITIZED=1) the cycle counts are
scaled down and the RSS and valgrind checks are skipped: ASan's quarantine and shadow memory
make RSS meaningless, and valgrind cannot run an ASan process.  SSLSOCK_LONG_TESTS=1 runs
the long versions.
"""
from __future__ import annotations

import gc
import logging
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest

import sslsock
from sslsock._certs.store import CertStore
from sslsock._core.connection import Connection
from sslsock._faces.objects import Listener, connect

LOOPBACK = "127.0.0.1"
SANITIZED = os.environ.get("SSLSOCK_SANITIZED") == "1"
LONG = os.environ.get("SSLSOCK_LONG_TESTS") == "1"
ROOT = Path(__file__).resolve().parent.parent
TLS12_13 = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- helpers ------------------------------------------------------------------------------


def rss() -> int:
    """Resident set size in bytes (C allocations included, unlike tracemalloc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(what: str, condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.02)


def stdlib_context(pki: Any, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def tls_client(pki: Any, port: int, version: ssl.TLSVersion | None = None,
               timeout: float = 10.0) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, port), timeout=timeout)
    return stdlib_context(pki, version).wrap_socket(raw, server_hostname="localhost")


def framed(payload: bytes) -> bytes:
    return b"%d\r\n%s" % (len(payload), payload)


def recv_exact(sock: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def echo_once(pki: Any, port: int, payload: bytes = b"are you there?",
              version: ssl.TLSVersion | None = None) -> float:
    """A well-behaved stdlib client: handshake, one framed echo; returns the time taken."""
    t0 = time.monotonic()
    with tls_client(pki, port, version) as s:
        s.sendall(framed(payload))
        assert recv_exact(s, len(framed(payload))) == framed(payload)
    return time.monotonic() - t0


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def client_hello(version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """The first flight of a stdlib client, as bytes (no socket involved)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = version
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


@contextmanager
def echo_listener(**kwargs: Any) -> Iterator[Listener]:
    """A TLS listener on an ephemeral port whose accepted channels echo every message."""
    kwargs.setdefault("options", TLS12_13)
    listener = Listener(0, "localhost", host=LOOPBACK, **kwargs)
    errors: list[BaseException] = []

    def serve(conn: Connection) -> None:
        with conn:
            try:
                while True:
                    conn.write(conn.read(timeout=10))
            except sslsock.Error:
                pass
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)

    def accept_loop() -> None:
        while True:
            try:
                conn = listener.accept()
            except sslsock.SocketClosed:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield listener
    finally:
        listener.close()
        acceptor.join(5)
    assert not errors, errors


# --- resource limits ----------------------------------------------------------------------


def test_silent_and_stalled_clients_do_not_delay_a_good_one(pki: Any) -> None:
    """1,000 connections that never send a ClientHello and 50 that stop half-way: a good
    client is still served at once; the time-out then drops and counts them all."""
    silent, stalled = 1000, 50
    hello = client_hello()
    with echo_listener(handshake_timeout=2.0) as listener:
        socks = [socket.create_connection((LOOPBACK, listener.port)) for _ in range(silent)]
        for _ in range(stalled):
            s = socket.create_connection((LOOPBACK, listener.port))
            s.sendall(hello[: len(hello) // 2])
            socks.append(s)
        try:
            wait_for("the engine takes every connection",
                     lambda: listener.stats().accepted >= silent + stalled, within=5)
            before = listener.stats()
            assert before.pending >= silent + stalled - 10, before  # still waiting on them
            took = echo_once(pki, listener.port)
            assert took < 2.0, f"a good client waited {took:.2f} s behind the silent ones"
            wait_for("the stalled handshakes time out",
                     lambda: listener.stats().timed_out >= silent + stalled, within=10)
            after = listener.stats()
            assert after.pending == 0, after
            assert after.timed_out == silent + stalled, after
            assert after.handshakes == 1 and after.failed_tls == 0, after
            # the server closed them: each silent socket reads EOF (or a reset)
            socks[0].settimeout(5)
            try:
                assert socks[0].recv(1) == b""
            except ConnectionResetError:
                pass
            assert echo_once(pki, listener.port) < 2.0
        finally:
            for s in socks:
                s.close()


def test_max_pending_refuses_the_excess(pki: Any) -> None:
    with echo_listener(handshake_timeout=1.0, max_pending=10, threads=1) as listener:
        socks = [socket.create_connection((LOOPBACK, listener.port)) for _ in range(30)]
        try:
            wait_for("all 30 accepted", lambda: listener.stats().accepted == 30, within=5)
            st = listener.stats()
            assert (st.pending, st.dropped_pending) == (10, 20), st
            wait_for("the 10 pending time out", lambda: listener.stats().timed_out == 10, within=5)
            assert listener.stats().pending == 0
            assert echo_once(pki, listener.port) < 2.0
        finally:
            for s in socks:
                s.close()


# --- resets -------------------------------------------------------------------------------


def test_reset_mid_handshake(pki: Any) -> None:
    """Resets during the ClientHello and after the server's first flight are counted as
    I/O failures at once (not left to the time-out), and the server goes on."""
    hello = client_hello(ssl.TLSVersion.TLSv1_2)
    with echo_listener(handshake_timeout=30.0) as listener:
        half = socket.create_connection((LOOPBACK, listener.port))
        half.sendall(hello[:20])
        wait_for("the half hello is pending", lambda: listener.stats().pending == 1, within=5)
        reset(half)

        whole = socket.create_connection((LOOPBACK, listener.port), timeout=5)
        whole.sendall(hello)
        assert whole.recv(5)[:1] == b"\x16"  # the start of the ServerHello record
        reset(whole)

        wait_for("both resets are counted",
                 lambda: listener.stats().failed_io + listener.stats().failed_tls == 2, within=5)
        st = listener.stats()
        assert st.pending == 0 and st.timed_out == 0, st
        assert st.last_failure, st
        assert echo_once(pki, listener.port) < 2.0


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["TLSv1.2", "TLSv1.3"])
def test_reset_mid_frame_fails_the_read_promptly(pki: Any, version: ssl.TLSVersion) -> None:
    with Listener(0, "localhost", host=LOOPBACK, options=TLS12_13) as listener:
        client = tls_client(pki, listener.port, version)
        with listener.accept(timeout=10) as conn:
            client.sendall(b"100\r\n" + b"x" * 50)  # half of the announced message
            with pytest.raises(sslsock.SocketTimeout):
                conn.read(timeout=0.2)  # waits for the rest; nothing lost
            t0 = time.monotonic()
            reset(client)
            with pytest.raises(sslsock.ConnectionFailure) as info:
                conn.read(timeout=10)
            assert time.monotonic() - t0 < 2.0
            assert isinstance(info.value, (sslsock.ConnectionReset, sslsock.PeerClosed)), info.value
            with pytest.raises(type(info.value)):  # broken: every later call fails the same way
                conn.read(timeout=0)
            assert conn.info().state == "broken"


def test_reset_during_a_large_write(pki: Any) -> None:
    """The server writes 50 MB to a client that reads a little, then resets: the write
    fails promptly with a connection error instead of blocking."""
    with Listener(0, "localhost", host=LOOPBACK, options=TLS12_13) as listener:
        client = tls_client(pki, listener.port)
        with listener.accept(timeout=10) as conn:
            outcome: list[BaseException | None] = []
            ended = threading.Event()

            def write() -> None:
                try:
                    conn.write(b"x" * (50 * MiB), timeout=30)
                    outcome.append(None)
                except BaseException as e:  # noqa: BLE001 - checked below
                    outcome.append(e)
                ended.set()

            writer = threading.Thread(target=write)
            writer.start()
            recv_exact(client, 256 * 1024)
            t0 = time.monotonic()
            reset(client)
            assert ended.wait(5), "the write did not notice the reset"
            took = time.monotonic() - t0
            writer.join()
            assert isinstance(outcome[0], (sslsock.ConnectionReset, sslsock.ConnectionFailure)), outcome
            assert took < 3.0, took


# --- oversized frames ---------------------------------------------------------------------


def test_size_header_over_the_limit_breaks_only_that_connection(pki: Any) -> None:
    """A SocketSizeAtBeginning header announcing 10 GB: the channel is broken with an
    ErrorInfo naming the limit, nothing of that size is allocated, and another channel of
    the same listener carries on."""
    assert sslsock.SocketCreateSSL("hostile-big", 0, "localhost")
    port = int(sslsock.SocketClientInfo("hostile-big", sslsock.SocketPort))
    good, bad = tls_client(pki, port), tls_client(pki, port)
    channels = []
    for _ in range(2):
        assert sslsock.SocketWaitForConnection("hostile-big", 10_000)
        channels.append(sslsock.SocketAccept("hostile-big"))
    by_port = {int(sslsock.SocketClientInfo(ch, sslsock.SocketPort)): ch for ch in channels}
    good_ch, bad_ch = by_port[good.getsockname()[1]], by_port[bad.getsockname()[1]]
    try:
        good.sendall(framed(b"before"))
        assert sslsock.SocketRead(good_ch) == b"before"

        gc.collect()
        before = rss()
        bad.sendall(b"10000000000\r\n" + b"y" * 1000)
        assert sslsock.SocketRead(bad_ch, False, 10_000) == b""
        message = str(sslsock.ErrorInfo(sslsock.errMessage))
        assert "limit" in message and str(64 * MiB) in message, message
        assert sslsock.ErrorInfo(sslsock.errCode) == sslsock.ErrorCode.TOO_BIG
        grown = rss() - before
        assert grown < 50 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
        # still broken, with the same reason
        assert sslsock.SocketRead(bad_ch, False, 100) == b""
        assert str(sslsock.ErrorInfo(sslsock.errMessage)) == message
        assert not sslsock.SocketWrite(bad_ch, b"anything")

        good.sendall(framed(b"after"))
        assert sslsock.SocketRead(good_ch) == b"after"
        assert sslsock.SocketWrite(good_ch, b"still here")
        assert recv_exact(good, len(framed(b"still here"))) == framed(b"still here")
    finally:
        good.close()
        bad.close()


def test_never_ending_size_header_is_refused(pki: Any) -> None:
    """A header that never ends is refused as soon as it must be larger than the limit, or
    longer than any number (leading zeros keep the value small but not the length)."""
    with Listener(0, "localhost", host=LOOPBACK, options=TLS12_13) as listener:
        with tls_client(pki, listener.port) as client, listener.accept(timeout=10) as conn:
            client.sendall(b"0" * 20)
            with pytest.raises(sslsock.SocketTimeout):
                conn.read(timeout=0.1)  # 20 digits: a number may still end here
            client.sendall(b"0")
            with pytest.raises(sslsock.FrameError, match="digits"):
                conn.read(timeout=5)
        with tls_client(pki, listener.port) as client, listener.accept(timeout=10) as conn:
            client.sendall(b"6710886")
            with pytest.raises(sslsock.SocketTimeout):
                conn.read(timeout=0.1)  # 6,710,886: under the 64 MiB limit so far
            client.sendall(b"5")  # 67,108,865: one byte over, before any CR LF
            with pytest.raises(sslsock.FrameError, match="limit"):
                conn.read(timeout=5)


# --- close races --------------------------------------------------------------------------

RACE_ROUNDS = 50


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - inspected by the caller
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_close_wakes_a_blocked_wait_for_connection(pki: Any) -> None:
    rnd = random.Random(5)
    for i in range(RACE_ROUNDS):
        name = f"hostile-wait-{i}"
        assert sslsock.SocketCreateSSL(name, 0, "localhost"), sslsock.ErrorInfo()
        started = threading.Event()

        def wait(name: str = name) -> Any:
            started.set()
            return sslsock.SocketWaitForConnection(name), sslsock.ErrorInfo(sslsock.errCode)

        t, result = _in_thread(wait)
        started.wait(5)
        time.sleep(rnd.random() * 0.01)
        assert sslsock.SocketClose(name)
        t.join(3)
        assert not t.is_alive(), f"round {i}: SocketWaitForConnection still blocked"
        got = result[0]
        if isinstance(got, BaseException):  # closed before the call began: unknown name
            assert isinstance(got, sslsock.SocketNameError), got
        else:
            assert got == (False, sslsock.ErrorCode.CLOSED), got


def test_close_wakes_a_blocked_read_and_write(pki: Any) -> None:
    """SocketClose on a channel while one thread is blocked in SocketRead and another
    writes: both return promptly, nothing crashes or is freed twice (50 rounds, random
    timing; the sanitizer build runs this too)."""
    rnd = random.Random(7)
    assert sslsock.SocketCreateSSL("hostile-srv", 0, "localhost")
    port = int(sslsock.SocketClientInfo("hostile-srv", sslsock.SocketPort))
    ctx = stdlib_context(pki)
    for i in range(RACE_ROUNDS):
        client = ctx.wrap_socket(socket.create_connection((LOOPBACK, port), timeout=10),
                                 server_hostname="localhost")
        assert sslsock.SocketWaitForConnection("hostile-srv", 10_000), sslsock.ErrorInfo()
        channel = sslsock.SocketAccept("hostile-srv")
        started = threading.Barrier(3)

        def read(channel: str = channel) -> Any:
            started.wait(5)
            return sslsock.SocketRead(channel)  # wait=True: without limit

        def write(channel: str = channel) -> Any:
            started.wait(5)
            while sslsock.SocketWrite(channel, b"z" * 1000):
                pass
            return sslsock.ErrorInfo(sslsock.errCode)

        (reader, read_result), (writer, write_result) = _in_thread(read), _in_thread(write)
        started.wait(5)
        time.sleep(rnd.random() * 0.01)
        if i % 5 == 4:
            reset(client)  # the peer goes too, at the same moment
        assert sslsock.SocketClose(channel)
        reader.join(3)
        writer.join(3)
        assert not reader.is_alive(), f"round {i}: SocketRead still blocked after SocketClose"
        assert not writer.is_alive(), f"round {i}: SocketWrite still blocked after SocketClose"
        for got in read_result + write_result:
            if isinstance(got, BaseException):
                assert isinstance(got, sslsock.SocketNameError), got
            else:
                assert got in (b"", sslsock.ErrorCode.CLOSED, sslsock.ErrorCode.RESET,
                               sslsock.ErrorCode.PEER_CLOSED), got
        client.close()
    assert sslsock.SocketClose("hostile-srv")


def test_object_face_close_races() -> None:
    """The same races on the object face: listener.close() against accept() (plain TCP
    listener), connection.close() against read() over a socketpair (no TLS: fast)."""
    for i in range(RACE_ROUNDS):
        listener = Listener(0, tls=False, host=LOOPBACK, threads=1)
        t, result = _in_thread(lambda: listener.accept())
        time.sleep(random.random() * 0.005)
        listener.close()
        t.join(3)
        assert not t.is_alive() and isinstance(result[0], sslsock.SocketClosed), result
    for i in range(RACE_ROUNDS):
        a, b = socket.socketpair()
        conn = Connection.adopt(b)
        t, result = _in_thread(lambda: conn.read())
        time.sleep(random.random() * 0.005)
        conn.close()
        t.join(3)
        a.close()
        assert not t.is_alive() and isinstance(result[0], sslsock.SocketClosed), result


def test_close_while_other_calls_come_and_go(pki: Any) -> None:
    """close() while other threads keep starting calls that return at once (they see the
    socket closing): the object is freed only after the close itself is done with it.
    (Found by LeakSanitizer: a read that failed fast used to free the connection while
    close() was still sending close_notify.)"""
    with Listener(0, "localhost", host=LOOPBACK, options=TLS12_13) as listener:
        ctx = stdlib_context(pki)
        for i in range(RACE_ROUNDS):
            client = ctx.wrap_socket(socket.create_connection((LOOPBACK, listener.port)),
                                     server_hostname="localhost")
            conn = listener.accept(timeout=10)
            stop = threading.Event()

            def churn(conn: Connection = conn) -> Any:
                while not stop.is_set():
                    try:
                        conn.read(timeout=0)
                    except sslsock.SocketTimeout:
                        pass
                    except (sslsock.SocketClosed, sslsock.ConnectionFailure) as e:
                        return e
                return None

            threads = [_in_thread(churn) for _ in range(3)]
            time.sleep(random.random() * 0.002)
            conn.close()
            stop.set()
            for t, result in threads:
                t.join(3)
                assert not t.is_alive()
                assert result and (result[0] is None or isinstance(result[0], sslsock.Error)), result
            client.close()


# --- many cycles --------------------------------------------------------------------------


def test_many_cycles_leave_no_descriptor_or_memory_behind(pki: Any) -> None:
    """10,000 connect / handshake / echo / close cycles (stdlib clients in four threads, one
    cycle in 50 with sslsock's own client) against one listener: descriptors come back to
    where they started and RSS grows by less than a few MiB after a warm-up."""
    cycles = 10_000 if not SANITIZED or LONG else 2_000
    warmup = 400
    threads = 4
    sslsock_every = 50
    ctx12 = stdlib_context(pki, ssl.TLSVersion.TLSv1_2)
    ctx13 = stdlib_context(pki, ssl.TLSVersion.TLSv1_3)
    store = CertStore()
    ca_pem = pki.ca_file.read_bytes()

    with echo_listener() as listener:
        port = listener.port

        def cycle(i: int) -> None:
            msg = b"cycle %d" % i
            if i % sslsock_every == 0:
                with connect(LOOPBACK, port, server_hostname="localhost", store=store,
                             cafile_pem=ca_pem, options=TLS12_13, timeout=10) as c:
                    c.write(msg)
                    assert c.read(timeout=10) == msg
                return
            ctx = ctx13 if i % 2 else ctx12
            with socket.create_connection((LOOPBACK, port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(framed(msg))
                assert recv_exact(s, len(framed(msg))) == framed(msg)

        def run(first: int, count: int) -> None:
            errors: list[BaseException] = []

            def worker(k: int) -> None:
                try:
                    for i in range(first + k, first + count, threads):
                        cycle(i)
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)

            workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            assert not errors, errors[:3]

        def settled() -> bool:
            st = listener.stats()
            return bool(st.pending == 0 and st.ready == 0 and st.taken == st.handshakes)

        run(0, warmup)
        wait_for("the warm-up's connections are all served", settled)
        gc.collect()
        time.sleep(0.2)  # the echo threads close their channels
        fds, mem = open_fds(), rss()
        t0 = time.monotonic()
        run(warmup, cycles - warmup)
        took = time.monotonic() - t0
        wait_for("every connection is served", settled)
        wait_for("the channels are closed", lambda: open_fds() <= fds, within=5)
        gc.collect()
        grown = rss() - mem
        st = listener.stats()
        assert st.handshakes == cycles and st.failed_tls == st.failed_io == 0, st
        assert open_fds() == fds
        if not SANITIZED:
            assert grown < 4 * MiB, f"RSS grew by {grown / MiB:.2f} MiB over {cycles} cycles"
        print(f"{cycles - warmup} cycles in {took:.1f} s ({(cycles - warmup) / took:.0f}/s), "
              f"RSS {grown / MiB:+.2f} MiB, {fds} descriptors before and after")


# --- memory check under valgrind ----------------------------------------------------------


@pytest.mark.skipif(shutil.which("valgrind") is None
                    and os.environ.get("SSLSOCK_REQUIRE_VALGRIND") != "1",
                    reason="valgrind is not installed (apt-get install valgrind; "
                           "scripts/ci-extras.sh installs it and runs this test)")
@pytest.mark.skipif(SANITIZED, reason="valgrind cannot run an ASan process")
def test_handshakes_under_valgrind_leak_nothing_from_the_core(tmp_path: Path) -> None:
    """Handshakes, echoes and the usual failures under valgrind --leak-check=full: no
    definite leak and no memory error with a frame of sslsock's C core (Python's own
    leftovers at exit are not ours).  30 handshakes here; scripts/ci-extras.sh runs 200
    (SSLSOCK_VALGRIND_HANDSHAKES), and 200 more run under LeakSanitizer in
    scripts/sanitize-tests.sh."""
    if shutil.which("valgrind") is None:
        pytest.fail("SSLSOCK_REQUIRE_VALGRIND=1 but valgrind is not installed")
    n = int(os.environ.get("SSLSOCK_VALGRIND_HANDSHAKES", 200 if LONG else 30))
    log = tmp_path / "valgrind.log"
    env = dict(os.environ, PYTHONMALLOC="malloc")
    proc = subprocess.run(
        ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
         "--num-callers=40", f"--log-file={log}", sys.executable,
         str(ROOT / "scripts" / "handshake_loop.py"), str(n)],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 or "handshake loop: done" in proc.stdout, proc.stderr[-3000:]
    assert "handshake loop: done" in proc.stdout, (proc.stdout, proc.stderr[-3000:])
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "leaks_in_core.py"), str(log)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-5000:]


# --- secure behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["TLSv1.2", "TLSv1.3"])
def test_no_tls_compression(pki: Any, version: ssl.TLSVersion) -> None:
    with echo_listener() as listener:
        ctx = stdlib_context(pki, version)
        ctx.options &= ~ssl.OP_NO_COMPRESSION  # the client would take it if offered
        with socket.create_connection((LOOPBACK, listener.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.compression() is None
            s.sendall(framed(b"x"))
            assert recv_exact(s, 4) == framed(b"x")


def _pyopenssl(call: Callable[[], Any], sock: socket.socket, within: float = 5.0) -> Any:
    """Run a pyOpenSSL call over a non-blocking socket, waiting for it at most `within` s."""
    import select

    from OpenSSL import SSL

    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except (SSL.WantReadError, SSL.WantWriteError):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("pyOpenSSL call did not finish") from None
            select.select([sock], [sock], [], min(left, 0.05))


def _offer_deflate(hello: bytes) -> bytes:
    """A TLS 1.2 ClientHello record rewritten to offer DEFLATE compression before null."""
    assert hello[0] == 0x16 and hello[5] == 1, hello[:6]
    ch = hello[9 : 9 + int.from_bytes(hello[6:9], "big")]
    p = 2 + 32  # client_version, random
    p += 1 + ch[p]  # session id
    p += 2 + int.from_bytes(ch[p : p + 2], "big")  # cipher suites
    assert ch[p : p + 2] == b"\x01\x00", "the stdlib client offers null compression only"
    ch = ch[:p] + b"\x02\x01\x00" + ch[p + 2 :]
    body = b"\x01" + len(ch).to_bytes(3, "big") + ch
    return b"\x16" + hello[1:3] + len(body).to_bytes(2, "big") + body


def _server_hello(port: int, hello: bytes) -> tuple[int, set[int]]:
    """Send a raw ClientHello; return the ServerHello's compression method and extensions."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as s:
        s.sendall(hello)
        header = recv_exact(s, 5)
        assert header[0] == 0x16, f"not a handshake record: {header!r}"
        record = recv_exact(s, int.from_bytes(header[3:5], "big"))
    assert record[0] == 2, "not a ServerHello"
    sh = record[4 : 4 + int.from_bytes(record[1:4], "big")]
    p = 2 + 32
    p += 1 + sh[p] + 2  # session id, cipher suite
    compression = sh[p]
    p += 1
    end = p + 2 + int.from_bytes(sh[p : p + 2], "big")
    p += 2
    extensions = set()
    while p < end:
        extensions.add(int.from_bytes(sh[p : p + 2], "big"))
        p += 4 + int.from_bytes(sh[p + 2 : p + 4], "big")
    return compression, extensions


def test_server_hello_refuses_compression_and_signals_secure_renegotiation(pki: Any) -> None:
    """A TLS 1.2 ClientHello offering DEFLATE: the server picks null compression (no
    CRIME), and its ServerHello carries renegotiation_info (RFC 5746), so a client can
    tell it apart from a server open to the insecure renegotiation attack."""
    with echo_listener() as listener:
        compression, extensions = _server_hello(
            listener.port, _offer_deflate(client_hello(ssl.TLSVersion.TLSv1_2)))
        assert compression == 0, f"the server chose compression method {compression}"
        assert 0xFF01 in extensions, sorted(extensions)
        assert echo_once(pki, listener.port) < 2.0


def test_client_initiated_renegotiation_flood_is_refused(pki: Any) -> None:
    """40 TLS 1.2 clients (pyOpenSSL, four at a time) each ask to renegotiate up to five
    times: no renegotiation is ever done (the client sees the refusal), the handshake
    CPU a flood would cost is never spent, and a good client is served promptly during the
    flood.  A server that refuses every renegotiation cannot do an insecure (pre-RFC 5746)
    one either."""
    from OpenSSL import SSL

    def renegotiate(port: int) -> int:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        ctx.load_verify_locations(str(pki.ca_file))
        ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1])
        sock = socket.create_connection((LOOPBACK, port), timeout=10)
        sock.setblocking(False)
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        try:
            _pyopenssl(conn.do_handshake, sock)
            assert conn.get_protocol_version_name() == "TLSv1.2"
            _pyopenssl(lambda: conn.send(framed(b"first")), sock)
            assert _pyopenssl(lambda: conn.recv(100), sock) == framed(b"first")
            done = 0
            for _ in range(5):
                if not conn.renegotiate():
                    break
                try:
                    _pyopenssl(conn.do_handshake, sock)
                    # the request went out; the server must not complete a new handshake
                    _pyopenssl(lambda: conn.send(framed(b"again")), sock)
                    _pyopenssl(lambda: conn.recv(100), sock)
                except (SSL.Error, TimeoutError, OSError):
                    break  # OpenSSL's client: "no renegotiation" (the server's alert)
                if not conn.renegotiate_pending():
                    done += 1  # the new handshake finished
            return done
        finally:
            sock.close()

    with echo_listener() as listener:
        port = listener.port
        results: list[int] = []
        errors: list[BaseException] = []

        def worker(count: int) -> None:
            try:
                for _ in range(count):
                    results.append(renegotiate(port))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        flood = [threading.Thread(target=worker, args=(10,)) for _ in range(4)]
        for t in flood:
            t.start()
        try:
            wait_for("the flood starts", lambda: len(results) >= 2 or bool(errors))
            took = echo_once(pki, port, version=ssl.TLSVersion.TLSv1_2)
        finally:
            for t in flood:
                t.join(60)
        assert not errors, errors[:3]
        assert len(results) == 40
        assert not any(results), f"renegotiations done per client: {results}"
        assert took < 2.0, f"a good client waited {took:.2f} s during the flood"
        st = listener.stats()
        assert st.handshakes == 41, st  # the 40 initial handshakes and the good client


def _key_chunks(pem: bytes) -> list[str]:
    """Distinctive pieces of a private key PEM: each base64 line of its body, and their
    halves (a message that truncated a line would still be caught)."""
    lines = [l for l in pem.decode().splitlines() if l and not l.startswith("-----")]
    return [piece for l in lines for piece in (l, l[: len(l) // 2], l[len(l) // 2 :])
            if len(piece) >= 16]


def test_private_key_never_appears_in_errors_logs_or_reprs(
        pki: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key_pem = pki.server.key_pem()
    chunks = _key_chunks(key_pem)
    assert chunks
    shown: list[str] = []

    def show(*objs: Any) -> None:
        for o in objs:
            shown.extend([repr(o), str(o)])
            if isinstance(o, sslsock.Error):
                shown.extend([o.message, o.system_message])

    # objects that hold or held the key
    store = CertStore()
    ident = store.load_identity("localhost")
    show(ident, store, ident.certificate)
    ident.wipe()
    with echo_listener() as listener, connect(LOOPBACK, listener.port,
                                              server_hostname="localhost") as client:
        show(listener, client, listener.stats())

    # failures around the key: a key that does not match, a damaged key, an encrypted one
    bad = tmp_path / "store"
    bad.mkdir(mode=0o700)
    (bad / "mismatch.crt").write_bytes(pki.server.cert_pem())
    (bad / "mismatch.key").write_bytes(pki.client.key_pem())
    (bad / "damaged.crt").write_bytes(pki.server.cert_pem())
    (bad / "damaged.key").write_bytes(key_pem.replace(b"\n", b"\n!", 3))
    (bad / "encrypted.crt").write_bytes(pki.server.cert_pem())
    (bad / "encrypted.key").write_bytes(pki.server.key_pem(b"secret"))
    (bad / "keyonly.pem").write_bytes(key_pem)
    for p in bad.iterdir():
        p.chmod(0o600)
    bad_store = CertStore(bad)
    for name in ("mismatch", "damaged", "encrypted", "keyonly"):
        with pytest.raises(sslsock.Error) as info:
            bad_store.load_identity(name)
        show(info.value)
        with pytest.raises(sslsock.Error) as info:
            Listener(0, name, store=bad_store)
        show(info.value)
    show(*bad_store.problems)

    # a handshake that fails, through the named face
    assert sslsock.SocketCreateSSL("hostile-key", 0, "localhost", sslsock.ProtocolTLS1_3)
    port = int(sslsock.SocketClientInfo("hostile-key", sslsock.SocketPort))
    assert not sslsock.SocketConnectSSL("hostile-key-client", port, "localhost",
                                        sslsock.ProtocolTLS1_2, 5000)  # no common version
    show(sslsock.ErrorInfo(), sslsock.ErrorInfo(sslsock.errSystemMessage))

    shown.append(caplog.text)
    everything = "\n".join(shown)
    leaked = [c for c in chunks if c in everything]
    assert not leaked, f"private key material shown: {leaked[:2]}"
