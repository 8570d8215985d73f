"""The cost of post-quantum key exchange: TLS 1.3 full handshakes with X25519MLKEM768 (the
OpenSSL 3.5 default) against X25519, for sslsock and the C reference server, all on one
OpenSSL build (a prefix made by scripts/build-openssl.sh, linked statically into the load
generator, the C reference and the sslsock of --python).

The client decides: ``loadgen --groups G`` offers only G, and the servers keep OpenSSL's
defaults (which accept both).  Each figure is the median of --runs interleaved runs; the
server's CPU time per handshake (user + system, from /proc) is the figure that matters on a
shared machine, the rate follows it.  Ratios are to the C reference with the same group.

    python benchmarks/groups_bench.py --python build/ci-wheel/venv-test/bin/python
    python benchmarks/groups_bench.py --openssl-dir ~/.cache/sslsock/openssl-3.5.7 \\
        --python .venv35/bin/python --duration 2 --runs 3 --out build/groups.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench

HERE = Path(__file__).resolve().parent
GROUPS = ("X25519", "X25519MLKEM768")
SERVERS = ("c-ref", "sslsock-named-pool", "sslsock-onethread")


def default_prefix() -> Path:
    cache = Path(os.environ.get("SSLSOCK_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sslsock")
    found = sorted(cache.glob("openssl-3.5.*[0-9]"))
    if not found:
        sys.exit("no OpenSSL 3.5 prefix in the cache: run scripts/build-openssl.sh first, or "
                 "pass --openssl-dir")
    return found[-1]


def linked_version(py: str) -> str:
    out = subprocess.run([py, "-c", "from sslsock._core.binding import openssl_versions; "
                          "print(openssl_versions()[1])"], capture_output=True, text=True,
                         cwd="/", check=True)
    return out.stdout.strip()


def one(cmd: list[str], loadgen: Path, group: str, duration: float,
        env: dict[str, str]) -> tuple[bench.Result, str]:
    proc, port = bench.start_server(cmd, env)
    try:
        time.sleep(0.2)
        lg = [str(loadgen), "--host", "127.0.0.1", "--port", str(port), "--scenario",
              "handshake", "--conns", "8", "--tls13", "--groups", group,
              "--duration", str(duration)]
        t0 = bench.cpu_ticks(proc.pid)
        out = subprocess.run(lg, capture_output=True, text=True, timeout=duration + 60)
        t1 = bench.cpu_ticks(proc.pid)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen failed: {out.stderr.strip()[-400:]}")
        data = json.loads(out.stdout.strip().splitlines()[-1])
        r = bench.Result(ops=float(data["ops"]), seconds=float(data["seconds"]),
                         cpu_s=(t1 - t0) / bench.CLK_TCK, p50_ms=float(data.get("p50_ms") or 0),
                         errors=int(data.get("errors") or 0))
        return r, str(data.get("group", ""))
    finally:
        bench.stop_server(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--openssl-dir", type=Path, help="OpenSSL prefix (default: the cached 3.5)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter whose sslsock is built on that OpenSSL")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    args = p.parse_args()
    prefix = (args.openssl_dir or default_prefix()).resolve()
    # absolute but not resolved: a venv's python is a symlink that must stay the venv's
    args.python = os.path.abspath(args.python)
    version = next((line.split(": ", 1)[1] for line in
                    (prefix / "BUILDINFO").read_text().splitlines()
                    if line.startswith("openssl: ")), "?")
    linked = linked_version(args.python)
    if f"OpenSSL {version}" not in linked:
        sys.exit(f"{args.python}'s sslsock links {linked}, not OpenSSL {version} of {prefix}: "
                 "build it on that prefix (SSLSOCK_OPENSSL_DIR)")
    bindir = HERE / f"bin-openssl-{version}"
    subprocess.run(["make", "-s", "-C", str(HERE / "c"), f"OPENSSL_DIR={prefix}",
                    f"BIN={bindir}"], check=True)
    bench.BIN = bindir  # the C reference of bench.server_commands: the same OpenSSL
    env = dict(os.environ, PYTHONPATH=str(bench.SERVERS_DIR))
    servers = [s for s in args.servers.split(",") if s]
    results: dict[tuple[str, str], list[bench.Result]] = {}
    negotiated: dict[tuple[str, str], set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        certs = bench.make_certs(Path(tmp))
        commands = bench.server_commands(args.python, certs)
        files = {k: str(v) for k, v in certs["ec"].items()}
        for run in range(args.runs):
            for name in servers:
                for group in GROUPS:
                    cmd = [c.format(**files) for c in commands[name]]
                    r, got = one(cmd, bindir / "loadgen", group, args.duration, env)
                    results.setdefault((name, group), []).append(r)
                    negotiated.setdefault((name, group), set()).add(got)
                    print(f"run {run + 1} {name:20} {group:15} {r.rate:9,.0f}/s "
                          f"{r.cpu_per_op_us:8.1f} µs/handshake (negotiated {got})",
                          file=sys.stderr, flush=True)
    lines = [
        f"TLS 1.3 full handshakes, EC P-256 certificate, 8 clients; {linked} everywhere; "
        f"{args.runs} run(s) of {args.duration:g} s per figure (median), {os.cpu_count()} "
        f"cores, {time.strftime('%Y-%m-%d')}.",
        "",
        "| server | group (client's offer) | handshakes/s | server CPU µs/handshake "
        "| × C ref, same group | × X25519, same server | p50 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in servers:
        for group in GROUPS:
            runs = results[(name, group)]
            ref = results.get(("c-ref", group))
            base = results[(name, "X25519")]
            cpu = statistics.median(r.cpu_per_op_us for r in runs)
            vs_ref = (statistics.median(a.cpu_per_op_us / b.cpu_per_op_us
                                        for a, b in zip(runs, ref)) if ref else float("nan"))
            vs_x = statistics.median(a.cpu_per_op_us / b.cpu_per_op_us
                                     for a, b in zip(runs, base))
            got = ",".join(sorted(negotiated[(name, group)]))
            if got.lower() != group.lower():
                sys.exit(f"{name} with {group} offered negotiated {got}")
            lines.append(
                f"| {name} | {group} | {statistics.median(r.rate for r in runs):,.0f} "
                f"| {cpu:,.1f} | {vs_ref:.2f}× | {vs_x:.2f}× "
                f"| {statistics.median(r.p50_ms for r in runs):.2f} "
                f"| {sum(r.errors for r in runs)} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
