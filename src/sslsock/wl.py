"""The named face: WLanguage's socket functions under their English names, their French
names, and snake_case.

Functions return True/False (or ``""`` / ``b""`` for those that return data) and do not
raise for network, TLS or certificate trouble: the reason is kept per thread and read with
:func:`ErrorInfo` / :func:`ErrorOccurred`; a successful call clears it.  Programming errors
raise: an unknown socket name (:class:`SocketNameError`), a wrong argument type
(``TypeError``), an undefined constant (:class:`UnknownConstantError`).

Durations are integers in milliseconds (a ``datetime.timedelta`` works too).
"""
from __future__ import annotations

import datetime as _dt
import enum
import functools
import socket as _socket
import threading
from typing import Any, Callable, Optional, TypeVar, Union

from . import _errors
from ._errors import Error, ErrorCode, ProgrammingError
from ._objects import Connection, Listener, Mode, connect
from ._options import DEFAULT, SSLOption
from ._registry import REGISTRY, Entry

F = TypeVar("F", bound=Callable[..., Any])

# ---- constants ----------------------------------------------------------------------------

ProtocolSSL2 = SSLOption.ProtocolSSL2
ProtocolSSL3 = SSLOption.ProtocolSSL3
ProtocolTLS1 = SSLOption.ProtocolTLS1
ProtocolTLS1_1 = SSLOption.ProtocolTLS1_1
ProtocolTLS1_2 = SSLOption.ProtocolTLS1_2
ProtocolTLS1_3 = SSLOption.ProtocolTLS1_3
CertificateHash = SSLOption.CertificateHash
CertificateName = SSLOption.CertificateName
SSLNoVerify = SSLOption.SSLNoVerify
SSLClientCertificate = SSLOption.SSLClientCertificate
SSLClientSystemCA = SSLOption.SSLClientSystemCA

SocketEndTag = Mode.SocketEndTag
SocketSizeAtBeginning = Mode.SocketSizeAtBeginning
SocketEndTagBuffer = Mode.SocketEndTagBuffer
SocketNoEndTag = Mode.SocketNoEndTag


class ClientInfo(enum.IntEnum):
    """What SocketClientInfo returns."""

    SocketAddress = 1
    SocketPort = 2
    SocketCertificate = 3  # [extension]
    SocketProtocol = 4     # [extension]
    SocketCipher = 5       # [extension]
    SocketResumed = 6      # [extension] "1" when the TLS handshake resumed a session, else "0"


SocketAddress = ClientInfo.SocketAddress
SocketPort = ClientInfo.SocketPort
SocketCertificate = ClientInfo.SocketCertificate
SocketProtocol = ClientInfo.SocketProtocol
SocketCipher = ClientInfo.SocketCipher
SocketResumed = ClientInfo.SocketResumed


class ErrInfo(enum.IntEnum):
    """What ErrorInfo returns."""

    errMessage = 1
    errCode = 2
    errSystemCode = 3
    errSystemMessage = 4
    errFullDetails = 5


errMessage = ErrInfo.errMessage
errCode = ErrInfo.errCode
errSystemCode = ErrInfo.errSystemCode
errSystemMessage = ErrInfo.errSystemMessage
errFullDetails = ErrInfo.errFullDetails


class SocketOption(enum.IntFlag):
    """Values of ``Socket.Option``."""

    SocketReuseAddress = 0  # the default
    SocketNoReuseAddress = 1
    SocketReusePort = 2  # [extension] share a port among processes on purpose (SO_REUSEPORT)


SocketNoReuseAddress = SocketOption.SocketNoReuseAddress
SocketReusePort = SocketOption.SocketReusePort


class _SocketSettings:
    """``Socket.Option``: process-wide, for sockets created afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._option = SocketOption(0)

    @property
    def Option(self) -> SocketOption:
        with self._lock:
            return self._option

    @Option.setter
    def Option(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Socket.Option takes SocketNoReuseAddress / SocketReusePort, "
                            f"not {type(value).__name__}")
        if value & ~int(SocketOption.SocketNoReuseAddress | SocketOption.SocketReusePort):
            raise _errors.UnknownConstantError(
                f"Socket.Option = {value:#x}: only SocketNoReuseAddress and SocketReusePort exist")
        with self._lock:
            self._option = SocketOption(value)


Socket = _SocketSettings()

#: Ports an application may create sockets on (the reference's rule); 0 asks the system.
PORT_MIN, PORT_MAX = 5000, 65000

# ---- per-thread error state -------------------------------------------------------------

_state = threading.local()


def _set_error(e: Optional[Error]) -> None:
    _state.error = e


def _last() -> Optional[Error]:
    return getattr(_state, "error", None)


def ErrorOccurred() -> bool:
    """Whether the calling thread's last sslsock call failed."""
    return _last() is not None


