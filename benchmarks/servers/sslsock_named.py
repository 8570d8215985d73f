"""sslsock's named face, as WINDEV programs write a server: one thread waits for
connections (SocketWaitForConnection + SocketAccept); each channel is served by a worker.

--workers pool   channels go to a pool of reused threads (the variant the targets hold on)
--workers thread a new thread per channel (costs ~67 µs of CPU per connection here)
"""
from __future__ import annotations

import concurrent.futures as cf
import threading

import common

import sslsock as ss


def echo(channel: str) -> None:
    ss.SocketChangeTransmissionMode(channel, ss.SocketNoEndTag)
    while True:
        data = ss.SocketRead(channel, True, 0, 65536)
        if not data or not ss.SocketWrite(channel, data):
            break
    ss.SocketClose(channel)


def main() -> None:
    args = common.parse_pem_args(__doc__ or "", ("--workers", dict(choices=["pool", "thread"], default="pool")))
    if not ss.SocketCreateSSL("server", args.port, args.pem,
                              ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
        raise SystemExit(ss.ErrorInfo())
    ss.SocketChangeTransmissionMode("server", ss.SocketNoEndTag)
    common.ready(int(ss.SocketClientInfo("server", ss.SocketPort)))
    pool = cf.ThreadPoolExecutor(max_workers=512) if args.workers == "pool" else None
    while ss.SocketWaitForConnection("server"):
        channel = ss.SocketAccept("server")
        if not channel:
            continue
        if pool is not None:
            pool.submit(echo, channel)
        else:
            threading.Thread(target=echo, args=(channel,), daemon=True).start()


if __name__ == "__main__":
    main()
