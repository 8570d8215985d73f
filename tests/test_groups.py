"""Key-exchange groups: the post-quantum hybrid X25519MLKEM768 that OpenSSL 3.5 offers and
accepts by default, classical clients still served, the group reported by
``Connection.group`` / ``SocketClientInfo(..., SocketGroup)``, and ``SSLSOCK_TLS_GROUPS``.

Peers independent of sslsock's OpenSSL: pyOpenSSL over ``cryptography``'s own wheel (its
bundled OpenSSL, checked to be 3.5 or later), the stdlib ``ssl`` module (the system's
libssl) and the ``openssl`` command of the OpenSSL build sslsock links (found from
``SSLSOCK_OPENSSL_CLI``, else ``SSLSOCK_OPENSSL_DIR``/bin/openssl, else the build cache).
A test the linked OpenSSL cannot exercise skips and says why; with
``SSLSOCK_REQUIRE_PQ=1`` (CI on the 3.5 wheel) such a skip is a failure instead.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

import sslsock
from sslsock import SSLOption as O
from sslsock._core.binding import lib, openssl_versions
from sslsock._faces.registry import REGISTRY
from sslsock.debug import groups_available

OpenSSL_SSL = pytest.importorskip("OpenSSL.SSL")

LOOPBACK = "127.0.0.1"
TIMEOUT = 10.0
PQ = "X25519MLKEM768"
TLS13 = O.ProtocolTLS1_3
MODERN = O.ProtocolTLS1_2 | O.ProtocolTLS1_3
LINKED = openssl_versions()[1]
RAW = sslsock.Mode.SocketNoEndTag  # bytes as they come: the peers here do no framing


def _skip(reason: str) -> None:
    if os.environ.get("SSLSOCK_REQUIRE_PQ") == "1":
        pytest.fail(f"SSLSOCK_REQUIRE_PQ=1 but: {reason}")
    pytest.skip(reason)


def _version_tuple(text: str) -> tuple[int, ...]:
    m = re.search(r"OpenSSL (\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else (0,)


def need_pq_core() -> None:
    if not groups_available()[PQ]:
        _skip(f"the OpenSSL sslsock links ({LINKED}) has no {PQ} (it needs 3.5 or later)")


def need_pq_pyopenssl() -> str:
    from cryptography.hazmat.backends.openssl.backend import backend

    text = str(backend.openssl_version_text())
    if _version_tuple(text) < (3, 5, 0):
        _skip(f"cryptography's OpenSSL is {text}: no {PQ} before 3.5")
    return text


def openssl_cli() -> Optional[str]:
    """The `openssl` command of the OpenSSL build sslsock links, when it can be found."""
    explicit = os.environ.get("SSLSOCK_OPENSSL_CLI")
    if explicit:
        return explicit
    candidates = []
    if os.environ.get("SSLSOCK_OPENSSL_DIR"):
        candidates.append(Path(os.environ["SSLSOCK_OPENSSL_DIR"]) / "bin" / "openssl")
    m = re.search(r"OpenSSL (\S+?)\+sslsock(\.legacy)?", LINKED)
    if m:
        cache = Path(os.environ.get("SSLSOCK_CACHE") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sslsock")
        candidates.append(cache / f"openssl-{m.group(1)}{'-legacy' if m.group(2) else ''}"
                          / "bin" / "openssl")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def need_pq_cli() -> str:
    cli = openssl_cli()
    if cli is None:
        _skip("no openssl command of the linked OpenSSL build (set SSLSOCK_OPENSSL_CLI)")
    assert cli is not None
    out = subprocess.run([cli, "version"], capture_output=True, text=True, timeout=10).stdout
    if _version_tuple(out) < (3, 5, 0):
        _skip(f"{cli} is {out.strip()}: no {PQ} before 3.5")
    return cli


def blocking_with_deadline(sock: socket.socket) -> None:
    """pyOpenSSL wants a blocking socket: bound its waits in the kernel instead."""
    sock.settimeout(None)
    tv = struct.pack("ll", int(TIMEOUT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


@pytest.fixture
def groups_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set SSLSOCK_TLS_GROUPS for the contexts made while it is set (then restored)."""
    def set_(value: Optional[str]) -> None:
        if value is None:
            monkeypatch.delenv("SSLSOCK_TLS_GROUPS", raising=False)
        else:
            monkeypatch.setenv("SSLSOCK_TLS_GROUPS", value)
    set_(None)
    return set_


