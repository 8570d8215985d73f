"""asyncio's protocols and transports over the channel engine.

::

    import sslsock.transports as transports

    server = await transports.create_server(MyProtocol, "0.0.0.0", 8443,
                                            certificate="my-cert")
    transport, protocol = await transports.create_connection(MyProtocol, "example.org",
                                                             8443)

``create_server`` and ``create_connection`` take the arguments of the event loop's methods
of the same names (``protocol_factory, host, port``) and, instead of ``ssl=``, the TLS
arguments of :func:`sslsock.aio.start_server` / :func:`sslsock.aio.connect`.  The
protocols are standard :class:`asyncio.Protocol` objects; the transport behaves as
asyncio's TLS transport does (``write``, ``writelines``, ``pause_reading`` /
``resume_reading``, write buffer limits with ``pause_writing`` / ``resume_writing``,
``close``, ``abort``, ``get_extra_info``, ``connection_lost`` on close and on errors).

The channels are byte streams (``SocketNoEndTag`` mode): ``data_received`` gets what
arrived, up to 64 KiB at a time.  They are served by the same engine as the message API
(one C call per wake-up reads and decrypts every ready channel), and the write side's
back-pressure is the engine's word (``SS_EV_WRITABLE``), not a timer.  See
docs/asyncio.md.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from typing import Any, Callable, Optional, Union

import sslsock.aio as _aio
from sslsock._core import errors as _errors
from sslsock._core.binding import ffi, lib
from sslsock._core.connection import Connection, Mode, Seconds, _ms
from sslsock._core.engine import Hub
from sslsock._core.errors import raise_err
from sslsock._faces.objects import Listener
from sslsock._faces.objects import connect as _connect
from sslsock._tls.options import DEFAULT, Mask

__all__ = ["Transport", "Server", "create_server", "create_connection"]

log = logging.getLogger("sslsock")

#: The engine's own high-water mark for protocol channels: a transport's write never
#: waits (asyncio's contract); its protocol is paused by the transport's own limits.
_NO_LIMIT = 1 << 62
#: asyncio's default write buffer limits (high, and low = high // 4)
_HIGH = 64 * 1024
#: writes after the connection is lost are dropped; warned about from this many on
_LOG_THRESHOLD = 5

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class _ProtocolChannel(_aio.Channel):
    """A channel whose engine events go to a transport instead of an inbox."""

    __slots__ = ("_transport",)

    _transport: Transport

    def _feed(self, data: bytes) -> None:
        self._transport._data(data)

    def _fail(self, e: BaseException) -> None:
        super()._fail(e)
        t = getattr(self, "_transport", None)
        if t is not None:
            t._ended(e)

    def _drained(self) -> None:
        super()._drained()
        t = getattr(self, "_transport", None)
        if t is not None:
            t._writable()


class _TLSObject:
    """What ``get_extra_info("ssl_object")`` returns: the questions asked of asyncio's
    ``ssl.SSLObject`` after the handshake, answered by the sslsock connection."""

    __slots__ = ("_conn", "server_side", "server_hostname")

    def __init__(self, conn: Connection, server_side: bool, server_hostname: Optional[str]
                 ) -> None:
        self._conn = conn
        self.server_side = server_side
        self.server_hostname = server_hostname

    def version(self) -> Optional[str]:
        return self._conn.info().protocol or None

    def cipher(self) -> Optional[tuple[str, str, Optional[int]]]:
        i = self._conn.info()
        return (i.cipher, i.protocol, None) if i.protocol else None

    def selected_alpn_protocol(self) -> Optional[str]:
        return self._conn.info().alpn or None

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate: DER bytes with ``binary_form=True``, else the dict
        ``ssl.SSLSocket.getpeercert()`` gives (``subject``, ``issuer``, ``notBefore``,
        ``notAfter``, ``serialNumber``, ``subjectAltName``); None without one."""
        cert = self._conn.peer_certificate()
        if cert is None:
            return None
        if binary_form:
            from cryptography.hazmat.primitives.serialization import Encoding

            return cert.public_bytes(Encoding.DER)
        return _cert_dict(cert)


