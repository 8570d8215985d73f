"""Several certificates on one port, chosen by the name the client asks for (SNI), and the
application protocol agreed in the handshake (ALPN) [extension].

    sslsock cert create sslsock-dev                                  # the default certificate
    sslsock cert create api --host api.localhost --no-default-hosts  # one for api.localhost
    python examples/by_name_server.py server --name api.localhost=api   # port 8443
    python examples/by_name_server.py client api.localhost              # another terminal
    python examples/by_name_server.py client localhost                  # the default answers
    openssl s_client -connect localhost:8443 -servername api.localhost -alpn h2

Server options: --port N (0: any free port), --cert NAME (the default certificate),
--name HOST=CERT (repeatable; HOST may be a "*.domain" wildcard), --max-clients N.
Client options: --host ADDRESS, --port N, and the server name to ask for.
"""
import argparse

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("role", choices=["server", "client"])
parser.add_argument("server_name", nargs="?", default="localhost",
                    help="client: the name to ask the server for (default localhost)")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8443)
parser.add_argument("--cert", default="sslsock-dev", help="server: the default certificate")
parser.add_argument("--name", action="append", default=[], metavar="HOST=CERT",
                    help="server: serve certificate CERT to clients asking for HOST")
parser.add_argument("--max-clients", type=int, default=0, help="server: stop after N clients")
args = parser.parse_args()

OPTIONS = ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3
PROTOCOLS = ["h2", "http/1.1", "x-hello/1"]  # what this server speaks, preferred first


def server():
    by_name = dict(item.split("=", 1) for item in args.name)
    with ss.Listener(args.port, args.cert, options=OPTIONS, certificates=by_name,
                     alpn=PROTOCOLS, mode=ss.Mode.SocketNoEndTag) as listener:
        print(f"listening on port {listener.port}", flush=True)
        served = 0
        while not args.max_clients or served < args.max_clients:
            with listener.accept() as conn:
                served += 1
                print(f"client asked for {conn.server_name or '(no name)'}, "
                      f"protocol {conn.alpn or '(none)'}", flush=True)
                conn.write(f"hello {conn.server_name}\n")


def client():
    with ss.connect(args.host, args.port, options=OPTIONS, server_hostname=args.server_name,
                    alpn=["x-hello/1"], mode=ss.Mode.SocketNoEndTag) as conn:
        subject = conn.peer_certificate().subject.rfc4514_string()
        print(f"certificate {subject}, protocol {conn.alpn}: {conn.read(10).decode().strip()}")


server() if args.role == "server" else client()
