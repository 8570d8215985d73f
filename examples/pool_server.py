"""A pool of threads serving every client, WINDEV-style names: each thread of the pool loops
on SocketWaitForMessage, which returns the name of a channel with a message ready (accepting
and naming new clients on the way); SocketRead on that name returns the message at once.
An idle client costs no thread (the channel engine holds it in C), and a channel is in one
thread's hands at a time, so its replies leave in order.  Use it when a handler may block
(a database call, say): the other threads go on serving the other clients meanwhile.

    sslsock cert create sslsock-dev          # once (or run `sslsock serve` once)
    python examples/pool_server.py           # port 5043, certificate "sslsock-dev"
    python examples/client.py hello world    # in other terminals, as many as you like

Options: --port N (0: any free port), --cert NAME, --threads N (default: the CPUs this
process may use), --max-clients N (stop once N clients have left), --timeout S (stop after
S seconds without any message).  Ctrl-C stops it too.
"""
import argparse
import os
import threading
import time

import sslsock as ss

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--port", type=int, default=5043)
parser.add_argument("--cert", default="sslsock-dev", help="certificate name")
parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
parser.add_argument("--max-clients", type=int, default=0, help="stop after N clients (0: never)")
parser.add_argument("--timeout", type=float, default=0,
                    help="stop after this many seconds without a message (0: never)")
args = parser.parse_args()

SERVER = "server"
if not ss.SocketCreateSSL(SERVER, args.port, args.cert, ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3):
    raise SystemExit(ss.ErrorInfo())
print(f"listening on port {ss.SocketClientInfo(SERVER, ss.SocketPort)}", flush=True)

stop = threading.Event()
lock = threading.Lock()
state = {"left": 0, "last": time.monotonic()}


def pool_thread() -> None:
    while not stop.is_set():
        channel = ss.SocketWaitForMessage(SERVER, 250)  # wakes 4 times a second: sees stop
        if channel == "":
            if ss.ErrorOccurred():                      # the listener was closed
                break
            if args.timeout and time.monotonic() - state["last"] > args.timeout:
                print("stopped waiting: no message within the time-out", flush=True)
                stop.set()
            continue
        message = ss.SocketRead(channel)                # there already: returns at once
        with lock:
            state["last"] = time.monotonic()
        if ss.ErrorOccurred():                          # b"" and an error: the client left
            print(f"{channel}: {ss.ErrorInfo(ss.errMessage)}", flush=True)
            ss.SocketClose(channel)
            with lock:
                state["left"] += 1
                if args.max_clients and state["left"] >= args.max_clients:
                    stop.set()
            continue
        ss.SocketWrite(channel, message)                # the reply: queued, sent by the engine


threads = [threading.Thread(target=pool_thread, name=f"pool-{i}") for i in range(args.threads)]
for t in threads:
    t.start()
try:
    while not stop.wait(0.5):                           # the main thread stays free (Ctrl-C)
        pass
finally:
    stop.set()
    for t in threads:
        t.join()
    ss.SocketClose(SERVER)
