"""The asyncio face (sslsock.aio) on the standard loop and on uvloop, against real peers:
stdlib-ssl clients in threads, asyncio.open_connection(ssl=...), openssl s_client, and
sslsock.aio's own client.  Every test runs under asyncio.timeout / wait_for bounds; every
peer thread has socket time-outs; every process is stopped by its PID.
"""
from __future__ import annotations

import asyncio
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable
from typing import Any, Callable

import pytest

import sslsock
import sslsock.aio as aio
from sslsock import Mode

LOOPBACK = "127.0.0.1"
TLS = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
BOUND = 30.0  # no test may run longer than this

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra
    uvloop = None

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine to completion on the loop the parameter names, bounded in time."""
    if request.param == "uvloop":
        if uvloop is None:
            pytest.fail("uvloop is not installed: pip install -e '.[test]'")
        new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        new_loop = asyncio.new_event_loop

    def runner(coro: Awaitable[Any]) -> Any:
        loop = new_loop()
        asyncio.set_event_loop(loop)  # (subprocesses need the loop to be current on 3.9-3.11)
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, BOUND))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()

    return runner


def frame(data: bytes) -> bytes:
    return b"%d\r\n%s" % (len(data), data)


async def echo(channel: aio.Channel) -> None:
    async for message in channel:
        await channel.write(message)


def stdlib_client(pki: Any, port: int) -> ssl.SSLSocket:
    ctx = pki.client_context()
    raw = socket.create_connection((LOOPBACK, port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def recv_exactly(s: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---------------------------------------------------------------------------------------
# Serving real peers


def test_echo_stdlib_clients(pki: Any, run: Any) -> None:
    """Several stdlib-ssl clients at once, each several framed messages, split and
    coalesced writes; the peer info is SocketClientInfo's."""
    infos: list[Any] = []

    async def handle(ch: aio.Channel) -> None:
        infos.append((ch.info(), ch.get_extra_info("peername"), ch.peer_certificate()))
        await echo(ch)

    def client(port: int, k: int) -> list[bytes]:
        with stdlib_client(pki, port) as s:
            msgs = [b"client %d message %d " % (k, i) * (i + 1) for i in range(20)]
            wire = b"".join(frame(m) for m in msgs)
            s.sendall(wire[:7])
            time.sleep(0.01)
            s.sendall(wire[7:])
            return [recv_exactly(s, len(frame(m)))[len(frame(m)) - len(m):] for m in msgs]

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            results = await asyncio.gather(*(in_thread(client, server.port, k)
                                             for k in range(6)))
        for k, got in enumerate(results):
            assert got == [b"client %d message %d " % (k, i) * (i + 1) for i in range(20)]
        assert len(infos) == 6
        info, peer, cert = infos[0]
        assert info.protocol == "TLSv1.3" and info.cipher and info.peer_address == LOOPBACK
        assert peer == (LOOPBACK, info.peer_port)
        assert cert is None  # no client certificate asked for

    run(main())


def test_asyncio_open_connection_peer_and_modes(pki: Any, run: Any) -> None:
    """asyncio's own TLS client against each transmission mode."""
    cases = [
        (Mode.SocketSizeAtBeginning, b"<EOF>", lambda m: frame(m)),
        (Mode.SocketEndTag, b"\r\n", lambda m: m + b"\r\n"),
        (Mode.SocketEndTagBuffer, b"<END>", lambda m: m + b"<END>"),
    ]

    async def main() -> None:
        for mode, tag, wrap in cases:
            server = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK,
                                            mode=mode, end_tag=tag)
            async with server:
                r, w = await asyncio.open_connection(LOOPBACK, server.port,
                                                     ssl=pki.client_context(),
                                                     server_hostname="localhost")
                msgs = [b"alpha", b"beta" * 50, b"x" * 20000]
                for m in msgs:  # one at a time: SocketEndTag drops what follows a tag
                    w.write(wrap(m))
                    assert await r.readexactly(len(wrap(m))) == wrap(m)
                w.close()
                await w.wait_closed()

    run(main())


