"""Porting fidelity and the rough edges a new user hits (issue 13): WLanguage's read
time-out, SocketClientInfo on a dead channel, ErrorInfo's constant values, the error rules,
exceptions that fit Python's, the CLI's port rule and probe, small input gaps, and the C
core's connect / mode-change / message-limit edges.  (The TIME_WAIT message is tested with
the other address-reuse tests in test_named_face.py.)
"""
from __future__ import annotations

import ast
import errno
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from test_named_face import code, in_thread, message, port_of

import sslsock
from sslsock._certs import generate as _certgen
from sslsock._core.binding import lib

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
WAIT_MS = 10_000
PEER_TIMEOUT = 10.0
TLS12_13 = sslsock.ProtocolTLS1_2 + sslsock.ProtocolTLS1_3
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


def tls_pair(listener: str = "srv", client: str = "cli") -> str:
    """A listener and a sslsock client connected to it; returns the channel's name."""
    assert sslsock.SocketCreateSSL(listener, 0, "localhost", TLS12_13), sslsock.ErrorInfo()
    assert sslsock.SocketConnectSSL(client, port_of(listener), LOOPBACK, TLS12_13,
                                    timeout=WAIT_MS), sslsock.ErrorInfo()
    assert sslsock.SocketWaitForConnection(listener, WAIT_MS), sslsock.ErrorInfo()
    channel = sslsock.SocketAccept(listener)
    assert channel, sslsock.ErrorInfo()
    return channel


def make_error() -> None:
    """Leave an error in this thread's ErrorInfo."""
    assert sslsock.SocketConnect("nobody", 1, LOOPBACK, 2000) is False
    assert sslsock.ErrorOccurred()


# --- 1. a read time-out is not an error -----------------------------------------------------


def test_read_time_out_returns_empty_without_error(pki: Any) -> None:
    ch = tls_pair()
    make_error()
    t0 = time.monotonic()
    assert sslsock.SocketRead(ch, False, 100) == b""
    assert 0.09 <= time.monotonic() - t0 < 5
    assert not sslsock.ErrorOccurred()
    assert sslsock.ErrorInfo() == "" and code() == 0


def test_polling_loop_runs_until_the_peer_leaves(pki: Any) -> None:
    """The WINDEV channel-thread idiom: SocketRead(ch, False, 10), leave on ErrorOccurred."""
    ch = tls_pair()

    def channel_thread() -> tuple[list[bytes], int, int]:
        got, idle = [], 0
        deadline = time.monotonic() + PEER_TIMEOUT
        while time.monotonic() < deadline:
            message = sslsock.SocketRead(ch, False, 10)
            if sslsock.ErrorOccurred():
                return got, code(), idle
            if message:
                got.append(message)
            else:
                idle += 1
        return got, -1, idle

    join = in_thread(channel_thread)
    for word in (b"one", b"two"):
        time.sleep(0.1)  # idle time-outs in between: the loop must go on
        assert sslsock.SocketWrite("cli", word)
    time.sleep(0.1)
    assert sslsock.SocketClose("cli")
    got, why, idle = join(PEER_TIMEOUT + 5)
    assert got == [b"one", b"two"]
    assert why == sslsock.ErrorCode.PEER_CLOSED  # a peer that left is still an error
    assert idle >= 5


