"""Side-by-side TLS server benchmark: sslsock (named face with a worker pool and with a
thread per channel, object face), the stdlib ``ssl`` module (thread per connection),
asyncio (and uvloop if installed), against a minimal C epoll server over libssl (the
"C reference").  Load comes from ``benchmarks/bin/loadgen`` (C over libssl), in two client
shapes, because a server's cost per message depends on how its clients talk:

- events (scenarios ``hs13``, ``bulk``, ``echo64``, ...): two client threads, each an
  event loop over many non-blocking connections.  Many messages arrive per wake-up, as
  from a proxy, a load balancer or an asynchronous client; a server that batches its work
  per wake-up gains the most here.
- threads (scenarios ``*-thr``): a thread per connection, each blocking on a write then on
  a read, as JDBC-style drivers, ``requests`` or a WINDEV client do.  One message per
  connection is in flight, so a server wakes up for nearly every message and what it pays
  per wake-up shows.

Both shapes count operations alike (a handshake, a round trip, a megabyte echoed), so the
CPU per operation of one server can be compared across shapes; each shape has its own
section of the tables, its own panel of the chart and its own ratios to the C reference
(``--shapes`` runs one shape only).

What is measured: for each (scenario, server), the server process's CPU time (user +
system, all threads, from /proc/PID/stat) divided by the operations done, and the
throughput; for the idle scenario, the server's RSS growth per connection.  Each figure is
the median of --runs runs, interleaved so that a noisy moment hits every server alike.
Ratios to the C reference are taken within the same run: the machines are shared and noisy.

    python benchmarks/bench.py --out benchmarks/results.md --chart benchmarks/results.png
                                                  # full run (~30 minutes on 2 cores)
    python benchmarks/bench.py --duration 0.5 --runs 1 --idle-conns 100   # smoke
    python benchmarks/bench.py --shapes threads --scenarios echo64-thr,bulk-thr
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
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
SERVERS_DIR = HERE / "servers"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Scenario:
    name: str
    loadgen: tuple[str, ...]  # scenario arguments
    cert: str  # "ec" or "rsa"
    unit: str  # what one operation is
    per: float = 1.0  # operations are counted per `per` of the loadgen's count
    shape: str = "events"  # the load generator's client shape (--shape)


SHAPES = {
    "events": "Event-driven client: 2 threads, each an event loop over many connections",
    "threads": "Thread-per-connection client: each thread blocks on a write, then a read",
}
# Servers that exist for a comparison the threads shape does not make: by default they run
# in the events shape only (`--servers` names them anywhere), which keeps the threads
# shape's share of a full run near ten minutes.  c-ref-1thread is rt64's yardstick (both
# cores busy); the SNI pair is the object face holding 1 or 100 certificates, for hs13sni.
ONLY_IN = {"c-ref-1thread": ("events",), "sslsock-sni-1": ("events",),
           "sslsock-sni-100": ("events",)}

SCENARIOS = {
    "hs13": Scenario("TLS 1.3 full handshake, 8 clients",
                     ("--scenario", "handshake", "--conns", "8", "--tls13"), "ec", "handshake"),
    "hs12rsa": Scenario("TLS 1.2 handshake, RSA-2048, 8 clients",
                        ("--scenario", "handshake", "--conns", "8", "--tls12"), "rsa", "handshake"),
    "hsreply": Scenario("handshake + first reply, 8 clients",
                        ("--scenario", "handshake-reply", "--conns", "8", "--tls13"), "ec",
                        "connection"),
    "bulk": Scenario("bulk echo, 16 KiB writes, 4 connections",
                     ("--scenario", "bulk", "--conns", "4", "--tls13"), "ec", "MB"),
    "echo64": Scenario("64-byte echo, 16 connections",
                       ("--scenario", "echo64", "--conns", "16", "--tls13"), "ec", "round trip"),
    "rt64": Scenario("round trips per second, 64-byte echo, 64 connections",
                     ("--scenario", "echo64", "--conns", "64", "--tls13"), "ec", "round trip"),
    "idle": Scenario("idle TLS connections", ("--scenario", "idle", "--tls13"), "ec",
                     "connection"),
    # certificates by name: the sslsock-sni-* servers hold 1 or 100 certificates; every
    # client asks for one of the 100 names (with one certificate: the default answers)
    "hs13sni": Scenario("TLS 1.3 handshake asking for a name (SNI), 8 clients",
                        ("--scenario", "handshake", "--conns", "8", "--tls13",
                         "--servername", "host57.example.test"), "ec", "handshake"),
    # the same loads from a thread per connection, blocking write then read (the idle
    # scenario needs no client thread: it stays in the events shape only)
    "hs13-thr": Scenario("TLS 1.3 full handshake, 8 client threads",
                         ("--scenario", "handshake", "--conns", "8", "--tls13"), "ec",
                         "handshake", shape="threads"),
    "hsreply-thr": Scenario("handshake + first reply, 8 client threads",
                            ("--scenario", "handshake-reply", "--conns", "8", "--tls13"), "ec",
                            "connection", shape="threads"),
    "bulk-thr": Scenario("bulk echo, 16 KiB write then read, 4 client threads",
                         ("--scenario", "bulk", "--conns", "4", "--tls13"), "ec", "MB",
                         shape="threads"),
    "echo64-thr": Scenario("64-byte echo, 16 client threads",
                           ("--scenario", "echo64", "--conns", "16", "--tls13"), "ec",
                           "round trip", shape="threads"),
}


def server_commands(py: str, certs: dict[str, dict[str, Path]]) -> dict[str, list[str]]:
    """name -> command template; {cert} {key} {pem} are filled per scenario."""
    s = str(SERVERS_DIR)
    cmds = {
        "c-ref": [str(BIN / "ref_server"), "--port", "0", "--cert", "{cert}", "--key", "{key}",
                  "--read-ahead"],  # as sslsock: like for like
        # one thread only: the rt64 scenario's yardstick for servers that use both cores
        "c-ref-1thread": [str(BIN / "ref_server"), "--port", "0", "--cert", "{cert}", "--key",
                          "{key}", "--read-ahead", "--threads", "1"],
        "sslsock-named-pool": [py, f"{s}/sslsock_named.py", "--pem", "{pem}", "--channels", "pool"],
        "sslsock-named-thread": [py, f"{s}/sslsock_named.py", "--pem", "{pem}", "--channels", "thread"],
        # [extension] two processes on the port (sslsock.run_workers + SocketReusePort)
        "sslsock-named-2proc": [py, f"{s}/sslsock_named.py", "--pem", "{pem}", "--channels", "pool",
                                "--workers", "2"],
        "sslsock-object": [py, f"{s}/sslsock_object.py", "--pem", "{pem}"],
        # the object face with 1 or 100 certificates chosen by name (scenario hs13sni)
        "sslsock-sni-1": [py, f"{s}/sslsock_sni.py", "--pem", "{pem}", "--names", "0"],
        "sslsock-sni-100": [py, f"{s}/sslsock_sni.py", "--pem", "{pem}", "--names", "100"],
        "sslsock-onethread": [py, f"{s}/sslsock_onethread.py", "--pem", "{pem}"],
        "sslsock-named-onethread": [py, f"{s}/sslsock_named_onethread.py", "--pem", "{pem}"],
        "sslsock-named-msgpool": [py, f"{s}/sslsock_named_msgpool.py", "--pem", "{pem}"],
        "sslsock-aio": [py, f"{s}/sslsock_aio.py", "--pem", "{pem}"],
        "sslsock-aio-thread": [py, f"{s}/sslsock_aio.py", "--pem", "{pem}", "--engine-thread"],
        "stdlib-threads": [py, f"{s}/stdlib_threads.py", "--cert", "{cert}", "--key", "{key}"],
        "asyncio": [py, f"{s}/asyncio_server.py", "--cert", "{cert}", "--key", "{key}"],
    }
    try:
        import uvloop  # noqa: F401

        cmds["uvloop"] = cmds["asyncio"] + ["--uvloop"]
    except ImportError:
        pass
    return cmds


def make_certs(d: Path) -> dict[str, dict[str, Path]]:
    sys.path.insert(0, str(HERE.parent / "src"))
    from sslsock._certs import generate as _certgen

    out = {}
    for kind, key_type in (("ec", "ec"), ("rsa", "rsa2048")):
        issued = _certgen.make_self_signed("localhost", key_type=key_type, days=7)
        cert, key = issued.write_pem(d / kind, split=True)
        pem = d / f"{kind}.pem"
        issued.write_pem(pem)
        out[kind] = {"cert": cert, "key": key, "pem": pem}
    return out


def raise_fd_limit(conns: int) -> None:
    """The idle scenario holds `conns` connections in the server and in the load generator
    (both inherit this process's limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = conns + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def ratio_to_ref(results: dict[str, dict[str, list[Result]]], key: str, name: str) -> float:
    """A server's cost over the C reference's in one scenario: the median of the per-run
    ratios of CPU per operation (runs at the same moment; RSS per connection for idle)."""
    runs, ref = results[key][name], results[key].get("c-ref")
    if not ref:
        return float("nan")
    if key == "idle":
        ref_rss = statistics.median(r.rss_per_conn for r in ref)
        return statistics.median(r.rss_per_conn for r in runs) / ref_rss if ref_rss else float("nan")
    pairs = [a.cpu_per_op_us / b.cpu_per_op_us for a, b in zip(runs, ref) if b.cpu_per_op_us > 0]
    return statistics.median(pairs) if pairs else float("nan")


def by_shape(scenarios: list[str]) -> dict[str, list[str]]:
    """The scenarios grouped by client shape, in SHAPES' order, empty groups left out."""
    groups = {shape: [k for k in scenarios if SCENARIOS[k].shape == shape] for shape in SHAPES}
    return {shape: keys for shape, keys in groups.items() if keys}


def draw_chart(results: dict[str, dict[str, list[Result]]], scenarios: list[str],
               path: Path) -> None:
    """One panel per client shape, one group of bars per scenario: each server's median
    ratio to the C reference (CPU per operation; RSS per connection for the idle
    scenario), log scale."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_shape(scenarios)
    names = list(dict.fromkeys(n for per in results.values() for n in per if n != "c-ref"))
    fig, axes = plt.subplots(len(groups), 1, figsize=(12, 5.5 * len(groups)), squeeze=False)
    colours = plt.get_cmap("tab20")
    for ax, (shape, keys) in zip(axes[:, 0], groups.items()):
        here = [n for n in names if any(n in results[k] for k in keys)]
        width = 0.8 / max(len(here), 1)
        for i, name in enumerate(here):
            ratios = [ratio_to_ref(results, k, name) if name in results[k] else float("nan")
                      for k in keys]
            xs = [j + (i - (len(here) - 1) / 2) * width for j in range(len(keys))]
            # a server keeps its colour in every panel
            ax.bar(xs, ratios, width, label=name, color=colours(names.index(name) % 20))
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([SCENARIOS[k].name.replace(", ", "\n", 1) for k in keys], fontsize=8)
        ax.set_ylabel("server cost ÷ C reference (lower is better)")
        ax.set_title(SHAPES[shape], fontsize=10)
        ax.legend(fontsize=8, ncol=3)
    fig.suptitle("Server CPU per operation (idle: RSS per connection), ratio to a C epoll "
                 "server over libssl, same run and client shape")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def cpu_ticks(pid: int) -> int:
    """CPU time of the server: the process and, for a multi-process server, its children
    (its worker processes, still running, so not yet in the parent's cutime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = int(fields[11]) + int(fields[12])  # utime, stime (whole process)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            f = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[1]) == pid:  # ppid
            total += int(f[11]) + int(f[12])
    return total


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


@dataclass
class Result:
    ops: float = 0.0
    seconds: float = 0.0
    cpu_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    rss_per_conn: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_op_us(self) -> float:
        return self.cpu_s / self.ops * 1e6 if self.ops else float("nan")


def start_server(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 15
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    raise RuntimeError(f"server {cmd} did not start: {err.strip()[-500:]}")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_one(sc: Scenario, cmd: list[str], duration: float, idle_conns: int,
            env: dict[str, str]) -> Result:
    proc, port = start_server(cmd, env)
    try:
        time.sleep(0.2)  # let the server settle (imports, thread start)
        lg = [str(BIN / "loadgen"), "--host", "127.0.0.1", "--port", str(port), *sc.loadgen,
              "--shape", sc.shape]
        if sc.name.startswith("idle"):
            return run_idle(proc, lg, duration, idle_conns)
        lg += ["--duration", str(duration)]
        t0 = cpu_ticks(proc.pid)
        out = subprocess.run(lg, capture_output=True, text=True, timeout=duration + 60)
        t1 = cpu_ticks(proc.pid)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        if data.get("shape") != sc.shape:
            raise RuntimeError(f"loadgen ran shape {data.get('shape')!r}, not {sc.shape!r} "
                               f"(rebuild benchmarks/bin/loadgen: make -C benchmarks/c)")
        r = Result(seconds=float(data["seconds"]), cpu_s=(t1 - t0) / CLK_TCK,
                   p50_ms=float(data.get("p50_ms") or 0), p99_ms=float(data.get("p99_ms") or 0),
                   errors=int(data.get("errors") or 0))
        r.ops = float(data["bytes"]) / 1e6 if sc.unit == "MB" else float(data["ops"])
        return r
    finally:
        stop_server(proc)


def run_idle(proc: subprocess.Popen[str], lg: list[str], duration: float, n: int) -> Result:
    base = rss_bytes(proc.pid)
    cmd = lg + ["--conns", str(n), "--duration", str(max(duration, 2.0) + 120)]
    gen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert gen.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = gen.stdout.readline()
            if line.startswith("IDLE-READY") or not line:
                break
        if not line.startswith("IDLE-READY"):
            raise RuntimeError("idle load generator did not connect everything")
        connected = int(line.split()[1])
        time.sleep(min(duration, 1.0))  # let the server reach its idle state
        grown = rss_bytes(proc.pid) - base
        return Result(ops=connected, seconds=1.0, rss_per_conn=grown / max(connected, 1))
    finally:
        if gen.stdin:
            gen.stdin.close()
        try:
            gen.wait(30)
        except subprocess.TimeoutExpired:
            gen.kill()


def fmt_scenarios(results: dict[str, dict[str, list[Result]]], scenarios: list[str]) -> list[str]:
    lines = []
    for key in scenarios:
        sc = SCENARIOS[key]
        per_server = results[key]
        ref = per_server.get("c-ref")
        lines.append(f"\n### {sc.name}\n")
        if key == "idle":
            lines.append("| server | connections | RSS per connection | ratio to C |")
            lines.append("|---|---:|---:|---:|")
        else:
            lines.append(f"| server | {sc.unit}/s | server CPU µs per {sc.unit} | ratio to C "
                         "(CPU/op) | rate vs C | p50 ms | errors |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, runs in per_server.items():
            if key == "idle":
                rss = statistics.median(r.rss_per_conn for r in runs)
                ref_rss = statistics.median(r.rss_per_conn for r in ref) if ref else float("nan")
                lines.append(f"| {name} | {int(runs[0].ops)} | {rss / 1024:.1f} KiB | "
                             f"{rss / ref_rss:.2f}× |")
                continue
            # ratios per run (same moment), then the median
            cpu = statistics.median(r.cpu_per_op_us for r in runs)
            rate = statistics.median(r.rate for r in runs)
            ratio = ratio_to_ref(results, key, name)
            if ref and any(b.rate for b in ref):
                rate_ratio = statistics.median(a.rate / b.rate for a, b in zip(runs, ref) if b.rate)
            else:
                rate_ratio = float("nan")
            p50 = statistics.median(r.p50_ms for r in runs)
            errors = sum(r.errors for r in runs)
            lines.append(f"| {name} | {rate:,.0f} | {cpu:,.1f} | {ratio:.2f}× | {rate_ratio:.2f}× "
                         f"| {p50:.2f} | {errors} |")
    return lines


def fmt_summary(results: dict[str, dict[str, list[Result]]], keys: list[str]) -> list[str]:
    """One row per server, one column per scenario of a shape: its ratio to C."""
    lines = ["| server | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    names = list(dict.fromkeys(n for k in keys for n in results[k]))
    for name in names:
        cells = [f"{ratio_to_ref(results, k, name):.2f}×" if name in results[k] else "–"
                 for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def fmt_table(results: dict[str, dict[str, list[Result]]], scenarios: list[str]) -> str:
    """A section per client shape: the ratios to C at a glance (CPU per operation; RSS per
    connection for idle) when the C reference ran, then a table per scenario."""
    lines = []
    for shape, keys in by_shape(scenarios).items():
        lines.append(f"\n## {SHAPES[shape]} (`loadgen --shape {shape}`)\n")
        if any("c-ref" in results[k] for k in keys):
            lines.append("Server cost ÷ C reference's, same run and client shape:\n")
            lines += fmt_summary(results, keys)
        lines += fmt_scenarios(results, keys)
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    p.add_argument("--runs", type=int, default=3, help="runs per (scenario, server); median")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--shapes", default=",".join(SHAPES),
                   help="client shapes to run, of: " + ", ".join(SHAPES) + " (default: both)")
    p.add_argument("--servers", default="", help="comma-separated names (default: all)")
    p.add_argument("--idle-conns", type=int, default=10000)
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.add_argument("--chart", type=Path,
                   help="also draw each server's CPU-per-operation ratio to C as a PNG")
    args = p.parse_args()
    raise_fd_limit(args.idle_conns)
    subprocess.run(["make", "-s", "-C", str(HERE / "c")], check=True)
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES] + [
        k for k in args.scenarios.split(",") if k and k not in SCENARIOS]
    if unknown:
        p.error(f"unknown shape or scenario: {', '.join(unknown)}")
    scenarios = [k for k in args.scenarios.split(",") if k and SCENARIOS[k].shape in shapes]
    if not scenarios:
        p.error("no scenario of the chosen shapes")
    started = time.monotonic()
    py = sys.executable
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SERVERS_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp))
        commands = server_commands(py, certs)
        named = [s for s in args.servers.split(",") if s]
        unknown = [n for n in named if n not in commands]
        if unknown:
            p.error(f"unknown server: {', '.join(unknown)}")

        def serves(key: str) -> list[str]:
            if named:
                return named
            return [n for n in commands if SCENARIOS[key].shape in ONLY_IN.get(n, SHAPES)]

        results: dict[str, dict[str, list[Result]]] = {
            k: {n: [] for n in serves(k)} for k in scenarios}
        for run in range(args.runs):
            for key in scenarios:
                sc = SCENARIOS[key]
                files = {k: str(v) for k, v in certs[sc.cert].items()}
                for name in results[key]:
                    cmd = [c.format(**files) for c in commands[name]]
                    r = run_one(sc, cmd, args.duration, args.idle_conns, env)
                    results[key][name].append(r)
                    print(f"run {run + 1} {key:11} {name:23} {r.rate:12,.0f}/s "
                          f"{r.cpu_per_op_us:10.1f} µs/op rss/conn {r.rss_per_conn / 1024:.1f} KiB",
                          file=sys.stderr, flush=True)
    minutes = (time.monotonic() - started) / 60
    figures = sum(len(v) for v in results.values()) * args.runs
    header = (f"Benchmark: {args.runs} run(s) of {args.duration:g} s per figure (median), "
              f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; {figures} measurements "
              f"in {minutes:.1f} min.\n")
    print(f"bench: {figures} measurements in {minutes:.1f} min", file=sys.stderr)
    table = header + fmt_table(results, scenarios)
    print(table)
    if args.out:
        args.out.write_text(table)
    if args.chart:
        draw_chart(results, scenarios, args.chart)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
