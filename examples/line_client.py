"""The client of examples/line_server.py, ported from WLanguage: sends each command given
on the command line as a line ended by CR, prints each reply line, and closes.  The
server's certificate is verified against the sslsock store and the system's authorities.

    python examples/line_client.py PING "ECHO hello" "UPPER wörld" COUNT QUIT
    python examples/line_client.py --host server.example --port 5050 HELP
"""
import argparse

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("commands", nargs="*", default=["HELP"])
parser.add_argument("--host", default="localhost")
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--timeout", type=int, default=5000, help="reply time-out, in ms")
args = parser.parse_args()

CLIENT = "client"
if not ss.SocketConnectSSL(CLIENT, args.port, args.host, ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
    raise SystemExit(ss.ErrorInfo())   # an untrusted server: the message says what to do
ss.SocketChangeTransmissionMode(CLIENT, ss.SocketEndTagBuffer, ss.CR)  # as the server

for command in args.commands:
    ss.SocketWrite(CLIENT, command)                   # the line, then CR
    reply = ss.SocketRead(CLIENT, False, args.timeout)
    if ss.ErrorOccurred():                            # the server left, or the link broke
        ss.SocketClose(CLIENT)
        raise SystemExit(ss.ErrorInfo())
    if reply == b"":                                  # b"", not "": SocketRead returns bytes
        ss.SocketClose(CLIENT)
        raise SystemExit(f"no reply to {command!r} within {args.timeout} ms")
    print(reply.decode("utf-8"))
    if reply == b"BYE":                               # the server closes after QUIT
        break

ss.SocketClose(CLIENT)
