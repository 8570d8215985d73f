"""sslsock's named face, one thread serving every channel: SocketWaitForMessage names the
channel with a message ready (accepting new clients on the way), SocketRead takes it at
once, SocketWrite answers; the channel engine reads and deframes in C."""
from __future__ import annotations

import common

import sslsock as ss


def main() -> None:
    args = common.parse_pem_args(__doc__ or "")
    if not ss.SocketCreateSSL("server", args.port, args.pem,
                              ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
        raise SystemExit(ss.ErrorInfo())
    ss.SocketChangeTransmissionMode("server", ss.SocketNoEndTag)
    common.ready(int(ss.SocketClientInfo("server", ss.SocketPort)))
    while True:
        channel = ss.SocketWaitForMessage("server")
        if not channel:
            continue
        data = ss.SocketRead(channel, True, 0, 65536)
        if not data or not ss.SocketWrite(channel, data):
            ss.SocketClose(channel)


if __name__ == "__main__":
    main()
