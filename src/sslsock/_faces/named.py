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

import collections
import datetime as _dt
import enum
import functools
import socket as _socket
import threading
import weakref
from typing import Any, Callable, Optional, TypeVar, Union

from sslsock._certs.store import CertStore
from sslsock._core import engine as _engine
from sslsock._core import errors as _errors
from sslsock._core.connection import (
    Connection,
    Mode,
    _fast_error,
    _fast_read,
    _fast_write,
    _on_main_thread,
    checked_end_tag,
)
from sslsock._core.errors import Error, ErrorCode, ProgrammingError
from sslsock._faces.objects import Listener, connect, unbracket
from sslsock._faces.objects import _proxy_allow as _proxy_allow_entries
from sslsock._faces.registry import REGISTRY, Entry
from sslsock._tls.options import ALL_BITS, DEFAULT, SSLOption

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

# WLanguage's character constants that socket code passes as end tags and line ends.  They
# are bytes, like the default end tag (b"<EOF>") and everything SocketRead returns, so a
# comparison with what was read is bytes against bytes (docs/porting.md).
CR = b"\r\n"  # WLanguage CR (French RC): carriage return + line feed, not a lone CR
TAB = b"\t"    # WLanguage TAB: the tab character


class ClientInfo(enum.IntEnum):
    """What SocketClientInfo returns."""

    SocketAddress = 1
    SocketPort = 2
    SocketCertificate = 3  # [extension]
    SocketProtocol = 4     # [extension]
    SocketCipher = 5       # [extension]
    SocketResumed = 6      # [extension] "1" when the TLS handshake resumed a session, else "0"
    SocketProxyAddress = 7  # [extension] the proxy that sent the PROXY header ("" if none)
    SocketProxyPort = 8     # [extension] its port ("" if none)
    SocketServerName = 9    # [extension] the server name the client asked for (SNI; "" if none)
    SocketALPN = 10         # [extension] the application protocol negotiated ("" if none)
    SocketGroup = 11        # [extension] the key-exchange group ("X25519MLKEM768", "x25519")


SocketAddress = ClientInfo.SocketAddress
SocketPort = ClientInfo.SocketPort
SocketCertificate = ClientInfo.SocketCertificate
SocketProtocol = ClientInfo.SocketProtocol
SocketCipher = ClientInfo.SocketCipher
SocketResumed = ClientInfo.SocketResumed
SocketProxyAddress = ClientInfo.SocketProxyAddress
SocketProxyPort = ClientInfo.SocketProxyPort
SocketServerName = ClientInfo.SocketServerName
SocketALPN = ClientInfo.SocketALPN
SocketGroup = ClientInfo.SocketGroup


class ErrInfo(enum.IntEnum):
    """What ErrorInfo returns.  errMessage and errFullDetails have the values WLanguage's
    compiled code gives them (1 and 19), so a value copied from a WINDEV program works."""

    errMessage = 1
    errCode = 2
    errSystemCode = 3
    errSystemMessage = 4
    errFullDetails = 19


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
    #: [extension] servers created afterwards expect a PROXY v1/v2 header (from a load
    #: balancer) before the handshake; SocketClientInfo reports the client it names
    SocketProxyProtocol = 4
    #: [extension] TLS servers created afterwards also serve every other certificate of the
    #: store that has a key, to the clients asking for a name it carries (SNI)
    SocketServeByName = 8


SocketNoReuseAddress = SocketOption.SocketNoReuseAddress
SocketReusePort = SocketOption.SocketReusePort
SocketProxyProtocol = SocketOption.SocketProxyProtocol
SocketServeByName = SocketOption.SocketServeByName
_KNOWN_OPTIONS = int(SocketNoReuseAddress | SocketReusePort | SocketProxyProtocol
                     | SocketServeByName)


