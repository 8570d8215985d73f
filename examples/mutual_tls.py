"""Mutual TLS [extension]: the server asks every client for a certificate
(SSLClientCertificate) and accepts only those that a client CA of its certificate store
vouches for; the client presents one (client_cert).

    sslsock cert create sslsock-dev                  # the server's certificate (once)
    sslsock cert create alice --client               # a client certificate (self-signed)
    sslsock cert export alice alice.crt --no-key     # ... which the server trusts alone:
    sslsock cert import alice.crt --name alice-pin --client-ca
    python examples/mutual_tls.py server             # port 5043
    python examples/mutual_tls.py client alice       # in another terminal

Server options: --port N (0: any free port), --cert NAME, --max-clients N.
Client options: --host NAME, --port N, and the client certificate's name.
"""
import argparse

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("role", choices=["server", "client"])
parser.add_argument("client_cert", nargs="?", default="alice",
                    help="client: the certificate to present (default alice)")
parser.add_argument("--host", default="localhost")
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="server: its certificate")
parser.add_argument("--max-clients", type=int, default=0, help="server: stop after N clients")
args = parser.parse_args()

OPTIONS = ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3


def server():
    # SSLClientCertificate: a client without a certificate, or with one that does not
    # verify, never reaches SocketWaitForConnection (its handshake fails).
    if not ss.SocketCreateSSL("server", args.port, args.cert, OPTIONS + ss.SSLClientCertificate):
        raise SystemExit(ss.ErrorInfo())
    print(f"listening on port {ss.SocketClientInfo('server', ss.SocketPort)}", flush=True)
    served = 0
    while (not args.max_clients or served < args.max_clients) \
            and ss.SocketWaitForConnection("server"):
        channel = ss.SocketAccept("server")
        served += 1
        # Who is it?  subject, issuer, SHA-1 thumbprint and expiry of the client certificate
        print(f"client certificate: {ss.SocketClientInfo(channel, ss.SocketCertificate)}",
              flush=True)
        message = ss.SocketRead(channel, False, 5000)
        if message:  # b"": a time-out (no error) or a client that left (an error)
            ss.SocketWrite(channel, b"hello " + message)
        ss.SocketClose(channel)
    ss.SocketClose("server")


def client():
    if not ss.SocketConnectSSL("client", args.port, args.host, OPTIONS,
                               client_cert=args.client_cert):
        raise SystemExit(ss.ErrorInfo())
    ss.SocketWrite("client", args.client_cert)
    # With TLS 1.3 the server checks the client certificate after the client has finished
    # its handshake: a refusal shows up here, at the first read ("certificate required",
    # "unknown ca"), not in SocketConnectSSL.
    reply = ss.SocketRead("client", False, 5000)
    if ss.ErrorOccurred():
        raise SystemExit(ss.ErrorInfo())
    if not reply:  # a time-out: b"" and no error, as in WLanguage
        raise SystemExit("no reply within 5 s")
    print(reply.decode())
    ss.SocketClose("client")


server() if args.role == "server" else client()