def ErrorInfo(what: int = ErrInfo.errFullDetails) -> Union[str, int]:
    """The calling thread's last error: message, code, system code/message, or all."""
    try:
        what = ErrInfo(what)
    except ValueError:
        raise _errors.UnknownConstantError(
            f"ErrorInfo({what!r}): use errMessage, errCode, errSystemCode, errSystemMessage "
            "or errFullDetails") from None
    e = _last()
    if what is ErrInfo.errCode:
        return int(e.code) if e else 0
    if what is ErrInfo.errSystemCode:
        return e.system_code if e else 0
    if e is None:
        return ""
    if what is ErrInfo.errMessage:
        return e.message
    if what is ErrInfo.errSystemMessage:
        return e.system_message
    lines = [e.message, f"Error code: {int(e.code)} ({e.code.name})"]
    if e.system_message or e.system_code:
        lines.append(f"System error: {e.system_code} {e.system_message}".rstrip())
    return "\n".join(lines)


def _named(failure: Any) -> Callable[[F], F]:
    """Make an object-face call WLanguage-like: failure value + ErrorInfo instead of an
    exception, except for programming errors."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except ProgrammingError:
                raise
            except Error as e:
                _set_error(e)
                return failure
            _set_error(None)
            return result

        return wrapper  # type: ignore[return-value]

    return deco


# ---- helpers ----------------------------------------------------------------------------


def _seconds(ms: Any, what: str) -> Optional[float]:
    """WLanguage milliseconds (or a timedelta, or None) -> seconds."""
    if ms is None:
        return None
    if isinstance(ms, _dt.timedelta):
        return ms.total_seconds()
    if isinstance(ms, bool) or not isinstance(ms, int):
        raise TypeError(f"{what} is in milliseconds (an int) or a timedelta, "
                        f"not {type(ms).__name__}")
    if ms < 0:
        raise _errors.ArgumentError(f"{what} must be >= 0 ms, got {ms}")
    return ms / 1000.0


def _server_port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if port != 0 and not PORT_MIN <= port <= PORT_MAX:
        raise _errors.ArgumentError(
            f"port {port} is outside {PORT_MIN}..{PORT_MAX}, the range WLanguage allows for "
            "the sockets an application creates (0 lets the system choose a free port)",
            code=ErrorCode.PORT)
    return port


def _mode(mode: Any) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise _errors.UnknownConstantError(
            f"transmission mode {mode!r}: use SocketSizeAtBeginning, SocketEndTag, "
            "SocketEndTagBuffer or SocketNoEndTag") from None


def _reuse() -> tuple[bool, bool]:
    """(reuse_address, reuse_port) from Socket.Option."""
    opt = Socket.Option
    return (not opt & SocketOption.SocketNoReuseAddress,
            bool(opt & SocketOption.SocketReusePort))


def _conn_of(entry: Entry, name: str, wait_s: Optional[float]) -> Connection:
    """The connection a read/write on `name` talks to; for a listener (the simplified
    server) the client accepted at the first use, waiting at most wait_s for one."""
    if isinstance(entry.obj, Connection):
        return entry.obj
    with entry.simple_lock:
        info = entry.simple.info() if entry.simple is not None else None
        if entry.simple is not None and info is not None and (
                info.state != "open" or info.peer_closed):
            entry.simple.close()  # that client is gone: the next one takes its place
            entry.simple = None
        if entry.simple is None:
            entry.simple = entry.obj.accept(wait_s)
        return entry.simple


# ---- the functions ----------------------------------------------------------------------


@_named(False)
def SocketCreateSSL(name: str, port: int, cert_id: str, options: int = DEFAULT,
                    address: str = "") -> bool:
    """Create a TLS server socket listening on `port` with the store certificate `cert_id`."""
    REGISTRY.check_name(name)
    REGISTRY.reserve(name)
    if not isinstance(cert_id, str):
        raise TypeError(f"the certificate identifier must be a str, not {type(cert_id).__name__}")
    reuse_address, reuse_port = _reuse()
    listener = Listener(_server_port(port), cert_id, options=options, host=address or "",
                        reuse_address=reuse_address, reuse_port=reuse_port)
    _register(name, Entry(listener, "listener"))
    return True


@_named(False)
def SocketCreate(name: str, port: int, address: str = "") -> bool:
    """Create a plain TCP server socket."""
    REGISTRY.check_name(name)
    REGISTRY.reserve(name)
    reuse_address, reuse_port = _reuse()
    listener = Listener(_server_port(port), tls=False, host=address or "",
                        reuse_address=reuse_address, reuse_port=reuse_port)
    _register(name, Entry(listener, "listener"))
    return True


def _register(name: str, entry: Entry) -> None:
    try:
        REGISTRY.add(name, entry)
    except Error:
        entry.obj.close()  # lost a race for the name: nothing leaks
        raise


@_named(False)
def SocketConnectSSL(name: str, port: int, address: str = "", options: int = DEFAULT,
                     timeout: Any = None, client_cert: str = "") -> bool:
    """Connect to a TLS server; the server's certificate is verified (SSLNoVerify: not)."""
    REGISTRY.check_name(name)
    REGISTRY.reserve(name)
    t = _seconds(timeout, "timeout")
    conn = connect(address or "", port, options=options,
                   timeout=30.0 if t is None else t, client_certificate=client_cert or None)
    _register(name, Entry(conn, "client"))
    return True


