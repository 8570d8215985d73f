"""The standard WINDEV server (SPEC §6), as the reference's socket guides write it: one
thread loops on SocketWaitForConnection + SocketAccept, and each channel gets a thread of
its own that echoes framed messages until the peer closes.

Fifty sslsock clients, each in its own thread and under its own name, exchange 100 framed
messages of random sizes (mostly small, some up to 1 MiB); every byte is checked on both
sides.
"""
from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

import sslsock
from sslsock._faces.registry import REGISTRY

LOOPBACK = "127.0.0.1"
CLIENTS = 50
MESSAGES = 100
MiB = 1 << 20
IO_MS = 30_000  # no single read may wait longer than this
BUDGET = 120.0  # seconds for the whole exchange


def message_size(rng: random.Random) -> int:
    """Skewed sizes: 88 % up to 4 KiB (empty messages included), 10 % up to 128 KiB,
    2 % from 256 KiB to 1 MiB.  About 21 KiB on average, ~100 MiB each way in all."""
    r = rng.random()
    if r < 0.88:
        return rng.randint(0, 4096)
    if r < 0.98:
        return rng.randint(4097, 128 * 1024)
    return rng.randint(256 * 1024, MiB)


def payloads(client: int) -> list[bytes]:
    rng = random.Random(client)
    sizes = [message_size(rng) for _ in range(MESSAGES)]
    if client < 10:  # some clients also send the largest message exactly
        sizes[rng.randrange(MESSAGES)] = MiB
    return [rng.randbytes(n) for n in sizes]


@dataclass
class ServerSide:
    received: dict[str, str] = field(default_factory=dict)  # client id -> sha256
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def channel_thread(ch: str, server: ServerSide) -> None:
    """Echo every message until the peer closes (WINDEV's per-channel thread)."""
    try:
        ident = sslsock.SocketRead(ch, False, IO_MS)
        if not ident:
            server.fail(f"{ch}: no client id: {sslsock.ErrorInfo()}")
            return
        digest = hashlib.sha256()
        n = 0
        while True:
            msg = sslsock.SocketRead(ch, False, IO_MS)
            if sslsock.ErrorOccurred():
                if sslsock.ErrorInfo(sslsock.errCode) != sslsock.ErrorCode.PEER_CLOSED:
                    server.fail(f"{ch} ({ident!r}): {sslsock.ErrorInfo()}")
                break
            digest.update(len(msg).to_bytes(8, "big") + msg)
            n += 1
            if not sslsock.SocketWrite(ch, msg):
                server.fail(f"{ch} ({ident!r}) write: {sslsock.ErrorInfo()}")
                break
        with server.lock:
            server.received[ident.decode()] = digest.hexdigest()
            server.counts[ident.decode()] = n
    finally:
        sslsock.SocketClose(ch)


def accept_loop(listener: str, server: ServerSide, stop: threading.Event) -> None:
    """WINDEV's waiting thread: wait (100 ms slices), accept, hand over to a thread."""
    while not stop.is_set():
        if not sslsock.SocketWaitForConnection(listener, 100):
            code = sslsock.ErrorInfo(sslsock.errCode)
            if code == sslsock.ErrorCode.TIMEOUT:
                continue
            if code != sslsock.ErrorCode.CLOSED:
                server.fail(f"wait: {sslsock.ErrorInfo()}")
            return
        ch = sslsock.SocketAccept(listener)
        if not ch:
            server.fail(f"accept: {sslsock.ErrorInfo()}")
            continue
        t = threading.Thread(target=channel_thread, args=(ch, server), daemon=True)
        with server.lock:
            server.channels.append(ch)
            server.threads.append(t)
        t.start()


def client_thread(i: int, port: int, results: dict[int, Any], go: threading.Event) -> None:
    name = f"client-{i}"
    sent = hashlib.sha256()
    echoed = hashlib.sha256()
    try:
        go.wait(10)
        if not sslsock.SocketConnectSSL(name, port, LOOPBACK, timeout=IO_MS):
            results[i] = f"connect: {sslsock.ErrorInfo()}"
            return
        assert sslsock.SocketWrite(name, name)
        moved = 0
        for k, msg in enumerate(payloads(i)):
            if not sslsock.SocketWrite(name, msg):
                results[i] = f"write {k}: {sslsock.ErrorInfo()}"
                return
            back = sslsock.SocketRead(name, False, IO_MS)
            if sslsock.ErrorOccurred():
                results[i] = f"read {k}: {sslsock.ErrorInfo()}"
                return
            if back != msg:
                results[i] = f"message {k}: {len(back)} bytes back for {len(msg)}"
                return
            sent.update(len(msg).to_bytes(8, "big") + msg)
            echoed.update(len(back).to_bytes(8, "big") + back)
            moved += 2 * len(msg)
        results[i] = (sent.hexdigest(), echoed.hexdigest(), moved)
    except BaseException as e:  # reported to the test thread
        results[i] = f"exception: {e!r}"
    finally:
        if sslsock.SocketExist(name):
            sslsock.SocketClose(name)


@pytest.mark.timeout(180)
def test_fifty_clients_hundred_messages_each(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost"), sslsock.ErrorInfo()
    port = REGISTRY.get("srv").obj.port
    server = ServerSide()
    stop = threading.Event()
    acceptor = threading.Thread(target=accept_loop, args=("srv", server, stop), daemon=True)
    acceptor.start()

    results: dict[int, Any] = {}
    go = threading.Event()
    clients = [threading.Thread(target=client_thread, args=(i, port, results, go), daemon=True)
               for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in clients:
        t.start()
    go.set()  # all connect at once
    for t in clients:
        t.join(max(0.0, BUDGET - (time.monotonic() - t0)))
    elapsed = time.monotonic() - t0
    stuck = [t.name for t in clients if t.is_alive()]
    assert not stuck, f"clients still running after {BUDGET} s: {stuck}"

    # the channel threads end when their peers leave
    with server.lock:
        threads = list(server.threads)
    for t in threads:
        t.join(max(1.0, BUDGET - (time.monotonic() - t0)))
    assert not [t for t in threads if t.is_alive()]
    stop.set()
    acceptor.join(5)
    assert not acceptor.is_alive()

    failures = {i: r for i, r in results.items() if not isinstance(r, tuple)}
    assert not failures, failures
    assert not server.errors, server.errors
    assert len(results) == CLIENTS
    assert len(server.channels) == CLIENTS
    total = 0
    for i in range(CLIENTS):
        sent, echoed, moved = results[i]
        assert sent == echoed
        assert server.received[f"client-{i}"] == sent  # every byte, as the server saw it
        assert server.counts[f"client-{i}"] == MESSAGES
        total += moved
    assert 50 * MiB < total < 320 * MiB

    stats = REGISTRY.get("srv").obj.stats()
    assert stats.handshakes == CLIENTS and stats.taken == CLIENTS
    assert stats.failed_tls == stats.failed_io == stats.timed_out == 0
    assert sslsock.SocketClose("srv")
    assert REGISTRY.names() == []  # every client, channel and the listener are closed
    assert elapsed < BUDGET
    print(f"{CLIENTS} clients, {CLIENTS * MESSAGES} messages, {total / MiB:.0f} MiB moved "
          f"in {elapsed:.1f} s")
