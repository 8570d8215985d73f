"""The object face: :class:`Listener` and :class:`Connection`.

Seconds as floats (``None``: no limit), context managers, exceptions from
:mod:`sslsock._errors`.  Every per-byte and per-handshake step happens in C (the GIL is
released during each call); this module only validates, looks certificates up and keeps
objects alive while a call uses them.
"""
from __future__ import annotations

import datetime as _dt
import enum
import functools
import ipaddress
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, Union

from . import _errors, _tlsconfig, _workers
from ._binding import check, ffi, lib, new_err, raise_err, text
from ._options import DEFAULT, Mask, Recipe, SSLOption, recipe

# The C-API path of a channel thread's reads and writes (src/_native/fastio.c); without it
# (PyPy, or SSLSOCK_NO_FASTIO=1 to compare or to rule it out) the same steps go through cffi.
_fastio: Any = None
if os.environ.get("SSLSOCK_NO_FASTIO", "") in ("", "0"):
    try:
        from . import _fastio
    except ImportError:
        pass

log = logging.getLogger("sslsock")

Seconds = Optional[Union[float, int, _dt.timedelta]]

DEFAULT_MAX_MESSAGE = 64 << 20
#: A blocking call on the main thread waits in slices of this many milliseconds, so that
#: Ctrl-C (KeyboardInterrupt) is seen while it waits; other threads wait in one C call.
_SLICE_MS = 250


class Mode(enum.IntEnum):
    """Transmission modes, with WLanguage's values (the C core's SS_MODE_*, which are the
    same numbers)."""

    SocketEndTag = lib.SS_MODE_END_TAG
    SocketSizeAtBeginning = lib.SS_MODE_SIZE
    SocketEndTagBuffer = lib.SS_MODE_END_TAG_BUFFER
    SocketNoEndTag = lib.SS_MODE_NO_END_TAG


def _ms(timeout: Seconds, what: str = "timeout") -> int:
    """Seconds (float / timedelta / None) -> C milliseconds (-1: no limit)."""
    if timeout is None:
        return -1
    if isinstance(timeout, _dt.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be seconds (a number or a timedelta) or None, "
                        f"not {type(timeout).__name__}")
    if timeout < 0:
        raise _errors.ArgumentError(f"{what} must be >= 0 seconds (None waits without limit), "
                                    f"got {timeout}")
    return min(int(round(timeout * 1000)), 0x7FFFFFFF)


_main_ident = threading.main_thread().ident


def _after_fork() -> None:  # a child's main thread is the thread that forked
    global _main_ident
    _main_ident = threading.get_ident()


os.register_at_fork(after_in_child=_after_fork)


def _on_main_thread() -> bool:
    # get_ident() is one C call; current_thread() would look a Thread object up
    return threading.get_ident() == _main_ident


def _sliced(call: Callable[[int], int], timeout_ms: int) -> int:
    """Run a blocking C call with the time-out cut into slices on the main thread, so
    signals are handled; `call(ms)` returns an SS_* code."""
    if not _on_main_thread() or 0 <= timeout_ms <= _SLICE_MS:
        return call(timeout_ms)
    deadline = None if timeout_ms < 0 else _monotonic_ms() + timeout_ms
    while True:
        left = _SLICE_MS if deadline is None else deadline - _monotonic_ms()
        slice_ms = max(0, min(_SLICE_MS, left))
        rc = call(slice_ms)
        if rc != lib.SS_E_TIMEOUT or (deadline is not None and _monotonic_ms() >= deadline):
            return rc


def _monotonic_ms() -> int:
    import time

    return int(time.monotonic() * 1000)


