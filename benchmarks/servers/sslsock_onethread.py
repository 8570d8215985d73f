"""sslsock, one thread serving every channel: Listener.messages() (object face), the
channel engine reading, decrypting and deframing in C and waking Python once per batch."""
from __future__ import annotations

import common

import sslsock


def main() -> None:
    args = common.parse_pem_args(__doc__ or "")
    opts = sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3
    with sslsock.Listener(args.port, args.pem, options=opts,
                          mode=sslsock.Mode.SocketNoEndTag) as listener:
        common.ready(listener.port)
        for conn, message in listener.messages():
            if message:
                try:
                    conn.write(message)
                except sslsock.ConnectionFailure:
                    conn.close()


if __name__ == "__main__":
    main()