def test_no_end_tag_bulk_and_aio_client(pki: Any, run: Any) -> None:
    """sslsock.aio's client against its server: 4 MiB through SocketNoEndTag (raw bytes),
    and framed messages both ways."""

    async def main() -> None:
        raw = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK,
                                     mode=Mode.SocketNoEndTag)
        framed = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK)
        async with raw, framed:
            ch = await aio.connect(LOOPBACK, raw.port, options=TLS,
                                   mode=Mode.SocketNoEndTag, server_hostname="localhost")
            data = os.urandom(1 << 22)
            sender = asyncio.ensure_future(_send_chunks(ch, data))
            got = bytearray()
            while len(got) < len(data):
                got += await ch.read()
            await sender
            assert bytes(got) == data
            assert ch.protocol == "TLSv1.3"
            await ch.close()
            async with await aio.connect("localhost", framed.port) as ch2:
                for i in range(50):
                    await ch2.write(b"m%d" % i)
                assert [await ch2.read() for _ in range(50)] == [b"m%d" % i for i in range(50)]
            assert ch2.closed

    run(main())


async def _send_chunks(ch: aio.Channel, data: bytes) -> None:
    for i in range(0, len(data), 65536):
        await ch.write(data[i:i + 65536])


def test_openssl_s_client(pki: Any, run: Any) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("the openssl command is missing (scripts/bootstrap installs it)")

    def s_client(port: int) -> bytes:
        proc = subprocess.Popen(
            [openssl, "s_client", "-connect", f"{LOOPBACK}:{port}", "-quiet",
             "-CAfile", str(pki.ca_file), "-verify_return_error"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"hello from s_client\n")
            proc.stdin.flush()
            got = b""
            deadline = time.monotonic() + 10
            fd = proc.stdout.fileno()
            while not got.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        break
                    got += chunk
            return got
        finally:
            proc.kill()  # this PID only
            proc.wait(10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    async def main() -> None:
        server = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK,
                                        mode=Mode.SocketEndTag, end_tag=b"\n")
        async with server:
            assert await in_thread(s_client, server.port) == b"hello from s_client\n"

    run(main())


def test_mutual_tls_peer_certificate(pki: Any, run: Any) -> None:
    seen: list[Any] = []

    async def handle(ch: aio.Channel) -> None:
        seen.append(ch.peer_certificate())
        await echo(ch)

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", host=LOOPBACK,
                                        options=TLS | sslsock.SSLClientCertificate)
        async with server:
            ch = await aio.connect(LOOPBACK, server.port, options=TLS,
                                   server_hostname="localhost", client_cert="sslsock test client")
            async with ch:
                await ch.write(b"who am I")
                assert await ch.read() == b"who am I"
                assert ch.peer_certificate() is not None  # the server's
        from cryptography.x509.oid import NameOID
        cn = seen[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == "sslsock test client"

    run(main())


# ---------------------------------------------------------------------------------------
# Cancellation, time-outs, closing


def test_tasks_resumed_by_the_engine_run_as_themselves(pki: Any, run: Any) -> None:
    """The engine resumes the tasks waiting for the channels a batch fed in the same loop
    iteration (not one Handle each later): each must still run as its own current task,
    in its own context, including a read wrapped in wait_for (a task of its own); a
    handler that fails or closes the server mid-batch leaves the others served."""
    import contextvars

    who: contextvars.ContextVar[int] = contextvars.ContextVar("who")
    wrong: list[str] = []

    async def handle(ch: aio.Channel) -> None:
        me = asyncio.current_task()
        first = await ch.read()
        who.set(int(first))
        await ch.write(first)
        async for message in ch:
            if asyncio.current_task() is not me:
                wrong.append("current task")
            if who.get(None) != int(first):
                wrong.append(f"context of {int(first)} saw {who.get(None)}")
            if message == b"fail":
                raise ValueError("this handler fails on purpose")
            if message == b"wrapped":
                message = await asyncio.wait_for(ch.read(), 5)
            await ch.write(message)

    def client(port: int, k: int) -> list[bytes]:
        with stdlib_client(pki, port) as s:
            s.sendall(frame(b"%d" % k))
            got = [recv_exactly(s, len(frame(b"%d" % k)))]
            for i in range(30):
                m = b"%d-%d" % (k, i)
                if k == 0 and i == 10:
                    s.sendall(frame(b"fail"))
                    return got
                s.sendall(frame(b"wrapped") + frame(m) if i % 7 == 3 else frame(m))
                got.append(recv_exactly(s, len(frame(m)))[-len(m):])
            return got

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            results = await asyncio.gather(*(in_thread(client, server.port, k)
                                             for k in range(8)))
        for k, got in enumerate(results[1:], 1):
            assert got[1:] == [b"%d-%d" % (k, i) for i in range(30)]
        assert wrong == []

    run(main())


def test_cancelled_read_loses_nothing(pki: Any, run: Any) -> None:
    async def main() -> None:
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def handle(ch: aio.Channel) -> None:
            for i in range(3):
                try:
                    await asyncio.wait_for(ch.read(), 0.05)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
            if hasattr(asyncio, "timeout"):  # Python 3.11+: the context manager too
                try:
                    async with asyncio.timeout(0.05):
                        await ch.read()
                except TimeoutError:
                    pass
            # the messages sent while nobody was reading are all there, in order
            for _ in range(3):
                await got.put(await ch.read())
            await ch.write(b"done")

        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            ch = await aio.connect(LOOPBACK, server.port, server_hostname="localhost")
            async with ch:
                await asyncio.sleep(0.6)  # the reads (0.2 s in all) time out meanwhile
                for m in (b"one", b"two", b"three"):
                    await ch.write(m)
                assert await ch.read() == b"done"
        assert [got.get_nowait() for _ in range(3)] == [b"one", b"two", b"three"]

    run(main())


@pytest.mark.parametrize("how", ["read", "anext", "anext-timeout"])
def test_reads_cancelled_while_messages_arrive_lose_nothing(pki: Any, run: Any,
                                                            how: str) -> None:
    """Reads time out over and over (1 ms) while 300 messages arrive: some time-outs hit
    just as a message was delivered; every message still comes out once, in order.  The
    same for an ``async for``'s step (``anext``: the engine hands it its message with the
    task's step), under wait_for and under asyncio.timeout."""
    count = 300

    async def one(ch: aio.Channel) -> bytes:
        if how == "read":
            return await asyncio.wait_for(ch.read(), 0.001)
        if how == "anext" or not hasattr(asyncio, "timeout"):
            return await asyncio.wait_for(ch.__anext__(), 0.001)
        async with asyncio.timeout(0.001):
            return await ch.__anext__()

    async def handle(ch: aio.Channel) -> None:
        got: list[bytes] = []
        timeouts = 0
        while len(got) < count:
            try:
                got.append(await one(ch))
            except (asyncio.TimeoutError, TimeoutError):
                timeouts += 1
        assert got == [b"m%d" % i for i in range(count)], got[:20]
        await ch.write(b"ok after %d time-outs" % timeouts)

    def client(port: int) -> bytes:
        with stdlib_client(pki, port) as s:
            for i in range(count):
                s.sendall(frame(b"m%d" % i))
                if i % 10 == 0:
                    time.sleep(0.002)
            head = recv_exactly(s, 3)  # the size header "NN\r\n" of the reply
            while not head.endswith(b"\r\n"):
                head += recv_exactly(s, 1)
            return recv_exactly(s, int(head[:-2]))

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            reply = await in_thread(client, server.port)
        assert reply.startswith(b"ok after ")

    run(main())


def test_write_backpressure_cancel_is_whole(pki: Any, run: Any) -> None:
    """A peer that does not read: writes queue up to the high-water mark, then wait; a
    write cancelled while waiting queued nothing, and the channel stays usable: once the
    peer reads, every byte of every completed write arrives, framed whole."""
    results: dict[str, Any] = {}

    async def handle(ch: aio.Channel) -> None:
        chunk = b"z" * 65536
        done = 0
        while True:
            try:
                await asyncio.wait_for(ch.write(chunk), 0.3)
            except (asyncio.TimeoutError, TimeoutError):
                break
            done += 1
        results["done"] = done
        results["queued"] = ch.queued()
        await ch.write(b"last")
        await ch.read()  # until the client says it has everything

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK,
                                        high_water=256 * 1024)
        async with server:
            s = await in_thread(stdlib_client, pki, server.port)
            try:
                await asyncio.sleep(1.0)  # writes pile up: the peer does not read

                def drain() -> int:
                    total = 0
                    while "done" not in results:
                        time.sleep(0.01)
                    for _ in range(results["done"]):
                        assert recv_exactly(s, len(frame(b"z" * 65536))) == frame(b"z" * 65536)
                        total += 1
                    assert recv_exactly(s, len(frame(b"last"))) == frame(b"last")
                    s.sendall(frame(b"bye"))
                    return total

                total = await in_thread(drain)
            finally:
                s.close()
        assert results["done"] == total > 0
        # it stopped near the high-water mark, not at the kernel buffers' size
        assert results["queued"] <= 256 * 1024 + 65536 + 16

    run(main())