class _SocketSettings:
    """``Socket.Option`` and **[extension]** ``Socket.ProxyAllow``: process-wide, for
    sockets created afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._option = SocketOption(0)
        self._proxy_allow: tuple[str, ...] = ()

    @property
    def ProxyAllow(self) -> tuple[str, ...]:
        """[extension] Who may send the PROXY header to servers created with
        SocketProxyProtocol: the load balancers' addresses or networks (``"10.0.0.5"``,
        ``"10.0.0.0/8"``), or ``"any"``, only when nothing but the balancer can reach the
        port.  Required with SocketProxyProtocol."""
        with self._lock:
            return self._proxy_allow

    @ProxyAllow.setter
    def ProxyAllow(self, value: Any) -> None:
        items = (value,) if isinstance(value, str) else tuple(value or ())
        _proxy_allow_entries(items)  # a bad address is refused here, with what is wrong
        with self._lock:
            self._proxy_allow = items

    @property
    def Option(self) -> SocketOption:
        with self._lock:
            return self._option

    @Option.setter
    def Option(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Socket.Option takes SocketNoReuseAddress / SocketReusePort / "
                            f"SocketProxyProtocol, not {type(value).__name__}")
        if value & ~_KNOWN_OPTIONS:
            raise _errors.UnknownConstantError(
                f"Socket.Option = {value:#x}: only SocketNoReuseAddress, SocketReusePort and "
                "SocketProxyProtocol exist")
        with self._lock:
            self._option = SocketOption(value)


Socket = _SocketSettings()

_get_ident = threading.get_ident
_lookup = REGISTRY.fast_lookup  # (the dict is never replaced)

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
            f"ErrorInfo({what!r}): use errMessage (1), errCode (2), errSystemCode (3), "
            "errSystemMessage (4) or errFullDetails (19, French errComplet)") from None
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


def _ssl_options(options: Any) -> int:
    """The SSL-options mask, checked as WLanguage checks constants: a bit that is none of
    the constants raises (contradictions such as Hash + Name stay an ErrorInfo)."""
    if isinstance(options, bool) or not isinstance(options, int):
        raise TypeError(f"SSL options are an int mask of the Protocol*/Certificate* "
                        f"constants, not {type(options).__name__}")
    unknown = int(options) & ~int(ALL_BITS) if options >= 0 else int(options)
    if unknown:
        raise _errors.UnknownConstantError(
            f"SSL options {int(options):#x}: {unknown:#x} is no SSL-option constant; combine "
            "only ProtocolSSL2..ProtocolTLS1_3, CertificateHash or CertificateName (and the "
            "SSLNoVerify / SSLClientCertificate extensions) with + or |")
    return int(options)


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


def _proxy() -> bool:
    return bool(Socket.Option & SocketOption.SocketProxyProtocol)


def _proxy_allow() -> tuple[str, ...]:
    """Socket.ProxyAllow for a server created now (nothing without SocketProxyProtocol)."""
    return Socket.ProxyAllow if _proxy() else ()


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
            entry.simple = _take(entry, wait_s)
        return entry.simple


# ---- the functions ----------------------------------------------------------------------


@_named(False)
def SocketCreateSSL(name: str, port: int, cert_id: str, options: int = DEFAULT,
                    address: str = "") -> bool:
    """Create a TLS server socket listening on `port` with the store certificate `cert_id`."""
    REGISTRY.check_name(name)
    options = _ssl_options(options)
    REGISTRY.reserve(name)
    if not isinstance(cert_id, str):
        raise TypeError(f"the certificate identifier must be a str, not {type(cert_id).__name__}")
    reuse_address, reuse_port = _reuse()
    by_name = None
    if Socket.Option & SocketOption.SocketServeByName:
        by_name = CertStore().names_map(exclude=cert_id)
    listener = Listener(_server_port(port), cert_id, options=options, host=address or "",
                        reuse_address=reuse_address, reuse_port=reuse_port,
                        proxy_protocol=_proxy(), proxy_allow=_proxy_allow(),
                        certificates=by_name)
    _register(name, Entry(listener, "listener"))
    return True


@_named(False)
def SocketCreate(name: str, port: int, address: str = "") -> bool:
    """Create a plain TCP server socket."""
    REGISTRY.check_name(name)
    REGISTRY.reserve(name)
    reuse_address, reuse_port = _reuse()
    listener = Listener(_server_port(port), tls=False, host=address or "",
                        reuse_address=reuse_address, reuse_port=reuse_port,
                        proxy_protocol=_proxy(), proxy_allow=_proxy_allow())
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
                     timeout: Any = None, client_cert: str = "", *, ca: str = "",
                     system_ca: bool = False) -> bool:
    """Connect to a TLS server; the server's certificate is verified (SSLNoVerify: not).
    **[extension]** ``ca``: a store entry (name, thumbprint) or PEM file, the CA this
    connection trusts alone (``system_ca=True``: and the system's authorities)."""
    REGISTRY.check_name(name)
    options = _ssl_options(options)
    REGISTRY.reserve(name)
    t = _seconds(timeout, "timeout")
    conn = connect(address or "", port, options=options,
                   timeout=30.0 if t is None else t, client_certificate=client_cert or None,
                   ca=ca or None, system_ca=system_ca)
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
    if entry.waiting:
        return True
    # The client is taken off the listener's queue here, in the same C call that waited
    # for it: SocketAccept then names it without another call into C.
    try:
        conn = entry.obj.accept(_seconds(timeout, "timeout"))
    except _errors.SocketTimeout:
        raise _errors.SocketTimeout(
            f'no client connected to "{name}" within the time-out') from None
    if entry.waiting is None:
        entry.waiting = collections.deque()
    entry.waiting.append(conn)
    return True


def _take(entry: Entry, wait_s: Optional[float]) -> Connection:
    """The next client of a listener: one SocketWaitForConnection already took, or the
    listener's next (waiting at most wait_s; 0: not at all)."""
    if entry.waiting:
        return entry.waiting.popleft()  # type: ignore[no-any-return]
    return entry.obj.accept(wait_s)  # type: ignore[union-attr]


@_named("")
def SocketAccept(name: str) -> str:
    """Take the waiting client: returns the name of its new channel socket."""
    entry = REGISTRY.get(name)
    if not isinstance(entry.obj, Listener):
        raise _errors.ArgumentError(f'"{name}" is not a server socket (SocketCreateSSL)')
    try:
        conn = _take(entry, 0)
    except _errors.SocketTimeout:
        raise _errors.NoClientWaiting(
            f'no client is waiting on "{name}": call SocketWaitForConnection first') from None
    return REGISTRY.add_channel(name, entry, conn)


class _Waiting:
    """A listener's SocketWaitForMessage state: its channel engine (which hands a channel
    to one thread at a time, see ``Hub.wait_ready``) and the names of its channels."""

    def __init__(self, name: str, entry: Entry) -> None:
        # (weak: a channel closed with SocketClose goes with its registry entry)
        self.names: weakref.WeakKeyDictionary[Connection, str] = weakref.WeakKeyDictionary()

        def named(conn: Connection) -> None:  # a new client, named as SocketAccept names
            self.names[conn] = REGISTRY.add_channel(name, entry, conn)

        self.hub = _engine.Hub(entry.obj, on_accept=named)


@_named("")
def SocketWaitForMessage(name: str, timeout: Any = None) -> str:
    """[extension] Threads serving many channels: waits until a channel of the listener
    `name` has a message (or has ended) and returns that channel's name; SocketRead on it
    then returns the message at once (b"" with an error once it has ended).  New clients
    are accepted and named on the way, as SocketAccept names them.  On time-out: "" and
    no error.  No timeout: waits without limit.  Several threads may call it on one
    listener (a pool): a channel goes to one thread at a time, the one it was given to last,
    until that thread calls SocketWaitForMessage again.  The channel's SocketRead, with or
    without a time-out, reads through the engine (never its socket)."""
    entry = REGISTRY.get(name)
    st: Optional[_Waiting] = entry.engine
    if st is None:
        if not isinstance(entry.obj, Listener):
            raise _errors.ArgumentError(f'"{name}" is not a server socket (SocketCreateSSL)')
        with entry.simple_lock:
            if entry.engine is None:
                entry.engine = _Waiting(name, entry)
        st = entry.engine
    limit = _seconds(timeout, "timeout")
    conn = st.hub.wait_ready(-1 if limit is None else int(limit * 1000))
    return "" if conn is None else st.names.get(conn, "")  # (a time-out is not an error)


@_named(False)
def SocketDeny(name: str) -> bool:
    """Refuse (close) the waiting client."""
    entry = REGISTRY.get(name)
    if not isinstance(entry.obj, Listener):
        raise _errors.ArgumentError(f'"{name}" is not a server socket (SocketCreateSSL)')
    try:
        conn = _take(entry, 0)
    except _errors.SocketTimeout:
        raise _errors.NoClientWaiting(f'no client is waiting on "{name}"') from None
    conn.close()
    return True


@_named(b"")
def _socket_read(name: str, wait: bool = True, timeout: Any = 1000, max_bytes: int = 4096) -> bytes:
    """The next message. wait=True waits without limit; wait=False at most `timeout` ms.

    b"" on a time-out with no error (as in WLanguage: ErrorOccurred() stays False, so a
    polling loop goes on), b"" with PEER_CLOSED when the peer has closed."""
    entry = REGISTRY.get(name)
    if not isinstance(wait, bool):
        raise TypeError(f"wait must be True or False, not {type(wait).__name__}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
    limit = None if wait else _seconds(timeout, "timeout")
    try:
        return _conn_of(entry, name, limit).read(limit, max_bytes)
    except _errors.SocketTimeout:
        return b""  # nothing lost: a partly received message is kept for the next read


@_named(False)
def _socket_write(name: str, message: Union[bytes, bytearray, memoryview, str]) -> bool:
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


def SocketRead(name: str, wait: bool = True, timeout: Any = 1000, max_bytes: int = 4096) -> bytes:
    """The next message. wait=True waits without limit; wait=False at most `timeout` ms.

    b"" on a time-out with no error (as in WLanguage: ErrorOccurred() stays False, so a
    polling loop goes on), b"" with PEER_CLOSED when the peer has closed."""
    # A channel thread's loop calls this once per message: a channel of its own thread,
    # waiting without limit, makes the one read call of the bridge itself (Connection.read's
    # path without its frame: every microsecond a channel thread holds the GIL is one the
    # other channel threads may wake up to find taken); any other read is Connection.read.
    # Same rules as _socket_read: ProgrammingError raised, other errors into ErrorInfo.
    entry = _lookup(name) if name.__class__ is str else None
    if (wait is True and entry is not None and entry.kind != "listener"
            and max_bytes.__class__ is int):
        conn: Connection = entry.obj  # type: ignore[assignment]  # (kind says so)
        try:
            if conn._hub is None and not conn._inbox and max_bytes > 0 \
                    and not _on_main_thread():
                data = _fast_read(conn._g, -1, max_bytes)
                if not isinstance(data, bytes):
                    _fast_error(data)
            else:
                data = conn.read(None, max_bytes)
        except ProgrammingError:
            raise
        except Error as e:
            _state.error = e
            return b""
        _state.error = None
        return data
    return _socket_read(name, wait, timeout, max_bytes)


def SocketWrite(name: str, message: Union[bytes, bytearray, memoryview, str]) -> bool:
    """Send `message` (str as UTF-8), framed by the socket's transmission mode."""
    entry = _lookup(name) if name.__class__ is str else None
    if message.__class__ is bytes and entry is not None and entry.kind != "listener":
        conn: Connection = entry.obj  # type: ignore[assignment]  # (kind says so)
        try:  # (as SocketRead: the bridge's one write call, without Connection.write's frame)
            rc = _fast_write(conn._g, message, -1, conn._hub is not None)
            if rc is not None:
                _fast_error(rc)
        except ProgrammingError:
            raise
        except Error as e:
            _state.error = e
            return False
        _state.error = None
        return True
    return _socket_write(name, message)


@_named(False)
def SocketClose(name: str) -> bool:
    """Close and forget the socket (listener, channel or client); TLS sends close_notify."""
    entry = REGISTRY.pop(name)
    if entry.simple is not None:
        entry.simple.close()
    for conn in entry.waiting or ():  # taken by SocketWaitForConnection, never accepted
        conn.close()
    entry.obj.close()
    if entry.engine is not None:
        entry.engine.hub.close()
    return True


def SocketExist(name: str) -> bool:
    """Whether `name` is registered (True until SocketClose, even after the peer left).
    Like every call that succeeds, it clears ErrorInfo."""
    found = REGISTRY.exists(name)
    _set_error(None)
    return found


@_named(False)
def SocketChangeTransmissionMode(name: str, mode: int,
                                 end_tag: Union[bytes, str] = b"<EOF>") -> bool:
    """Set the framing of `name` (a listener's channels inherit it)."""
    entry = REGISTRY.get(name)
    m = _mode(mode)
    tag = checked_end_tag(end_tag)
    if isinstance(entry.obj, Listener):
        entry.obj._conn_args.update(mode=m, end_tag=tag)
        if entry.simple is not None:
            entry.simple.set_mode(m, tag)
    else:
        entry.obj.set_mode(m, tag)
    return True


def _certificate_summary(conn: Connection) -> str:
    from cryptography.hazmat.primitives import hashes

    from sslsock._certs.store import format_thumbprint

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
            "SocketCertificate, SocketProtocol, SocketCipher, SocketResumed, "
            "SocketProxyAddress, SocketProxyPort, SocketServerName, SocketALPN or "
            "SocketGroup") from None
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
    if not conn.alive:  # WLanguage's way to tell a channel is still valid
        info = None if conn.closed else conn.info()
        why = ("the connection is broken (ErrorInfo said why when it broke)"
               if info is not None and info.state == "broken" else "the peer has left")
        raise _errors.PeerClosed(
            f'"{name}": the connection is closed: {why}. SocketClose the socket; '
            "SocketExist stays True until then")
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
        ClientInfo.SocketProxyAddress: info.proxy_address,
        ClientInfo.SocketProxyPort: str(info.proxy_port) if info.proxy_address else "",
        ClientInfo.SocketServerName: info.server_name,
        ClientInfo.SocketALPN: info.alpn,
        ClientInfo.SocketGroup: info.group,
    }[what]


