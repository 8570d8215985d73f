"""A build links the OpenSSL it was asked for: the OpenSSL prefix (and what is in it) is
part of the C source cffi generates, so that building again with another
``SSLSOCK_OPENSSL_DIR`` in the same checkout rewrites that source and setuptools recompiles
and relinks instead of reusing objects in ``build/`` (src/_native/build.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "src" / "_native" / "build.py"

pytestmark = pytest.mark.skipif(not BUILD.is_file(), reason="needs the source tree")


def generated_source(prefix: Path | None, cwd: Path) -> str:
    """The C source build.py hands to cffi with this SSLSOCK_OPENSSL_DIR."""
    env = {k: v for k, v in os.environ.items() if k != "SSLSOCK_OPENSSL_DIR"}
    if prefix is not None:
        env["SSLSOCK_OPENSSL_DIR"] = str(prefix)
    code = ("import runpy, sys; g = runpy.run_path(sys.argv[1]); "
            "print(g['ffibuilder']._assigned_source[1])")
    out = subprocess.run([sys.executable, "-c", code, str(BUILD)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def fake_prefix(d: Path, version: str) -> Path:
    (d / "include" / "openssl").mkdir(parents=True)
    (d / "include" / "openssl" / "ssl.h").write_text("/* ssl.h */\n")
    (d / "include" / "openssl" / "opensslv.h").write_text(
        f'#define OPENSSL_VERSION_TEXT "OpenSSL {version}"\n')
    (d / "lib").mkdir()
    (d / "lib" / "libssl.a").write_bytes(b"!<arch>\n")
    (d / "lib" / "libcrypto.a").write_bytes(b"!<arch>\n" + version.encode())
    (d / "LICENSE.txt").write_text("Apache License\n")
    (d / "BUILDINFO").write_text(f"openssl: {version}\n")
    return d


def test_prefix_decides_the_generated_source(tmp_path: Path) -> None:
    a = fake_prefix(tmp_path / "a", "3.5.7")
    b = fake_prefix(tmp_path / "b", "3.0.22")
    cwd = tmp_path / "cwd"  # build.py writes no file outside its licence copy: run elsewhere
    cwd.mkdir()
    licence = ROOT / "src" / "sslsock" / "OPENSSL_LICENSE.txt"
    had = licence.read_bytes() if licence.exists() else None
    try:
        src_a = generated_source(a, cwd)
        assert generated_source(a, cwd) == src_a  # stable: no rebuild when nothing changed
        src_b = generated_source(b, cwd)
        src_sys = generated_source(None, cwd)
        # the same prefix rebuilt in place (another OpenSSL build there) counts too
        (a / "BUILDINFO").write_text("openssl: 3.5.8\n")
        src_a2 = generated_source(a, cwd)
    finally:
        if had is None:
            licence.unlink(missing_ok=True)
        else:
            licence.write_bytes(had)
    assert "OpenSSL build identity" in src_a
    assert len({src_a, src_b, src_sys, src_a2}) == 4
