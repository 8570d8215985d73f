"""The standard library's way: ssl.SSLContext, one thread per connection (handshake in the
connection's thread), TCP_NODELAY set as a careful programmer would."""
from __future__ import annotations

import socket
import ssl
import threading

import common


def serve(ctx: ssl.SSLContext, raw: socket.socket) -> None:
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_side=True) as s:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        raw.close()


def main() -> None:
    args = common.parse_args(__doc__ or "")
    common.exit_on_term()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    sock = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    common.ready(sock.getsockname()[1])
    while True:
        raw, _ = sock.accept()
        threading.Thread(target=serve, args=(ctx, raw), daemon=True).start()


if __name__ == "__main__":
    main()
