"""A connection of the C core, as Python sees it: :class:`Connection`, its transmission
:class:`Mode`, its guard, and the one path of every read and write (the CPython bridge,
``sslsock._fastio``).

Seconds as floats (``None``: no limit), a context manager, exceptions from
:mod:`sslsock._core.errors`.  Every per-byte step happens in C with the GIL released; this
module only keeps the C object alive while a call uses it.  A connection that a channel
engine serves (:mod:`sslsock._core.engine`) is read through that engine.
"""
from __future__ import annotations

import datetime as _dt
import enum
import functools
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, Union

from sslsock import _fastio
from sslsock._core import errors as _errors
from sslsock._core.binding import ffi, lib, new_err, text
from sslsock._core.errors import check, raise_err

# The per-message path (src/_native/fastio.c, the CPython C API): every read and write of a
# connection is one call into it, and every C object's guard is its Guard.  One path: there
# is no cffi fallback to keep in step (sslsock needs CPython).

Seconds = Optional[Union[float, int, _dt.timedelta]]

DEFAULT_MAX_MESSAGE: int = lib.SS_DEFAULT_MAX_MESSAGE
DEFAULT_HIGH_WATER: int = lib.SS_DEFAULT_HIGH_WATER
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


def _sliced_read(guard: Any, timeout_ms: int, max_bytes: int) -> Union[bytes, int]:
    """_fast_read on the main thread, in slices (signals are handled between them)."""
    deadline = None if timeout_ms < 0 else _monotonic_ms() + timeout_ms
    while True:
        left = _SLICE_MS if deadline is None else deadline - _monotonic_ms()
        data = _fast_read(guard, max(0, min(_SLICE_MS, left)), max_bytes)
        if isinstance(data, bytes) or data != lib.SS_E_TIMEOUT or \
                (deadline is not None and _monotonic_ms() >= deadline):
            return data


def _monotonic_ms() -> int:
    import time

    return int(time.monotonic() * 1000)


def _Guard(ptr: Any, shutdown: Callable[[Any], None], what: str,
           on_free: Optional[Callable[[], None]] = None) -> _fastio.Guard:
    """The guard of a C object (``sslsock._fastio.Guard``): keeps it alive while calls use
    it (``with guard as ptr:``), frees it exactly once, after close() and the last call;
    calls started after close() raise SocketClosed."""
    return _fastio.Guard(ptr, int(ffi.cast("uintptr_t", ptr)), shutdown, what, on_free)


if getattr(_fastio, "ABI_VERSION", None) != lib.SS_ABI_VERSION:
    raise ImportError(
        f"sslsock._fastio was built against another version of the core (interface "
        f"{getattr(_fastio, 'ABI_VERSION', 'unknown')}, the core's is {lib.SS_ABI_VERSION}): "
        f"rebuild sslsock (pip install --force-reinstall --no-cache-dir, or remove build/ "
        f"and src/sslsock/*.so in a checkout)")

_fastio.setup(int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_read_hold"))),
              int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_read_done"))),
              int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_write"))),
              int(ffi.cast("uintptr_t", ffi.addressof(lib, "ss_conn_queue_write"))),
              _errors.SocketClosed, ffi.release)
_fast_read = _fastio.read
_fast_write = _fastio.write


def _fast_error(rc: int) -> NoReturn:
    """Raise the error of a failed fast call (its record is this thread's)."""
    raise_err(rc, ffi.cast("ss_err *", _fastio.error_address()))


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
    #: [extension] the application protocol negotiated by ALPN ("": none)
    alpn: str = ""
    #: [extension] the server name the client asked for (SNI; "": none)
    server_name: str = ""
    #: the key-exchange group the handshake negotiated ("X25519MLKEM768", "x25519", ...);
    #: "" for plain TCP, or when the linked OpenSSL does not say
    group: str = ""


_STATES = {lib.SS_STATE_OPEN: "open", lib.SS_STATE_BROKEN: "broken", lib.SS_STATE_CLOSED: "closed"}

#: In a channel's inbox, behind its last message: the channel engine saw its end (the
#: connection has left the engine; reading it directly tells how it ended).
ENDED_MARK: Any = type("EndedMark", (), {"__repr__": lambda self: "<ended>"})()