@_named("")
def NetIPAddress(host: str = "") -> str:
    """IP address of `host`, or of this machine (its first non-loopback IPv4 if any)."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    host = unbracket(host)
    try:
        if host:
            infos = _socket.getaddrinfo(host, None, type=_socket.SOCK_STREAM)
            infos.sort(key=lambda i: i[0] != _socket.AF_INET)
            return str(infos[0][4][0])
        addrs = [str(i[4][0]) for i in _socket.getaddrinfo(_socket.gethostname(), None,
                                                            _socket.AF_INET)]
    except OSError as e:
        cls = _errors.HostNotFound if isinstance(e, _socket.gaierror) else _errors.AddressError
        raise cls(f'cannot resolve "{host or _socket.gethostname()}"',
                  system_code=e.errno or 0, system_message=e.strerror or str(e)) from None
    real = [a for a in addrs if not a.startswith("127.")]
    return (real or addrs or ["127.0.0.1"])[0]


# ---- French and snake_case names --------------------------------------------------------
# Each alias is its own assignment (not added to the module's dict in a loop), so that type
# checkers and IDEs see it, with the English function's signature.

SocketCréeSSL = SocketCreateSSL
SocketCrée = SocketCreate
SocketConnecteSSL = SocketConnectSSL
SocketConnecte = SocketConnect
SocketAttendConnexion = SocketWaitForConnection
SocketAttendMessage = SocketWaitForMessage
SocketAccepte = SocketAccept
SocketRefuse = SocketDeny
SocketLit = SocketRead
SocketEcrit = SocketWrite
SocketFerme = SocketClose
SocketExiste = SocketExist
SocketChangeModeTransmission = SocketChangeTransmissionMode
NetAdresseIP = NetIPAddress
ErreurInfo = ErrorInfo
ErreurDétectée = ErrorOccurred
ProtocoleSSL2 = ProtocolSSL2
ProtocoleSSL3 = ProtocolSSL3
ProtocoleTLS1 = ProtocolTLS1
ProtocoleTLS1_1 = ProtocolTLS1_1
ProtocoleTLS1_2 = ProtocolTLS1_2
ProtocoleTLS1_3 = ProtocolTLS1_3
HashCertificat = CertificateHash
NomCertificat = CertificateName
SocketMarqueurFin = SocketEndTag
SocketTailleAuDébut = SocketSizeAtBeginning
SocketMarqueurFinBuffer = SocketEndTagBuffer
SocketSansMarqueurFin = SocketNoEndTag
RC = CR
SocketAdresse = SocketAddress
SocketCertificat = SocketCertificate
SocketProtocole = SocketProtocol
SocketSansRéutilisationAdresse = SocketNoReuseAddress
errComplet = errFullDetails

socket_create_ssl = SocketCreateSSL
socket_create = SocketCreate
socket_connect_ssl = SocketConnectSSL
socket_connect = SocketConnect
socket_wait_for_connection = SocketWaitForConnection
socket_wait_for_message = SocketWaitForMessage
socket_accept = SocketAccept
socket_deny = SocketDeny
socket_read = SocketRead
socket_write = SocketWrite
socket_close = SocketClose
socket_exist = SocketExist
socket_change_transmission_mode = SocketChangeTransmissionMode
socket_client_info = SocketClientInfo
net_ip_address = NetIPAddress
error_info = ErrorInfo
error_occurred = ErrorOccurred

# A literal list (extended with literal lists), so that type checkers follow
# `from sslsock._faces.named import *`; tests/test_porting.py checks every name is bound above.
__all__ = [
    "SocketCreateSSL", "SocketCreate", "SocketConnectSSL", "SocketConnect",
    "SocketWaitForConnection", "SocketWaitForMessage", "SocketAccept", "SocketDeny",
    "SocketRead", "SocketWrite", "SocketClose", "SocketExist", "SocketChangeTransmissionMode",
    "SocketClientInfo",
    "NetIPAddress", "ErrorInfo", "ErrorOccurred", "Socket",
    "ProtocolSSL2", "ProtocolSSL3", "ProtocolTLS1", "ProtocolTLS1_1", "ProtocolTLS1_2",
    "ProtocolTLS1_3", "CertificateHash", "CertificateName", "SSLNoVerify",
    "SSLClientCertificate", "SocketEndTag", "SocketSizeAtBeginning", "SocketEndTagBuffer",
    "SocketNoEndTag", "SocketAddress", "SocketPort", "SocketCertificate", "SocketProtocol",
    "SocketCipher", "SocketNoReuseAddress", "SocketReusePort", "errMessage", "errCode",
    "SocketResumed", "SSLClientSystemCA", "errSystemCode", "errSystemMessage", "errFullDetails",
    "SocketProxyProtocol", "SocketProxyAddress", "SocketProxyPort", "CR", "TAB",
    "SocketServeByName", "SocketServerName", "SocketALPN", "SocketGroup",
]
__all__ += [  # French
    "SocketCréeSSL", "SocketCrée", "SocketConnecteSSL", "SocketConnecte",
    "SocketAttendConnexion", "SocketAttendMessage", "SocketAccepte", "SocketRefuse",
    "SocketLit", "SocketEcrit",
    "SocketFerme", "SocketExiste", "SocketChangeModeTransmission", "NetAdresseIP",
    "ErreurInfo", "ErreurDétectée", "ProtocoleSSL2", "ProtocoleSSL3", "ProtocoleTLS1",
    "ProtocoleTLS1_1", "ProtocoleTLS1_2", "ProtocoleTLS1_3", "HashCertificat",
    "NomCertificat", "SocketMarqueurFin", "SocketTailleAuDébut", "SocketMarqueurFinBuffer",
    "SocketSansMarqueurFin", "SocketAdresse", "SocketCertificat", "SocketProtocole",
    "SocketSansRéutilisationAdresse", "errComplet", "RC",
]
__all__ += [  # snake_case
    "socket_create_ssl", "socket_create", "socket_connect_ssl", "socket_connect",
    "socket_wait_for_connection", "socket_wait_for_message", "socket_accept", "socket_deny",
    "socket_read",
    "socket_write", "socket_close", "socket_exist", "socket_change_transmission_mode",
    "socket_client_info", "net_ip_address", "error_info", "error_occurred",
]
