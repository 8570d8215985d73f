"""sslsock's named face, a pool of threads serving channels through the channel engine:
each of --threads threads loops on SocketWaitForMessage (which names a channel with a
message ready, accepting new clients on the way), SocketRead, SocketWrite.  A channel
costs no thread while it is idle: the engine holds it in C until a message arrives."""
from __future__ import annotations

import os
import threading

import common

import sslsock as ss


def serve() -> None:
    while True:
        channel = ss.SocketWaitForMessage("server")
        if not channel:
            continue
        data = ss.SocketRead(channel, True, 0, 65536)
        if not data or not ss.SocketWrite(channel, data):
            ss.SocketClose(channel)


def main() -> None:
    args = common.parse_pem_args(__doc__ or "", ("--threads", dict(type=int, default=len(os.sched_getaffinity(0)))))
    if not ss.SocketCreateSSL("server", args.port, args.pem,
                              ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
        raise SystemExit(ss.ErrorInfo())
    ss.SocketChangeTransmissionMode("server", ss.SocketNoEndTag)
    common.ready(int(ss.SocketClientInfo("server", ss.SocketPort)))
    for _ in range(args.threads - 1):
        threading.Thread(target=serve, daemon=True).start()
    serve()


if __name__ == "__main__":
    main()