@pytest.mark.parametrize("engine_thread", [False, True])
def test_server_close_lets_handlers_finish(pki: Any, run: Any, engine_thread: bool) -> None:
    async def main() -> None:
        finished = asyncio.Event()

        async def handle(ch: aio.Channel) -> None:
            msg = await ch.read()
            await asyncio.sleep(0.2)  # still working when the server closes
            await ch.write(msg + b" (after close)")
            finished.set()

        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK,
                                        engine_thread=engine_thread)
        ch = await aio.connect(LOOPBACK, server.port, server_hostname="localhost",
                               engine_thread=engine_thread)
        await ch.write(b"late")
        await asyncio.sleep(0.05)
        server.close()
        assert not server.is_serving()
        # a new client is refused
        with pytest.raises(sslsock.ConnectionRefused):
            await aio.connect(LOOPBACK, server.port, server_hostname="localhost", timeout=2)
        assert await ch.read() == b"late (after close)"
        await asyncio.wait_for(server.wait_closed(), 5)
        assert finished.is_set()
        # the handler returned, so its channel was closed: close_notify reached us
        with pytest.raises(sslsock.PeerClosed):
            await ch.read()
        await ch.close()

    run(main())


def test_serve_forever_cancel_and_channel_close_notify(pki: Any, run: Any) -> None:
    async def main() -> None:
        async def handle(ch: aio.Channel) -> None:
            await ch.write(b"bye")
            await ch.close()  # close_notify

        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        task = asyncio.ensure_future(server.serve_forever())

        def client() -> bytes:
            with stdlib_client(pki, server.port) as s:
                got = recv_exactly(s, len(frame(b"bye")))
                assert s.recv(10) == b""  # a clean TLS close (close_notify), not a reset
                return got

        assert await in_thread(client) == frame(b"bye")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.wait_closed(), 5)
        assert not server.is_serving()

    run(main())


