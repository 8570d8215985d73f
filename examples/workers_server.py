"""The standard server in several processes [extension]: sslsock.run_workers forks the
workers, each creates its server socket on the shared port (Socket.Option =
SocketReusePort) and serves its clients as standard_server.py does.  A worker that dies is
started again; SIGTERM (or Ctrl-C) stops them all gracefully: no new clients, the channels
open may finish for --grace seconds, then they are closed.  See docs/deployment.md.

    python examples/workers_server.py --workers 2      # port 5043, certificate "sslsock-dev"
    python examples/client.py hello world               # in another terminal

Options: --port N (0: any free port), --cert NAME, --workers N (default: one per CPU this
process may use), --grace S, --proxy-protocol (behind HAProxy or nginx sending the PROXY
header: the client's address is then the one the balancer names).
"""
import argparse
import socket
import threading
import time

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="certificate name")
parser.add_argument("--workers", type=int, default=0, help="processes (0: one per usable CPU)")
parser.add_argument("--grace", type=float, default=5.0, help="seconds open channels get to "
                                                             "finish on SIGTERM")
parser.add_argument("--proxy-protocol", action="store_true",
                    help="connections come through a balancer sending the PROXY header")
args = parser.parse_args()

SERVER = "server"
OPTIONS = ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3
open_channels: set[str] = set()
lock = threading.Lock()


def serve_channel(worker: ss.Worker, channel: str) -> None:
    """One client: echo each message until it leaves."""
    address = ss.SocketClientInfo(channel, ss.SocketAddress)
    proxy = ss.SocketClientInfo(channel, ss.SocketProxyAddress)
    print(f"worker {worker.index}: {channel}: client {address} connected"
          + (f" through {proxy}" if proxy else ""), flush=True)
    while True:
        message = ss.SocketRead(channel, False, 500)  # wakes up twice a second
        if ss.ErrorOccurred():                        # the client left (or we closed it)
            break
        if message:
            ss.SocketWrite(channel, message)
    ss.SocketClose(channel)
    with lock:
        open_channels.discard(channel)


def worker_main(worker: ss.Worker) -> int:
    """One worker process: the standard server, until SIGTERM."""
    ss.Socket.Option = ss.SocketReusePort + (ss.SocketProxyProtocol if args.proxy_protocol
                                             else 0)
    if not ss.SocketCreateSSL(SERVER, port, args.cert, OPTIONS):
        print(f"worker {worker.index}: {ss.ErrorInfo(ss.errMessage)}", flush=True)
        return 1
    worker.ready()
    while not worker.stopping:
        if not ss.SocketWaitForConnection(SERVER, 500):
            continue
        channel = ss.SocketAccept(SERVER)
        if channel:
            with lock:
                open_channels.add(channel)
            threading.Thread(target=serve_channel, args=(worker, channel), daemon=True).start()
    ss.SocketClose(SERVER)                            # no new clients
    deadline = time.monotonic() + worker.grace
    while open_channels and time.monotonic() < deadline:
        time.sleep(0.05)                              # let the clients finish
    with lock:
        for channel in list(open_channels):
            ss.SocketClose(channel)                   # close_notify
    print(f"worker {worker.index}: stopped", flush=True)
    return 0


# One port for every worker: with --port 0, the supervisor picks it and holds it (bound
# with SO_REUSEPORT, not listening) while the workers run.
held = None
port = args.port
if port == 0:
    held = socket.socket(socket.AF_INET6)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    held.bind(("::", 0))
    port = held.getsockname()[1]
workers = args.workers or ss.available_cpus()
ready: set[int] = set()


def on_ready(index: int, note: str) -> None:
    if index in ready:  # a worker started again
        return
    ready.add(index)
    if len(ready) == workers:
        print(f"listening on port {port}", flush=True)


status = ss.run_workers(worker_main, workers, grace=args.grace, on_ready=on_ready)
print(f"stopped ({status})", flush=True)
raise SystemExit(status)