def serve_once(lst: sslsock.Listener, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            with lst.accept(TIMEOUT) as conn:
                conn.set_mode(RAW)
                out["group"] = conn.group
                out["protocol"] = conn.protocol
                conn.write(b"ok:" + conn.read(TIMEOUT))
        except Exception as e:  # reported by the test
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t


def sslsock_pair(options: int = TLS13) -> tuple[str, str]:
    """A handshake between sslsock's own client and server: (client group, server group)."""
    out: dict[str, Any] = {}
    with sslsock.Listener(0, "localhost", host=LOOPBACK, options=options) as lst:
        t = serve_once(lst, out)
        with sslsock.connect(LOOPBACK, lst.port, server_hostname="localhost",
                             options=options, timeout=TIMEOUT, mode=RAW) as c:
            c.write(b"x")
            assert c.read(TIMEOUT) == b"ok:x"
            client_group = c.group
        t.join(TIMEOUT)
    assert "error" not in out, out
    return client_group, out["group"]


# --- what the linked OpenSSL can do, and the group reported -------------------------------


def test_debug_reports_group_support(pki: Any) -> None:
    from sslsock.debug import info, lines

    d = info()
    assert d["groups_available"]["X25519"] is True
    expect = _version_tuple(LINKED) >= (3, 5, 0)
    assert d["groups_available"][PQ] is expect, LINKED
    text = "\n".join(lines())
    assert ("post-quantum key exchange (X25519MLKEM768): available" in text) is expect


def test_default_group_between_sslsock_peers(pki: Any, groups_env: Any) -> None:
    """OpenSSL's defaults are left alone: the hybrid on 3.5+, X25519 on 3.0."""
    client, server = sslsock_pair()
    want = PQ if groups_available()[PQ] else "x25519"
    assert client.lower() == server.lower() == want.lower()


def test_group_on_tls12_and_plain_tcp(pki: Any, groups_env: Any) -> None:
    client, server = sslsock_pair(O.ProtocolTLS1_2)
    assert client == server == "x25519"  # ECDHE on TLS 1.2: no hybrid there
    with sslsock.Listener(0, host=LOOPBACK, tls=False) as lst:
        with sslsock.connect(LOOPBACK, lst.port, tls=False, timeout=TIMEOUT) as c:
            assert c.group == "" and c.info().group == ""


def test_socket_client_info_group(pki: Any, groups_env: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", TLS13), sslsock.ErrorInfo()
    port = REGISTRY.get("srv").obj.port
    assert sslsock.SocketConnectSSL("cli", port, LOOPBACK, TLS13, 10_000), sslsock.ErrorInfo()
    assert sslsock.SocketWaitForConnection("srv", 10_000)
    ch = sslsock.SocketAccept("srv")
    want = PQ if groups_available()[PQ] else "x25519"
    assert sslsock.SocketClientInfo("cli", sslsock.SocketGroup).lower() == want.lower()
    assert sslsock.SocketClientInfo(ch, sslsock.SocketGroup).lower() == want.lower()


def test_groups_env_chooses_and_rejects(pki: Any, groups_env: Any) -> None:
    groups_env("X25519:secp256r1")
    client, server = sslsock_pair()
    assert client == server == "x25519"
    groups_env("secp384r1")
    client, server = sslsock_pair()
    assert client == server == "secp384r1"
    groups_env("NoSuchGroup")
    with pytest.raises(sslsock.Error, match="SSLSOCK_TLS_GROUPS"):
        sslsock.Listener(0, "localhost", host=LOOPBACK, options=TLS13)


# --- post-quantum with independent peers --------------------------------------------------


def test_pq_sslsock_client_pyopenssl_server(pki: Any, pool: Any, groups_env: Any) -> None:
    need_pq_core()
    need_pq_pyopenssl()
    SSL = OpenSSL_SSL
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate_chain_file(str(pki.server_cert_file))
    ctx.use_privatekey_file(str(pki.server_key_file))
    lsock = socket.create_server((LOOPBACK, 0))
    lsock.settimeout(TIMEOUT)

    def server() -> str:
        with lsock:
            sock, _ = lsock.accept()
        blocking_with_deadline(sock)
        with sock:
            conn = SSL.Connection(ctx, sock)
            conn.set_accept_state()
            conn.do_handshake()
            group = conn.get_group_name()
            conn.sendall(b"ok")
            try:
                conn.recv(1)
            except SSL.ZeroReturnError:
                conn.shutdown()
            return str(group)

    fut = pool.submit(server)
    with sslsock.connect(LOOPBACK, lsock.getsockname()[1], server_hostname="localhost",
                         options=TLS13, timeout=TIMEOUT, mode=RAW) as c:
        assert c.read(TIMEOUT) == b"ok"
        assert c.group == PQ
    assert fut.result(TIMEOUT) == PQ


def test_pq_pyopenssl_client_sslsock_server(pki: Any, pool: Any, groups_env: Any) -> None:
    need_pq_core()
    need_pq_pyopenssl()
    SSL = OpenSSL_SSL

    def client(port: int) -> str:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.load_verify_locations(str(pki.ca_file))
        ctx.set_verify(SSL.VERIFY_PEER)
        with socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as sock:
            blocking_with_deadline(sock)
            conn = SSL.Connection(ctx, sock)
            conn.set_tlsext_host_name(b"localhost")
            conn.set_connect_state()
            conn.do_handshake()
            conn.sendall(b"hi")
            got = b""
            while len(got) < 5:
                got += conn.recv(5 - len(got))
            assert got == b"ok:hi"
            group = conn.get_group_name()
            conn.shutdown()
            return str(group)

    out: dict[str, Any] = {}
    with sslsock.Listener(0, "localhost", host=LOOPBACK, options=MODERN) as lst:
        fut = pool.submit(client, lst.port)
        t = serve_once(lst, out)
        client_group = fut.result(TIMEOUT)
        t.join(TIMEOUT)
    assert "error" not in out, out
    assert out["protocol"] == "TLSv1.3"
    assert client_group == out["group"] == PQ


def cli_peer(cli: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([cli, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_pq_sslsock_client_openssl_s_server(pki: Any, groups_env: Any,
                                            openssl_s_server: Any) -> None:
    need_pq_core()
    cli = need_pq_cli()
    with openssl_s_server(cli, pki.server_cert_file, pki.server_key_file, "-tls1_3") as port:
        with sslsock.connect(LOOPBACK, port, server_hostname="localhost", options=TLS13,
                             timeout=TIMEOUT) as c:
            assert c.protocol == "TLSv1.3"
            assert c.group == PQ


@pytest.mark.parametrize("offer", [None, "X25519", "secp256r1"])
def test_openssl_s_client_to_sslsock_server(pki: Any, groups_env: Any,
                                            offer: Optional[str]) -> None:
    """The 3.5 CLI offering its defaults gets the hybrid; offering only a classical group,
    it still connects, on that group."""
    need_pq_core()
    cli = need_pq_cli()
    out: dict[str, Any] = {}
    with sslsock.Listener(0, "localhost", host=LOOPBACK, options=MODERN) as lst:
        t = serve_once(lst, out)
        args = ["s_client", "-connect", f"{LOOPBACK}:{lst.port}", "-servername", "localhost",
                "-CAfile", str(pki.ca_file), "-verify_return_error", "-tls1_3", "-quiet"]
        if offer:
            args += ["-groups", offer]
        proc = cli_peer(cli, *args)
        stdout, stderr = proc.communicate(b"hello", timeout=TIMEOUT)
        t.join(TIMEOUT)
    assert "error" not in out, (out, stderr.decode())
    assert stdout.startswith(b"ok:hello"), stderr.decode()
    assert out["group"].lower() == (offer or PQ).lower()


def test_classical_stdlib_client_still_connects(pki: Any, groups_env: Any) -> None:
    """Python's ssl module on a pre-3.5 libssl offers only classical groups."""
    need_pq_core()
    if ssl.OPENSSL_VERSION_INFO[:2] >= (3, 5):
        pytest.skip(f"Python's ssl runs on {ssl.OPENSSL_VERSION}, which offers {PQ} too: "
                    "not a classical-only client")
    out: dict[str, Any] = {}
    with sslsock.Listener(0, "localhost", host=LOOPBACK, options=MODERN) as lst:
        t = serve_once(lst, out)
        ctx = pki.client_context()
        with socket.create_connection((LOOPBACK, lst.port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"hey")
                assert s.recv(16) == b"ok:hey"
                assert s.version() == "TLSv1.3"
        t.join(TIMEOUT)
    assert "error" not in out, out
    assert out["group"] == "x25519"


def test_core_group_function_is_bounded(pki: Any) -> None:
    """ss_conn_group never overruns a short buffer."""
    from sslsock._core.binding import ffi

    with sslsock.Listener(0, "localhost", host=LOOPBACK, options=TLS13) as lst:
        out: dict[str, Any] = {}
        t = serve_once(lst, out)
        with sslsock.connect(LOOPBACK, lst.port, server_hostname="localhost",
                             options=TLS13, timeout=TIMEOUT, mode=RAW) as c:
            c.write(b"z")
            c.read(TIMEOUT)
            buf = ffi.new("char[]", b"\xff" * 6)
            with c._g as ptr:
                lib.ss_conn_group(ptr, buf, 4)
            assert ffi.string(buf) == c.group.encode()[:3]
            assert buf[5] == b"\xff"
        t.join(TIMEOUT)
