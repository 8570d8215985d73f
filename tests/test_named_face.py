"""The named-socket face (SPEC §1.1, §2, §6): names, ErrorInfo per thread, ports and
address reuse, time-outs, accept / deny, the simplified server, transmission modes,
plain TCP, and SocketClose racing blocked calls.
"""
from __future__ import annotations

import datetime
import errno
import ipaddress
import socket
import ssl
import threading
import time
from typing import Any, Callable

import pytest

import sslsock
from sslsock._faces.registry import REGISTRY

LOOPBACK = "127.0.0.1"
WAIT_MS = 10_000
PEER_TIMEOUT = 10.0


# --- helpers ------------------------------------------------------------------------------


def port_of(name: str) -> int:
    return REGISTRY.get(name).obj.port


def raw_client(pki: Any, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT)
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    return ctx.wrap_socket(raw, server_hostname="localhost")


def recv_exact(sock: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def accept(listener: str) -> str:
    assert sslsock.SocketWaitForConnection(listener, WAIT_MS), sslsock.ErrorInfo()
    channel = sslsock.SocketAccept(listener)
    assert channel, sslsock.ErrorInfo()
    return channel


def tls_pair(listener: str = "srv", client: str = "cli") -> str:
    """A listener (port 0) and a sslsock client connected to it; returns the channel."""
    if not sslsock.SocketExist(listener):
        assert sslsock.SocketCreateSSL(listener, 0, "localhost"), sslsock.ErrorInfo()
    assert sslsock.SocketConnectSSL(client, port_of(listener), LOOPBACK, timeout=WAIT_MS), \
        sslsock.ErrorInfo()
    return accept(listener)


def code() -> int:
    return int(sslsock.ErrorInfo(sslsock.errCode))


def message() -> str:
    return str(sslsock.ErrorInfo(sslsock.errMessage))


def in_thread(fn: Callable[[], Any]) -> Callable[[float], Any]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout: float = PEER_TIMEOUT) -> Any:
        t.join(timeout)
        assert not t.is_alive(), "the thread is still blocked"
        if "error" in box:
            raise box["error"]
        return box.get("value")

    return join


def tcp_states(port: int) -> set[str]:
    """TCP states (hex codes of /proc/net/tcp) of sockets whose local port is `port`."""
    states = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                states.add(fields[3])
    return states


TIME_WAIT, LISTEN = "06", "0A"


# --- names: English, French, snake_case ----------------------------------------------------

FUNCTIONS = [
    # English, French (SPEC §2 table), snake_case
    ("SocketCreateSSL", "SocketCréeSSL", "socket_create_ssl"),
    ("SocketCreate", "SocketCrée", "socket_create"),
    ("SocketConnectSSL", "SocketConnecteSSL", "socket_connect_ssl"),
    ("SocketConnect", "SocketConnecte", "socket_connect"),
    ("SocketWaitForConnection", "SocketAttendConnexion", "socket_wait_for_connection"),
    ("SocketAccept", "SocketAccepte", "socket_accept"),
    ("SocketDeny", "SocketRefuse", "socket_deny"),
    ("SocketRead", "SocketLit", "socket_read"),
    ("SocketWrite", "SocketEcrit", "socket_write"),
    ("SocketClose", "SocketFerme", "socket_close"),
    ("SocketExist", "SocketExiste", "socket_exist"),
    ("SocketChangeTransmissionMode", "SocketChangeModeTransmission",
     "socket_change_transmission_mode"),
    ("SocketClientInfo", None, "socket_client_info"),
    ("NetIPAddress", "NetAdresseIP", "net_ip_address"),
    ("ErrorInfo", "ErreurInfo", "error_info"),
    ("ErrorOccurred", "ErreurDétectée", "error_occurred"),
]

CONSTANTS = [
    ("ProtocolSSL2", "ProtocoleSSL2"), ("ProtocolSSL3", "ProtocoleSSL3"),
    ("ProtocolTLS1", "ProtocoleTLS1"), ("ProtocolTLS1_1", "ProtocoleTLS1_1"),
    ("ProtocolTLS1_2", "ProtocoleTLS1_2"), ("ProtocolTLS1_3", "ProtocoleTLS1_3"),
    ("CertificateHash", "HashCertificat"), ("CertificateName", "NomCertificat"),
]


