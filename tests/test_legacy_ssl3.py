"""SSLv3 on an OpenSSL build that has it (scripts/build-openssl.sh --legacy; run by
scripts/ci-legacy.sh).  Skipped unless the linked OpenSSL can do SSLv3, which Debian's
cannot.

The peer is that build's own ``openssl`` command, named by ``SSLSOCK_LEGACY_OPENSSL``
(``<prefix>/bin/openssl``), or the ``openssl`` on PATH when it knows ``-ssl3``.  The
negotiated version is checked on both sides: s_client's ``Protocol  : SSLv3`` and
``SocketClientInfo(channel, SocketProtocol) == "SSLv3"``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

import sslsock
from sslsock import SSLOption as O
from sslsock._certs import generate as _certgen
from sslsock._core.binding import lib
from sslsock._faces.registry import REGISTRY

SSL3_BIT = 0x01  # ss_versions_supported()
TIMEOUT = 15.0
pytestmark = pytest.mark.skipif(not lib.ss_versions_supported() & SSL3_BIT,
                                reason="the linked OpenSSL cannot do SSLv3 (Debian's cannot; "
                                       "scripts/ci-legacy.sh builds one that can)")


def _knows_ssl3(exe: str) -> bool:
    try:
        out = subprocess.run([exe, "s_client", "-help"], capture_output=True, text=True,
                             timeout=TIMEOUT)
    except OSError:
        return False
    return "-ssl3" in out.stdout + out.stderr


@pytest.fixture(scope="module")
def openssl_cmd() -> str:
    exe = os.environ.get("SSLSOCK_LEGACY_OPENSSL") or shutil.which("openssl") or ""
    if not exe or not _knows_ssl3(exe):
        if os.environ.get("SSLSOCK_LEGACY_OPENSSL"):
            pytest.fail(f"SSLSOCK_LEGACY_OPENSSL={exe} cannot do SSLv3")
        pytest.skip("no openssl command that can do SSLv3 (set SSLSOCK_LEGACY_OPENSSL)")
    return exe


@pytest.fixture()
def rsa_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A store with an RSA certificate for localhost: SSLv3 has no ECDSA or ECDHE suites,
    so only RSA authentication (with DHE key exchange) can serve it."""
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    cert = _certgen.make_self_signed("localhost", hosts=["localhost", "127.0.0.1"],
                                     key_type="rsa2048")
    cert.write_pem(store / "localhost.pem")
    (tmp_path / "ca.pem").write_bytes(cert.cert_pem())
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(store))
    yield tmp_path


def s_client(openssl: str, port: int, version: str, ca: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}",
         "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", str(ca), "-verify_return_error"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def session_protocol(output: str) -> str | None:
    """The version of the session s_client reports, or None when no handshake completed."""
    if re.search(r"Cipher is \(NONE\)", output):
        return None
    m = re.search(r"^\s*Protocol\s*:\s*(\S+)", output, re.M)
    return m.group(1) if m else None