class _Scratch(threading.local):
    """Per thread: the error record of the C calls made through cffi here (per thread
    rather than per connection: an idle connection then costs no Python-side buffers)."""

    def __init__(self) -> None:
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
                 "_max_message", "_hub", "_hub_id", "_inbox", "_queued", "__weakref__")

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
        self._hub: Any = None  # the channel engine serving it (sslsock._core.engine.Hub)
        self._hub_id = 0
        self._inbox: Any = None  # messages the engine read before a read asked (a deque)
        self._queued = False  # on the engine's list of channels with messages
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
        mode = checked_mode(mode)
        tag = self._end_tag if end_tag is None else checked_end_tag(end_tag)
        with self._g as ptr:
            err = _scratch.err
            check(lib.ss_conn_set_mode(ptr, int(mode), tag, len(tag), err), err)
        self._mode, self._end_tag = mode, tag

    @property
    def max_message(self) -> int:
        """Largest message accepted (size header or end-tag search), in bytes."""
        return self._max_message

    @max_message.setter
    def max_message(self, value: int) -> None:
        value = checked_max_message(value)
        with self._g as ptr:
            lib.ss_conn_set_max_message(ptr, value)
        self._max_message = value

    # -- I/O ----------------------------------------------------------------------------

    def read(self, timeout: Seconds = None, max_bytes: int = 4096) -> bytes:
        """The next message (framed by the mode).  Raises SocketTimeout (nothing lost: a
        partial frame is kept for the next read), PeerClosed, or another ConnectionFailure.

        A channel that a channel engine serves (SocketWaitForMessage, messages()) is read
        through the engine: its inbox first, then the engine's next batches; never its
        socket, which is the engine's."""
        ms = -1 if timeout is None else _ms(timeout)
        if self._hub is not None or self._inbox:
            message = self._engine_read(ms)
            if message is not None:
                return message
        if max_bytes.__class__ is not int or max_bytes < 1:
            raise _errors.ArgumentError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        # one C call: guard, wait, read, deframe and copy, the GIL dropped once (the main
        # thread waits in slices, so that Ctrl-C is seen)
        if 0 <= ms <= _SLICE_MS or not _on_main_thread():
            data = _fast_read(self._g, ms, max_bytes)
        else:
            data = _sliced_read(self._g, ms, max_bytes)
        if isinstance(data, bytes):
            return data
        _fast_error(data)

    def _engine_read(self, ms: int) -> Optional[bytes]:
        """A message from the inbox, or through the hub serving this channel; None once
        the channel is its own (it left the engine, every message before that taken)."""
        inbox = self._inbox
        if inbox:
            data = inbox.popleft()
            return None if data is ENDED_MARK else data
        hub = self._hub
        return hub.read(self, ms) if hub is not None else None

    def write(self, data: Union[bytes, bytearray, memoryview, str],
              timeout: Seconds = None) -> None:
        """Send one message, framed by the mode (str is sent as UTF-8)."""
        if data.__class__ is not bytes:
            data = _as_bytes(data, "message")
        ms = -1 if timeout is None else _ms(timeout)
        # one C call; a channel of an engine queues its message (sent by the engine as the
        # socket takes it), any other connection sends it before returning
        rc = _fast_write(self._g, data, ms, self._hub is not None)
        if rc is not None:
            _fast_error(rc)

    # -- state and information ----------------------------------------------------------

    def info(self) -> ConnectionInfo:
        with self._g as ptr:
            i = ffi.new("ss_conn_info *")
            lib.ss_conn_get_info(ptr, i)
            group = ffi.new("char[]", 64)
            lib.ss_conn_group(ptr, group, 64)
        return ConnectionInfo(text(i.peer_addr), i.peer_port, text(i.local_addr), i.local_port,
                              text(i.protocol), text(i.cipher), _STATES.get(i.state, "?"),
                              Mode(i.mode), bool(i.peer_closed), i.bytes_in, i.bytes_out,
                              text(i.proxy_addr), i.proxy_port, text(i.alpn),
                              text(i.server_name), text(group))

    @property
    def alpn(self) -> str:
        """The application protocol negotiated by ALPN ("h2", "http/1.1"; "": none)."""
        return self.info().alpn

    @property
    def server_name(self) -> str:
        """The server name the client asked for (SNI); on a client, the one it sent."""
        return self.info().server_name

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
        with self._g as ptr:
            return bool(lib.ss_conn_tls_resumed(ptr))

    def peer_certificate(self) -> Any:
        """The peer's certificate (``cryptography.x509.Certificate``) or None."""
        from cryptography import x509

        with self._g as ptr:
            n = lib.ss_conn_peer_cert(ptr, ffi.NULL, 0)
            if n <= 0:
                return None
            buf = ffi.new("unsigned char[]", n)
            lib.ss_conn_peer_cert(ptr, buf, n)
        return x509.load_der_x509_certificate(ffi.buffer(buf, n)[:])

    @property
    def closed(self) -> bool:
        return self._g.closed

    @property
    def alive(self) -> bool:
        """Whether the connection can still carry messages: open, not broken, and the peer
        has neither closed nor reset it.  Checked now, without reading or waiting."""
        try:
            with self._g as ptr:
                return bool(lib.ss_conn_alive(ptr))
        except _errors.SocketClosed:
            return False

    def close(self) -> None:
        """Send close_notify (bounded wait), close, and wake calls blocked on it.  A
        channel of an engine leaves it first."""
        hub = self._hub
        if hub is not None:
            hub.discard(self)
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


def checked_mode(mode: Any) -> Mode:
    """A transmission mode, or ArgumentError naming the four."""
    try:
        return Mode(mode)
    except ValueError:
        raise _errors.ArgumentError(
            f"unknown transmission mode {mode!r}: use SocketSizeAtBeginning, "
            "SocketEndTag, SocketEndTagBuffer or SocketNoEndTag") from None


def checked_end_tag(end_tag: Any) -> bytes:
    """An end tag (str as UTF-8) of 1 to SS_MAX_END_TAG bytes, or ArgumentError."""
    tag = _as_bytes(end_tag, "end_tag")
    if not 1 <= len(tag) <= lib.SS_MAX_END_TAG:
        raise _errors.ArgumentError(
            f"the end tag must be 1 to {lib.SS_MAX_END_TAG} bytes long, got {len(tag)}")
    return tag


def checked_max_message(value: Any) -> int:
    """A message limit in bytes, within what the size arithmetic allows."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_message is a number of bytes (an int), not "
                        f"{type(value).__name__}")
    if not 1 <= value <= lib.SS_MAX_MESSAGE_LIMIT:
        raise _errors.ArgumentError(
            f"max_message must be 1 to {lib.SS_MAX_MESSAGE_LIMIT} bytes (the size "
            f"arithmetic's bound; memory runs out long before), got {value!r}")
    return value


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data if isinstance(data, bytes) else bytes(data)
    raise TypeError(f"{what} must be bytes (or str, sent as UTF-8), not {type(data).__name__}")