def test_simplified_server_read_time_out_is_not_an_error(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", TLS12_13)
    make_error()
    assert sslsock.SocketRead("srv", False, 50) == b""  # no client yet
    assert not sslsock.ErrorOccurred()


def test_object_face_read_time_out_still_raises(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", options=TLS12_13, host=LOOPBACK) as lst:
        with sslsock.connect(LOOPBACK, lst.port, options=TLS12_13, timeout=PEER_TIMEOUT,
                             server_hostname="localhost") as cli:
            with lst.accept(PEER_TIMEOUT) as conn:
                with pytest.raises(TimeoutError) as info:
                    conn.read(0.05)
                assert isinstance(info.value, sslsock.SocketTimeout)
                cli.write(b"still usable")
                assert conn.read(PEER_TIMEOUT) == b"still usable"


# --- 2. SocketClientInfo on a dead channel ---------------------------------------------------


def _client_info_until_empty(name: str, what: int) -> str:
    deadline = time.monotonic() + PEER_TIMEOUT
    while time.monotonic() < deadline:
        value = sslsock.SocketClientInfo(name, what)
        if value == "":
            return value
        time.sleep(0.02)
    return str(sslsock.SocketClientInfo(name, what))


def test_client_info_on_a_channel_whose_peer_left(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", TLS12_13)
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    raw = ctx.wrap_socket(socket.create_connection((LOOPBACK, port_of("srv")),
                                                   timeout=PEER_TIMEOUT),
                          server_hostname="localhost")
    assert sslsock.SocketWaitForConnection("srv", WAIT_MS)
    ch = sslsock.SocketAccept("srv")
    assert sslsock.SocketClientInfo(ch, sslsock.SocketAddress) == LOOPBACK
    assert sslsock.SocketClientInfo(ch, sslsock.SocketPort) == str(raw.getsockname()[1])
    assert not sslsock.ErrorOccurred()
    raw.close()  # the stdlib client leaves
    assert _client_info_until_empty(ch, sslsock.SocketAddress) == ""
    assert sslsock.ErrorOccurred()
    assert code() == sslsock.ErrorCode.PEER_CLOSED
    assert "closed" in message() and ch in message(), message()
    assert sslsock.SocketClientInfo(ch, sslsock.SocketPort) == ""
    assert sslsock.SocketExist(ch)  # stays True until SocketClose, as in WINDEV


def test_client_info_after_the_peer_closed_and_a_read_saw_it(pki: Any) -> None:
    ch = tls_pair()
    assert sslsock.SocketClose("cli")
    assert sslsock.SocketRead(ch, False, WAIT_MS) == b""
    assert code() == sslsock.ErrorCode.PEER_CLOSED
    assert sslsock.SocketClientInfo(ch, sslsock.SocketAddress) == ""
    assert code() == sslsock.ErrorCode.PEER_CLOSED


def test_client_info_on_a_live_channel_clears_the_error(pki: Any) -> None:
    ch = tls_pair()
    make_error()
    assert sslsock.SocketClientInfo(ch, sslsock.SocketProtocol) in ("TLSv1.2", "TLSv1.3")
    assert not sslsock.ErrorOccurred()


# --- 3. ErrorInfo's constants, and names that type checkers see ------------------------------


def test_error_info_constants_have_wlanguage_values(pki: Any) -> None:
    assert int(sslsock.errMessage) == 1
    assert int(sslsock.errFullDetails) == 19
    assert sslsock.errComplet is sslsock.errFullDetails
    make_error()
    assert sslsock.ErrorInfo(19) == sslsock.ErrorInfo() == sslsock.ErrorInfo(sslsock.errComplet)
    assert sslsock.ErrorInfo(1) == message()
    assert "Error code: 9 (ADDRESS)" in str(sslsock.ErrorInfo(19))
    with pytest.raises(sslsock.UnknownConstantError, match="errFullDetails"):
        sslsock.ErrorInfo(5)


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_every_public_name_is_defined_where_type_checkers_see_it() -> None:
    source = (ROOT / "src" / "sslsock" / "_faces" / "named.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    assert "globals().update" not in source
    defined = _top_level_names(tree)
    missing = [n for n in sslsock._faces.named.__all__ if n not in defined]
    assert not missing, f"made at run time, invisible to mypy and IDEs: {missing}"
    for french in ("SocketCréeSSL", "ErreurInfo", "SocketSansRéutilisationAdresse", "errComplet"):
        assert french in sslsock.__all__


# --- 4. the error rules, consistently --------------------------------------------------------


def test_read_max_bytes_of_the_wrong_type_raises(pki: Any) -> None:
    ch = tls_pair()
    with pytest.raises(TypeError, match="max_bytes"):
        sslsock.SocketRead(ch, False, 100, "10")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sslsock.SocketRead(ch, False, 100, 10.0)  # type: ignore[arg-type]
    assert sslsock.SocketRead(ch, False, 100, 0) == b""  # a wrong value: False + ErrorInfo
    assert code() == sslsock.ErrorCode.ARGUMENT


@pytest.mark.parametrize("mask", [0x40, 0x80, 0x8000, 0x10000 | sslsock.ProtocolTLS1_2, -1])
def test_undefined_option_bits_raise(pki: Any, mask: int) -> None:
    with pytest.raises(sslsock.UnknownConstantError, match="constant"):
        sslsock.SocketCreateSSL("srv", 0, "localhost", mask)
    with pytest.raises(sslsock.UnknownConstantError):
        sslsock.SocketConnectSSL("cli", 5043, LOOPBACK, mask)
    assert not sslsock.SocketExist("srv") and not sslsock.SocketExist("cli")
    with pytest.raises(TypeError):
        sslsock.SocketCreateSSL("srv", 0, "localhost", "TLS1_2")  # type: ignore[arg-type]


def test_contradictory_options_stay_an_error_info(pki: Any) -> None:
    both = sslsock.CertificateHash + sslsock.CertificateName
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", both) is False
    assert code() == sslsock.ErrorCode.OPTIONS


def test_socket_exist_clears_the_previous_error(pki: Any) -> None:
    make_error()
    assert sslsock.SocketExist("nobody") is False
    assert not sslsock.ErrorOccurred()
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", TLS12_13)
    make_error()
    assert sslsock.SocketExist("srv") is True
    assert not sslsock.ErrorOccurred() and sslsock.ErrorInfo() == ""


# --- 5. py.typed: a user's script type-checks -----------------------------------------------


def test_package_ships_py_typed() -> None:
    assert (ROOT / "src" / "sslsock" / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    data = pyproject.split("[tool.setuptools.package-data]", 1)[1]
    assert re.search(r'^sslsock = \[[^]]*"py.typed"', data, re.M), "not in the package data"


USER_SCRIPT = '''\
import sslsock as ss

if not ss.SocketCréeSSL("server", 5043, "sslsock-dev", ss.ProtocoleTLS1_2 + ss.HashCertificat):
    details: str | int = ss.ErreurInfo(ss.errComplet)
    print(details)
ok: bool = ss.socket_connect_ssl("client", 5043, "localhost", timeout=1000)
reply: bytes = ss.socket_read("client", False, 10)
ss.Socket.Option = ss.SocketSansRéutilisationAdresse
try:
    ss.connect("localhost", 5043, timeout=1.0).close()
except ConnectionRefusedError as e:
    refused: ss.ConnectionRefused | None = e if isinstance(e, ss.ConnectionRefused) else None
'''


@pytest.mark.slow
def test_mypy_strict_on_user_scripts_outside_the_tree(tmp_path: Path) -> None:
    """A user's script and the examples, checked by mypy --strict from another directory:
    sslsock's own annotations (py.typed) and every French / snake_case name are seen."""
    (tmp_path / "user.py").write_text(USER_SCRIPT, encoding="utf-8")
    for example in ("client.py", "standard_server.py", "simplified_server.py"):
        shutil.copy(ROOT / "examples" / example, tmp_path / example)
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--python-version", "3.10", "user.py", "client.py",
                        "standard_server.py", "simplified_server.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "MYPYPATH": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.py"
    bad.write_text('import sslsock as ss\nx: int = ss.SocketLit("c")\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "bad.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 1 and "bytes" in r.stdout, r.stdout  # the types are really read


# --- 7. probe names the real reason -----------------------------------------------------------


@needs_openssl
def test_probe_a_server_that_requires_client_certificates(
        pki: Any, openssl_s_server: Callable[..., Any]) -> None:
    with openssl_s_server(OPENSSL, pki.server_cert_file, pki.server_key_file, "-Verify", "1",
                          "-CAfile", str(pki.ca_file)) as port:
        r = subprocess.run([sys.executable, "-m", "sslsock", "probe", LOOPBACK, str(port),
                            "--json", "--timeout", "5"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {v["version"]: v for v in json.loads(r.stdout)["versions"]}
    tls12, tls13 = rows["TLSv1.2"], rows["TLSv1.3"]
    assert tls12["result"] == "refused", tls12
    assert "handshake failure" in tls12["detail"] and "client certificate" in tls12["detail"]
    assert "self-signed" not in tls12["detail"]
    assert tls13["result"] == "refused", tls13  # dropped at its first read, not "accepted"
    assert "certificate required" in tls13["detail"], tls13


@needs_openssl
def test_probe_still_reports_accepted_versions(
        pki: Any, openssl_s_server: Callable[..., Any]) -> None:
    with openssl_s_server(OPENSSL, pki.server_cert_file, pki.server_key_file) as port:
        r = subprocess.run([sys.executable, "-m", "sslsock", "probe", LOOPBACK, str(port),
                            "--json", "--timeout", "5"],
                           capture_output=True, text=True, timeout=60)
    rows = {v["version"]: v for v in json.loads(r.stdout)["versions"]}
    assert rows["TLSv1.2"]["result"] == "accepted" and rows["TLSv1.3"]["result"] == "accepted"


@needs_openssl
def test_handshake_error_without_verification_is_not_a_verify_error(
        pki: Any, openssl_s_server: Callable[..., Any]) -> None:
    """The chain's verify result (self-signed) is recorded even with verification off; it
    must not replace the real reason of a refused handshake."""
    self_signed = _certgen.make_self_signed("localhost", hosts=["localhost"])
    cert, key = self_signed.write_pem(pki.dir / "self-signed-s_server", split=True)
    with openssl_s_server(OPENSSL, cert, key, "-Verify", "1", "-CAfile", str(pki.ca_file),
                          "-tls1_2") as port:
        with pytest.raises(sslsock.TLSError) as info:
            sslsock.connect(LOOPBACK, port, options=sslsock.ProtocolTLS1_2, verify=False,
                            timeout=PEER_TIMEOUT)
    assert not isinstance(info.value, sslsock.VerificationError)
    assert "handshake failure" in info.value.system_message


# --- 8. one port rule for SocketCreateSSL and `sslsock serve` --------------------------------


@pytest.mark.parametrize("port", ["443", "4999", "65001"])
def test_serve_refuses_ports_socket_create_ssl_refuses(port: str, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sslsock", "serve", "--host", LOOPBACK,
                        "--port", port],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                       env={**os.environ, "SSLSOCK_CERT_STORE": str(tmp_path / "store")})
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"port {port} is outside 5000..65000" in r.stderr
    assert not (tmp_path / "store").exists()  # refused before anything was done
    assert sslsock.SocketCreateSSL("srv", int(port), "localhost") is False
    assert code() == sslsock.ErrorCode.PORT


# --- 9. object-face exceptions that fit Python's ----------------------------------------------


def test_refused_connect_is_a_connection_refused_error() -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        for tls in (True, False):
            with pytest.raises(ConnectionRefusedError) as info:
                sslsock.connect(LOOPBACK, port, tls=tls, timeout=PEER_TIMEOUT)
            e = info.value
            assert isinstance(e, ConnectionError) and isinstance(e, sslsock.AddressError)
            assert isinstance(e, sslsock.ConnectionRefused)
            assert e.errno == errno.ECONNREFUSED and e.code == sslsock.ErrorCode.ADDRESS
            assert f"no server is listening on {LOOPBACK} port {port}" in str(e)
        assert sslsock.SocketConnect("c", port, LOOPBACK) is False  # the named face: unchanged
        assert code() == sslsock.ErrorCode.ADDRESS


def test_unresolvable_name_is_a_gaierror() -> None:
    with pytest.raises(socket.gaierror) as info:
        sslsock.connect("no-such-host.invalid", 5043, tls=False, timeout=PEER_TIMEOUT)
    e = info.value
    assert isinstance(e, sslsock.HostNotFound) and isinstance(e, sslsock.AddressError)
    assert e.errno is not None and e.errno < 0  # socket.EAI_*, as the socket module gives
    assert e.strerror and e.strerror in str(e)  # the resolver's reason
    with pytest.raises(socket.gaierror):
        sslsock.Listener(0, tls=False, host="no-such-host.invalid")
    assert sslsock.NetIPAddress("no-such-host.invalid") == ""
    assert int(sslsock.ErrorInfo(sslsock.errSystemCode)) < 0


# --- 10. small input gaps ---------------------------------------------------------------------


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_bracketed_ipv6_address(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", TLS12_13, address="[::1]"), \
        sslsock.ErrorInfo()
    assert sslsock.SocketConnectSSL("cli", port_of("srv"), "[::1]", TLS12_13,
                                    timeout=WAIT_MS), sslsock.ErrorInfo()
    assert sslsock.SocketWaitForConnection("srv", WAIT_MS)
    ch = sslsock.SocketAccept("srv")
    assert sslsock.SocketClientInfo(ch, sslsock.SocketAddress) == "::1"
    assert sslsock.NetIPAddress("[::1]") == "::1"
    with sslsock.connect("[::1]", port_of("srv"), options=TLS12_13, timeout=PEER_TIMEOUT) as c:
        assert c.info().peer_address == "::1"


def test_brackets_around_something_else_are_refused_clearly() -> None:
    assert sslsock.SocketConnect("cli", 5043, "[localhost]") is False
    assert code() == sslsock.ErrorCode.ARGUMENT
    assert "brackets enclose an IPv6 address" in message()
    with pytest.raises(sslsock.ArgumentError):
        sslsock.connect("[127.0.0.1]", 5043)


def test_cert_create_refuses_text_that_is_no_host_name(tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = subprocess.run([sys.executable, "-m", "sslsock", "--store", str(store), "cert",
                        "create", "w", "--host", "not a host!"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "'not a host!' is not a valid host name" in r.stderr
    assert not store.exists() or not list(store.glob("w.*"))
    with pytest.raises(sslsock.ArgumentError):
        _certgen.make_self_signed("w", hosts=["a..b"])
    issued = _certgen.make_self_signed("w", hosts=["srv.example.lan", "*.example.lan",
                                                   "bücher.example", "10.0.0.1", "::1"])
    from cryptography import x509

    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        "srv.example.lan", "*.example.lan", "xn--bcher-kva.example"]


def test_keyless_copy_beside_a_keyed_one_is_not_ambiguous_for_a_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    issued = _certgen.make_self_signed("dup", hosts=["localhost", "127.0.0.1"])
    issued.write_pem(store / "dup.pem")  # certificate and key
    (store / "dup.crt").write_bytes(issued.cert_pem())  # the certificate alone
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(store))
    assert sslsock.SocketCreateSSL("srv", 0, "dup", TLS12_13), sslsock.ErrorInfo()
    st = sslsock.CertStore(store)
    assert st.load_identity("dup").certificate.path.name == "dup.pem"
    with pytest.raises(sslsock.CertificateError, match="ambiguous"):
        st.find("dup")  # without the need for a key, both still match
    other = _certgen.make_self_signed("dup", hosts=["localhost"])
    other.write_pem(store / "dup-other.pem")  # a different keyed certificate, CN "dup"
    with pytest.raises(sslsock.CertificateError, match="ambiguous"):
        st.load_identity("dup")  # two that could serve: really ambiguous


# --- 12. the C core's edges -------------------------------------------------------------------


def test_mode_change_does_not_wait_for_a_blocked_read(pki: Any) -> None:
    ch = tls_pair()
    join_read = in_thread(lambda: sslsock.SocketRead(ch))  # waits without limit
    time.sleep(0.3)  # the read is blocked in C, holding the read lock
    join_change = in_thread(
        lambda: sslsock.SocketChangeTransmissionMode(ch, sslsock.SocketEndTag, "<END>"))
    try:
        assert join_change(2.0) is True
    finally:
        assert sslsock.SocketWrite("cli", b"old mode")  # let the read finish in any case
    assert join_read() == b"old mode"  # the read in progress kept the mode it started with
    assert sslsock.SocketChangeTransmissionMode("cli", sslsock.SocketEndTag, "<END>")
    assert sslsock.SocketWrite("cli", b"new mode")
    assert sslsock.SocketRead(ch, False, WAIT_MS) == b"new mode"
    assert sslsock.SocketWrite(ch, b"reply")  # the writer takes the new mode too
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b"reply"


def test_max_message_is_bounded(pki: Any) -> None:
    limit = int(lib.SS_MAX_MESSAGE_LIMIT)
    assert 1 << 40 < limit < 1 << 63
    a, b = socket.socketpair()
    with sslsock.Connection.adopt(a) as conn, b:
        for bad in (limit + 1, 1 << 63, (1 << 64) - 1, 1 << 64, 0):
            with pytest.raises(sslsock.ArgumentError, match="max_message"):
                conn.max_message = bad
        with pytest.raises(TypeError):
            conn.max_message = "big"  # type: ignore[assignment]
        conn.max_message = limit
        conn.set_mode(sslsock.Mode.SocketEndTag)
        b.sendall(b"hello<EOF>")
        assert conn.read(PEER_TIMEOUT) == b"hello"
        conn.set_mode(sslsock.Mode.SocketSizeAtBeginning)
        b.sendall(b"5\r\nworld")
        assert conn.read(PEER_TIMEOUT) == b"world"
        assert conn.max_message == limit


POLL_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

/* poll() fails with ENOMEM for a single descriptor waited on for POLLOUT (what a
 * non-blocking connect waits for) when SS_TEST_FAIL_POLLOUT is set. */
int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    static int (*real)(struct pollfd *, nfds_t, int);
    if (!real)
        real = (int (*)(struct pollfd *, nfds_t, int))dlsym(RTLD_NEXT, "poll");
    if (n == 1 && fds[0].events == POLLOUT && getenv("SS_TEST_FAIL_POLLOUT")) {
        errno = ENOMEM;
        return -1;
    }
    return real(fds, n, timeout);
}
"""

CONNECT_SCRIPT = r"""
import socket, sys
import sslsock
with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        sslsock.connect("127.0.0.1", server.getsockname()[1], tls=False, timeout=5).close()
    except sslsock.Error as e:
        print(type(e).__name__, e.code.name, e)
        sys.exit(0)
    print("connected")
"""


def test_connect_reports_a_failed_poll(tmp_path: Path) -> None:
    """tcp_connect: poll() failing with anything but EINTR is a failure, not a connection
    (SO_ERROR may well be 0 then)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the poll() shim")
    (tmp_path / "shim.c").write_text(POLL_SHIM)
    shim = tmp_path / "pollshim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "shim.c"), "-ldl"],
                   check=True, timeout=120)
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), str(shim)) if p)
    env = {**os.environ, "LD_PRELOAD": preload}
    ok = subprocess.run([sys.executable, "-c", CONNECT_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.stdout.strip() == "connected", ok.stdout + ok.stderr  # the shim alone: harmless
    r = subprocess.run([sys.executable, "-c", CONNECT_SCRIPT],
                       env={**env, "SS_TEST_FAIL_POLLOUT": "1"}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ConnectionFailure SYSTEM"), r.stdout
    assert "poll() failed while connecting" in r.stdout
    assert "Cannot allocate memory" in r.stdout


# --- 11. docs that stand alone, and a tidy CI --------------------------------------------------


def _project_docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_stand_alone_without_an_outside_contract() -> None:
    """The docs point to nothing outside the repository: no SPEC.md (it is not shipped)."""
    for path in _project_docs():
        assert "SPEC" not in path.read_text(encoding="utf-8"), f"{path.name} points to SPEC.md"


def test_readme_tells_ci_steps_in_the_order_ci_runs_them() -> None:
    steps = [line.split('"', 2)[1] for line in
             (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("step ")]
    run_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                 if line.startswith(("scripts/", "timeout "))]
    ran = [next(s for s in ("scripts/bootstrap", "scripts/ci-extras.sh",
                            "scripts/ci-packaging.sh") if s in line) for line in run_lines]
    assert ran[:3] == ["scripts/bootstrap", "scripts/ci-extras.sh", "scripts/ci-packaging.sh"]
    assert steps[-1] == "the README's test command" and run_lines[-1] == \
        "scripts/bootstrap && .venv/bin/python -m pytest"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    para = _squash(readme[readme.index("CI (`.ci/run`)"):].split("\n\n", 1)[0])
    where = [para.index(s) for s in ("`scripts/bootstrap`", "`scripts/ci-extras.sh`",
                                     "`scripts/ci-packaging.sh`", "last, command 2")]
    assert where == sorted(where), para


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_quick_start_leaves_nothing_in_the_checkout() -> None:
    """Every file the Quick start's commands write is outside the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme[readme.index("## Quick start"):readme.index("## Documentation")]
    blocks = re.findall(r"```sh\n(.*?)```", quick, re.S)
    exports = [line.split() for block in blocks for line in block.splitlines()
               if line.startswith("sslsock cert export")]
    assert exports, "the Quick start exports the development certificate"
    for words in exports:
        target = words[4]
        assert target.startswith("/tmp/"), f"{' '.join(words)} writes into the checkout"
        assert target in quick.split("-CAfile ", 1)[1]


def _shell_function(script: str, name: str) -> str:
    text = (ROOT / "scripts" / script).read_text(encoding="utf-8")
    m = re.search(rf"^{name}\(\) \{{[^\n]*\n.*?^\}}\n", text, re.M | re.S)
    assert m, f"{script} has no function {name}"
    return m.group(0)


FAKE_APT_SOURCE = """#!/bin/sh
cat <<'OUT'
Reading package lists...
Need to get 15.4 MB of source archives.
Get:1 http://deb.debian.org/debian bookworm/main openssl 3.0.22-1 (tar) [15.3 MB]
Err:2 http://deb.debian.org/debian bookworm/main openssl 3.0.22-1~deb12u1 (dsc)
  404  Not Found [IP: 151.101.2.132 80]
Err:3 http://deb.debian.org/debian bookworm/main openssl 3.0.22-1~deb12u1 (diff)
  404  Not Found [IP: 151.101.2.132 80]
E: Failed to fetch http://deb.debian.org/debian/pool/main/o/openssl/openssl_3.0.22-1~deb12u1.dsc  404  Not Found [IP: 151.101.2.132 80]
E: Failed to fetch http://deb.debian.org/debian/pool/main/o/openssl/openssl_3.0.22-1~deb12u1.debian.tar.xz  404  Not Found [IP: 151.101.2.132 80]
E: Some files failed to download
OUT
exit 100
"""


def test_build_openssl_does_not_print_expected_404s_as_failures(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT_SOURCE)
    (bin_dir / "apt-get").chmod(0o755)
    program = ('set -euo pipefail\nlog() { echo "build-openssl: $*" >&2; }\n'
               + _shell_function("build-openssl.sh", "apt_source")
               + 'apt_source "openssl=3.0.22-1~deb12u1" || echo "rc=$?"\n')
    r = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert r.stdout.strip() == "rc=100"  # the caller still learns it failed
    assert "404" not in r.stderr.replace("(404)", "") and "Err:" not in r.stderr, r.stderr
    assert "Some files failed" not in r.stderr
    assert "Get:1 http://deb.debian.org" in r.stderr  # the rest is shown
    assert "2 file(s) not on the mirror (404)" in r.stderr, r.stderr


FAKE_APT_RECORDER = """#!/bin/sh
echo "$*" >> "$APT_CALLS"
"""


def test_build_openssl_leaves_the_system_apt_sources_alone(tmp_path: Path) -> None:
    """Debian's source package comes through a private apt configuration under the cache:
    nothing is written under /etc/apt and the system's package lists are not updated."""
    text = (ROOT / "scripts" / "build-openssl.sh").read_text(encoding="utf-8")
    assert "/etc/apt/sources.list.d" not in text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT_RECORDER)
    (bin_dir / "apt-get").chmod(0o755)
    calls = tmp_path / "calls"
    program = ('set -euo pipefail\nlog() { echo "build-openssl: $*" >&2; }\n'
               f'CACHE={tmp_path}/cache PIN_SUITE=trixie APT_DIR="" APT_OPTS=()\n'
               + _shell_function("build-openssl.sh", "setup_apt_private")
               + "setup_apt_private\n"
               + _shell_function("build-openssl.sh", "apt_source")
               + 'apt_source "openssl=3.5.7-1~deb13u2"\n')
    r = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                            "APT_CALLS": str(calls)})
    assert r.returncode == 0, r.stderr
    update, source = calls.read_text().splitlines()
    private = tmp_path / "cache" / "apt-trixie"
    for line in (update, source):
        assert "Dir::Etc::SourceList=/dev/null" in line
        assert f"Dir::Etc::SourceParts={private}/parts" in line
        assert f"Dir::State::Lists={private}/lists" in line
    assert update.endswith("update -q")
    assert source.endswith("source -q --download-only openssl=3.5.7-1~deb13u2")
    sources = (private / "parts" / "debian-src.sources").read_text()
    assert "Types: deb-src" in sources and "Suites: trixie trixie-updates" in sources
    assert "Suites: trixie-security" in sources
    assert "Types: deb\n" not in sources  # source packages only: no binary package comes from it
