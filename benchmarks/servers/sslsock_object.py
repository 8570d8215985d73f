"""sslsock's object face: Listener.accept in one thread, a pool serving connections."""
from __future__ import annotations

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
    args = common.parse_pem_args(__doc__ or "")
    opts = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
    with sslsock.Listener(args.port, args.pem, options=opts,
                          mode=sslsock.Mode.SocketNoEndTag) as listener:
        common.ready(listener.port)
        with cf.ThreadPoolExecutor(max_workers=512) as pool:
            while True:
                pool.submit(echo, listener.accept())


if __name__ == "__main__":
    main()
