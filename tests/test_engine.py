"""The channel engine: one thread serving many channels (Listener.messages(), the named
face's SocketWaitForMessage, the Hub underneath), against stdlib-ssl and sslsock peers.

Every peer runs in a thread with socket time-outs; every server loop is bounded by its own
time-out, so a failure ends the test instead of hanging it.
"""
from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable

import pytest

import sslsock
from sslsock import Mode
from sslsock._core.engine import ACCEPTED, ENDED, MESSAGE, Hub

LOOPBACK = "127.0.0.1"
TLS = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
PEER_TIMEOUT = 10.0


def frame(data: bytes) -> bytes:
    return b"%d\r\n%s" % (len(data), data)


def tls_client(pki: Any, port: int, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
               ) -> ssl.SSLSocket:
    ctx = pki.client_context()
    ctx.minimum_version = ctx.maximum_version = version
    raw = socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def recv_exactly(s: ssl.SSLSocket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise AssertionError(f"peer closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


class Peers:
    """Client threads whose failures are re-raised in the test."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - reported by join()
                self.errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self) -> None:
        for t in self.threads:
            t.join(PEER_TIMEOUT * 2)
            assert not t.is_alive(), "a peer thread did not finish"
        if self.errors:
            raise self.errors[0]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_messages_serves_many_stdlib_clients_from_one_thread(pki: Any,
                                                             version: ssl.TLSVersion) -> None:
    clients, rounds = 8, 20
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        peers = Peers()

        def client(i: int) -> None:
            with tls_client(pki, listener.port, version) as s:
                for j in range(rounds):
                    m = f"client {i} message {j} ".encode() * (j + 1)
                    s.sendall(frame(m))
                    assert recv_exactly(s, len(frame(m))) == frame(m)

        for i in range(clients):
            peers.start(client, i)
        got = ended = 0
        seen: set[sslsock.Connection] = set()  # the objects: an id is reused once freed
        for conn, message in listener.messages(timeout=5.0):
            if message:
                assert conn.protocol == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3
                                         else "TLSv1.2")
                conn.write(message)
                got += 1
                seen.add(conn)
            else:
                ended += 1
                assert not conn.closed  # closed after the loop body, not before
            if ended == clients:
                break
        peers.join()
    assert got == clients * rounds
    assert ended == clients
    assert len(seen) == clients


def test_batch_of_frames_in_one_write_gives_each_message(pki: Any) -> None:
    """Several frames in one TLS record come out as several messages, in order."""
    parts = [b"one", b"", b"three" * 100, b"\r\n4\r\n"]
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        peers = Peers()

        def client() -> None:
            with tls_client(pki, listener.port) as s:
                s.sendall(b"".join(frame(p) for p in parts))
                time.sleep(0.2)

        peers.start(client)
        out = []
        for _conn, message in listener.messages(timeout=5.0):
            out.append(message)
            if len(out) == len(parts) + 1:
                break
        peers.join()
    # b"" (the empty message) and the end look alike: the last one is the end
    assert out[:-1] == parts and out[-1] == b""


@pytest.mark.parametrize("mode,tag", [(Mode.SocketEndTag, b"<EOF>"),
                                      (Mode.SocketEndTagBuffer, b"|"),
                                      (Mode.SocketSizeAtBeginning, b"<EOF>")])
def test_every_mode_with_sslsock_clients(pki: Any, mode: Mode, tag: bytes) -> None:
    msgs = [b"alpha", b"beta" * 1000, b"gamma"]
    with sslsock.Listener(0, "localhost", options=TLS, mode=mode, end_tag=tag) as listener:
        peers = Peers()

        def client() -> None:
            with sslsock.connect("localhost", listener.port, options=TLS, mode=mode,
                                 end_tag=tag, cafile_pem=pki.ca_file.read_bytes()) as c:
                for m in msgs:
                    c.write(m)
                    assert c.read(PEER_TIMEOUT) == m

        peers.start(client)
        n = 0
        for conn, message in listener.messages(timeout=5.0):
            if not message:
                break
            assert conn.mode == mode
            conn.write(message)
            n += 1
        peers.join()
    assert n == len(msgs)


def test_large_messages_and_a_raw_stream(pki: Any) -> None:
    """A 3 MiB sized message (assembled over many reads) and 2 MiB of raw stream."""
    big = bytes(range(256)) * (3 * 4096)
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        peers = Peers()

        def client() -> None:
            with tls_client(pki, listener.port) as s:
                s.sendall(frame(big) + frame(b"after"))
                assert recv_exactly(s, len(frame(b"ok 3145728"))) == frame(b"ok 3145728")
                assert recv_exactly(s, len(frame(b"ok 5"))) == frame(b"ok 5")

        peers.start(client)
        sizes = []
        for conn, message in listener.messages(timeout=10.0):
            if not message:
                break
            if len(message) == len(big):
                assert message == big
            sizes.append(len(message))
            conn.write(b"ok %d" % len(message))
        peers.join()
    assert sizes == [len(big), 5]

    stream = bytes(range(251)) * 8355  # about 2 MiB
    with sslsock.Listener(0, "localhost", options=TLS, mode=Mode.SocketNoEndTag) as listener:
        peers = Peers()
        echoed = bytearray()

        def streamer() -> None:
            with tls_client(pki, listener.port) as s:
                s.sendall(stream)
                while len(echoed) < len(stream):
                    chunk = s.recv(1 << 16)
                    assert chunk
                    echoed.extend(chunk)

        peers.start(streamer)
        for conn, message in listener.messages(timeout=10.0, max_bytes=32768):
            if not message:
                break
            assert len(message) <= 32768
            conn.write(message)
        peers.join()
    assert bytes(echoed) == stream


def test_a_stream_of_messages_larger_than_a_pass(pki: Any) -> None:
    """64 KiB messages sent back to back: each is assembled in the channel's message buffer
    over two passes.  A channel is served once per poll, so a batch never holds two
    messages pointing into that one buffer (found by the asyncio face's flood test: a
    message came out with the bytes of the next one)."""
    size, count = 65536, 48
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        peers = Peers()

        def client() -> None:
            with tls_client(pki, listener.port) as s:
                s.sendall(b"".join(frame(bytes([i]) * size) for i in range(count)))
                assert recv_exactly(s, len(frame(b"done"))) == frame(b"done")

        peers.start(client)
        got = []
        for conn, message in listener.messages(timeout=10.0):
            if not message:
                break
            got.append(message)
            if len(got) == count:
                conn.write(b"done")
        peers.join()
    assert [m == bytes([i]) * size for i, m in enumerate(got)] == [True] * count


def test_a_bad_frame_ends_that_channel_only(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        peers = Peers()
        good_done = threading.Event()

        def bad() -> None:
            with tls_client(pki, listener.port) as s:
                s.sendall(b"12x\r\nnot a number")
                try:
                    assert s.recv(100) == b""  # closed by the server (close_notify)
                except (ConnectionError, ssl.SSLError):
                    pass

        def good() -> None:
            with tls_client(pki, listener.port) as s:
                for i in range(5):
                    s.sendall(frame(b"ping %d" % i))
                    assert recv_exactly(s, len(frame(b"ping 0"))) == frame(b"ping %d" % i)
            good_done.set()

        peers.start(bad)
        ended_conns = []
        answered = 0
        for conn, message in listener.messages(timeout=5.0):
            if message:
                conn.write(message)
                answered += 1
            else:
                ended_conns.append(conn)
                if len(ended_conns) == 1:
                    with pytest.raises(sslsock.FrameError, match="not a decimal number"):
                        conn.read(0)
                    peers.start(good)  # the server carries on
                if len(ended_conns) == 2:
                    break
        peers.join()
    assert answered == 5 and good_done.is_set()
    assert all(c.closed for c in ended_conns)


def test_idle_clients_do_not_delay_a_working_one(pki: Any) -> None:
    idle_n = 300
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        idle = []
        ctx = pki.client_context()
        for _ in range(idle_n):
            raw = socket.create_connection((LOOPBACK, listener.port), timeout=PEER_TIMEOUT)
            idle.append(ctx.wrap_socket(raw, server_hostname="localhost"))
        peers = Peers()
        took: list[float] = []

        def worker() -> None:
            with tls_client(pki, listener.port) as s:
                for _ in range(20):
                    t = time.monotonic()
                    s.sendall(frame(b"hi"))
                    assert recv_exactly(s, 5) == frame(b"hi")
                    took.append(time.monotonic() - t)

        peers.start(worker)
        for conn, message in listener.messages(timeout=5.0):
            if not message:
                break
            conn.write(message)
        peers.join()
        for s in idle:
            s.close()
        assert listener.stats().handshakes >= idle_n + 1
    assert len(took) == 20 and max(took) < 1.0


def test_time_out_and_close_end_the_loop(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        t = time.monotonic()
        assert list(listener.messages(timeout=0.2)) == []
        assert 0.15 < time.monotonic() - t < 3.0
        threading.Timer(0.3, listener.close).start()
        t = time.monotonic()
        assert list(listener.messages(timeout=30)) == []
        assert time.monotonic() - t < 5.0


def test_hub_fileno_is_readable_when_a_poll_has_events(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", options=TLS) as listener, Hub(listener) as hub:
        fd = hub.fileno()
        assert select.select([fd], [], [], 0.05)[0] == []
        with tls_client(pki, listener.port) as s:
            assert select.select([fd], [], [], PEER_TIMEOUT)[0] == [fd]
            kinds = [k for k, _c, _m in hub.poll(0)]
            assert kinds[0] == ACCEPTED
            s.sendall(frame(b"a") + frame(b"b"))
            assert select.select([fd], [], [], PEER_TIMEOUT)[0] == [fd]
            batch = hub.poll(1000)
            assert [(k, m) for k, _c, m in batch] == [(MESSAGE, b"a"), (MESSAGE, b"b")]
            conn = batch[0][1]
        assert select.select([fd], [], [], PEER_TIMEOUT)[0] == [fd]
        assert [(k, c) for k, c, _m in hub.poll(1000)] == [(ENDED, conn)]
        # the stdlib client closed without close_notify (and with our tickets unread: RST)
        with pytest.raises((sslsock.PeerClosed, sslsock.ConnectionReset)):
            conn.read(0)
        conn.close()
        assert hub.poll(50) == []  # nothing more: a time-out


def test_hub_serves_client_connections_too(pki: Any) -> None:
    """Client connections (sslsock.connect) joined to a hub: the same engine for both
    sides."""
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        stop = threading.Event()

        def server() -> None:
            for conn, message in listener.messages(timeout=5.0):
                if message:
                    conn.write(b"re: " + message)
                if stop.is_set():
                    return

        th = threading.Thread(target=server, daemon=True)
        th.start()
        with Hub() as hub:
            conns = [sslsock.connect("localhost", listener.port, options=TLS,
                                     cafile_pem=pki.ca_file.read_bytes()) for _ in range(4)]
            for i, c in enumerate(conns):
                hub.add(c)
                c.write(b"hello %d" % i)
            replies = {}
            deadline = time.monotonic() + PEER_TIMEOUT
            while len(replies) < 4 and time.monotonic() < deadline:
                for kind, c, m in hub.poll(1000):
                    assert kind == MESSAGE
                    replies[conns.index(c)] = m
            assert replies == {i: b"re: hello %d" % i for i in range(4)}
            for c in conns:
                hub.discard(c)
                c.write(b"direct")  # out of the hub: read as usual
                assert c.read(PEER_TIMEOUT) == b"re: direct"
                c.close()
        stop.set()
        th.join(PEER_TIMEOUT)


def test_named_face_wait_for_message(pki: Any) -> None:
    ss = sslsock
    assert ss.SocketCreateSSL("hubsrv", 0, "localhost", ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3)
    port = int(ss.SocketClientInfo("hubsrv", ss.SocketPort))
    t = time.monotonic()
    assert ss.SocketWaitForMessage("hubsrv", 100) == ""
    assert not ss.ErrorOccurred()  # a time-out is not an error
    assert time.monotonic() - t < 3.0
    peers = Peers()

    def client(i: int) -> None:
        with tls_client(pki, port) as s:
            for j in range(3):
                m = b"c%d m%d" % (i, j)
                s.sendall(frame(m))
                reply = frame(b"echo " + m)
                assert recv_exactly(s, len(reply)) == reply
        # closing ends the channel

    for i in range(3):
        peers.start(client, i)
    served = ended = 0
    names = set()
    deadline = time.monotonic() + 10
    while ended < 3 and time.monotonic() < deadline:
        ch = ss.SocketWaitForMessage("hubsrv", 5000)
        assert ch, ss.ErrorInfo()
        assert ch.startswith("hubsrv#") and ss.SocketExist(ch)
        names.add(ch)
        data = ss.SocketRead(ch, False, 0)
        if data:
            assert not ss.ErrorOccurred()
            assert ss.SocketWrite(ch, b"echo " + data)
            served += 1
        else:
            assert ss.ErrorOccurred()
            assert "closed" in str(ss.ErrorInfo(ss.errMessage))
            assert ss.SocketClose(ch)
            ended += 1
    peers.join()
    assert served == 9 and ended == 3 and len(names) == 3
    assert ss.SocketClose("hubsrv")
    with pytest.raises(sslsock.SocketNameError):
        ss.SocketWaitForMessage("hubsrv", 10)


def test_a_pool_of_threads_on_wait_for_message_never_splits_a_channel(pki: Any) -> None:
    """Four threads serve eight clients through SocketWaitForMessage: every reply comes back
    in order, and no channel is ever in two threads' hands at once."""
    ss = sslsock
    assert ss.SocketCreateSSL("poolsrv", 0, "localhost", TLS)
    port = int(ss.SocketClientInfo("poolsrv", ss.SocketPort))
    lock = threading.Lock()
    in_hand: dict[str, int] = {}
    overlaps: list[str] = []
    served: dict[str, int] = {}
    ended: list[str] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            ch = ss.SocketWaitForMessage("poolsrv", 200)
            if not ch:
                continue
            with lock:
                if ch in in_hand:
                    overlaps.append(ch)
                in_hand[ch] = threading.get_ident()
            data = ss.SocketRead(ch, False, 0)
            time.sleep(0.001)  # widen the window in which a second thread could get it
            with lock:
                in_hand.pop(ch, None)
            if data:
                served[ch] = served.get(ch, 0) + 1
                ss.SocketWrite(ch, b"echo " + data)
            else:
                ended.append(ch)
                ss.SocketClose(ch)

    def client(i: int) -> None:
        with tls_client(pki, port) as s:
            # several messages in flight at once, so that one channel has many ready
            msgs = [b"c%d m%d" % (i, j) for j in range(30)]
            s.sendall(b"".join(frame(m) for m in msgs[:10]))
            for j, m in enumerate(msgs):
                reply = frame(b"echo " + m)
                assert recv_exactly(s, len(reply)) == reply, (i, j)
                if j + 10 < len(msgs):
                    s.sendall(frame(msgs[j + 10]))

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        peers = Peers()
        for i in range(8):
            peers.start(client, i)
        peers.join()
        deadline = time.monotonic() + 10
        while len(ended) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for w in workers:
            w.join(PEER_TIMEOUT)
    assert not overlaps, f"channels handed to two threads at once: {overlaps}"
    assert sorted(served.values()) == [30] * 8, served
    assert len(ended) == 8
    assert ss.SocketClose("poolsrv")


@pytest.mark.skipif(os.environ.get("SSLSOCK_SANITIZED") == "1",
                    reason="AddressSanitizer keeps freed memory in quarantine: RSS says nothing")
def test_memory_returns_after_a_burst_of_abandoned_handshakes(pki: Any) -> None:
    """Thousands of clients that send half a ClientHello and fall silent: the server's
    memory grows while they hang, and goes back near where it started once the handshake
    time-out has dropped them (glibc keeps freed memory in per-thread arenas otherwise)."""
    import resource

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    n = 4400  # as many as the report that found it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n * 2 + 512:
        pytest.skip(f"needs {n * 2 + 512} descriptors, the limit is {soft}")
    # the record header announces 200 bytes; 100 come, then nothing
    hello = bytes.fromhex("16030100c8010000c40303") + bytes(89)
    with sslsock.Listener(0, "localhost", options=TLS, handshake_timeout=1.0) as listener:
        start = rss_mb()
        peaks = []
        for _ in range(2):
            socks = []
            try:
                for _ in range(n):
                    s = socket.create_connection((LOOPBACK, listener.port), timeout=PEER_TIMEOUT)
                    s.sendall(hello)
                    socks.append(s)
                time.sleep(0.3)
                peaks.append(rss_mb())
                deadline = time.monotonic() + 15
                while listener.stats().pending and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert listener.stats().pending == 0
            finally:
                for s in socks:
                    s.close()
        time.sleep(0.3)
        after = rss_mb()
        assert listener.stats().timed_out >= 2 * n * 0.95
    assert max(peaks) - start > 40, (start, peaks)  # the burst did cost memory
    assert after - start < 25, f"RSS {start:.0f} MB -> peaks {peaks} -> {after:.0f} MB"


def test_a_client_that_does_not_read_does_not_stall_the_others(pki: Any) -> None:
    """Replies to a client that reads nothing are queued (up to the high-water mark) and sent
    by the engine later; the one thread keeps serving the others meanwhile."""
    chunk = bytes(range(256)) * 256  # 64 KiB
    n_chunks = 12  # 768 KiB: more than the socket buffers hold, less than the 1 MiB mark
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        peers = Peers()
        slow_may_read = threading.Event()
        fast_took: list[float] = []
        slow_got = bytearray()

        def slow() -> None:
            with tls_client(pki, listener.port) as s:
                s.sendall(frame(b"flood me"))
                assert slow_may_read.wait(PEER_TIMEOUT)
                want = n_chunks * len(frame(chunk))
                while len(slow_got) < want:
                    data = s.recv(1 << 16)
                    assert data
                    slow_got.extend(data)

        def fast() -> None:
            with tls_client(pki, listener.port) as s:
                for i in range(10):
                    t = time.monotonic()
                    s.sendall(frame(b"ping %d" % i))
                    assert recv_exactly(s, len(frame(b"ping 0"))) == frame(b"ping %d" % i)
                    fast_took.append(time.monotonic() - t)
            slow_may_read.set()

        peers.start(slow)
        flood_took = None
        for conn, message in listener.messages(timeout=5.0):
            if message == b"flood me":
                t = time.monotonic()
                for _ in range(n_chunks):
                    conn.write(chunk)  # queued: the client is not reading
                flood_took = time.monotonic() - t
                peers.start(fast)
            elif message:
                conn.write(message)
            else:
                break  # the fast client left; the queue to the slow one is drained
        # the engine keeps sending while the loop runs; finish the slow client's stream
        peers.join()
    assert flood_took is not None and flood_took < 1.0
    assert len(fast_took) == 10 and max(fast_took) < 1.0
    assert bytes(slow_got) == frame(chunk) * n_chunks


def test_over_the_high_water_mark_a_write_waits_then_times_out_cleanly(pki: Any) -> None:
    chunk = b"x" * 65536
    with sslsock.Listener(0, "localhost", options=TLS) as listener:
        raw = socket.create_connection((LOOPBACK, listener.port), timeout=PEER_TIMEOUT)
        s = pki.client_context().wrap_socket(raw, server_hostname="localhost")
        try:
            s.sendall(frame(b"go"))
            for conn, message in listener.messages(timeout=5.0, high_water=256 * 1024):
                assert message == b"go"
                t = time.monotonic()
                with pytest.raises(sslsock.SocketTimeout):
                    for _ in range(512):  # 32 MiB: more than the mark and all buffers
                        conn.write(chunk, timeout=0.3)
                assert time.monotonic() - t < 5.0
                assert conn.info().state == "open"  # nothing torn: still usable
                break
        finally:
            s.close()


def test_default_handshake_threads_leave_one_cpu_to_python() -> None:
    # One handshake thread per CPU this process may use (affinity, cgroup quota), less one
    # (Python's, which uses one CPU at most), at least one; threads= still sets the number.
    def threads_of(**kwargs: Any) -> int:
        before = len(os.listdir("/proc/self/task"))
        with sslsock.Listener(0, tls=False, host="127.0.0.1", **kwargs):
            return len(os.listdir("/proc/self/task")) - before

    assert threads_of() == max(1, sslsock.available_cpus() - 1)
    assert threads_of(threads=3) == 3
    assert threads_of(threads=1) == 1
