"""sslsock.aio: the asyncio face.  The channel engine reads, decrypts and deframes in C
(raw echo: SocketNoEndTag) and hands a batch per wake-up to the loop; each handler
coroutine only awaits messages and queues the replies.  --engine-thread: the engine polls
on a C thread of its own and hands batches over (engine_thread=True); --uvloop: under
uvloop."""
from __future__ import annotations

import asyncio

import common

import sslsock
import sslsock.aio as aio


async def echo(channel: aio.Channel) -> None:
    async for message in channel:
        await channel.write(message)


async def run(pem: str, port: int, thread: bool) -> None:
    opts = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
    server = await aio.start_server(echo, port, pem, options=opts, host="127.0.0.1",
                                    mode=sslsock.Mode.SocketNoEndTag, engine_thread=thread)
    common.ready(server.port)
    async with server:
        await server.serve_forever()


def main() -> None:
    args = common.parse_pem_args(
        __doc__ or "", ("--engine-thread", {"action": "store_true"}),
        ("--uvloop", {"action": "store_true"}))
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(run(args.pem, args.port, args.engine_thread))


if __name__ == "__main__":
    main()