@pytest.mark.parametrize("english,french,snake", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_three_names_one_function(english: str, french: str | None, snake: str) -> None:
    fn = getattr(sslsock, english)
    assert callable(fn)
    assert getattr(sslsock, snake) is fn
    assert snake in sslsock.__all__ and english in sslsock.__all__
    if french is not None:
        assert getattr(sslsock, french) is fn
        assert french in sslsock.__all__


@pytest.mark.parametrize("english,french", CONSTANTS)
def test_french_constants(english: str, french: str) -> None:
    assert getattr(sslsock, french) is getattr(sslsock, english)


def test_default_options_value() -> None:
    assert (sslsock.ProtocolTLS1 + sslsock.ProtocolTLS1_1
                               + sslsock.ProtocolTLS1_2 + sslsock.CertificateName) == sslsock.DEFAULT
    assert (sslsock.ProtocolTLS1_2 | sslsock.ProtocolTLS1_3) == \
        sslsock.ProtocolTLS1_2 + sslsock.ProtocolTLS1_3


def test_mode_values_match_wlanguage() -> None:
    assert int(sslsock.SocketEndTag) == 0
    assert int(sslsock.SocketSizeAtBeginning) == 1
    assert int(sslsock.SocketEndTagBuffer) == 2
    assert int(sslsock.SocketNoEndTag) == 3


def test_a_session_in_french(pki: Any) -> None:
    s = sslsock
    assert s.SocketCréeSSL("serveur", 0, "localhost")
    assert s.SocketConnecteSSL("client", port_of("serveur"), LOOPBACK, timeout=WAIT_MS), \
        s.ErreurInfo()
    assert s.SocketAttendConnexion("serveur", WAIT_MS)
    canal = s.SocketAccepte("serveur")
    assert canal and s.SocketExiste(canal)
    assert s.SocketChangeModeTransmission(canal, s.SocketMarqueurFin)
    assert s.SocketChangeModeTransmission("client", s.SocketMarqueurFin)
    assert s.SocketEcrit("client", "bonjour")
    assert s.SocketLit(canal, False, WAIT_MS) == b"bonjour"
    assert not s.ErreurDétectée()
    assert s.SocketLit(canal, False, 100) == b""  # a time-out: no error, as in WLanguage
    assert not s.ErreurDétectée() and s.ErreurInfo(s.errComplet) == ""
    assert s.SocketFerme(canal) and s.SocketFerme("client") and s.SocketFerme("serveur")
    assert not s.SocketExiste("serveur")
    assert ipaddress.ip_address(s.NetAdresseIP("localhost")).is_loopback


def test_a_session_in_snake_case(pki: Any) -> None:
    s = sslsock
    assert s.socket_create_ssl("srv", 0, "localhost")
    assert s.socket_connect_ssl("cli", port_of("srv"), LOOPBACK, timeout=WAIT_MS)
    assert s.socket_wait_for_connection("srv", WAIT_MS)
    ch = s.socket_accept("srv")
    assert s.socket_change_transmission_mode(ch, s.SocketNoEndTag)
    assert s.socket_change_transmission_mode("cli", s.SocketNoEndTag)
    assert s.socket_write(ch, b"hi")
    assert s.socket_read("cli", False, WAIT_MS) == b"hi"
    assert s.socket_client_info(ch, s.SocketAddress) == LOOPBACK
    assert not s.error_occurred() and s.error_info() == ""
    assert s.socket_close(ch) and s.socket_close("cli") and s.socket_close("srv")
    assert not s.socket_exist("srv")


# --- ErrorInfo / ErrorOccurred ----------------------------------------------------------------


def test_error_fields_for_a_refused_connection() -> None:
    with socket.socket() as s:  # a port where nobody listens
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    assert sslsock.SocketConnectSSL("cli", port, LOOPBACK, timeout=WAIT_MS) is False
    assert sslsock.ErrorOccurred()
    assert code() == sslsock.ErrorCode.ADDRESS
    assert str(port) in message()
    assert sslsock.ErrorInfo(sslsock.errSystemCode) == errno.ECONNREFUSED
    assert "refused" in str(sslsock.ErrorInfo(sslsock.errSystemMessage)).lower()
    full = str(sslsock.ErrorInfo(sslsock.errFullDetails))
    assert message() in full and "ADDRESS" in full and "refused" in full.lower()
    assert sslsock.ErrorInfo() == full  # errFullDetails is the default
    assert not sslsock.SocketExist("cli")


def test_success_clears_the_error(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert not sslsock.SocketWaitForConnection("srv", 50)
    assert sslsock.ErrorOccurred()
    assert sslsock.SocketExist("srv")  # SocketExist reports, it does not touch ErrorInfo
    assert sslsock.SocketClientInfo("srv", sslsock.SocketProtocol)
    assert not sslsock.ErrorOccurred()
    assert sslsock.ErrorInfo() == "" and sslsock.ErrorInfo(sslsock.errMessage) == ""
    assert sslsock.ErrorInfo(sslsock.errCode) == 0
    assert sslsock.ErrorInfo(sslsock.errSystemCode) == 0
    assert sslsock.ErrorInfo(sslsock.errSystemMessage) == ""


def test_errors_are_per_thread(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert not sslsock.SocketWaitForConnection("srv", 50)  # error in the main thread
    main_code = code()

    def other() -> tuple[bool, int, bool, int]:
        before = sslsock.ErrorOccurred(), code()
        sslsock.SocketAccept("srv")  # an error of its own
        return before[0], before[1], sslsock.ErrorOccurred(), code()

    seen_before, code_before, seen_after, code_after = in_thread(other)()
    assert (seen_before, code_before) == (False, 0)
    assert seen_after and code_after == sslsock.ErrorCode.NO_CLIENT
    assert code() == main_code == sslsock.ErrorCode.TIMEOUT  # untouched here

    def succeed() -> None:
        assert sslsock.SocketExist("srv")
        assert sslsock.SocketClientInfo("srv", sslsock.SocketPort)

    in_thread(succeed)()
    assert sslsock.ErrorOccurred()  # another thread's success does not clear ours


def test_unknown_error_info_constant_raises() -> None:
    with pytest.raises(sslsock.UnknownConstantError):
        sslsock.ErrorInfo(99)


# --- names -------------------------------------------------------------------------------


def test_duplicate_name_is_refused(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    port = port_of("srv")
    assert sslsock.SocketCreateSSL("srv", 0, "localhost") is False
    assert code() == sslsock.ErrorCode.NAME
    assert "srv" in message() and "already in use" in message()
    assert sslsock.SocketCreate("srv", 0) is False
    assert sslsock.SocketConnectSSL("srv", port, LOOPBACK, timeout=WAIT_MS) is False
    assert "already in use" in message()
    assert port_of("srv") == port  # the first socket is untouched and works
    ch = tls_pair("srv", "cli")
    assert sslsock.SocketWrite("cli", b"ok") and sslsock.SocketRead(ch, False, WAIT_MS) == b"ok"


def test_names_are_case_sensitive(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketCreateSSL("SRV", 0, "localhost")
    assert port_of("srv") != port_of("SRV")
    assert sslsock.SocketClose("SRV")
    assert sslsock.SocketExist("srv") and not sslsock.SocketExist("SRV")


def test_channel_names_avoid_taken_names(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketCreate("srv#1", 0)  # the name the first channel would get
    ch = tls_pair("srv", "cli")
    assert ch != "srv#1" and ch.startswith("srv")
    ch2 = tls_pair("srv", "cli2")
    assert len({ch, ch2, "srv#1"}) == 3


UNKNOWN_NAME_CALLS = [
    ("SocketRead", lambda n: sslsock.SocketRead(n, False, 10)),
    ("SocketWrite", lambda n: sslsock.SocketWrite(n, b"x")),
    ("SocketClose", lambda n: sslsock.SocketClose(n)),
    ("SocketAccept", lambda n: sslsock.SocketAccept(n)),
    ("SocketDeny", lambda n: sslsock.SocketDeny(n)),
    ("SocketWaitForConnection", lambda n: sslsock.SocketWaitForConnection(n, 10)),
    ("SocketClientInfo", lambda n: sslsock.SocketClientInfo(n, sslsock.SocketAddress)),
    ("SocketChangeTransmissionMode",
     lambda n: sslsock.SocketChangeTransmissionMode(n, sslsock.SocketEndTag)),
]


@pytest.mark.parametrize("fn", [c[1] for c in UNKNOWN_NAME_CALLS],
                         ids=[c[0] for c in UNKNOWN_NAME_CALLS])
def test_unknown_name_raises(fn: Callable[[str], Any]) -> None:
    with pytest.raises(sslsock.SocketNameError) as excinfo:
        fn("nobody")
    assert isinstance(excinfo.value, KeyError)
    assert isinstance(excinfo.value, sslsock.Error)
    assert "nobody" in str(excinfo.value)
    with pytest.raises(KeyError):
        fn("nobody")


def test_socket_exist_does_not_raise_for_unknown_names() -> None:
    assert sslsock.SocketExist("nobody") is False


def test_bad_argument_types_raise(pki: Any) -> None:
    with pytest.raises(TypeError):
        sslsock.SocketCreateSSL(42, 0, "localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sslsock.SocketCreateSSL("srv", "5000", "localhost")  # type: ignore[arg-type]
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    with pytest.raises(TypeError):
        sslsock.SocketRead("srv", "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sslsock.SocketWaitForConnection("srv", 1.5)  # milliseconds are integers
    with pytest.raises(TypeError):
        sslsock.SocketWrite("srv", 12)  # type: ignore[arg-type]


def test_empty_name_is_a_programming_error() -> None:
    """An empty name can never be registered: creating or using one raises, like an
    unknown name; SocketExist("") is simply False."""
    with pytest.raises(sslsock.SocketNameError, match="non-empty"):
        sslsock.SocketCreate("", 0)
    with pytest.raises(sslsock.SocketNameError, match="non-empty"):
        sslsock.SocketRead("")
    assert sslsock.SocketExist("") is False
    assert REGISTRY.names() == []


# --- ports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [1, 80, 4999, 65001, 65535])
def test_port_outside_the_wlanguage_range(pki: Any, port: int) -> None:
    assert sslsock.SocketCreateSSL("srv", port, "localhost") is False
    assert code() == sslsock.ErrorCode.PORT
    assert str(port) in message() and "5000" in message() and "65000" in message()
    assert sslsock.SocketCreate("srv", port) is False
    assert not sslsock.SocketExist("srv")


def test_port_zero_asks_the_system(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    port = port_of("srv")
    assert 0 < port < 65536
    assert LISTEN in tcp_states(port)
    assert sslsock.SocketClientInfo("srv", sslsock.SocketPort) == str(port)


def test_no_reuse_address_and_port_in_use(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("first", 0, "localhost")
    port = port_of("first")
    sslsock.Socket.Option = sslsock.SocketNoReuseAddress
    assert sslsock.Socket.Option == sslsock.SocketNoReuseAddress
    assert sslsock.SocketCreateSSL("second", port, "localhost") is False
    assert code() == sslsock.ErrorCode.IN_USE
    assert str(port) in message()
    assert sslsock.ErrorInfo(sslsock.errSystemCode) == errno.EADDRINUSE


def test_reuse_by_default_still_refuses_a_listening_port(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("first", 0, "localhost")
    port = port_of("first")
    assert sslsock.SocketCreateSSL("second", port, "localhost") is False
    assert code() == sslsock.ErrorCode.IN_USE
    assert str(port) in message()
    assert sslsock.SocketCreate("third", port) is False
    assert str(port) in message()


def test_port_held_by_another_program_is_refused(pki: Any) -> None:
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.bind(("", 0))
    other.listen()
    try:
        port = other.getsockname()[1]
        assert sslsock.SocketCreateSSL("srv", port, "localhost") is False
        assert code() == sslsock.ErrorCode.IN_USE and str(port) in message()
    finally:
        other.close()


def _leave_time_wait(pki: Any) -> int:
    """Run a connection on a listener and close the server side first, so the listener's
    port keeps a connection in TIME_WAIT; close everything; return the port.

    The client is a raw stdlib socket that closes without answering close_notify: a
    close_notify arriving after the server closed would reset the connection instead."""
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    port = port_of("srv")
    raw = raw_client(pki, port)
    try:
        ch = accept("srv")
        assert sslsock.SocketWrite(ch, b"bye")
        assert sslsock.SocketClose(ch)  # active close on the server side: TIME_WAIT is ours
        assert recv_exact(raw, 6) == b"3\r\nbye"
        assert raw.recv(10) == b""  # close_notify
    finally:
        raw.close()
    assert sslsock.SocketClose("srv")
    deadline = time.monotonic() + PEER_TIMEOUT
    while TIME_WAIT not in tcp_states(port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert TIME_WAIT in tcp_states(port)
    assert LISTEN not in tcp_states(port)
    return port


def test_recreate_at_once_despite_time_wait(pki: Any) -> None:
    port = _leave_time_wait(pki)
    assert sslsock.SocketCreateSSL("srv", port, "localhost"), sslsock.ErrorInfo()
    assert port_of("srv") == port
    ch = tls_pair("srv", "cli")  # and it serves
    assert sslsock.SocketWrite("cli", b"again") and sslsock.SocketRead(ch, False, WAIT_MS) == b"again"


def test_no_reuse_address_waits_out_time_wait(pki: Any) -> None:
    port = _leave_time_wait(pki)
    sslsock.Socket.Option = sslsock.SocketNoReuseAddress
    assert sslsock.SocketCreateSSL("srv", port, "localhost") is False
    assert code() == sslsock.ErrorCode.IN_USE
    assert str(port) in message()


def test_no_reuse_address_time_wait_message_is_accurate(pki: Any) -> None:
    port = _leave_time_wait(pki)
    sslsock.Socket.Option = sslsock.SocketNoReuseAddress
    assert sslsock.SocketCreateSSL("srv", port, "localhost") is False
    assert LISTEN not in tcp_states(port)
    assert "listens on it" not in message()


def test_no_reuse_address_server_restarted_is_told_time_wait(pki: Any) -> None:
    """Issue 13.6: a server made with SocketNoReuseAddress, closed, then made again: its
    own TIME_WAIT connections hold the port, nothing listens; the message says so (and
    not "another socket listens on it"), with what to do."""
    sslsock.Socket.Option = sslsock.SocketNoReuseAddress
    port = _leave_time_wait(pki)
    assert sslsock.SocketCreateSSL("srv", port, "localhost") is False
    assert code() == sslsock.ErrorCode.IN_USE
    assert LISTEN not in tcp_states(port)
    text = message()
    assert "TIME_WAIT" in text and "no listener" in text and "wait" in text, text
    assert "listens on it" not in text
    sslsock.Socket.Option = 0  # address reuse cannot bind over those connections either
    assert sslsock.SocketCreateSSL("srv", port, "localhost") is False
    assert "TIME_WAIT" in message() and "SocketNoReuseAddress" in message(), message()


def test_port_in_use_by_a_listener_says_so(pki: Any) -> None:
    with socket.socket() as other:
        other.bind(("0.0.0.0", 0))
        other.listen()
        port = other.getsockname()[1]
        for option in (0, sslsock.SocketNoReuseAddress):
            sslsock.Socket.Option = option
            assert sslsock.SocketCreateSSL("srv", port, "localhost") is False
            assert code() == sslsock.ErrorCode.IN_USE
            assert "another socket listens on it" in message(), message()


def test_socket_option_rejects_unknown_values() -> None:
    with pytest.raises(sslsock.UnknownConstantError):
        sslsock.Socket.Option = 64
    with pytest.raises(TypeError):
        sslsock.Socket.Option = "reuse"  # type: ignore[assignment]
    assert sslsock.Socket.Option == 0


# --- SocketExist ------------------------------------------------------------------------------


def test_socket_exist_lifecycle(pki: Any) -> None:
    assert not sslsock.SocketExist("srv")
    ch = tls_pair("srv", "cli")
    assert sslsock.SocketExist("srv") and sslsock.SocketExist("cli") and sslsock.SocketExist(ch)
    assert sslsock.SocketClose("cli")  # the peer leaves
    assert not sslsock.SocketExist("cli")
    assert sslsock.SocketRead(ch, False, WAIT_MS) == b""
    assert code() == sslsock.ErrorCode.PEER_CLOSED
    assert sslsock.SocketExist(ch)  # until SocketClose
    assert sslsock.SocketClose(ch)
    assert not sslsock.SocketExist(ch)
    with pytest.raises(sslsock.SocketNameError):
        sslsock.SocketClose(ch)  # a name is forgotten once closed


# --- time-outs ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["main", "thread"])
def test_read_timeout(pki: Any, where: str) -> None:
    ch = tls_pair()

    def read() -> tuple[bytes, float, int]:
        t0 = time.monotonic()
        data = sslsock.SocketRead(ch, False, 300)
        return data, time.monotonic() - t0, code()

    data, elapsed, err = read() if where == "main" else in_thread(read)()
    assert data == b""
    assert 0.25 <= elapsed <= 2
    assert err == 0  # a time-out is not an error (WLanguage's polling idiom relies on it)
    # the socket is still usable after a time-out
    assert sslsock.SocketWrite("cli", b"late")
    assert sslsock.SocketRead(ch, False, WAIT_MS) == b"late"


def test_read_timeout_as_timedelta(pki: Any) -> None:
    ch = tls_pair()
    t0 = time.monotonic()
    assert sslsock.SocketRead(ch, False, datetime.timedelta(milliseconds=300)) == b""
    assert 0.25 <= time.monotonic() - t0 <= 2
    assert not sslsock.ErrorOccurred()


def test_read_after_the_peer_closed(pki: Any) -> None:
    ch = tls_pair()
    assert sslsock.SocketWrite(ch, b"last words")
    assert sslsock.SocketClose(ch)
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b"last words"  # data first
    t0 = time.monotonic()
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b""
    assert time.monotonic() - t0 < 2
    assert code() == sslsock.ErrorCode.PEER_CLOSED
    assert sslsock.SocketRead("cli", True) == b""  # no wait for ever either
    assert code() == sslsock.ErrorCode.PEER_CLOSED


def test_wait_for_connection_timeout(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    t0 = time.monotonic()
    assert sslsock.SocketWaitForConnection("srv", 200) is False
    assert 0.15 <= time.monotonic() - t0 <= 2
    assert code() == sslsock.ErrorCode.TIMEOUT


def test_accept_with_nobody_waiting(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketAccept("srv") == ""
    assert sslsock.ErrorOccurred()
    assert code() == sslsock.ErrorCode.NO_CLIENT
    assert "srv" in message()
    assert REGISTRY.names() == ["srv"]


def test_accept_on_a_client_name_fails(pki: Any) -> None:
    ch = tls_pair()
    assert sslsock.SocketAccept(ch) == ""
    assert "not a server socket" in message()
    assert sslsock.SocketWaitForConnection("cli", 10) is False


# --- SocketDeny -------------------------------------------------------------------------------


def test_deny(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketDeny("srv") is False  # nobody to refuse
    assert code() == sslsock.ErrorCode.NO_CLIENT
    assert sslsock.SocketConnectSSL("refused", port_of("srv"), LOOPBACK, timeout=WAIT_MS)
    assert sslsock.SocketWaitForConnection("srv", WAIT_MS)
    assert sslsock.SocketDeny("srv")
    assert not sslsock.ErrorOccurred()
    assert sslsock.SocketRead("refused", False, WAIT_MS) == b""
    assert code() in (sslsock.ErrorCode.PEER_CLOSED, sslsock.ErrorCode.RESET)
    assert sslsock.SocketAccept("srv") == ""  # it is gone, not waiting any more
    ch = tls_pair("srv", "cli")  # the next client is served normally
    assert sslsock.SocketWrite("cli", b"me?") and sslsock.SocketRead(ch, False, WAIT_MS) == b"me?"


# --- the simplified server ----------------------------------------------------------------------


def test_simplified_server(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketWrite("srv", b"too early") is False  # no client accepted yet
    assert code() == sslsock.ErrorCode.NO_CLIENT
    raw = raw_client(pki, port_of("srv"))
    try:
        raw.sendall(b"5\r\nhello")
        assert sslsock.SocketRead("srv", False, WAIT_MS) == b"hello", sslsock.ErrorInfo()
        assert sslsock.SocketWrite("srv", b"hi there")
        assert recv_exact(raw, len(b"8\r\nhi there")) == b"8\r\nhi there"
        assert sslsock.SocketClientInfo("srv", sslsock.SocketAddress) == LOOPBACK
        assert sslsock.SocketClientInfo("srv", sslsock.SocketPort) == str(raw.getsockname()[1])
        assert REGISTRY.names() == ["srv"]  # no channel name was made
        raw.sendall(b"3\r\nabc")
        assert sslsock.SocketRead("srv", False, WAIT_MS) == b"abc"
    finally:
        raw.close()


def test_simplified_server_read_timeout_without_client(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    t0 = time.monotonic()
    assert sslsock.SocketRead("srv", False, 200) == b""
    assert 0.15 <= time.monotonic() - t0 < 2
    assert not sslsock.ErrorOccurred()


def test_simplified_server_serves_the_next_client(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    first = raw_client(pki, port_of("srv"))
    first.sendall(b"5\r\nfirst")
    assert sslsock.SocketRead("srv", False, WAIT_MS) == b"first"
    first.close()
    assert sslsock.SocketRead("srv", False, WAIT_MS) == b""
    assert code() == sslsock.ErrorCode.PEER_CLOSED
    second = raw_client(pki, port_of("srv"))
    try:
        second.sendall(b"6\r\nsecond")
        assert sslsock.SocketRead("srv", False, WAIT_MS) == b"second", sslsock.ErrorInfo()
        assert sslsock.SocketClientInfo("srv", sslsock.SocketPort) == \
            str(second.getsockname()[1])
    finally:
        second.close()


# --- transmission modes -------------------------------------------------------------------------


def test_listener_mode_is_inherited_by_channels(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketChangeTransmissionMode("srv", sslsock.SocketEndTag, b"##")
    raw = raw_client(pki, port_of("srv"))
    try:
        ch = accept("srv")
        raw.sendall(b"abc##")
        assert sslsock.SocketRead(ch, False, WAIT_MS) == b"abc"
        assert sslsock.SocketWrite(ch, b"xyz")
        assert recv_exact(raw, 5) == b"xyz##"
        # the channel's own mode can still change, independently of the listener
        assert sslsock.SocketChangeTransmissionMode(ch, sslsock.SocketSizeAtBeginning)
        assert sslsock.SocketWrite(ch, b"xyz")
        assert recv_exact(raw, 6) == b"3\r\nxyz"
    finally:
        raw.close()
    raw2 = raw_client(pki, port_of("srv"))  # later channels still get the listener's mode
    try:
        ch2 = accept("srv")
        raw2.sendall(b"def##")
        assert sslsock.SocketRead(ch2, False, WAIT_MS) == b"def"
    finally:
        raw2.close()


@pytest.mark.parametrize("bad", [7, -1, 4, "SocketEndTag"])
def test_invalid_mode_constant_raises(pki: Any, bad: Any) -> None:
    ch = tls_pair()
    with pytest.raises(sslsock.UnknownConstantError) as excinfo:
        sslsock.SocketChangeTransmissionMode(ch, bad)
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(sslsock.UnknownConstantError):
        sslsock.SocketChangeTransmissionMode("srv", bad)


def test_invalid_client_info_constant_raises(pki: Any) -> None:
    ch = tls_pair()
    with pytest.raises(sslsock.UnknownConstantError):
        sslsock.SocketClientInfo(ch, 42)


# --- NetIPAddress ---------------------------------------------------------------------------


def test_net_ip_address() -> None:
    mine = sslsock.NetIPAddress()
    assert isinstance(ipaddress.ip_address(mine), ipaddress.IPv4Address)
    assert sslsock.NetIPAddress("localhost") in ("127.0.0.1", "::1")
    assert sslsock.NetIPAddress("127.0.0.1") == "127.0.0.1"
    assert not sslsock.ErrorOccurred()
    assert sslsock.NetIPAddress("no-such-host.invalid") == ""
    assert code() == sslsock.ErrorCode.ADDRESS
    assert "no-such-host.invalid" in message()


# --- plain TCP --------------------------------------------------------------------------------


def test_plain_tcp_round_trip() -> None:
    assert sslsock.SocketCreate("tcp", 0)
    port = port_of("tcp")
    assert sslsock.SocketConnect("cli", port, LOOPBACK, WAIT_MS), sslsock.ErrorInfo()
    ch = accept("tcp")
    assert sslsock.SocketWrite("cli", "héllo")
    assert sslsock.SocketRead(ch, False, WAIT_MS) == "héllo".encode()
    assert sslsock.SocketWrite(ch, b"back")
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b"back"
    assert sslsock.SocketClientInfo(ch, sslsock.SocketAddress) == LOOPBACK
    assert sslsock.SocketClientInfo(ch, sslsock.SocketProtocol) == ""
    assert sslsock.SocketClientInfo(ch, sslsock.SocketCertificate) == ""


def test_plain_tcp_wire_format() -> None:
    assert sslsock.SocketCreate("tcp", 0)
    with socket.create_connection((LOOPBACK, port_of("tcp")), timeout=PEER_TIMEOUT) as raw:
        ch = accept("tcp")
        raw.sendall(b"5\r\nhello")
        assert sslsock.SocketRead(ch, False, WAIT_MS) == b"hello"
        assert sslsock.SocketWrite(ch, b"world")
        assert recv_exact(raw, 8) == b"5\r\nworld"


def test_plain_client_against_tls_server_fails_cleanly(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketConnect("cli", port_of("srv"), LOOPBACK, WAIT_MS)
    assert sslsock.SocketWrite("cli", b"not TLS at all")
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b""  # the server drops it
    assert sslsock.ErrorOccurred()
    assert not sslsock.SocketWaitForConnection("srv", 100)


# --- SocketClose racing blocked calls (SPEC §6) ------------------------------------------------


def test_close_wakes_a_blocked_read(pki: Any) -> None:
    ch = tls_pair()
    started = threading.Event()

    def blocked() -> tuple[bytes, float, int]:
        started.set()
        t0 = time.monotonic()
        data = sslsock.SocketRead(ch, True)  # no time limit
        return data, time.monotonic() - t0, code()

    join = in_thread(blocked)
    assert started.wait(PEER_TIMEOUT)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert sslsock.SocketClose(ch)
    data, _, err = join(5)
    assert time.monotonic() - t0 < 2
    assert data == b""
    assert err == sslsock.ErrorCode.CLOSED


def test_close_from_a_thread_wakes_a_read_on_the_main_thread(pki: Any) -> None:
    ch = tls_pair()
    timer = threading.Timer(0.3, sslsock.SocketClose, args=(ch,))
    timer.start()
    try:
        t0 = time.monotonic()
        assert sslsock.SocketRead(ch, False, WAIT_MS) == b""
        assert time.monotonic() - t0 < 3
        assert code() == sslsock.ErrorCode.CLOSED
    finally:
        timer.join(5)
    assert not sslsock.SocketExist(ch)


def test_close_wakes_a_blocked_wait_for_connection(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    started = threading.Event()

    def blocked() -> tuple[bool, int]:
        started.set()
        return sslsock.SocketWaitForConnection("srv"), code()  # no time limit

    join = in_thread(blocked)
    assert started.wait(PEER_TIMEOUT)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert sslsock.SocketClose("srv")
    ok, err = join(5)
    assert time.monotonic() - t0 < 2
    assert ok is False
    assert err == sslsock.ErrorCode.CLOSED


def test_read_and_write_from_two_threads_at_once(pki: Any) -> None:
    """SPEC §6: a read and a write on the same socket, from two threads, both proceed."""
    ch = tls_pair()
    n = 200

    def echo() -> int:
        for _ in range(n):
            msg = sslsock.SocketRead(ch, False, WAIT_MS)
            assert msg, sslsock.ErrorInfo()
            assert sslsock.SocketWrite(ch, msg)
        return n

    def writer() -> None:
        for i in range(n):
            assert sslsock.SocketWrite("cli", b"%d-" % i + b"w" * (i * 97 % 5000))

    def reader() -> list[bytes]:
        out = []
        for _ in range(n):
            msg = sslsock.SocketRead("cli", False, WAIT_MS)
            assert msg, sslsock.ErrorInfo()
            out.append(msg)
        return out

    joins = [in_thread(echo), in_thread(writer)]
    got = in_thread(reader)(30)
    for j in joins:
        j(30)
    assert got == [b"%d-" % i + b"w" * (i * 97 % 5000) for i in range(n)]


# --- listener and client life cycle ---------------------------------------------------------


def test_wait_does_not_take_the_client(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketConnectSSL("cli", port_of("srv"), LOOPBACK, timeout=WAIT_MS)
    assert sslsock.SocketWaitForConnection("srv", WAIT_MS)
    assert sslsock.SocketWaitForConnection("srv", 0)  # still waiting: nothing was taken
    assert sslsock.SocketAccept("srv")
    assert not sslsock.SocketWaitForConnection("srv", 50)


def test_channels_outlive_their_listener(pki: Any) -> None:
    ch = tls_pair()
    assert sslsock.SocketClose("srv")
    assert sslsock.SocketWrite(ch, b"still here")
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b"still here"
    assert sslsock.SocketWrite("cli", b"me too")
    assert sslsock.SocketRead(ch, False, WAIT_MS) == b"me too"


def test_closing_a_listener_drops_clients_not_yet_accepted(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketConnectSSL("cli", port_of("srv"), LOOPBACK, timeout=WAIT_MS)
    assert sslsock.SocketWaitForConnection("srv", WAIT_MS)
    assert sslsock.SocketClose("srv")
    assert sslsock.SocketRead("cli", False, WAIT_MS) == b""
    assert code() in (sslsock.ErrorCode.PEER_CLOSED, sslsock.ErrorCode.RESET)


def test_empty_address_is_this_machine(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost")
    assert sslsock.SocketConnectSSL("cli", port_of("srv")), sslsock.ErrorInfo()
    ch = accept("srv")
    assert sslsock.SocketWrite("cli", b"local") and sslsock.SocketRead(ch, False, WAIT_MS) == b"local"


def test_a_closed_name_can_be_used_again(pki: Any) -> None:
    tls_pair()
    assert sslsock.SocketClose("cli")
    assert sslsock.SocketConnectSSL("cli", port_of("srv"), LOOPBACK, timeout=WAIT_MS)
    ch = accept("srv")
    assert sslsock.SocketWrite("cli", b"again") and sslsock.SocketRead(ch, False, WAIT_MS) == b"again"


def test_connect_timeout_when_the_server_never_answers() -> None:
    silent = socket.create_server((LOOPBACK, 0))  # accepts TCP, never speaks TLS
    try:
        t0 = time.monotonic()
        assert sslsock.SocketConnectSSL("cli", silent.getsockname()[1], LOOPBACK,
                                        timeout=300) is False
        assert 0.25 <= time.monotonic() - t0 <= 3
        assert code() == sslsock.ErrorCode.TIMEOUT
        assert not sslsock.SocketExist("cli")
    finally:
        silent.close()


def test_listen_on_a_given_address(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", address=LOOPBACK), sslsock.ErrorInfo()
    ch = tls_pair("srv", "cli")
    assert sslsock.SocketWrite("cli", b"lo") and sslsock.SocketRead(ch, False, WAIT_MS) == b"lo"
    assert sslsock.SocketCreateSSL("bad", 0, "localhost", address="no-such-host.invalid") is False
    assert code() == sslsock.ErrorCode.ADDRESS
    assert "no-such-host.invalid" in message()
