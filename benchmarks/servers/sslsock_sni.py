"""sslsock's object face serving certificates by name (SNI): the PEM file answers clients
that ask for no known name, and ``--names N`` more certificates (host0.example.test ...
host{N-1}.example.test, each its own EC key) answer the clients asking for theirs.  The
handshake cost with --names 100 against --names 0 is the price of the lookup and of the
switch to the chosen certificate, both in C."""
from __future__ import annotations

import concurrent.futures as cf
import tempfile
from pathlib import Path

import common

import sslsock
from sslsock._certs import generate as _certgen


def echo(conn: sslsock.Connection) -> None:
    with conn:
        try:
            while True:
                conn.write(conn.read(None, 65536))
        except sslsock.ConnectionFailure:
            pass


def main() -> None:
    args = common.parse_pem_args(__doc__ or "", ("--names", {"type": int, "default": 100}))
    opts = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
    with tempfile.TemporaryDirectory() as tmp:
        by_name = {}
        for i in range(args.names):
            host = f"host{i}.example.test"
            path = Path(tmp) / f"{host}.pem"
            _certgen.make_self_signed(host, hosts=[host], days=7).write_pem(path)
            by_name[host] = str(path)
        with sslsock.Listener(args.port, args.pem, options=opts, certificates=by_name,
                              mode=sslsock.Mode.SocketNoEndTag) as listener:
            common.ready(listener.port)
            with cf.ThreadPoolExecutor(max_workers=512) as pool:
                while True:
                    pool.submit(echo, listener.accept())


if __name__ == "__main__":
    main()