def test_reader_cancelled_by_close_and_errors(pki: Any, run: Any) -> None:
    async def main() -> None:
        server = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            ch = await aio.connect(LOOPBACK, server.port, server_hostname="localhost")
            reader = asyncio.ensure_future(ch.read())
            await asyncio.sleep(0.05)
            with pytest.raises(sslsock.ProgrammingError, match="another task"):
                await ch.read()
            await ch.close()
            with pytest.raises(sslsock.SocketClosed):
                await reader
            with pytest.raises(sslsock.SocketClosed):
                await ch.write(b"x")
            with pytest.raises(TypeError, match="bytes"):
                ch2 = await aio.connect(LOOPBACK, server.port, server_hostname="localhost")
                try:
                    await ch2.write(12)  # type: ignore[arg-type]
                finally:
                    await ch2.close()

    run(main())


def test_bad_arguments_say_what_to_do(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(sslsock.CertificateError, match="needs a certificate"):
            await aio.start_server(echo, 0)
        with pytest.raises(sslsock.ArgumentError, match="high_water"):
            await aio.start_server(echo, 0, "localhost", high_water=0)
        with pytest.raises(TypeError, match="async function"):
            await aio.start_server(None, 0, "localhost")  # type: ignore[arg-type]
        with pytest.raises(sslsock.ConnectionRefused, match="no server is listening"):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
            s.close()  # nobody listens there
            await aio.connect(LOOPBACK, port, timeout=2)

    run(main())


# ---------------------------------------------------------------------------------------
# Hostile peers


def test_client_vanishes_mid_frame(pki: Any, run: Any) -> None:
    """Half a frame, then the TCP connection is dropped: the handler's loop ends with an
    error it can catch (no message invented), and the server serves the next client."""
    outcomes: list[Any] = []

    async def handle(ch: aio.Channel) -> None:
        msgs = []
        try:
            async for m in ch:
                msgs.append(m)
                if m == b"still here":
                    await ch.write(m)
        except sslsock.ConnectionFailure as e:
            outcomes.append((msgs, type(e)))
            return
        outcomes.append((msgs, None))

    def vanish(port: int) -> None:
        s = stdlib_client(pki, port)
        s.sendall(frame(b"whole") + b"100\r\nonly part")
        time.sleep(0.1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST, mid-frame

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            await in_thread(vanish, server.port)
            for _ in range(200):
                if outcomes:
                    break
                await asyncio.sleep(0.02)
            ch = await aio.connect(LOOPBACK, server.port, server_hostname="localhost")
            async with ch:
                await ch.write(b"still here")
                assert await ch.read() == b"still here"
        assert outcomes[0][0] == [b"whole"]
        assert outcomes[0][1] is not None  # a ConnectionFailure, not a clean end

    run(main())


def test_thousand_idle_clients_and_a_good_one(pki: Any, run: Any) -> None:
    """1,000 clients that connect (TCP only, or TLS and then silence) and never send: a
    good client is still served promptly."""
    N = 1000

    async def main() -> None:
        server = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK,
                                        handshake_timeout=20)
        async with server:
            idle: list[socket.socket] = []
            try:
                def open_idle() -> None:
                    for i in range(N):
                        if i % 10 == 0:  # some finish the handshake, then go silent
                            idle.append(stdlib_client(pki, server.port))
                        else:
                            idle.append(socket.create_connection((LOOPBACK, server.port),
                                                                  timeout=10))
                await in_thread(open_idle)
                t0 = time.monotonic()
                ch = await aio.connect(LOOPBACK, server.port, server_hostname="localhost",
                                       timeout=10)
                async with ch:
                    for i in range(20):
                        await ch.write(b"ping %d" % i)
                        assert await ch.read() == b"ping %d" % i
                elapsed = time.monotonic() - t0
                assert elapsed < 3.0, f"the good client took {elapsed:.2f} s"
            finally:
                for s in idle:
                    s.close()

    run(main())


# ---------------------------------------------------------------------------------------
# The engine's thread and the loop's one reader


def test_one_reader_for_many_channels(pki: Any, run: Any) -> None:
    """200 channels, one descriptor on the loop; the loop thread does no TLS reading (the
    engine's thread does); the same works with engine_thread=False."""

    async def main() -> None:
        for thread in (True, False):
            server = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK,
                                            engine_thread=thread)
            async with server:
                chans = await asyncio.gather(*(aio.connect(LOOPBACK, server.port,
                                                           server_hostname="localhost",
                                                           engine_thread=thread)
                                               for _ in range(200)))
                await asyncio.gather(*(c.write(b"hi %d" % i) for i, c in enumerate(chans)))
                got = await asyncio.gather(*(c.read() for c in chans))
                assert got == [b"hi %d" % i for i in range(200)]
                assert len(server._engine.channels) == 200
                await asyncio.gather(*(c.close() for c in chans))

    run(main())