class _PyGuard:
    """Keeps a C object alive while calls use it, and frees it exactly once (the Python
    version of ``sslsock._fastio.Guard``, for builds without that module).

    close() wakes blocked calls (via the C shutdown function) and frees the object when the
    last call in flight leaves; calls started after close() raise SocketClosed.
    """

    __slots__ = ("ptr", "_lock", "_busy", "_closing", "_shutdown", "_what", "_on_free")

    def __init__(self, ptr: Any, shutdown: Callable[[Any], None], what: str,
                 on_free: Optional[Callable[[], None]] = None) -> None:
        self.ptr = ptr  # an ffi.gc pointer: the finaliser is only a backstop
        self._lock = threading.Lock()
        self._busy = 0
        self._closing = False
        self._shutdown = shutdown
        self._what = what
        self._on_free = on_free  # runs once the object is freed

    def enter(self) -> Any:
        # acquire/release rather than `with`: this runs twice per read and per write
        lock = self._lock
        lock.acquire()
        if self._closing:
            lock.release()
            raise _errors.SocketClosed(f"{self._what} is closed")
        self._busy += 1
        lock.release()
        return self.ptr

    def leave(self) -> None:
        lock = self._lock
        lock.acquire()
        self._busy -= 1
        free = self._closing and self._busy == 0
        lock.release()
        if free:
            self._free()

    @property
    def closed(self) -> bool:
        return self._closing

    def take_on_free(self) -> Optional[Callable[[], None]]:
        """Return the on_free callable (or None) and forget it: the caller runs it now."""
        with self._lock:
            cb, self._on_free = self._on_free, None
        return cb

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            # The shutdown call uses the object too: a call leaving meanwhile must not free
            # it under our feet (found by LeakSanitizer: SSL_free racing SSL_shutdown).
            self._busy += 1
        try:
            self._shutdown(self.ptr)  # wakes calls blocked on it; they leave promptly
        finally:
            self.leave()  # the last one out frees it

    def _free(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            ffi.release(ptr)  # runs the C free function now
            if self._on_free is not None:
                self._on_free()



def _Guard(ptr: Any, shutdown: Callable[[Any], None], what: str,
           on_free: Optional[Callable[[], None]] = None) -> Union[_fastio.Guard, _PyGuard]:
    """The guard of a C object: ``_fastio.Guard`` (in C, its counters need no lock and the
    fast reads and writes take it themselves) or, without that module, :class:`_PyGuard`."""
    if _fastio is not None:
        return _fastio.Guard(ptr, int(ffi.cast("uintptr_t", ptr)), shutdown, what, on_free)
    return _PyGuard(ptr, shutdown, what, on_free)


if _fastio is not None:
    _fastio.setup(int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_read_hold"))),
                  int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_read_done"))),
                  int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_write"))),
                  int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_queue_write"))),
                  _errors.SocketClosed, ffi.release)
    _fast_read = _fastio.read
    _fast_write = _fastio.write


def _fast_error(rc: int) -> NoReturn:
    """Raise the error of a failed fast call (its record is this thread's)."""
    assert _fastio is not None
    raise_err(rc, ffi.cast("ss_err *", _fastio.error_address()))


# ---------------------------------------------------------------------------------------
# TLS contexts: built and shared by sslsock._tlsconfig


def _identity(certificate: Any, by_hash: bool, store: Any, password: Any) -> Any:
    """Resolve a certificate identifier (or an Identity) through the store."""
    from ._certstore import CertStore, Identity

    if isinstance(certificate, Identity):
        return certificate
    if not isinstance(certificate, str):
        raise TypeError("the certificate identifier must be a str (a name, a thumbprint or "
                        f"a file path), not {type(certificate).__name__}")
    st = store if store is not None else CertStore(password=password)
    return st.load_identity(certificate, "hash" if by_hash else "name")


def _wipe_if_identity(certificate: Any) -> None:
    from ._certstore import Identity

    if isinstance(certificate, Identity):
        certificate.wipe()


def _store(store: Any, password: Any = None) -> Any:
    from ._certstore import CertStore

    return store if store is not None else CertStore(password=password)


def _warn_dropped(rec: Recipe, what: str) -> None:
    if rec.dropped:
        log.warning("%s: SSL options ask for %s, which this OpenSSL cannot do; using %s (%s)",
                    what, ", ".join(rec.dropped), ", ".join(rec.effective),
                    "; ".join(rec.dropped.values()))


# ---------------------------------------------------------------------------------------
# Connections


@dataclass(frozen=True)
class ConnectionInfo:
    peer_address: str
    peer_port: int
    local_address: str
    local_port: int
    protocol: str  # "TLSv1.3"; "" for plain TCP
    cipher: str
    state: str  # "open", "broken", "closed"
    mode: Mode
    peer_closed: bool  # the peer ended the stream: reads return PeerClosed
    bytes_in: int
    bytes_out: int
    #: [extension] the proxy that sent a PROXY header (then peer_* is the client it named);
    #: "" and 0 for a connection made directly
    proxy_address: str = ""
    proxy_port: int = 0
    #: the key-exchange group the handshake negotiated ("X25519MLKEM768", "x25519", ...);
    #: "" for plain TCP, or when the linked OpenSSL does not say
    group: str = ""


_STATES = {0: "open", 1: "broken", 2: "closed"}


class _Scratch(threading.local):
    """Per thread: where C calls put their results and error records.  Per thread rather
    than per connection: an idle connection then costs no Python-side buffers."""

    def __init__(self) -> None:
        self.out = ffi.new("const char **")
        self.out_len = ffi.new("size_t *")
        self.err = new_err()


_scratch = _Scratch()


_DEFAULT_CLOSE_MS = 1000  # close_notify: how long close() may wait to send it


@functools.lru_cache(maxsize=64)
def _closer(close_ms: int) -> Callable[[Any], None]:
    """The shutdown function of connections with this close time-out: one function shared
    by them all, not a closure per connection (160 bytes each, 1.6 MB for 10,000 idle
    channels), and not a bound method (a reference cycle: a closed connection would wait
    for the next GC pass instead of going with its last reference)."""
    def close(p: Any) -> None:
        lib.ss_conn_close(p, close_ms)
    return close


class Connection:
    """A TLS (or plain TCP) connection: a client from :func:`connect`, or a channel from
    :meth:`Listener.accept`.

    Reads and writes may run in two threads at once; two reads (or two writes) are
    serialised.  After a fatal error every call raises the same error; after close(),
    :class:`SocketClosed`.
    """

    __slots__ = ("_g", "tls", "_close_ms", "_mode", "_end_tag",
                 "_max_message", "_hub", "_hub_id", "_inbox", "__weakref__")

    def __init__(self, ptr: Any, *, tls: bool, mode: Mode = Mode.SocketSizeAtBeginning,
                 end_tag: bytes = b"<EOF>", max_message: int = DEFAULT_MAX_MESSAGE,
                 close_timeout: float = _DEFAULT_CLOSE_MS / 1000) -> None:
        self._attach(ptr, tls, _ms(close_timeout, "close_timeout"), Mode.SocketSizeAtBeginning,
                     b"<EOF>", DEFAULT_MAX_MESSAGE)
        if mode != Mode.SocketSizeAtBeginning or end_tag != b"<EOF>":
            self.set_mode(mode, end_tag)
        if max_message != DEFAULT_MAX_MESSAGE:
            self.max_message = max_message

    @classmethod
    def _from_engine(cls, ptr: Any, *, tls: bool, mode: Mode, end_tag: bytes,
                     max_message: int) -> Connection:
        """A channel the engine accepted: its mode is already set in C, and nothing needs
        checking (this runs once per client of a one-thread server: no __init__)."""
        conn = cls.__new__(cls)
        conn._attach(ptr, tls, _DEFAULT_CLOSE_MS, mode, end_tag, max_message)
        return conn

    def _attach(self, ptr: Any, tls: bool, close_ms: int, mode: Mode, end_tag: bytes,
                max_message: int) -> None:
        """Every slot, as the C connection already is (no checks, no C calls)."""
        self._close_ms = close_ms
        self._g = _Guard(ffi.gc(ptr, lib.ss_conn_free), _closer(close_ms), "the connection")
        self.tls = tls
        self._hub: Any = None  # the channel engine serving it (sslsock._engine.Hub)
        self._hub_id = 0
        self._inbox: Any = None  # messages the engine read before a SocketRead asked
        self._mode, self._end_tag, self._max_message = mode, end_tag, max_message

    @classmethod
    def adopt(cls, sock: Any, **kwargs: Any) -> Connection:
        """Wrap a connected stream socket (plain TCP, or one end of ``socket.socketpair()``)
        as a plain connection: the framing of the transmission modes over any stream.  The
        connection takes the descriptor over (``sock`` is detached)."""
        out = ffi.new("ss_conn **")
        err = new_err()
        fd = sock.detach()
        rc = lib.ss_conn_adopt(fd, out, err)
        if rc != 0:
            import os

            os.close(fd)
            raise_err(rc, err)
        return cls(out[0], tls=False, **kwargs)

    # -- framing ------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def end_tag(self) -> bytes:
        return self._end_tag

    def set_mode(self, mode: Union[Mode, int], end_tag: Union[bytes, str, None] = None) -> None:
        """Change the transmission mode (both ends must agree)."""
        try:
            mode = Mode(mode)
        except ValueError:
            raise _errors.ArgumentError(
                f"unknown transmission mode {mode!r}: use SocketSizeAtBeginning, "
                "SocketEndTag, SocketEndTagBuffer or SocketNoEndTag") from None
        tag = self._end_tag if end_tag is None else _as_bytes(end_tag, "end_tag")
        if not 1 <= len(tag) <= 64:
            raise _errors.ArgumentError(f"the end tag must be 1 to 64 bytes long, got {len(tag)}")
        ptr = self._g.enter()
        try:
            err = _scratch.err
            check(lib.ss_conn_set_mode(ptr, int(mode), tag, len(tag), err), err)
        finally:
            self._g.leave()
        self._mode, self._end_tag = mode, tag

    @property
    def max_message(self) -> int:
        """Largest message accepted (size header or end-tag search), in bytes."""
        return self._max_message

    @max_message.setter
    def max_message(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"max_message is a number of bytes (an int), not "
                            f"{type(value).__name__}")
        if not 1 <= value <= lib.SS_MAX_MESSAGE_LIMIT:
            raise _errors.ArgumentError(
                f"max_message must be 1 to {lib.SS_MAX_MESSAGE_LIMIT} bytes (the size "
                f"arithmetic's bound; memory runs out long before), got {value!r}")
        ptr = self._g.enter()
        try:
            lib.ss_conn_set_max_message(ptr, value)
        finally:
            self._g.leave()
        self._max_message = value

    # -- I/O ----------------------------------------------------------------------------

    def read(self, timeout: Seconds = None, max_bytes: int = 4096) -> bytes:
        """The next message (framed by the mode).  Raises SocketTimeout (nothing lost: a
        partial frame is kept for the next read), PeerClosed, or another ConnectionFailure."""
        if self._inbox:
            return self._inbox.popleft()  # type: ignore[no-any-return]
        ms = -1 if timeout is None else _ms(timeout)
        if max_bytes.__class__ is not int or max_bytes < 1:
            raise _errors.ArgumentError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if _fastio is not None and (0 <= ms <= _SLICE_MS or not _on_main_thread()):
            # one C call: guard, wait, read, deframe and copy, the GIL dropped once
            data = _fast_read(self._g, ms, max_bytes)
            if isinstance(data, bytes):
                return data
            _fast_error(data)
        ptr = self._g.enter()
        held = False
        try:
            sc = _scratch
            out, out_len, err = sc.out, sc.out_len, sc.err
            hold = lib.ss_conn_read_hold  # returns holding the read lock: *out stays valid
            rc = _sliced(lambda t: hold(ptr, t, max_bytes, out, out_len, err), ms)
            held = rc == 0  # (set at once: the finally below must release the lock)
            if rc != 0:
                raise_err(rc, err)
            n = out_len[0]
            return ffi.unpack(out[0], n) if n else b""  # type: ignore[no-any-return,unused-ignore]
        finally:
            if held:
                lib.ss_conn_read_done(ptr, out_len[0])
            self._g.leave()

    def write(self, data: Union[bytes, bytearray, memoryview, str],
              timeout: Seconds = None) -> None:
        """Send one message, framed by the mode (str is sent as UTF-8)."""
        if data.__class__ is not bytes:
            data = _as_bytes(data, "message")
        ms = -1 if timeout is None else _ms(timeout)
        if _fastio is not None:  # (a channel of the engine queues its messages)
            rc = _fast_write(self._g, data, ms, self._hub is not None)
            if rc is not None:
                _fast_error(rc)
            return
        ptr = self._g.enter()
        try:
            err = _scratch.err
            if self._hub is not None:
                # served by the channel engine: queued, and the engine sends what the
                # socket does not take now; waits only over the high-water mark
                rc = lib.ss_conn_queue_write(ptr, data, len(data), ms, err)
            else:
                rc = lib.ss_conn_write(ptr, data, len(data), ms, err)  # passed, not copied
            if rc != 0:
                raise_err(rc, err)
        finally:
            self._g.leave()

    # -- state and information ----------------------------------------------------------

    def info(self) -> ConnectionInfo:
        ptr = self._g.enter()
        try:
            i = ffi.new("ss_conn_info *")
            lib.ss_conn_get_info(ptr, i)
            group = ffi.new("char[]", 64)
            lib.ss_conn_group(ptr, group, 64)
        finally:
            self._g.leave()
        return ConnectionInfo(text(i.peer_addr), i.peer_port, text(i.local_addr), i.local_port,
                              text(i.protocol), text(i.cipher), _STATES.get(i.state, "?"),
                              Mode(i.mode), bool(i.peer_closed), i.bytes_in, i.bytes_out,
                              text(i.proxy_addr), i.proxy_port, text(group))

    @property
    def protocol(self) -> str:
        return self.info().protocol

    @property
    def cipher(self) -> str:
        return self.info().cipher

    @property
    def group(self) -> str:
        """[extension] The key-exchange group negotiated ("X25519MLKEM768", "x25519")."""
        return self.info().group

    @property
    def resumed(self) -> bool:
        """True when the TLS handshake resumed an earlier session (no certificate exchange)."""
        ptr = self._g.enter()
        try:
            return bool(lib.ss_conn_tls_resumed(ptr))
        finally:
            self._g.leave()

    def peer_certificate(self) -> Any:
        """The peer's certificate (``cryptography.x509.Certificate``) or None."""
        from cryptography import x509

        ptr = self._g.enter()
        try:
            n = lib.ss_conn_peer_cert(ptr, ffi.NULL, 0)
            if n <= 0:
                return None
            buf = ffi.new("unsigned char[]", n)
            lib.ss_conn_peer_cert(ptr, buf, n)
        finally:
            self._g.leave()
        return x509.load_der_x509_certificate(ffi.buffer(buf, n)[:])

    @property
    def closed(self) -> bool:
        return self._g.closed

    @property
    def alive(self) -> bool:
        """Whether the connection can still carry messages: open, not broken, and the peer
        has neither closed nor reset it.  Checked now, without reading or waiting."""
        try:
            ptr = self._g.enter()
        except _errors.SocketClosed:
            return False
        try:
            return bool(lib.ss_conn_alive(ptr))
        finally:
            self._g.leave()

    def close(self) -> None:
        """Send close_notify (bounded wait), close, and wake calls blocked on it."""
        self._g.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<sslsock.Connection closed>"
        i = self.info()
        return (f"<sslsock.Connection {i.peer_address}:{i.peer_port} {i.protocol or 'TCP'} "
                f"{i.state} mode={i.mode.name}>")


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data if isinstance(data, bytes) else bytes(data)
    raise TypeError(f"{what} must be bytes (or str, sent as UTF-8), not {type(data).__name__}")


def connect(
    host: str,
    port: int,
    *,
    tls: bool = True,
    options: Mask = DEFAULT,
    timeout: Seconds = 30.0,
    verify: Optional[bool] = None,
    server_hostname: Optional[str] = None,
    client_certificate: Any = None,
    store: Any = None,
    password: Any = None,
    cafile_pem: Optional[bytes] = None,
    mode: Mode = Mode.SocketSizeAtBeginning,
    end_tag: bytes = b"<EOF>",
    max_message: int = DEFAULT_MAX_MESSAGE,
    resume: bool = True,
) -> Connection:
    """Connect to ``host:port`` (empty host: this machine), with TLS unless ``tls=False``.

    The server's certificate is verified against the system's authorities and the
    certificates of the store, and must match ``server_hostname`` (default: ``host``, or
    ``localhost`` for an empty host).  ``verify=False`` (or the SSLNoVerify option) turns
    verification off for this connection.  A reconnection to the same server with the same
    settings resumes the previous TLS session (``resume=False``: always a full handshake);
    :attr:`Connection.resumed` tells.
    """
    _check_port(port, client=True)
    host = unbracket(host) or "localhost"
    ctx = None
    if tls:
        rec = recipe(options)
        _warn_dropped(rec, f"connection to {host}:{port}")
        if verify is None:
            verify = not rec.no_verify
        st = _store(store, password)
        wanted = client_certificate if client_certificate != "" else None
        try:
            ctx = _tlsconfig.client_context(
                rec, verify=verify, store=st, cafile_pem=cafile_pem, client_certificate=wanted,
                password=password, resume=resume,
                load_identity=lambda: _identity(wanted, rec.by_hash, st, password))
        finally:
            _wipe_if_identity(wanted)  # the context has the key now (or already had it)
    name = host if server_hostname is None else server_hostname
    out = ffi.new("ss_conn **")
    err = new_err()
    host_b = host.encode() if host.isascii() else host.encode("idna")
    rc = lib.ss_connect(ctx.ptr if ctx else ffi.NULL, host_b, int(port),
                        name.encode() if (tls and name) else ffi.NULL, _ms(timeout), out, err)
    if rc != 0:
        raise_err(rc, err)
    return Connection(out[0], tls=tls, mode=mode, end_tag=end_tag, max_message=max_message)


def unbracket(host: str) -> str:
    """An address as users paste it from a URL: "[::1]" is the IPv6 address "::1"."""
    if not isinstance(host, str):
        raise TypeError(f"the address must be a str, not {type(host).__name__}")
    if not (host.startswith("[") and host.endswith("]")):
        return host
    inner = host[1:-1]
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        raise _errors.ArgumentError(
            f'address "{host}": brackets enclose an IPv6 address ("[::1]", '
            f'"[fe80::1%eth0]"); give a host name or an IPv4 address without them') from None
    return inner


def _check_port(port: Any, *, client: bool = False) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    lo = 1 if client else 0
    if not lo <= port <= 65535:
        raise _errors.ArgumentError(f"port {port} is not a valid TCP port ({lo}..65535)",
                                    code=_errors.ErrorCode.PORT)


# ---------------------------------------------------------------------------------------
# Listeners


def _set_ticket_keys(ctx_ptr: Any, keys: bytearray) -> None:
    err = new_err()
    buf = ffi.from_buffer(keys)
    try:
        rc = lib.ss_ctx_set_ticket_keys(ctx_ptr, buf, len(keys) // lib.SS_TICKET_KEY_LEN, err)
    finally:
        del buf
        keys[:] = bytes(len(keys))  # wipe our copy: the C core holds its own
    if rc != 0:
        raise_err(rc, err)


@dataclass(frozen=True)
class ListenerStats:
    accepted: int
    handshakes: int
    failed_tls: int
    failed_io: int
    timed_out: int
    dropped_pending: int
    dropped_ready: int
    taken: int
    pending: int
    ready: int
    last_failure: str
    #: [extension] connections refused for their PROXY header: missing, malformed, too
    #: long, late, or from an address not allowed to send one
    proxy_refused: int = 0


def _proxy_allow(allow: Any) -> bytes:
    """Addresses / networks ("10.0.0.0/8", "::1", "192.0.2.7") as the C core's 17-byte
    entries: the IPv6 address (IPv4 mapped) and the prefix length."""
    if isinstance(allow, str):
        allow = [allow]
    out = bytearray()
    for item in allow:
        if not isinstance(item, str):
            raise TypeError(f"proxy_allow takes addresses or networks as str, not "
                            f"{type(item).__name__}")
        try:
            net = ipaddress.ip_network(unbracket(item.strip()), strict=False)
        except ValueError:
            raise _errors.ArgumentError(
                f"proxy_allow: {item!r} is not an IP address or network (\"10.0.0.0/8\", "
                "\"192.0.2.7\", \"2001:db8::/32\")") from None
        if isinstance(net, ipaddress.IPv4Network):
            out += ipaddress.IPv6Address(f"::ffff:{net.network_address}").packed
            out.append(96 + net.prefixlen)
        else:
            out += net.network_address.packed
            out.append(net.prefixlen)
    return bytes(out)


class Listener:
    """A TLS (or plain TCP, ``tls=False``) server socket with its accept engine.

    C threads accept and complete handshakes in the background; :meth:`wait` and
    :meth:`accept` take finished connections.  ``threads``: how many (default: one per CPU
    this process may use, :func:`~sslsock.available_cpus`, less one left to Python, at
    least one).  ``certificate`` is a
    store identifier (name, thumbprint or file path, as the options say) or a
    :class:`~sslsock.Identity`.

    Under mutual TLS (the SSLClientCertificate option) clients must present a certificate
    that the store's certificates or ``client_ca_pem`` vouch for; the system's authorities
    only with ``client_system_ca=True`` (or the SSLClientSystemCA option).

    Extensions for a server behind a load balancer, or made of several processes (see
    docs/deployment.md):

    * ``proxy_protocol=True``: every connection starts with a PROXY header (v1 or v2, as
      HAProxy's ``send-proxy`` / ``send-proxy-v2`` and nginx's ``proxy_protocol on`` send
      it), read before the handshake within ``handshake_timeout`` and at most
      ``proxy_max_len`` bytes; a connection without a valid one is refused and counted
      (:attr:`ListenerStats.proxy_refused`).  The client it names is the connection's
      ``peer_address``; the proxy stays readable as ``proxy_address``.  ``proxy_allow``
      (addresses or networks) limits who may send the header.
    * ``ticket_keys``: a session-ticket key file (``"store"``: the store's own, made by
      ``sslsock cert tickets rotate``), or the keys as bytes; processes sharing them resume
      each other's sessions.  A rewritten file is picked up by running listeners.
    * certificate renewal: a certificate named in the store (not by thumbprint) is watched
      every ``reload_interval`` seconds (``None``: only by :meth:`reload`, or SIGHUP in
      ``sslsock serve`` and :func:`run_workers`' workers); when the store's file is
      replaced, new handshakes use the new certificate, connections already open keep
      theirs; a replacement that cannot be served is refused with a logged error and the
      old certificate stays.  :meth:`reload` does the same at once.
    """

    def __init__(
        self,
        port: int = 0,
        certificate: Any = None,
        *,
        options: Mask = DEFAULT,
        host: str = "",
        tls: bool = True,
        store: Any = None,
        password: Any = None,
        reuse_address: bool = True,
        reuse_port: bool = False,
        threads: int = 0,
        handshake_timeout: Seconds = 10.0,
        max_pending: int = 0,
        max_ready: int = 0,
        backlog: int = 0,
        client_ca_pem: Optional[bytes] = None,
        client_system_ca: bool = False,
        mode: Mode = Mode.SocketSizeAtBeginning,
        end_tag: bytes = b"<EOF>",
        max_message: int = DEFAULT_MAX_MESSAGE,
        proxy_protocol: bool = False,
        proxy_allow: Any = (),
        proxy_max_len: int = 0,
        ticket_keys: Any = None,
        reload_interval: Optional[float] = 2.0,
    ) -> None:
        from ._tickets import TicketKeys

        _check_port(port)
        host = unbracket(host)
        allow = _proxy_allow(proxy_allow) if proxy_allow else b""
        if allow and not proxy_protocol:
            raise _errors.ArgumentError("proxy_allow lists who may send the PROXY header: "
                                        "it needs proxy_protocol=True")
        self.tls = tls
        self.recipe: Optional[Recipe] = None
        self.certificate: Any = None
        self._tickets = None
        self._renew: Optional[dict[str, Any]] = None
        self._reload_lock = threading.Lock()
        if ticket_keys is not None and ticket_keys is not False:
            if not tls:
                raise _errors.ArgumentError("ticket_keys are for a TLS listener")
            self._tickets = TicketKeys("store" if ticket_keys is True else ticket_keys,
                                       _store(store, password))
        ctx = None
        if tls:
            if certificate is None or certificate == "":
                raise _errors.CertificateError(
                    "a TLS server needs a certificate: pass its name or thumbprint from the "
                    "store (sslsock cert list), or create one with: sslsock cert create NAME")
            rec = recipe(options)
            if client_system_ca:
                rec = recipe(int(rec.mask) | SSLOption.SSLClientSystemCA)
            _warn_dropped(rec, f"listener on port {port}")
            st = _store(store, password)
            watched = isinstance(certificate, str) and not rec.by_hash
            generation = self._generation(st, certificate) if watched else None
            ident = _identity(certificate, rec.by_hash, st, password)
            try:
                ctx = self._context(rec, ident, st, client_ca_pem)
                digest = _tlsconfig._digest(ident.cert_chain_pem)
            finally:
                ident.wipe()
            self.recipe = ctx.recipe
            self.certificate = ident.certificate
            if watched:
                self._renew = dict(rec=rec, certificate=certificate, store=st,
                                   password=password, client_ca_pem=client_ca_pem,
                                   generation=generation, digest=digest, failed=None)
        self._tls = ctx  # shared with listeners of the same configuration while open
        cfg = ffi.new("ss_listener_config *")
        host_c = ffi.new("char[]", host.encode()) if host else ffi.NULL
        cfg.host = host_c
        cfg.port = port
        cfg.reuse_addr = int(reuse_address)
        cfg.reuse_port = int(reuse_port)
        cfg.backlog = backlog
        cfg.threads = threads if threads > 0 else _workers.default_handshake_threads()
        hs_ms = _ms(handshake_timeout, "handshake_timeout")
        cfg.handshake_timeout_ms = hs_ms if hs_ms > 0 else 0
        cfg.max_pending = max_pending
        cfg.max_ready = max_ready
        cfg.proxy_protocol = int(bool(proxy_protocol))
        cfg.proxy_max_len = int(proxy_max_len)
        allow_c = ffi.from_buffer(allow) if allow else ffi.NULL
        cfg.proxy_allow = allow_c
        cfg.proxy_allow_count = len(allow) // 17
        self.proxy_protocol = bool(proxy_protocol)
        out = ffi.new("ss_listener **")
        err = new_err()
        rc = lib.ss_listener_new(ctx.ptr if ctx else ffi.NULL, cfg, out, err)
        if rc != 0:
            raise_err(rc, err)
        self._g = _Guard(ffi.gc(out[0], lib.ss_listener_free), lib.ss_listener_shutdown,
                         "the listener")
        self.port: int = int(lib.ss_listener_port(out[0]))
        self.host = host
        self._conn_args = dict(mode=Mode(mode), end_tag=end_tag, max_message=max_message)
        if self._renew or (self._tickets and self._tickets.path):
            from . import _reload

            if reload_interval is not None:
                _reload.watch(self, float(reload_interval))
            else:
                _reload.register(self)  # SIGHUP in sslsock serve and run_workers

    # -- the TLS context, renewal and ticket keys --------------------------------------

    def _context(self, rec: Recipe, ident: Any, st: Any, client_ca_pem: Optional[bytes]) -> Any:
        ctx = _tlsconfig.server_context(rec, identity=ident, store=st,
                                        client_ca_pem=client_ca_pem, tickets=self._tickets)
        if self._tickets is not None:
            _set_ticket_keys(ctx.ptr, self._tickets.read())
        return ctx

    @staticmethod
    def _generation(st: Any, certificate: str) -> Any:
        try:
            own = os.stat(certificate)
            extra: Any = (own.st_ino, own.st_size, own.st_mtime_ns)
        except OSError:
            extra = None
        return (st.generation(), extra)

    def reload(self, *, quiet_first_failure: bool = False) -> bool:
        """Take a renewed certificate and rewritten ticket keys now (SIGHUP in ``sslsock
        serve``).  Returns whether anything changed.  A certificate or key file that cannot
        be served raises :class:`~sslsock.CertificateError` (or a TLS error) and changes
        nothing: the listener keeps serving what it served."""
        with self._reload_lock:
            if self.closed:
                return False
            changed = False
            r = self._renew
            if self._tickets is not None and self._tickets.changed():
                keys = self._tickets.read()
                assert self._tls is not None
                _set_ticket_keys(self._tls.ptr, keys)
                log.info("listener on port %d: session-ticket keys reloaded from %s",
                         self.port, self._tickets.describe())
                changed = True
            if r is None:
                return changed
            generation = self._generation(r["store"], r["certificate"])
            if generation == r["generation"]:
                return changed
            try:
                ident = _identity(r["certificate"], False, r["store"], r["password"])
                try:
                    digest = _tlsconfig._digest(ident.cert_chain_pem)
                    if digest == r["digest"]:
                        r["generation"] = generation
                        return changed
                    ctx = self._context(r["rec"], ident, r["store"], r["client_ca_pem"])
                finally:
                    ident.wipe()
            except _errors.Error as e:
                if quiet_first_failure and r["failed"] != generation:
                    r["failed"] = generation  # maybe half-written: look again next time
                    return changed
                r["generation"] = generation  # logged once per version of the store
                raise type(e)(f"the renewed certificate \"{r['certificate']}\" cannot be "
                              f"served, so the listener on port {self.port} keeps the one it "
                              f"has ({self.certificate.name}, SHA-1 "
                              f"{self.certificate.certmgr_thumbprint}): {e}") from None
            try:
                ptr = self._g.enter()
            except _errors.SocketClosed:
                return changed  # closed meanwhile: nothing left to renew
            try:
                lib.ss_listener_set_ctx(ptr, ctx.ptr)
            finally:
                self._g.leave()
            self._tls = ctx
            self.recipe = ctx.recipe
            self.certificate = ident.certificate
            r.update(generation=generation, digest=digest, failed=None)
            log.info("listener on port %d: now serving the renewed certificate %s (SHA-1 %s, "
                     "valid until %s)", self.port, ident.certificate.name,
                     ident.certificate.certmgr_thumbprint,
                     ident.certificate.not_after.strftime("%Y-%m-%d"))
            return True

    def messages(self, timeout: Seconds = None, *, max_bytes: int = 65536,
                 high_water: int = 1 << 20) -> Iterator[tuple[Connection, bytes]]:
        """One thread serving every client: yields ``(connection, message)`` as messages
        arrive, accepting new clients on the way.  ``message == b""`` means that connection
        has ended (it is closed once the loop body is done with it).  Reply with
        ``connection.write(...)``.  The iteration ends when ``timeout`` passes without any
        message, or when the listener is closed; connections still open then are closed.

        The channels are read, decrypted and deframed in C, and the loop wakes once per
        batch of messages, not once per message.  ``max_bytes`` caps one message of
        ``SocketNoEndTag`` mode.  Replies are queued and sent as each client's socket takes
        them: a ``write`` waits only while more than ``high_water`` bytes are queued for
        that client (a client that does not read).
        """
        from ._engine import messages

        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise _errors.ArgumentError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return messages(self, _ms(timeout), max_bytes, high_water)

    @property
    def protocols(self) -> tuple[str, ...]:
        """The versions this listener negotiates, exactly (empty for plain TCP)."""
        return self.recipe.effective if self.recipe else ()

    def wait(self, timeout: Seconds = None) -> bool:
        """True once a client is waiting (its handshake done); False on time-out."""
        ms = _ms(timeout)
        err = new_err()
        ptr = self._g.enter()
        try:
            rc = _sliced(lambda t: lib.ss_listener_wait(ptr, t, err), ms)
        finally:
            self._g.leave()
        if rc == lib.SS_E_TIMEOUT:
            return False
        check(rc, err)
        return True

    def accept(self, timeout: Seconds = None) -> Connection:
        """Take the next client (waiting at most ``timeout``; 0: do not wait)."""
        ms = _ms(timeout)
        err = new_err()
        out = ffi.new("ss_conn **")
        ptr = self._g.enter()
        try:
            rc = _sliced(lambda t: lib.ss_listener_accept(ptr, t, out, err), ms)
        finally:
            self._g.leave()
        check(rc, err)
        return Connection(out[0], tls=self.tls, **self._conn_args)  # type: ignore[arg-type]

    def stats(self) -> ListenerStats:
        st = ffi.new("ss_listener_stats *")
        ptr = self._g.enter()
        try:
            lib.ss_listener_get_stats(ptr, st)
        finally:
            self._g.leave()
        return ListenerStats(st.accepted, st.handshakes, st.failed_tls, st.failed_io,
                             st.timed_out, st.dropped_pending, st.dropped_ready, st.taken,
                             st.pending, st.ready, text(st.last_failure), st.proxy_refused)

    @property
    def closed(self) -> bool:
        return self._g.closed

    def close(self) -> None:
        """Stop accepting, wake waiters, close connections not yet accepted."""
        self._g.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "TLS " + ",".join(self.protocols) if self.tls else "TCP"
        state = "closed" if self.closed else "listening"
        return f"<sslsock.Listener port={self.port} {kind} {state}>"