def _cert_dict(cert: Any) -> dict[str, Any]:
    from cryptography import x509

    def name(n: Any) -> tuple[tuple[tuple[str, str], ...], ...]:
        return tuple(tuple((getattr(a.oid, "_name", a.oid.dotted_string), str(a.value))
                           for a in rdn) for rdn in n.rdns)

    def when(t: Any) -> str:
        return f"{t:%b} {t.day:2d} {t:%H:%M:%S %Y} GMT"

    out: dict[str, Any] = {
        "subject": name(cert.subject), "issuer": name(cert.issuer),
        "version": cert.version.value + 1, "serialNumber": f"{cert.serial_number:X}",
        "notBefore": when(cert.not_valid_before_utc),
        "notAfter": when(cert.not_valid_after_utc),
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return out
    alt: list[tuple[str, str]] = [("DNS", v) for v in san.get_values_for_type(x509.DNSName)]
    alt += [("IP Address", str(v)) for v in san.get_values_for_type(x509.IPAddress)]
    out["subjectAltName"] = tuple(alt)
    return out


class Transport(asyncio.Transport):
    """asyncio's TLS transport, over a channel of the engine (see the module docstring).

    No half-close: TLS has none (``can_write_eof()`` is False); the peer's end calls
    ``eof_received()``, then the transport closes, as asyncio's TLS transport does."""

    __slots__ = ("_ch", "_loop", "_protocol", "_closing", "_lost", "_reading_paused",
                 "_held", "_held_end", "_writing_paused", "_high", "_low", "_dropped",
                 "_exc", "_server", "_server_side", "_hostname")

    def __init__(self, ch: _ProtocolChannel, protocol: asyncio.BaseProtocol,
                 server: Optional[Server], server_hostname: Optional[str] = None) -> None:
        super().__init__()
        self._ch = ch
        self._loop = ch._loop
        self._protocol = protocol
        self._closing = False
        self._lost = False
        self._reading_paused = False
        #: data that arrived while reading was paused (a batch brings a channel's bytes
        #: at once), handed on first when reading resumes; None when empty
        self._held: Optional[collections.deque[bytes]] = None
        self._held_end: Optional[BaseException] = None
        self._writing_paused = False
        self._high = _HIGH
        self._low = _HIGH // 4
        self._dropped = 0
        self._exc: Optional[BaseException] = None
        self._server = server
        self._server_side = server is not None
        self._hostname = server_hostname
        ch._transport = self

    # -- from the engine ---------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        if self._closing:
            return  # (asyncio: nothing after close())
        if self._reading_paused or self._held is not None:
            if self._held is None:
                self._held = collections.deque()
            self._held.append(data)
            return
        try:
            self._protocol.data_received(data)  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.data_received() call failed.")

    def _ended(self, e: BaseException) -> None:
        """The channel ended: the peer closed (PeerClosed) or it broke."""
        if self._lost:
            return
        if self._closing:
            if not isinstance(e, _errors.PeerClosed):
                self._exc = self._exc or e
            return
        if not isinstance(e, _errors.PeerClosed):
            self._force_close(e)
        elif self._held is not None or self._reading_paused:
            self._held_end = e  # after the data held back, when reading resumes
        else:
            self._eof()

    def _eof(self) -> None:
        try:
            self._protocol.eof_received()  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        self.close()  # (a True return has no effect over TLS, as with asyncio's)

    def _writable(self) -> None:
        """The engine says the write queue drained to what was asked."""
        if not self._writing_paused or self._lost:
            return
        ptr = self._ch._conn._g.ptr
        eng = self._ch._engine
        if ptr is None or eng.closed:
            return
        if lib.ss_hub_want_drain(eng._hub_ptr, ptr, self._low) == 0:
            return  # (a lower mark was reached for a close; not ours yet)
        self._writing_paused = False
        self._flow_callback("resume_writing")

    # -- reading -----------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._reading_paused:
            return
        self._reading_paused = True
        self._ch._pause(True)

    def resume_reading(self) -> None:
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        if self._held is not None or self._held_end is not None:
            self._loop.call_soon(self._release_held)
        self._ch._pause(False)

    def _release_held(self) -> None:
        held = self._held
        while held and not self._reading_paused and not self._closing:
            data = held.popleft()
            try:
                self._protocol.data_received(data)  # type: ignore[attr-defined]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal(exc, "Fatal error: protocol.data_received() call failed.")
                return
        if held is not None and not held:
            self._held = None
        if self._held is None and self._held_end is not None and not self._reading_paused:
            self._held_end = None
            if not self._closing:
                self._eof()

    # -- writing -----------------------------------------------------------------------

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, "
                            f"got {type(data).__name__}")
        if not data:
            return
        if self._closing:
            if self._dropped >= _LOG_THRESHOLD:
                log.warning("sslsock.transports: write() on a closed transport (dropped)")
            self._dropped += 1
            return
        ch = self._ch
        buf = data if data.__class__ is bytes else ffi.from_buffer(data)
        rc = lib.ss_conn_queue_write(ch._ptr, buf, len(buf), 0, ch._err)
        if rc != 0:
            try:
                raise_err(rc, ch._err)
            except _errors.Error as exc:
                self._force_close(exc)
            return
        if not self._writing_paused and lib.ss_conn_queued(ch._ptr) > self._high:
            self._pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _flow_callback(self, name: str) -> None:
        """protocol.pause_writing() or resume_writing(); an exception from it goes to the
        loop's exception handler, as asyncio's transports report it."""
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": f"protocol.{name}() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    def _pause_writing(self) -> None:
        self._writing_paused = True
        self._flow_callback("pause_writing")
        ch = self._ch
        if ch._engine.closed or ch._conn._g.ptr is None:
            return  # (its end is being reported: connection_lost follows)
        if lib.ss_hub_want_drain(ch._engine._hub_ptr, ch._ptr, self._low) == 1:
            self._writable()  # drained meanwhile (the engine's own thread sends too)

    def get_write_buffer_size(self) -> int:
        if self._lost:
            return 0
        return self._ch.queued()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: Optional[int] = None,
                                low: Optional[int] = None) -> None:
        if high is None:
            high = _HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        if not self._writing_paused and not self._closing and \
                self.get_write_buffer_size() > high:
            self._pause_writing()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close: close() the transport")

    # -- closing -----------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """As asyncio's TLS transport: send what is queued, then close_notify, then wait
        for the peer's close_notify (all within the close time-out), then close the
        socket and call ``connection_lost(None)``.  No data_received after close()."""
        if self._closing:
            return
        self._closing = True
        self._held = None
        self._keep_info()
        ch = self._ch
        if ch._end is None and ch._conn._g.ptr is not None and not ch._engine.closed:
            self._loop.create_task(self._shutdown()).add_done_callback(self._closed)
        else:
            ch.abort()
            self._loop.call_soon(self._lose, self._exc)

    async def _shutdown(self) -> None:
        ch = self._ch
        try:
            await asyncio.wait_for(self._shutdown_steps(), ch._close_timeout)
        except asyncio.TimeoutError:
            pass  # a peer that does not read, or does not answer: closed all the same
        finally:
            ch.abort()

    async def _shutdown_steps(self) -> None:
        ch = self._ch
        ptr = ch._conn._g.ptr
        if lib.ss_conn_queued(ptr):
            await ch._close_drain(ptr)  # woken by the engine's SS_EV_WRITABLE
        # Closing the socket right after close_notify would send FIN at once, and a peer
        # whose application paused reading may drop what it had not read yet (uvloop's
        # TLS does); asyncio's transports wait for the peer's close_notify, as here.
        if ch._end is None and lib.ss_conn_close_notify(ptr):
            if self._reading_paused:
                ch._pause(False)  # its answer must be read
            while ch._end is None:
                w = ch._waiter = self._loop.create_future()  # (woken by its end)
                try:
                    await w
                finally:
                    ch._waiter = None

    def _closed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._exc = self._exc or task.exception()
        self._lose(self._exc)

    def abort(self) -> None:
        """Close now: what is queued is dropped; ``connection_lost(None)``."""
        self._force_close(None)

    def _force_close(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        if self._closing and exc is None:
            self._ch.abort()
            return
        self._closing = True
        self._held = None
        self._keep_info()
        self._ch.abort()
        self._loop.call_soon(self._lose, exc)

    def _keep_info(self) -> None:
        """What get_extra_info answers once the connection is closed (as asyncio's
        transports, which take it when they are made)."""
        try:
            self._extra = {"info": self._ch._conn.info()}
        except _errors.SocketClosed:
            pass

    def _fatal(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self,
                "protocol": self._protocol})
        self._force_close(exc)

    def _lose(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        try:
            self._protocol.connection_lost(exc)  # type: ignore[arg-type]
        finally:
            if self._server is not None:
                self._server._detach(self)

    # -- the rest of asyncio's transport -------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's names: ``peername``, ``sockname``, ``cipher`` (name, protocol,
        None), ``peercert`` (the dict of ``ssl.SSLSocket.getpeercert()``),
        ``ssl_object`` (answers ``version()``, ``cipher()``, ``getpeercert()``,
        ``selected_alpn_protocol()``); and ``sslsock_connection`` (the
        :class:`sslsock.Connection`: ``info()``, ``peer_certificate()``, ...)."""
        conn = self._ch._conn
        if name == "sslsock_connection":
            return conn
        if name in ("socket", "sslcontext", "compression"):
            return default  # no Python socket or ssl module underneath
        kept = self._extra.get("info")
        try:
            if kept is not None:
                if name in ("ssl_object", "peercert"):
                    return default
                i = kept
            elif name == "ssl_object":
                return _TLSObject(conn, self._server_side, self._hostname) \
                    if conn.tls else default
            elif name == "peercert":
                return _TLSObject(conn, self._server_side, self._hostname).getpeercert() \
                    if conn.tls else default
            else:
                i = conn.info()
        except _errors.SocketClosed:
            return default
        if name == "peername":
            return (i.peer_address, i.peer_port)
        if name == "sockname":
            return (i.local_address, i.local_port)
        if name == "cipher":
            return (i.cipher, i.protocol, None) if i.protocol else default
        return default

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<sslsock.transports.Transport {state}>"


