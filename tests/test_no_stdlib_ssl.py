"""The library never imports Python's ssl module: TLS goes through the C core only (the
stdlib ssl is a test peer, nothing more)."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys, tempfile, threading
from pathlib import Path
import sslsock, sslsock._faces.named, sslsock._cli.main
from sslsock._certs import generate as _certgen
d = Path(tempfile.mkdtemp())
_certgen.make_self_signed("localhost").write_pem(d / "s.pem")
with sslsock.Listener(0, str(d / "s.pem"), host="127.0.0.1") as lst:
    c = sslsock.connect("127.0.0.1", lst.port, verify=False)
    s = lst.accept(5)
    c.write(b"ping"); assert s.read(5) == b"ping"
    c.close(); s.close()
bad = sorted(m for m in sys.modules if m in ("ssl", "_ssl"))
print("imported:", bad)
sys.exit(1 if bad else 0)
"""


def test_the_library_does_not_import_ssl() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
