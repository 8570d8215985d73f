"""asyncio's TLS server (with uvloop when --uvloop is given and installed)."""
from __future__ import annotations

import argparse
import asyncio
import socket
import ssl

import common


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server = await asyncio.start_server(echo, "127.0.0.1", args.port, ssl=ctx, backlog=4096)
    common.ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--pem")
    p.add_argument("--uvloop", action="store_true")
    args = p.parse_args()
    common.exit_on_term()
    if args.uvloop:
        import uvloop  # optional: pip install uvloop

        uvloop.install()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
