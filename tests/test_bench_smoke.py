"""A smoke run of every benchmark scenario (a fraction of a second each): the harness, the
C reference server, the C load generator and sslsock's benchmark servers all work and agree
on the protocol.  The real measurement is `python benchmarks/bench.py` (see the README)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_every_scenario_runs(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--duration", "0.4", "--runs", "1",
         "--idle-conns", "50", "--servers", "c-ref,sslsock-named-pool,sslsock-object,sslsock-aio",
         "--out", str(out)],
        capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    for heading in ("TLS 1.3 full handshake", "TLS 1.2 handshake, RSA-2048", "handshake + first reply",
                    "bulk echo", "64-byte echo", "round trips per second", "idle TLS connections",
                    "asking for a name (SNI)"):
        assert heading in table
    rows = [line for line in table.splitlines() if line.startswith("| c-ref") or
            line.startswith("| sslsock")]
    assert len(rows) == 8 * 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 7:  # throughput scenarios: something was done, without errors
            assert float(cells[1].replace(",", "")) > 0, row
            assert cells[6] == "0", row
        else:  # idle: every connection held
            assert cells[1] == "50", row


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
