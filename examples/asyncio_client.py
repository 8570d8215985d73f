"""An asyncio TLS client on sslsock.aio: connects, sends each message given on the command
line, prints each reply, and closes (close_notify).  The server's certificate is verified
against the system's authorities and the certificates of the sslsock store.

    python examples/asyncio_client.py hello world          # localhost, port 5043
    python examples/asyncio_client.py --host server.example --port 5050 "one message"
"""
import argparse
import asyncio

import sslsock
import sslsock.aio as aio

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("messages", nargs="*", default=["hello"])
parser.add_argument("--host", default="localhost")
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--timeout", type=float, default=5.0, help="reply time-out, in seconds")
args = parser.parse_args()


async def main() -> int:
    options = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
    try:
        channel = await aio.connect(args.host, args.port, options=options, timeout=10)
    except sslsock.Error as e:  # refused, unknown host, certificate not trusted, ...
        print(e)
        return 1
    async with channel:
        print(f"connected with {channel.protocol}", flush=True)
        for message in args.messages:
            await channel.write(message)  # a str is sent as UTF-8
            try:
                reply = await asyncio.wait_for(channel.read(), args.timeout)
            except asyncio.TimeoutError:
                print("no reply within the time-out")
                return 1
            print(reply.decode(), flush=True)
    return 0


raise SystemExit(asyncio.run(main()))