def test_server_stopped_while_clients_read(pki: Any, run: Any) -> None:
    """Handlers cancelled (close_channels): the clients see their channels end."""

    async def main() -> None:
        async def handle(ch: aio.Channel) -> None:
            await asyncio.sleep(60)

        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK)
        chans = [await aio.connect(LOOPBACK, server.port, server_hostname="localhost")
                 for _ in range(3)]
        await asyncio.sleep(0.1)
        server.close()
        server.close_channels()
        await asyncio.wait_for(server.wait_closed(), 5)
        for ch in chans:
            with pytest.raises(sslsock.PeerClosed):
                await asyncio.wait_for(ch.read(), 5)
            await ch.close()

    run(main())


def test_threads_left_behind(pki: Any, run: Any) -> None:
    """Every engine thread is joined once its server and its clients are closed."""

    async def main() -> None:
        server = await aio.start_server(echo, 0, "localhost", options=TLS, host=LOOPBACK)
        async with server:
            async with await aio.connect(LOOPBACK, server.port,
                                         server_hostname="localhost") as ch:
                await ch.write(b"x")
                assert await ch.read() == b"x"

    before = threading.active_count()
    run(main())
    assert not aio._client_engines  # the client engine went with its last channel
    assert threading.active_count() <= before + 8  # the handshake pool at most


@pytest.mark.parametrize("engine_thread", [False, True])
def test_flooding_client_is_paused_not_buffered(pki: Any, run: Any, engine_thread: bool
                                                ) -> None:
    """A client sends 16 MiB to a handler that does not read yet: the engine stops reading
    that peer once the channel holds its limit (the kernel's buffers then push back on the
    client) instead of buffering everything; once the handler reads, every message arrives
    whole and in order."""
    limit = 256 * 1024
    size, count = 65536, 256
    seen: dict[str, Any] = {}

    async def handle(ch: aio.Channel) -> None:
        await asyncio.sleep(1.0)  # not reading meanwhile
        seen["unread"] = ch._unread
        n = 0
        while n < count:
            m = await ch.read()
            assert m == bytes([n % 251]) * size
            n += 1
        await ch.write(b"all %d" % n)
        seen["n"] = n

    def flood(port: int) -> bytes:
        with stdlib_client(pki, port) as s:
            s.settimeout(20)
            for i in range(count):
                s.sendall(frame(bytes([i % 251]) * size))
            return recv_exactly(s, len(frame(b"all %d" % count)))

    async def main() -> None:
        server = await aio.start_server(handle, 0, "localhost", options=TLS, host=LOOPBACK,
                                        high_water=limit, engine_thread=engine_thread)
        async with server:
            assert await in_thread(flood, server.port) == frame(b"all %d" % count)
        assert seen["n"] == count
        # what the channel held while its task slept: about the limit, not 16 MiB
        assert limit < seen["unread"] <= limit + 2 * size, seen

    run(main())