class _SocketView:
    """``server.sockets[i]``: the listening address, for code that asks
    ``server.sockets[0].getsockname()``."""

    __slots__ = ("_addr", "family")

    def __init__(self, host: str, port: int) -> None:
        import socket

        self._addr = (host or "0.0.0.0", port)
        self.family = socket.AF_INET6 if ":" in (host or "") else socket.AF_INET

    def getsockname(self) -> tuple[str, int]:
        return self._addr


class Server(asyncio.AbstractServer):
    """What :func:`create_server` returns: asyncio's ``Server`` API (``close``,
    ``wait_closed``, ``serve_forever``, ``is_serving``, ``sockets``, ``close_clients``,
    ``abort_clients``, ``async with``) plus ``port``.  ``close()`` stops accepting; the
    connections already open go on until they close (``close_clients()`` closes them);
    ``wait_closed()`` waits for both."""

    def __init__(self, loop: asyncio.AbstractEventLoop, listener: Listener,
                 factory: ProtocolFactory, *, thread: bool, close_timeout: float,
                 host: str) -> None:
        self._loop = loop
        self.listener = listener
        self.port = listener.port
        self._host = host
        self._factory = factory
        self._close_timeout = close_timeout
        self._transports: set[Transport] = set()
        self._closing = False
        self._serving: Optional[asyncio.Future[None]] = None
        self._done: Optional[asyncio.Future[None]] = None
        hub = Hub(listener, max_bytes=65536, high_water=_NO_LIMIT)
        self._engine = _aio._Engine(loop, hub, thread=thread, read_limit=_NO_LIMIT,
                                    on_accept=self._accepted, on_closed=self._engine_closed)

    def _accepted(self, conn: Connection) -> None:
        ch = _ProtocolChannel(conn, self._engine, self._close_timeout)
        self._engine.adopt(ch)
        if self._closing:
            ch.abort()
            return
        try:
            protocol = self._factory()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            ch.abort()
            self._loop.call_exception_handler({
                "message": "sslsock.transports: the protocol factory failed",
                "exception": exc})
            return
        t = Transport(ch, protocol, self)
        self._transports.add(t)
        try:
            protocol.connection_made(t)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal(exc, "Fatal error: protocol.connection_made() call failed.")

    def _detach(self, t: Transport) -> None:
        self._transports.discard(t)
        if self._closing and not self._transports:
            self._shutdown()

    def _engine_closed(self, e: BaseException) -> None:
        if not self._closing:
            self.close()

    def _shutdown(self) -> None:
        if not self._engine.closed:
            self._engine.close()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- asyncio.Server ----------------------------------------------------------------

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def sockets(self) -> tuple[_SocketView, ...]:
        return () if self._closing else (_SocketView(self._host, self.port),)

    def is_serving(self) -> bool:
        return not self._closing

    async def start_serving(self) -> None:
        """(It serves from the start.)"""

    async def serve_forever(self) -> None:
        if self._closing:
            raise _errors.SocketClosed("the server is closed")
        if self._serving is None:
            self._serving = self._loop.create_future()
        try:
            await asyncio.shield(self._serving)
        except asyncio.CancelledError:
            self.close()
            raise

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._engine.stop_accepting(self.listener)
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)
        if not self._transports:
            self._shutdown()

    def close_clients(self) -> None:
        for t in list(self._transports):
            t.close()

    def abort_clients(self) -> None:
        for t in list(self._transports):
            t.abort()

    async def wait_closed(self) -> None:
        """Until close() was called and every connection is lost."""
        if self._closing and self._engine.closed:
            return
        if self._done is None:
            self._done = self._loop.create_future()
        await asyncio.shield(self._done)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "serving"
        return (f"<sslsock.transports.Server port={self.port} {state} "
                f"connections={len(self._transports)}>")