@_named(False)
def SocketConnect(name: str, port: int, address: str = "", timeout: Any = None) -> bool:
    """Connect to a plain TCP server."""
    REGISTRY.check_name(name)
    REGISTRY.reserve(name)
    t = _seconds(timeout, "timeout")
    conn = connect(address or "", port, tls=False, timeout=30.0 if t is None else t)
    _register(name, Entry(conn, "client"))
    return True


@_named(False)
def SocketWaitForConnection(name: str, timeout: Any = None) -> bool:
    """True once a client (handshake done) is waiting on the listener `name`."""
    entry = REGISTRY.get(name)
    if not isinstance(entry.obj, Listener):
        raise _errors.ArgumentError(f'"{name}" is not a server socket (SocketCreateSSL)')
    if not entry.obj.wait(_seconds(timeout, "timeout")):
        raise _errors.SocketTimeout(f'no client connected to "{name}" within the time-out')
    return True


@_named("")
def SocketAccept(name: str) -> str:
    """Take the waiting client: returns the name of its new channel socket."""
    entry = REGISTRY.get(name)
    if not isinstance(entry.obj, Listener):
        raise _errors.ArgumentError(f'"{name}" is not a server socket (SocketCreateSSL)')
    try:
        conn = entry.obj.accept(0)
    except _errors.SocketTimeout:
        raise _errors.NoClientWaiting(
            f'no client is waiting on "{name}": call SocketWaitForConnection first') from None
    return REGISTRY.add_channel(name, entry, conn)


@_named(False)
def SocketDeny(name: str) -> bool:
    """Refuse (close) the waiting client."""
    entry = REGISTRY.get(name)
    if not isinstance(entry.obj, Listener):
        raise _errors.ArgumentError(f'"{name}" is not a server socket (SocketCreateSSL)')
    try:
        conn = entry.obj.accept(0)
    except _errors.SocketTimeout:
        raise _errors.NoClientWaiting(f'no client is waiting on "{name}"') from None
    conn.close()
    return True


@_named(b"")
def SocketRead(name: str, wait: bool = True, timeout: Any = 1000, max_bytes: int = 4096) -> bytes:
    """The next message. wait=True waits without limit; wait=False at most `timeout` ms.
    b"" on time-out or when the peer closed: ErrorInfo tells which."""
    entry = REGISTRY.get(name)
    if not isinstance(wait, bool):
        raise TypeError(f"wait must be True or False, not {type(wait).__name__}")
    limit = None if wait else _seconds(timeout, "timeout")
    conn = _conn_of(entry, name, limit)
    return conn.read(limit, max_bytes)


