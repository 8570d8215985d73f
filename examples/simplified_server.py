"""A simplified TLS server: no SocketAccept, no threads.  SocketRead and SocketWrite are
called on the server socket's own name; the first SocketRead takes the first client, and
once that client has left, the next SocketRead takes the next one.  One client at a time.

    sslsock cert create sslsock-dev           # once (or run `sslsock serve` once)
    python examples/simplified_server.py      # port 5043, certificate "sslsock-dev"
    python examples/client.py hello world     # in another terminal

Options: --port N (0: any free port), --cert NAME, --max-clients N (stop after N clients),
--timeout S (stop when nothing arrives for S seconds).  Ctrl-C stops it too.
"""
import argparse

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="certificate name")
parser.add_argument("--max-clients", type=int, default=0, help="stop after N clients (0: never)")
parser.add_argument("--timeout", type=float, default=0,
                    help="stop when nothing arrives for this many seconds (0: never)")
args = parser.parse_args()

SERVER = "server"
if not ss.SocketCreateSSL(SERVER, args.port, args.cert, ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
    raise SystemExit(ss.ErrorInfo())
print(f"listening on port {ss.SocketClientInfo(SERVER, ss.SocketPort)}", flush=True)

served = 0
try:
    while not args.max_clients or served < args.max_clients:
        # WLanguage: sMessage = SocketRead(SERVER, False, nTimeout)
        if args.timeout:
            message = ss.SocketRead(SERVER, False, int(args.timeout * 1000))
        else:
            message = ss.SocketRead(SERVER)           # waits without limit
        if ss.ErrorOccurred():
            if ss.ErrorInfo(ss.errCode) == ss.ErrorCode.PEER_CLOSED:
                served += 1                           # that client left: the next read
                print("client left", flush=True)      # takes the next one
                continue
            print(f"stopping: {ss.ErrorInfo(ss.errMessage)}", flush=True)
            break
        if not message:                               # b"" and no error: the time-out
            print("stopping: nothing arrived within the time-out", flush=True)
            break
        ss.SocketWrite(SERVER, message)               # the answer goes to the same client
except KeyboardInterrupt:
    pass
ss.SocketClose(SERVER)