async def create_server(
    protocol_factory: ProtocolFactory,
    host: Optional[str] = None,
    port: Optional[int] = None,
    *,
    certificate: Any = None,
    options: Mask = DEFAULT,
    tls: bool = True,
    engine_thread: bool = False,
    close_timeout: float = 30.0,
    start_serving: bool = True,
    **listener_args: Any,
) -> Server:
    """Listen on ``host:port`` (``port`` 0 or None: the system picks; see
    ``server.port``) and, for each client once its handshake is done, call
    ``protocol_factory()`` and drive the protocol over a :class:`Transport`.

    ``certificate``, ``options``, ``tls`` and the other keyword arguments (``store``,
    ``password``, ``threads``, ``handshake_timeout``, ``client_ca_pem``, ``reuse_port``,
    ``alpn``, ...) are :class:`sslsock.Listener`'s; ``close_timeout`` bounds how long a
    ``close()`` sends what is queued (asyncio's ``ssl_shutdown_timeout``).
    ``start_serving=False`` is accepted for asyncio's signature; the server serves at
    once either way."""
    if not callable(protocol_factory):
        raise TypeError(f"protocol_factory must be callable, not "
                        f"{type(protocol_factory).__name__}")
    close_s = _ms(close_timeout, "close_timeout") / 1000
    for bad in ("ssl", "sock", "family", "flags", "ssl_handshake_timeout"):
        if bad in listener_args:
            raise _errors.ArgumentError(_asyncio_only(bad))
    loop = asyncio.get_running_loop()
    listener = Listener(port or 0, certificate, options=options, host=host or "", tls=tls,
                        mode=Mode.SocketNoEndTag, **listener_args)
    try:
        return Server(loop, listener, protocol_factory, thread=engine_thread,
                      close_timeout=close_s, host=host or "")
    except BaseException:
        listener.close()
        raise


