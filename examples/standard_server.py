"""A standard TLS server, written the way WINDEV programs write it: one thread waits for
clients (SocketWaitForConnection), each client gets its channel (SocketAccept) and its own
thread that reads and echoes messages until the client leaves.

    sslsock cert create sslsock-dev          # once (or run `sslsock serve` once)
    python examples/standard_server.py       # port 5043, certificate "sslsock-dev"
    python examples/client.py hello world    # in another terminal

Options: --port N (0: any free port), --cert NAME (or --cert THUMBPRINT --hash),
--max-clients N (stop after N clients), --timeout S (stop when no client arrives for S
seconds).  Ctrl-C stops it too.
"""
import argparse
import threading

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev",
                    help="certificate name (or thumbprint, with --hash)")
parser.add_argument("--hash", action="store_true", help="--cert is a thumbprint (CertificateHash)")
parser.add_argument("--max-clients", type=int, default=0, help="stop after N clients (0: never)")
parser.add_argument("--timeout", type=float, default=0, help="stop when no client arrives for "
                                                             "this many seconds (0: never)")
args = parser.parse_args()

SERVER = "server"  # the socket name: every function designates the socket by it
# Only TLS 1.2 and 1.3 (the WLanguage default, TLS 1.0 + 1.1 + 1.2, also works:
# see docs/tls-versions.md for what 1.0 and 1.1 cost).
OPTIONS = ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3
# The certificate by name, or by its thumbprint ("9d a4 84 ...", as certmgr.msc shows it).
OPTIONS += ss.CertificateHash if args.hash else ss.CertificateName


def serve_channel(channel: str) -> None:
    """One client: echo each message until it leaves.  (WLanguage: a procedure started with
    ThreadExecute(channel, threadNormal, ServeChannel, channel).)"""
    address = ss.SocketClientInfo(channel, ss.SocketAddress)
    print(f"{channel}: client {address} connected "
          f"({ss.SocketClientInfo(channel, ss.SocketProtocol)})", flush=True)
    while True:
        message = ss.SocketRead(channel)              # waits for the next whole message
        if ss.ErrorOccurred():                        # b"" and an error: the client left
            print(f"{channel}: {ss.ErrorInfo(ss.errMessage)}", flush=True)
            break
        ss.SocketWrite(channel, message)
    ss.SocketClose(channel)


def wait_for_clients() -> None:
    """The waiting thread.  WLanguage:
        LOOP
            IF SocketWaitForConnection(SERVER, timeout) THEN
                channel = SocketAccept(SERVER)
                ThreadExecute(channel, threadNormal, ServeChannel, channel)
            END
        END
    """
    timeout_ms = int(args.timeout * 1000) if args.timeout else None  # None: wait forever
    served = 0
    while not args.max_clients or served < args.max_clients:
        if not ss.SocketWaitForConnection(SERVER, timeout_ms):
            print(f"stopped waiting: {ss.ErrorInfo(ss.errMessage)}", flush=True)
            break
        channel = ss.SocketAccept(SERVER)
        if channel == "":                             # the client left in the meantime
            continue
        served += 1
        thread = threading.Thread(target=serve_channel, args=(channel,), daemon=True)
        thread.start()
        channel_threads.append(thread)


if not ss.SocketCreateSSL(SERVER, args.port, args.cert, OPTIONS):
    raise SystemExit(ss.ErrorInfo())
# With --port 0 the system chose the port: SocketClientInfo on the server socket tells it.
print(f"listening on port {ss.SocketClientInfo(SERVER, ss.SocketPort)}", flush=True)

channel_threads: list[threading.Thread] = []
waiting = threading.Thread(target=wait_for_clients, daemon=True)
waiting.start()
try:
    while waiting.is_alive():      # the main thread stays free (in WINDEV: the window)
        waiting.join(0.5)
    ss.SocketClose(SERVER)         # no new clients
    for thread in channel_threads:  # let the clients being served finish
        thread.join()
except KeyboardInterrupt:          # Ctrl-C: stop at once (the threads are daemons)
    pass
