"""Handshakes per second through HAProxy (TCP mode, send-proxy-v2) against the same server
reached directly, and 64-byte round trips per second of the named-face server with one
process and with ``--workers 2``.

The server is ``benchmarks/servers/sslsock_named.py`` (a pool of threads serving the
channels), with ``--proxy-protocol`` behind HAProxy; the load is ``benchmarks/bin/loadgen``
(TLS 1.3 full handshakes from 8 connections, or 64-byte echoes on 16 connections).  Rounds
are interleaved (direct, through HAProxy, direct, ...) and each figure is the median: the
machine is shared, and the client, HAProxy and the server share its cores.

    python benchmarks/balancer_bench.py                 # 3 s per figure, 3 rounds
    python benchmarks/balancer_bench.py --duration 1 --rounds 1
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER = HERE / "servers" / "sslsock_named.py"
LOADGEN = HERE / "bin" / "loadgen"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def load(port: int, scenario: list[str], duration: float) -> float:
    out = subprocess.run([str(LOADGEN), "--host", "127.0.0.1", "--port", str(port), *scenario,
                          "--duration", str(duration)], capture_output=True, text=True,
                         timeout=duration + 60)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    if int(data.get("errors") or 0):
        raise RuntimeError(f"loadgen reported {data['errors']} errors")
    return float(data["ops"]) / float(data["seconds"])


def haproxy(tmp: Path, backend: int) -> tuple[subprocess.Popen[str], int]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    front = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text("\n".join([
        "global", "    maxconn 4096", "defaults", "    mode tcp", "    timeout connect 2s",
        "    timeout client 60s", "    timeout server 60s", "frontend fe",
        f"    bind 127.0.0.1:{front}", "    default_backend be", "backend be",
        f"    server s0 127.0.0.1:{backend} send-proxy-v2"]) + "\n")
    proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", front), timeout=1).close()
            return proc, front
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop(proc)
                raise RuntimeError("haproxy did not start") from None
            time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    subprocess.run(["make", "-s", "-C", str(HERE / "c")], check=True)
    sys.path.insert(0, str(HERE.parent / "src"))
    from sslsock._certs import generate as _certgen

    hs = ["--scenario", "handshake", "--conns", "8", "--tls13"]
    echo = ["--scenario", "echo64", "--conns", "16", "--tls13"]
    figures: dict[str, list[float]] = {k: [] for k in (
        "handshakes/s direct", "handshakes/s through HAProxy",
        "64-byte round trips/s, 1 process", "64-byte round trips/s, --workers 2")}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pem = tmp / "server.pem"
        _certgen.make_self_signed("localhost", days=7).write_pem(pem)
        py = sys.executable
        for _ in range(args.rounds):
            server, port = start([py, str(SERVER), "--pem", str(pem)])
            try:
                figures["handshakes/s direct"].append(load(port, hs, args.duration))
                figures["64-byte round trips/s, 1 process"].append(
                    load(port, echo, args.duration))
            finally:
                stop(server)
            server, port = start([py, str(SERVER), "--pem", str(pem), "--proxy-protocol"])
            try:
                balancer, front = haproxy(tmp, port)
                try:
                    figures["handshakes/s through HAProxy"].append(
                        load(front, hs, args.duration))
                finally:
                    stop(balancer)
            finally:
                stop(server)
            server, port = start([py, str(SERVER), "--pem", str(pem), "--workers", "2"])
            try:
                figures["64-byte round trips/s, --workers 2"].append(
                    load(port, echo, args.duration))
            finally:
                stop(server)
    print(f"{args.rounds} round(s) of {args.duration} s per figure (median), "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    for name, values in figures.items():
        print(f"{name:40s} {statistics.median(values):>10,.0f}   "
              f"({', '.join(f'{v:,.0f}' for v in values)})")
    one = statistics.median(figures["64-byte round trips/s, 1 process"])
    two = statistics.median(figures["64-byte round trips/s, --workers 2"])
    print(f"--workers 2 / 1 process: {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
