"""sslsock's named face, as WINDEV programs write a server: one thread waits for
connections (SocketWaitForConnection + SocketAccept); each channel is served by a worker.

--channels pool   channels go to a pool of reused threads (the variant the targets hold on):
                  up to 512, started as channels wait, each taking the next channel's name
                  from a queue (a name waiting costs a few dozen bytes: no Future per
                  channel, unlike concurrent.futures)
--channels thread a new thread per channel (costs ~67 µs of CPU per connection here)
--workers N       N processes on the port (sslsock.run_workers, Socket.Option =
                  SocketReusePort [extension]), each the server above; 1 (default): this
                  process alone
--proxy-protocol  [extension] connections come through a balancer sending the PROXY header
"""
from __future__ import annotations

import queue
import socket
import threading
from typing import Any

import common

import sslsock as ss


def echo(channel: str) -> None:
    ss.SocketChangeTransmissionMode(channel, ss.SocketNoEndTag)
    while True:
        data = ss.SocketRead(channel, True, 0, 65536)
        if not data or not ss.SocketWrite(channel, data):
            break
    ss.SocketClose(channel)


class ChannelPool:
    """Threads that serve channels one after another; a thread is started only when a
    channel arrives and none is idle (ThreadPoolExecutor's policy, without its Futures)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.names: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.idle = threading.Semaphore(0)
        self.threads = 0

    def submit(self, channel: str) -> None:
        self.names.put(channel)
        if not self.idle.acquire(blocking=False) and self.threads < self.limit:
            self.threads += 1  # only the accepting thread submits: no lock needed
            threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            echo(self.names.get())
            self.idle.release()


def serve(args: Any, port: int, announce: Any, stopping: Any = lambda: False) -> None:
    if args.proxy_protocol:
        ss.Socket.Option = ss.Socket.Option | ss.SocketProxyProtocol
    if not ss.SocketCreateSSL("server", port, args.pem, ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
        raise SystemExit(ss.ErrorInfo())
    ss.SocketChangeTransmissionMode("server", ss.SocketNoEndTag)
    announce(int(ss.SocketClientInfo("server", ss.SocketPort)))
    pool = ChannelPool(512) if args.channels == "pool" else None
    while not stopping():
        if not ss.SocketWaitForConnection("server", 500):
            continue
        channel = ss.SocketAccept("server")
        if not channel:
            continue
        if pool is not None:
            pool.submit(channel)
        else:
            threading.Thread(target=echo, args=(channel,), daemon=True).start()


def main() -> None:
    args = common.parse_pem_args(
        __doc__ or "", ("--channels", dict(choices=["pool", "thread"], default="pool")),
        ("--workers", dict(type=int, default=1)),
        ("--proxy-protocol", dict(action="store_true")))
    if args.workers <= 1:
        serve(args, args.port, common.ready)
        return
    port = args.port
    held = None
    if port == 0:  # one port for every worker: picked here, held until the end
        held = socket.socket()
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("", 0))
        port = held.getsockname()[1]
    ready: set[int] = set()

    def worker(w: ss.Worker) -> int:
        ss.Socket.Option = ss.SocketReusePort
        serve(args, port, lambda _port: w.ready(), lambda: w.stopping)
        return 0

    def on_ready(index: int, _note: str) -> None:
        ready.add(index)
        if len(ready) == args.workers:
            common.ready(port)

    common.restore_term()  # the supervisor stops its workers on SIGTERM itself
    raise SystemExit(ss.run_workers(worker, args.workers, grace=1.0, on_ready=on_ready))


if __name__ == "__main__":
    main()
