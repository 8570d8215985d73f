"""An asyncio TLS echo server on sslsock.aio: one coroutine per client, while the channel
engine reads, decrypts and cuts the messages in C.

    sslsock cert create sslsock-dev          # once (or run `sslsock serve` once)
    python examples/asyncio_server.py        # port 5043, certificate "sslsock-dev"
    python examples/asyncio_client.py hello world     # in other terminals

Options: --port N (0: any free port), --cert NAME, --max-clients N (stop once N clients
have left), --uvloop (run under uvloop).
"""
import argparse
import asyncio

import sslsock
import sslsock.aio as aio

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="certificate name")
parser.add_argument("--max-clients", type=int, default=0, help="stop after N clients (0: never)")
parser.add_argument("--uvloop", action="store_true", help="run under uvloop")
args = parser.parse_args()


async def main() -> None:
    left = 0
    everyone_left = asyncio.Event()

    async def handle(channel: aio.Channel) -> None:
        nonlocal left
        info = channel.info()  # SocketClientInfo: address, port, protocol, cipher
        who = f"{info.peer_address}:{info.peer_port}"
        print(f"{who} connected ({info.protocol})", flush=True)
        try:
            async for message in channel:  # whole messages (SocketSizeAtBeginning)
                print(f"{who}: {len(message)} bytes", flush=True)
                await channel.write(message)
        except sslsock.ConnectionFailure as e:  # reset, TLS error, malformed frame
            print(f"{who}: {e}", flush=True)
        print(f"{who} left", flush=True)
        left += 1
        if left == args.max_clients:
            everyone_left.set()

    options = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
    server = await aio.start_server(handle, args.port, args.cert, options=options)
    print(f"listening on port {server.port}", flush=True)
    async with server:  # on the way out: stop accepting, let the handlers finish
        if args.max_clients:
            await everyone_left.wait()
        else:
            await server.serve_forever()


if args.uvloop:
    import uvloop

    uvloop.install()
asyncio.run(main())