@_named(False)
def SocketWrite(name: str, message: Union[bytes, bytearray, memoryview, str]) -> bool:
    """Send `message` (str as UTF-8), framed by the socket's transmission mode."""
    entry = REGISTRY.get(name)
    if not isinstance(message, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"message must be bytes or str, not {type(message).__name__}")
    if isinstance(entry.obj, Listener):
        with entry.simple_lock:
            conn = entry.simple
        if conn is None:
            raise _errors.NoClientWaiting(
                f'"{name}" has no client yet: in a simplified server, SocketRead first')
    else:
        conn = entry.obj
    conn.write(message)
    return True


@_named(False)
def SocketClose(name: str) -> bool:
    """Close and forget the socket (listener, channel or client); TLS sends close_notify."""
    entry = REGISTRY.pop(name)
    if entry.simple is not None:
        entry.simple.close()
    entry.obj.close()
    return True


def SocketExist(name: str) -> bool:
    """Whether `name` is registered (True until SocketClose, even after the peer left)."""
    return REGISTRY.exists(name)


@_named(False)
def SocketChangeTransmissionMode(name: str, mode: int,
                                 end_tag: Union[bytes, str] = b"<EOF>") -> bool:
    """Set the framing of `name` (a listener's channels inherit it)."""
    entry = REGISTRY.get(name)
    m = _mode(mode)
    tag = end_tag.encode("utf-8") if isinstance(end_tag, str) else end_tag
    if not isinstance(tag, (bytes, bytearray)):
        raise TypeError(f"end_tag must be bytes or str, not {type(end_tag).__name__}")
    if isinstance(entry.obj, Listener):
        if not 1 <= len(tag) <= 64:
            raise _errors.ArgumentError(f"the end tag must be 1 to 64 bytes long, got {len(tag)}")
        entry.obj._conn_args.update(mode=m, end_tag=bytes(tag))
        if entry.simple is not None:
            entry.simple.set_mode(m, tag)
    else:
        entry.obj.set_mode(m, tag)
    return True


def _certificate_summary(conn: Connection) -> str:
    from cryptography.hazmat.primitives import hashes

    from ._certstore import format_thumbprint

    cert = conn.peer_certificate()
    if cert is None:
        return ""
    sha1 = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - certmgr's thumbprint
    return (f"subject={cert.subject.rfc4514_string()}; issuer={cert.issuer.rfc4514_string()}; "
            f"thumbprint={format_thumbprint(sha1)}; "
            f"not_after={cert.not_valid_after_utc.strftime('%Y-%m-%d %H:%M:%S')} UTC")


@_named("")
def SocketClientInfo(name: str, what: int = ClientInfo.SocketAddress) -> str:
    """Peer address or port (as strings); [extension] certificate, protocol, cipher."""
    entry = REGISTRY.get(name)
    try:
        what = ClientInfo(what)
    except ValueError:
        raise _errors.UnknownConstantError(
            f"SocketClientInfo({name!r}, {what!r}): use SocketAddress, SocketPort, "
            "SocketCertificate, SocketProtocol, SocketCipher or SocketResumed") from None
    conn: Optional[Connection]
    if isinstance(entry.obj, Listener):
        conn = entry.simple
        if conn is None:
            if what is ClientInfo.SocketProtocol:
                return ",".join(entry.obj.protocols)  # the listener's effective set
            if what is ClientInfo.SocketPort:
                return str(entry.obj.port)
            raise _errors.NoClientWaiting(f'"{name}" is a listener with no client')
    else:
        conn = entry.obj
    if what is ClientInfo.SocketCertificate:
        return _certificate_summary(conn)
    if what is ClientInfo.SocketResumed:
        return "1" if conn.tls and conn.resumed else "0"
    info = conn.info()
    return {
        ClientInfo.SocketAddress: info.peer_address,
        ClientInfo.SocketPort: str(info.peer_port),
        ClientInfo.SocketProtocol: info.protocol,
        ClientInfo.SocketCipher: info.cipher,
    }[what]