def _asyncio_only(name: str) -> str:
    hints = {
        "ssl": "pass the certificate (certificate=..., store=...) and options=... "
               "instead of an ssl.SSLContext",
        "sock": "pass host and port: sslsock makes its own socket",
        "family": "pass an IPv6 host (\"::\") for IPv6",
        "flags": "pass host and port: sslsock resolves them itself",
        "ssl_handshake_timeout": "pass handshake_timeout=... (seconds)",
    }
    return f"{name}= is asyncio's, not sslsock's: {hints[name]}"


_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = \
    weakref.WeakKeyDictionary()


async def create_connection(
    protocol_factory: ProtocolFactory,
    host: Optional[str] = None,
    port: Optional[int] = None,
    *,
    options: Mask = DEFAULT,
    timeout: Seconds = 30.0,
    server_hostname: Optional[str] = None,
    client_cert: Any = None,
    close_timeout: float = 30.0,
    engine_thread: bool = False,
    **connect_args: Any,
) -> tuple[Transport, asyncio.BaseProtocol]:
    """Connect to ``host:port``, complete the TLS handshake (in a worker thread, in C),
    then call ``protocol_factory()`` and return ``(transport, protocol)``, as
    ``loop.create_connection`` does.

    ``options``, ``timeout``, ``server_hostname`` and the other keyword arguments
    (``verify``, ``cafile_pem``, ``store``, ``alpn``, ``tls``, ...) are
    :func:`sslsock.connect`'s; ``client_cert`` is its ``client_certificate``."""
    if not callable(protocol_factory):
        raise TypeError(f"protocol_factory must be callable, not "
                        f"{type(protocol_factory).__name__}")
    if host is None or port is None:
        raise _errors.ArgumentError("host and port are required")
    for bad in ("ssl", "sock", "family", "flags", "ssl_handshake_timeout"):
        if bad in connect_args:
            raise _errors.ArgumentError(_asyncio_only(bad))
    close_s = _ms(close_timeout, "close_timeout") / 1000
    loop = asyncio.get_running_loop()

    def work() -> Connection:
        return _connect(host, port, options=options, timeout=timeout,
                        mode=Mode.SocketNoEndTag, server_hostname=server_hostname,
                        client_certificate=client_cert, **connect_args)

    cf = _aio._handshakes().submit(work)
    try:
        conn = await asyncio.wrap_future(cf)
    except asyncio.CancelledError:
        cf.add_done_callback(_aio._discard_connection)
        raise
    try:
        engine = _aio._client_engine(loop, engine_thread, registry=_engines,
                                     high_water=_NO_LIMIT)
        ch = _ProtocolChannel(conn, engine, close_s)
        protocol = protocol_factory()
        t = Transport(ch, protocol, None, server_hostname or host)
        engine.add(ch)
    except BaseException:
        conn.close()
        raise
    try:
        protocol.connection_made(t)
    except BaseException:
        t.abort()
        raise
    return t, protocol