def test_ssl3_handshake_with_openssl_s_client(openssl_cmd: str, rsa_store: Path) -> None:
    """ProtocolSSL3 alone: s_client -ssl3 completes, both sides say SSLv3, data flows."""
    assert sslsock.SocketCreateSSL("ssl3-srv", 0, "localhost", O.ProtocolSSL3), \
        sslsock.ErrorInfo()
    try:
        assert sslsock.SocketClientInfo("ssl3-srv", sslsock.SocketProtocol) == "SSLv3"
        port = int(sslsock.SocketClientInfo("ssl3-srv", sslsock.SocketPort))
        with s_client(openssl_cmd, port, "ssl3", rsa_store / "ca.pem") as proc:
            try:
                deadline = time.monotonic() + TIMEOUT
                while not sslsock.SocketWaitForConnection("ssl3-srv", 200):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        # s_client gives up at once when the handshake fails
                        lst = REGISTRY.get("ssl3-srv").obj
                        done = proc.poll() is not None
                        out = proc.communicate(timeout=TIMEOUT)[0] if done else b""
                        pytest.fail(f"no SSLv3 handshake: server: {lst.stats().last_failure}; "
                                    f"s_client:\n{out.decode(errors='replace')}")
                ch = sslsock.SocketAccept("ssl3-srv")
                assert ch, sslsock.ErrorInfo()
                protocol = sslsock.SocketClientInfo(ch, sslsock.SocketProtocol)
                cipher = sslsock.SocketClientInfo(ch, sslsock.SocketCipher)
                print(f"sslsock server: SocketProtocol={protocol} SocketCipher={cipher}")
                assert protocol == "SSLv3"
                assert proc.stdin is not None
                proc.stdin.write(b"5\r\nhello")  # SocketSizeAtBeginning framing, by hand
                proc.stdin.flush()
                assert sslsock.SocketRead(ch, False, int(TIMEOUT * 1000)) == b"hello", \
                    sslsock.ErrorInfo()
                assert sslsock.SocketWrite(ch, b"olleh")
                time.sleep(0.2)
                assert sslsock.SocketClose(ch)  # close_notify: s_client ends on its own
                out, _ = proc.communicate(timeout=TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        sslsock.SocketClose("ssl3-srv")
    text = out.decode(errors="replace")
    print("s_client:\n" + "\n".join(line for line in text.splitlines()
                                    if re.search(r"Protocol|Cipher|New,|Verif|olleh", line)))
    assert session_protocol(text) == "SSLv3", text
    assert re.search(r"^New, SSLv3, Cipher is " + re.escape(cipher), text, re.M), text
    assert "5\r\nolleh" in text  # the reply, framed
    assert "Verify return code: 0 (ok)" in text


def run_s_client(openssl: str, port: int, version: str, ca: Path) -> str:
    """One s_client handshake attempt with no data; its output."""
    with s_client(openssl, port, version, ca) as proc:
        try:
            out, _ = proc.communicate(b"", timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
    return out.decode(errors="replace")


@pytest.mark.parametrize("mask", [
    O.ProtocolTLS1 | O.ProtocolTLS1_1 | O.ProtocolTLS1_2,   # the default, without SSLv3
    O.ProtocolTLS1_2 | O.ProtocolTLS1_3,
    O.ProtocolTLS1,                                         # the version next to SSLv3
], ids=["default", "tls12+13", "tls1"])
def test_tls_only_mask_refuses_ssl3(openssl_cmd: str, rsa_store: Path, mask: int) -> None:
    with sslsock.Listener(0, "localhost", options=mask, host="127.0.0.1") as lst:
        assert "SSLv3" not in lst.protocols
        text = run_s_client(openssl_cmd, lst.port, "ssl3", rsa_store / "ca.pem")
        print(f"sslsock server {lst.protocols}; s_client -ssl3:\n" + "\n".join(
            line for line in text.splitlines()
            if re.search(r"alert|error|Protocol|Cipher is|New,", line)))
        assert session_protocol(text) is None, text
        deadline = time.monotonic() + TIMEOUT
        while lst.stats().failed_tls + lst.stats().failed_io < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = lst.stats()
        assert stats.failed_tls + stats.failed_io == 1 and stats.handshakes == 0, stats
        assert not lst.wait(0)


def test_ssl3_in_a_set_with_a_hole(openssl_cmd: str, rsa_store: Path) -> None:
    """SSLv3 + TLS 1.2: exactly those two, TLS 1.0/1.1 (the hole) and 1.3 refused."""
    with sslsock.Listener(0, "localhost", options=O.ProtocolSSL3 | O.ProtocolTLS1_2,
                          host="127.0.0.1") as lst:
        assert lst.protocols == ("SSLv3", "TLSv1.2")
        got = {}
        for version in ("ssl3", "tls1", "tls1_1", "tls1_2", "tls1_3"):
            got[version] = session_protocol(
                run_s_client(openssl_cmd, lst.port, version, rsa_store / "ca.pem"))
        while lst.wait(0):
            lst.accept(0).close()
    assert got == {"ssl3": "SSLv3", "tls1": None, "tls1_1": None, "tls1_2": "TLSv1.2",
                   "tls1_3": None}


@pytest.fixture()
def ssl3_server(openssl_cmd: str, rsa_store: Path,
                openssl_s_server: Callable[..., AbstractContextManager[int]]) -> Iterator[int]:
    """`openssl s_server -ssl3` on a free port."""
    store = rsa_store / "store" / "localhost.pem"
    with openssl_s_server(openssl_cmd, store, store, "-ssl3", "-cipher", "DEFAULT@SECLEVEL=0",
                          timeout=TIMEOUT) as port:
        yield port


def test_sslsock_client_speaks_ssl3(ssl3_server: int, rsa_store: Path) -> None:
    """The client side: ProtocolSSL3 reaches an SSLv3-only server, the default mask does not."""
    ca = (rsa_store / "ca.pem").read_bytes()
    with sslsock.connect("localhost", ssl3_server, options=O.ProtocolSSL3, cafile_pem=ca,
                         timeout=TIMEOUT) as conn:
        assert conn.protocol == "SSLv3"
    with pytest.raises(sslsock.TLSError):
        sslsock.connect("localhost", ssl3_server, cafile_pem=ca, timeout=TIMEOUT)


def test_ssl3_accepts_rsa_key_exchange(openssl_cmd: str, rsa_store: Path) -> None:
    """A client limited to AES128-SHA (RSA key exchange) on SSLv3: served, while the
    listener's TLS 1.2 connections keep their suites (same check on TLS 1.0 runs on every
    build: tests/test_security_levels.py)."""
    with sslsock.Listener(0, "localhost", options=O.ProtocolSSL3 | O.ProtocolTLS1_2,
                          host="127.0.0.1") as lst:
        texts = {}
        for version in ("ssl3", "tls1_2"):
            run = subprocess.run(
                [openssl_cmd, "s_client", "-connect", f"127.0.0.1:{lst.port}", f"-{version}",
                 "-cipher", "AES128-SHA@SECLEVEL=0", "-CAfile", str(rsa_store / "ca.pem")],
                input=b"", capture_output=True, timeout=TIMEOUT)
            texts[version] = (run.stdout + run.stderr).decode(errors="replace")
        while lst.wait(0):
            lst.accept(0).close()
    assert re.search(r"^New, SSLv3, Cipher is AES128-SHA", texts["ssl3"], re.M), texts["ssl3"]
    assert session_protocol(texts["tls1_2"]) is None, texts["tls1_2"]