@_named("")
def NetIPAddress(host: str = "") -> str:
    """IP address of `host`, or of this machine (its first non-loopback IPv4 if any)."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    try:
        if host:
            infos = _socket.getaddrinfo(host, None, type=_socket.SOCK_STREAM)
            infos.sort(key=lambda i: i[0] != _socket.AF_INET)
            return str(infos[0][4][0])
        addrs = [str(i[4][0]) for i in _socket.getaddrinfo(_socket.gethostname(), None,
                                                            _socket.AF_INET)]
    except OSError as e:
        raise _errors.AddressError(f'cannot resolve "{host or _socket.gethostname()}"',
                                   system_code=e.errno or 0, system_message=str(e)) from None
    real = [a for a in addrs if not a.startswith("127.")]
    return (real or addrs or ["127.0.0.1"])[0]


# ---- French and snake_case names --------------------------------------------------------

FRENCH = {
    "SocketCréeSSL": SocketCreateSSL,
    "SocketCrée": SocketCreate,
    "SocketConnecteSSL": SocketConnectSSL,
    "SocketConnecte": SocketConnect,
    "SocketAttendConnexion": SocketWaitForConnection,
    "SocketAccepte": SocketAccept,
    "SocketRefuse": SocketDeny,
    "SocketLit": SocketRead,
    "SocketEcrit": SocketWrite,
    "SocketFerme": SocketClose,
    "SocketExiste": SocketExist,
    "SocketChangeModeTransmission": SocketChangeTransmissionMode,
    "NetAdresseIP": NetIPAddress,
    "ErreurInfo": ErrorInfo,
    "ErreurDétectée": ErrorOccurred,
    # constants
    "ProtocoleSSL2": ProtocolSSL2,
    "ProtocoleSSL3": ProtocolSSL3,
    "ProtocoleTLS1": ProtocolTLS1,
    "ProtocoleTLS1_1": ProtocolTLS1_1,
    "ProtocoleTLS1_2": ProtocolTLS1_2,
    "ProtocoleTLS1_3": ProtocolTLS1_3,
    "HashCertificat": CertificateHash,
    "NomCertificat": CertificateName,
    "SocketMarqueurFin": SocketEndTag,
    "SocketTailleAuDébut": SocketSizeAtBeginning,
    "SocketMarqueurFinBuffer": SocketEndTagBuffer,
    "SocketSansMarqueurFin": SocketNoEndTag,
    "SocketAdresse": SocketAddress,
    "SocketCertificat": SocketCertificate,
    "SocketProtocole": SocketProtocol,
    "SocketSansRéutilisationAdresse": SocketNoReuseAddress,
}

SNAKE = {
    "socket_create_ssl": SocketCreateSSL,
    "socket_create": SocketCreate,
    "socket_connect_ssl": SocketConnectSSL,
    "socket_connect": SocketConnect,
    "socket_wait_for_connection": SocketWaitForConnection,
    "socket_accept": SocketAccept,
    "socket_deny": SocketDeny,
    "socket_read": SocketRead,
    "socket_write": SocketWrite,
    "socket_close": SocketClose,
    "socket_exist": SocketExist,
    "socket_change_transmission_mode": SocketChangeTransmissionMode,
    "socket_client_info": SocketClientInfo,
    "net_ip_address": NetIPAddress,
    "error_info": ErrorInfo,
    "error_occurred": ErrorOccurred,
}

globals().update(FRENCH)
globals().update(SNAKE)

ENGLISH = [
    "SocketCreateSSL", "SocketCreate", "SocketConnectSSL", "SocketConnect",
    "SocketWaitForConnection", "SocketAccept", "SocketDeny", "SocketRead", "SocketWrite",
    "SocketClose", "SocketExist", "SocketChangeTransmissionMode", "SocketClientInfo",
    "NetIPAddress", "ErrorInfo", "ErrorOccurred", "Socket",
    "ProtocolSSL2", "ProtocolSSL3", "ProtocolTLS1", "ProtocolTLS1_1", "ProtocolTLS1_2",
    "ProtocolTLS1_3", "CertificateHash", "CertificateName", "SSLNoVerify",
    "SSLClientCertificate", "SocketEndTag", "SocketSizeAtBeginning", "SocketEndTagBuffer",
    "SocketNoEndTag", "SocketAddress", "SocketPort", "SocketCertificate", "SocketProtocol",
    "SocketCipher", "SocketNoReuseAddress", "SocketReusePort", "errMessage", "errCode",
    "SocketResumed", "SSLClientSystemCA", "errSystemCode", "errSystemMessage", "errFullDetails",
]
__all__ = ENGLISH + list(FRENCH) + list(SNAKE)
