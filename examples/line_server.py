"""A line service ported from WLanguage: commands end with CR (carriage return + line
feed), each gets one reply line, each client has its own thread, and a client that stays
silent too long is dropped.  docs/porting.md walks through the port, WLanguage beside Python.

    sslsock cert create sslsock-dev           # once (or run `sslsock serve` once)
    python examples/line_server.py            # port 5043, certificate "sslsock-dev"
    python examples/line_client.py PING "ECHO hello" QUIT      # in another terminal
    sslsock cert export sslsock-dev /tmp/server.crt --no-key
    openssl s_client -connect localhost:5043 -CAfile /tmp/server.crt -crlf -nocommands

Commands (any case): PING -> PONG; ECHO text -> text; UPPER text -> TEXT; COUNT -> the
number of commands so far on this connection; HELP; QUIT -> BYE, then the server closes.
Anything else, an empty line included, gets a line starting with ERR.

Options: --port N (0: any free port), --cert NAME, --idle MS (drop a client silent for MS
milliseconds, default 30000), --max-clients N (stop after N clients), --timeout S (stop
when no client arrives for S seconds).  Ctrl-C stops it too.
"""
import argparse
import threading
import time

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="certificate name")
parser.add_argument("--idle", type=int, default=30000,
                    help="drop a client silent for this many ms (default 30000)")
parser.add_argument("--max-clients", type=int, default=0, help="stop after N clients (0: never)")
parser.add_argument("--timeout", type=float, default=0, help="stop when no client arrives for "
                                                             "this many seconds (0: never)")
args = parser.parse_args()

SERVER = "server"
HELP = "COMMANDS PING ECHO UPPER COUNT HELP QUIT"


def answer(command: str, count: int) -> str:
    """The reply to one command line (WLanguage: a SWITCH on Upper(ExtractString(...)))."""
    verb, _, rest = command.partition(" ")
    verb = verb.upper()
    if verb == "PING":
        return "PONG"
    if verb in ("ECHO", "UPPER") and rest == "":
        # never an empty reply: the client could not tell it from a time-out
        return f"ERR {verb} needs some text"
    if verb == "ECHO":
        return rest
    if verb == "UPPER":
        return rest.upper()
    if verb == "COUNT":
        return str(count)
    if verb == "HELP":
        return HELP
    if verb == "QUIT":
        return "BYE"
    if command == "":
        return "ERR empty command (HELP lists the commands)"
    return f'ERR unknown command "{verb}" (HELP lists the commands)'


def serve_channel(channel: str) -> None:
    """One client, in its own thread.  (WLanguage: ThreadExecute(channel, threadNormal,
    ServeChannel, channel).)"""
    address = ss.SocketClientInfo(channel, ss.SocketAddress)
    if ss.ErrorOccurred():                               # gone already (a port scanner ...)
        print(f"{channel}: {ss.ErrorInfo(ss.errMessage)}", flush=True)
        ss.SocketClose(channel)
        return
    print(f"{channel}: client {address} connected "
          f"({ss.SocketClientInfo(channel, ss.SocketProtocol)})", flush=True)
    count = 0
    while True:
        started = time.monotonic()
        data = ss.SocketRead(channel, False, args.idle)   # bytes, without the CR
        if ss.ErrorOccurred():                           # the client left, or the link broke
            print(f"{channel}: {ss.ErrorInfo(ss.errMessage)}", flush=True)
            break
        if data == b"" and time.monotonic() - started >= args.idle / 1000 - 0.05:
            # b"" and no error after the whole wait: the time-out (WLanguage: sCmd = "").
            # An empty line is b"" too, but it comes back before the time-out.
            ss.SocketWrite(channel, "BYE idle")
            print(f"{channel}: dropped after {args.idle} ms of silence", flush=True)
            break
        command = data.decode("utf-8", "replace").strip()  # from here on, text (str)
        count += 1
        reply = answer(command, count)
        if not ss.SocketWrite(channel, reply):           # a str goes out as UTF-8, then CR
            print(f"{channel}: {ss.ErrorInfo(ss.errMessage)}", flush=True)
            break
        if reply == "BYE":
            print(f"{channel}: QUIT, {count} command{'s' if count > 1 else ''} served",
                  flush=True)
            break
    ss.SocketClose(channel)


def wait_for_clients() -> None:
    """The waiting thread: SocketWaitForConnection, SocketAccept, a thread per channel."""
    timeout_ms = int(args.timeout * 1000) if args.timeout else None  # None: wait forever
    served = 0
    while not args.max_clients or served < args.max_clients:
        if not ss.SocketWaitForConnection(SERVER, timeout_ms):
            print(f"stopped waiting: {ss.ErrorInfo(ss.errMessage)}", flush=True)
            break
        channel = ss.SocketAccept(SERVER)
        if channel == "":                                # the client left in the meantime
            continue
        served += 1
        thread = threading.Thread(target=serve_channel, args=(channel,), daemon=True)
        thread.start()
        channel_threads.append(thread)


if not ss.SocketCreateSSL(SERVER, args.port, args.cert, ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
    raise SystemExit(ss.ErrorInfo())
# Set on the server socket, the mode applies to every channel it accepts.  The WLanguage
# original had SocketEndTag, which drops whatever followed the first CR in the same read:
# a client that sends two lines at once (openssl s_client fed from a pipe) would lose the
# second.  SocketEndTagBuffer keeps it for the next SocketRead.
ss.SocketChangeTransmissionMode(SERVER, ss.SocketEndTagBuffer, ss.CR)
print(f"listening on port {ss.SocketClientInfo(SERVER, ss.SocketPort)}", flush=True)

channel_threads: list[threading.Thread] = []
waiting = threading.Thread(target=wait_for_clients, daemon=True)
waiting.start()
try:
    while waiting.is_alive():       # the main thread stays free (in WINDEV: the window)
        waiting.join(0.5)
    ss.SocketClose(SERVER)          # no new clients
    for thread in channel_threads:  # let the clients being served finish
        thread.join()
except KeyboardInterrupt:           # Ctrl-C: stop at once (the threads are daemons)
    pass
