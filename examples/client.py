"""A TLS client: connects, sends each message given on the command line, prints each
reply, and closes.  The server's certificate is verified against the system's authorities
and the certificates of the sslsock store (a self-signed development certificate in your
store is trusted, as one in the Windows store would be).

    python examples/client.py hello world                  # localhost, port 5043
    python examples/client.py --host server.example --port 5050 "one message"
"""
import argparse

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("messages", nargs="*", default=["hello"])
parser.add_argument("--host", default="localhost")
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--timeout", type=int, default=5000, help="reply time-out, in ms")
args = parser.parse_args()

CLIENT = "client"
# WLanguage: IF NOT SocketConnectSSL(CLIENT, 5043, "localhost") THEN Error(ErrorInfo())
if not ss.SocketConnectSSL(CLIENT, args.port, args.host,
                           ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
    raise SystemExit(ss.ErrorInfo())
print(f"connected with {ss.SocketClientInfo(CLIENT, ss.SocketProtocol)}")

for message in args.messages:
    ss.SocketWrite(CLIENT, message)                  # a str is sent as UTF-8
    reply = ss.SocketRead(CLIENT, False, args.timeout)  # wait at most --timeout ms
    if ss.ErrorOccurred():                           # server gone, connection broken, ...
        ss.SocketClose(CLIENT)
        raise SystemExit(ss.ErrorInfo())
    if not reply:                                    # a time-out: b"" and no error
        ss.SocketClose(CLIENT)
        raise SystemExit(f"no reply within {args.timeout} ms")
    print(reply.decode("utf-8"))                     # SocketRead returns bytes

ss.SocketClose(CLIENT)
