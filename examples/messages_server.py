"""The object face's one-thread server: Listener.messages() yields (connection, message)
for every client as messages arrive, and b"" once a client has left (that connection is
then closed for you).

    sslsock cert create sslsock-dev          # once (or run `sslsock serve` once)
    python examples/messages_server.py       # port 5043, certificate "sslsock-dev"
    python examples/client.py hello world    # in other terminals

Options: --port N (0: any free port), --cert NAME, --max-clients N (stop once N clients
have left), --timeout S (stop after S seconds without any message).
"""
import argparse

import sslsock

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="certificate name")
parser.add_argument("--max-clients", type=int, default=0, help="stop after N clients (0: never)")
parser.add_argument("--timeout", type=float, default=None,
                    help="stop after this many seconds without a message (default: never)")
args = parser.parse_args()

options = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
with sslsock.Listener(args.port, args.cert, options=options) as listener:
    print(f"listening on port {listener.port}", flush=True)
    left = 0
    for connection, message in listener.messages(timeout=args.timeout):
        peer = connection.info()
        if message == b"":
            print(f"{peer.peer_address}:{peer.peer_port} left", flush=True)
            left += 1
            if left == args.max_clients:
                break
            continue
        print(f"{peer.peer_address}:{peer.peer_port} ({peer.protocol}): {len(message)} bytes",
              flush=True)
        connection.write(message)
