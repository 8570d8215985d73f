"""sslsock's object face: Listener.accept in one thread, a pool serving connections."""
from __future__ import annotations

import argparse
import concurrent.futures as cf

import common

import sslsock


def echo(conn: sslsock.Connection) -> None:
    with conn:
        try:
            while True:
                conn.write(conn.read(None, 65536))
        except sslsock.ConnectionFailure:
            pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--pem", required=True)
    p.add_argument("--cert"), p.add_argument("--key")
    args = p.parse_args()
    common.exit_on_term()
    opts = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
    with sslsock.Listener(args.port, args.pem, options=opts,
                          mode=sslsock.Mode.SocketNoEndTag) as listener:
        common.ready(listener.port)
        with cf.ThreadPoolExecutor(max_workers=512) as pool:
            while True:
                pool.submit(echo, listener.accept())


if __name__ == "__main__":
    main()
