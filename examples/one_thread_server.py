"""One thread serving every client, WINDEV-style names: SocketWaitForMessage returns the
name of a channel with a message ready (accepting and naming new clients on the way), and
SocketRead on that name returns the message at once.  No thread per client: the channel
engine reads, decrypts and deframes in C, and this loop wakes once per batch of messages.

    sslsock cert create sslsock-dev          # once (or run `sslsock serve` once)
    python examples/one_thread_server.py     # port 5043, certificate "sslsock-dev"
    python examples/client.py hello world    # in other terminals, as many as you like

Options: --port N (0: any free port), --cert NAME, --max-clients N (stop once N clients
have left), --timeout S (stop after S seconds without any message).  Ctrl-C stops it too.
"""
import argparse

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="certificate name")
parser.add_argument("--max-clients", type=int, default=0, help="stop after N clients (0: never)")
parser.add_argument("--timeout", type=float, default=0,
                    help="stop after this many seconds without a message (0: never)")
args = parser.parse_args()

SERVER = "server"
if not ss.SocketCreateSSL(SERVER, args.port, args.cert, ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
    raise SystemExit(ss.ErrorInfo())
print(f"listening on port {ss.SocketClientInfo(SERVER, ss.SocketPort)}", flush=True)

timeout_ms = int(args.timeout * 1000) if args.timeout else None  # None: wait forever
left = 0
while not args.max_clients or left < args.max_clients:
    channel = ss.SocketWaitForMessage(SERVER, timeout_ms)
    if channel == "":
        print("stopped waiting: " + (ss.ErrorInfo(ss.errMessage) or "no message within "
                                     "the time-out"), flush=True)
        break
    message = ss.SocketRead(channel)               # there already: returns at once
    if ss.ErrorOccurred():                         # b"" and an error: the client left
        print(f"{channel}: {ss.ErrorInfo(ss.errMessage)}", flush=True)
        ss.SocketClose(channel)
        left += 1
        continue
    ss.SocketWrite(channel, message)
ss.SocketClose(SERVER)
