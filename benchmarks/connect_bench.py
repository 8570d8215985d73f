"""Client connects per second: sslsock's ``connect()`` against the standard library's
``ssl`` module reusing one context, both verifying the server's certificate.

One server, in its own process (an sslsock listener that accepts and closes), so that only
the clients' work is measured here: for each client and each concurrency (one thread, then
8 threads), connects per second (wall clock) and the client process's CPU time per connect
(user + system, all threads).  Each connect is a TCP connect, a full TLS 1.3 handshake with
certificate and host name verification, and a close; sslsock runs with ``resume=False``
(its default resumes sessions, which the stdlib does not do by itself).  The rows with
resumption show what sslsock's default gives on TLS 1.2, where the session is known at
the end of the handshake.

    python benchmarks/connect_bench.py                  # 3 s per row, in 3 rounds
    python benchmarks/connect_bench.py --duration 1     # quicker

Rounds are interleaved (stdlib, sslsock, stdlib, ...) and each figure is the median: the
machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import sslsock
from sslsock._certs import generate as _certgen

SERVER = r"""
import sys, threading
import sslsock
lst = sslsock.Listener(0, sys.argv[1], host="127.0.0.1", max_ready=100000,
                       options=sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3)
print(lst.port, flush=True)
def drop():
    while True:
        lst.accept().close()
for _ in range(2):
    threading.Thread(target=drop, daemon=True).start()
sys.stdin.read()  # until the benchmark closes our stdin
"""


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _run(connect: Callable[[], None], threads: int, duration: float) -> tuple[float, float]:
    """(connects per second, client CPU milliseconds per connect)."""
    for _ in range(3):
        connect()  # warm-up: contexts built, caches filled
    counts = [0] * threads
    deadline = time.monotonic() + duration

    def loop(i: int) -> None:
        while time.monotonic() < deadline:
            connect()
            counts[i] += 1

    cpu0, t0 = _cpu(), time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    n = sum(counts)
    return n / wall, cpu * 1000 / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per row")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per row (the median is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ca = _certgen.make_ca("bench CA")
        server = _certgen.make_leaf(ca, "localhost", hosts=["localhost", "127.0.0.1"])
        server.write_pem(d / "server.pem")
        store_dir = d / "store"
        store_dir.mkdir()
        (store_dir / "ca.pem").write_bytes(ca.cert_pem())
        (d / "ca.pem").write_bytes(ca.cert_pem())
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(d / "server.pem")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            rows = _measure(port, d, store_dir, args.duration, args.rounds)
        finally:
            proc.kill()
            proc.wait(10)
    print("| client | TLS | threads | connects/s | client CPU ms/connect | vs stdlib (CPU) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, version, threads, rate, cpu, base in rows:
        ratio = f"{cpu / base:.2f}x" if base else ""
        print(f"| {name} | {version} | {threads} | {rate:,.0f} | {cpu:.2f} | {ratio} |")
    return 0


def _measure(port: int, d: Path, store_dir: Path, duration: float,
             rounds: int) -> list[tuple[str, str, int, float, float, float]]:
    store = sslsock.CertStore(store_dir)
    rows = []
    for version, options, tls_version in (
            ("1.3", sslsock.ProtocolTLS1_3, ssl.TLSVersion.TLSv1_3),
            ("1.2", sslsock.ProtocolTLS1_2, ssl.TLSVersion.TLSv1_2)):
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        ctx.minimum_version = ctx.maximum_version = tls_version

        def stdlib(ctx: ssl.SSLContext = ctx) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost"):
                pass

        def ours(options: int = options, resume: bool = False) -> None:
            sslsock.connect("127.0.0.1", port, options=options, server_hostname="localhost",
                            store=store, resume=resume, timeout=10).close()

        clients: list[tuple[str, Callable[[], None]]] = [
            ("stdlib ssl, one context", stdlib), ("sslsock connect()", ours)]
        if version == "1.2":
            clients.append(("sslsock connect(), resuming", lambda: ours(resume=True)))
        for threads in (1, 8):
            # Interleaved rounds, median of each: a noisy moment hits every client alike.
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in clients}
            for _ in range(rounds):
                for name, fn in clients:
                    runs[name].append(_run(fn, threads, duration / rounds))
            base_cpu = statistics.median(cpu for _, cpu in runs[clients[0][0]])
            for name, _ in clients:
                rate = statistics.median(r for r, _ in runs[name])
                cpu = statistics.median(c for _, c in runs[name])
                rows.append((name, version, threads, rate, cpu,
                             0.0 if name == clients[0][0] else base_cpu))
    return rows


if __name__ == "__main__":
    sys.exit(main())
