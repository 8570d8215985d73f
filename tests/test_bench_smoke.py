"""A smoke run of every benchmark scenario (a fraction of a second each), from both client
shapes of the load generator (event-driven, and a thread per blocking connection): the
harness, the C reference server, the C load generator and sslsock's benchmark servers all
work and agree on the protocol.  The real measurement is `python benchmarks/bench.py` (see
the README)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(360)
def test_every_scenario_runs(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--duration", "0.4", "--runs", "1",
         "--idle-conns", "50", "--servers", "c-ref,sslsock-named-pool,sslsock-object,sslsock-aio",
         "--out", str(out)],
        capture_output=True, text=True, timeout=350)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    events, threads = _shape_sections(table)
    for heading in ("TLS 1.3 full handshake, 8 clients", "TLS 1.2 handshake, RSA-2048",
                    "handshake + first reply, 8 clients", "bulk echo, 16 KiB writes",
                    "64-byte echo, 16 connections", "round trips per second",
                    "idle TLS connections", "asking for a name (SNI)"):
        assert heading in events, heading
    for heading in ("TLS 1.3 full handshake, 8 client threads",
                    "handshake + first reply, 8 client threads",
                    "bulk echo, 16 KiB write then read, 4 client threads",
                    "64-byte echo, 16 client threads"):
        assert heading in threads, heading
    servers = ("c-ref", "sslsock-named-pool", "sslsock-object", "sslsock-aio")
    for section, scenarios in ((events, 8), (threads, 4)):
        summary, details = section.split("\n### ", 1)
        # the summary: a row per server, its ratio to C in every scenario of the shape
        ratios = [line for line in summary.splitlines() if line.startswith("| ") and
                  not line.startswith("| server")]
        assert [r.split("|")[1].strip() for r in ratios] == list(servers), summary
        columns = [c.strip() for c in summary.split("| server |", 1)[1].split("\n", 1)[0]
                   .strip(" |").split("|")]
        assert len(columns) == scenarios, summary
        for row in ratios:
            cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|")[1:])))
            assert len(cells) == scenarios and all(c.endswith("×") for c in cells.values()), row
            # CPU per operation was measured (idle's RSS growth over 50 connections may be 0)
            assert all(float(c.rstrip("×")) > 0 for k, c in cells.items() if k != "idle"), row
        rows = [line for line in details.splitlines() if line.startswith(("| c-ref", "| sslsock"))]
        assert len(rows) == scenarios * len(servers), details
        _check_rows(rows)


def _shape_sections(table: str) -> tuple[str, str]:
    """The table's section for the event-driven client and the one for the threads."""
    assert table.count("\n## ") == 2, table
    _, events, threads = table.split("\n## ")
    assert "--shape events" in events.splitlines()[0]
    assert "--shape threads" in threads.splitlines()[0]
    return events, threads


def _check_rows(rows: list[str]) -> None:
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 7:  # throughput scenarios: something was done, without errors
            assert float(cells[1].replace(",", "")) > 0, row
            assert cells[6] == "0", row
        else:  # idle: every connection held
            assert cells[1] == "50", row


@pytest.mark.timeout(120)
def test_one_shape_runs(tmp_path: Path) -> None:
    """--shapes threads runs the threads shape's scenarios only, from one thread per
    connection (the load generator says which shape it ran; the harness checks it)."""
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--duration", "0.3", "--runs", "1",
         "--shapes", "threads", "--scenarios", "echo64,echo64-thr,bulk-thr",
         "--servers", "c-ref,stdlib-threads", "--out", str(out)],
        capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert table.count("\n## ") == 1 and "--shape threads" in table
    assert "### 64-byte echo, 16 client threads" in table
    assert "### bulk echo, 16 KiB write then read" in table
    assert "### 64-byte echo, 16 connections" not in table
    rows = [line for line in table.split("\n### ", 1)[1].splitlines()
            if line.startswith(("| c-ref", "| stdlib"))]
    assert len(rows) == 2 * 2
    _check_rows(rows)


@pytest.mark.timeout(120)
def test_sni_servers_run(tmp_path: Path) -> None:
    """The servers of the SNI comparison (1 and 100 certificates) answer the scenario."""
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--duration", "0.4", "--runs", "1",
         "--scenarios", "hs13sni", "--servers", "sslsock-sni-1,sslsock-sni-100",
         "--out", str(out)],
        capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| sslsock-sni")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0 and cells[6] == "0", row
