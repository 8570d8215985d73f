"""The asyncio face: the channel engine under an event loop.

::

    import sslsock.aio as aio

    async def handle(channel):
        async for message in channel:        # whole messages, framed by the mode
            await channel.write(message)     # queued; waits only over the high-water mark

    server = await aio.start_server(handle, 5043, "my-cert")
    async with server:
        await server.serve_forever()

How it works: a server's channels (and, per event loop, the client channels of
:func:`connect`) are held by one channel engine (``src/_native/hub.c``), watched by the
loop through one descriptor: thousands of channels cost the loop one reader.  At each
wake-up one C call (GIL released) reads every ready channel, decrypts it and cuts it into
messages, and returns the whole batch; a second C call puts each message, as ``bytes``,
into its channel's inbox, and the tasks waiting for them resume in the same loop
iteration.  Handshakes run on the listener's C threads (server) or
in a worker thread (client), never on the loop's.  Writes are framed, encrypted and
handed to the kernel in one C call (GIL released); what the socket does not take is queued
and sent by the engine.  With ``engine_thread=True`` the reading and decrypting move to a
C thread of the engine's own, which hands each batch over through an eventfd.

Same options, certificate identifiers, transmission modes and exceptions as the object
face (:mod:`sslsock`).  See docs/asyncio.md.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import weakref
from asyncio import Future as _Future
from asyncio import current_task as _current_task
from collections.abc import Awaitable
from typing import Any, Callable, Optional, Union

from sslsock import _fastio
from sslsock._core import errors as _errors
from sslsock._core.binding import ffi, lib, new_err
from sslsock._core.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_MESSAGE,
    Connection,
    ConnectionInfo,
    Mode,
    Seconds,
    _as_bytes,
    _fast_error,
    _fast_write,
    _ms,
)
from sslsock._core.engine import WRITABLE, Hub
from sslsock._core.errors import raise_err
from sslsock._faces.objects import Listener
from sslsock._faces.objects import connect as _connect
from sslsock._tls.options import DEFAULT, Mask

__all__ = ["Channel", "Server", "start_server", "connect", "DEFAULT_HIGH_WATER"]

log = logging.getLogger("sslsock")

_BATCH = 256
_resume = _fastio.resume
_TIMEOUT = lib.SS_E_TIMEOUT
_PEER_CLOSED = lib.SS_E_PEER_CLOSED

Handler = Callable[["Channel"], Awaitable[None]]

#: A channel's end when the peer closed cleanly (the exception is only made when asked).
_PEER_CLOSED_MARK = _errors.PeerClosed("the peer closed the connection")


def _resume_readers(loop: asyncio.AbstractEventLoop, fed: list[Channel]) -> None:
    """After a batch: the channels it fed that have something to do.  A channel over its
    read limit is paused; a protocol channel (sslsock.transports) gets its messages
    through its own _feed; a task waiting to read is resumed now: each waiter's done
    callbacks (the waiting task's step) run here, in this iteration of the loop, instead
    of one Handle each at the loop's next iteration.  The task sees what it would see a
    moment later, only sooner: it runs in its own context, as its own current task.

    An ``async for`` waits on a future that carries the message itself: it is handed
    over only here, with the task's step run at once, so no cancellation can come between
    the two and lose it.  With a task running already (never the case from the loop's
    reader) this is done at the loop's next iteration instead."""
    if _current_task(loop) is not None:
        loop.call_soon(_resume_readers, loop, fed)
        return
    # The common case in C (an `async for` waiting, handed its next message); the rest,
    # and what a raising step left behind, here.
    rest: list[Channel] = []
    try:
        _resume(fed, rest)
    except BaseException:  # (KeyboardInterrupt, SystemExit from a task's step)
        loop.call_soon(_resume_readers, loop, rest)
        raise
    i = 0
    try:
        for i in range(len(rest)):  # noqa: B007 (i is read when a step raises)
            ch = rest[i]
            ch._unlist()
            if not ch._direct:
                while ch._count and not ch._closing:
                    ch._feed(ch._take())
                continue
            if ch._unread > ch._limit and not ch._paused:
                ch._pause(True)  # a task that does not read: stop reading its peer
            w = ch._next
            if w is not None:
                ch._hand_next(w)
                continue
            w = ch._waiter
            if w is None or w.done() or not ch._count:
                continue  # (woken already this batch, or not waiting any more)
            _settle_now(w, None)
    except BaseException:
        loop.call_soon(_resume_readers, loop, rest[i + 1:])
        raise


def _settle_now(w: asyncio.Future[Any], result: Any,
                exc: Optional[BaseException] = None) -> None:
    """Set ``w``'s result (or exception) and run its done callbacks here and now (a task's
    step runs in its own context, as the loop would run it).  Only where no task runs."""
    callbacks = getattr(w, "_callbacks", None)
    if callbacks:
        for cb, _ctx in callbacks:
            w.remove_done_callback(cb)
    if exc is None:
        w.set_result(result)
    else:
        w.set_exception(exc)
    if callbacks:
        for cb, ctx in callbacks:
            ctx.run(cb, w)


class _Engine:
    """A hub on an event loop: one reader (the pump's eventfd, or the hub's epoll
    descriptor when ``thread=False``), a batch per wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hub: Hub, *, thread: bool,
                 read_limit: int = DEFAULT_HIGH_WATER,
                 on_accept: Optional[Callable[[Connection], None]] = None,
                 on_closed: Optional[Callable[[BaseException], None]] = None) -> None:
        self.loop = loop
        self.hub = hub
        self.channels: dict[int, Channel] = {}
        self._on_accept = on_accept
        self._on_closed = on_closed
        #: unread bytes a channel may hold before the engine stops reading its peer; and
        #: the engine's high-water mark for writes: a write over it waits until the queue
        #: is down to half of it (the engine says when)
        self.read_limit = read_limit
        self.write_low = read_limit // 2
        self._err = new_err()
        self._evp = ffi.new("ss_event **")
        self.closed = False
        self._hub_ptr = hub._g.enter()  # held until close(): the hub outlives the pump
        self._pump: Any = None
        if thread:
            out = ffi.new("ss_pump **")
            rc = lib.ss_pump_new(self._hub_ptr, _BATCH, out, self._err)
            if rc != 0:
                hub._g.leave()
                raise_err(rc, self._err)
            self._pump = out[0]
            self.fd = int(lib.ss_pump_fd(self._pump))
        else:
            self._events = ffi.new("ss_event[]", _BATCH)
            self.fd = int(lib.ss_hub_fd(self._hub_ptr))
        loop.add_reader(self.fd, self._ready)

    # -- the loop's reader -----------------------------------------------------------

    def _ready(self) -> None:
        if self.closed:
            return
        pump = self._pump
        fed: list[Channel] = []
        if pump is not None:
            n = lib.ss_pump_take(pump, self._evp, self._err)
            if n > 0:
                try:
                    later = self.hub.feed(self._evp[0], n, self.channels, fed, self._accepted)
                finally:
                    lib.ss_pump_release(pump)  # (copied out: the thread may poll again)
                self._dispatch(later, fed)
        else:
            n = lib.ss_hub_poll(self._hub_ptr, 0, self._events, _BATCH, self._err)
            if n == _TIMEOUT:
                return
            if n > 0:
                self._dispatch(self.hub.feed(self._events, n, self.channels, fed,
                                             self._accepted), fed)
        if n < 0:
            try:
                raise_err(n, self._err)
            except _errors.Error as e:
                self._engine_ended(e)

    def _accepted(self, conn: Connection) -> None:
        # (in the middle of a batch: the channel must exist before its first message)
        if self._on_accept is None:
            conn.close()
        else:
            self._on_accept(conn)

    def _dispatch(self, later: list[tuple[int, Connection, int]], fed: list[Channel]) -> None:
        """After a batch is copied out (hub.feed): its messages first (the tasks waiting
        for them resume, each once), then its channels that ended or drained their
        queue."""
        if fed:
            _resume_readers(self.loop, fed)
        channels = self.channels
        for kind, conn, code in later:
            if kind == WRITABLE:
                ch = channels.get(conn._hub_id)
                if ch is not None:
                    ch._drained()
            else:  # ENDED: out of the hub already
                ch = channels.pop(conn._hub_id, None)
                if ch is not None:
                    ch._ended(code)

    def stop_accepting(self, listener: Listener) -> None:
        """A server's close: the hub stops taking clients first (a hub that saw its
        listener closed would stop serving everyone), then the listener is let go now (its
        threads stop and its socket closes: new clients are refused), not when the hub
        goes.  The channels already open are served on."""
        if not self.closed:
            lib.ss_hub_stop_accepting(self._hub_ptr)
        listener.close()
        if not self.closed:
            release = self.hub._g.take_on_free()
            if release is not None:
                release()

    def _engine_ended(self, e: BaseException) -> None:
        for ch in list(self.channels.values()):
            ch._fail(e)
        if self._on_closed is not None:
            self._on_closed(e)

    # -- channels --------------------------------------------------------------------

    def add(self, ch: Channel) -> None:
        self.hub.add(ch._conn)
        self.channels[ch._conn._hub_id] = ch

    def adopt(self, ch: Channel) -> None:
        """A channel the hub accepted (already in it)."""
        self.channels[ch._conn._hub_id] = ch

    def remove(self, ch: Channel) -> None:
        """The hub stops serving ch (its connection stays open)."""
        self.channels.pop(ch._conn._hub_id, None)
        if not self.closed:
            self.hub.discard(ch._conn)

    def close(self) -> None:
        """Stop the engine: the pump's thread is joined, the loop's reader removed; the
        channels still served end with SocketClosed."""
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.fd)
        except Exception:  # the loop is closed already
            pass
        if self._pump is not None:
            lib.ss_pump_free(self._pump)
            self._pump = None
        chans = list(self.channels.values())
        self.channels.clear()
        err = _errors.SocketClosed("the channel engine was closed")
        for ch in chans:
            ch._fail(err)
        self.hub._g.leave()
        self.hub.close()


class Channel(_fastio.Inbox):
    """One TLS (or plain TCP) connection served by the engine, asyncio style.

    ``await channel.read()`` returns the next whole message (framed by the transmission
    mode); ``async for message in channel`` reads until the peer closes.  ``await
    channel.write(data)`` queues one message.  ``await channel.close()`` (or ``async
    with channel``) sends close_notify.  Reads cancelled or timed out lose no message;
    a write queues its whole message or nothing.
    """

    # (the inbox, its size and limit, and the futures a reader waits on are the C base's:
    # the engine's batches are fed into it in C, see src/_native/fastio_inbox.c)
    __slots__ = ("_conn", "_engine", "_end", "_closing", "_closed", "_close_timeout",
                 "_loop", "_ptr", "_err", "_drain", "__weakref__")

    def __init__(self, conn: Connection, engine: _Engine, close_timeout: float) -> None:
        self._conn = conn
        self._engine = engine
        self._end: Optional[BaseException] = None
        self._closing = False
        self._closed: Optional[asyncio.Future[None]] = None
        self._close_timeout = close_timeout
        self._loop = engine.loop
        # The connection is only freed by close() on the loop's thread, after _closing is
        # set: until then its pointer is used without the guard.
        self._ptr = conn._g.ptr
        self._err = engine._err
        self._limit = engine.read_limit  # (over it, the engine stops reading the peer)
        if type(self)._feed is not Channel._feed:
            self._direct = False  # the engine calls this class's _feed for each message
        #: resolved when the engine reports the write queue drained (SS_EV_WRITABLE), or
        #: the channel ends; made only while a write or a close waits for it
        self._drain: Optional[asyncio.Future[None]] = None

    # -- fed by the engine -----------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """One message (the engine feeds its batches in C, _fastio.feed; this is the same
        for a message from Python)."""
        if self._push(data):
            self._pause(True)  # a task that does not read: stop reading its peer

    def _ended(self, code: int) -> None:
        """The engine reported the channel's end (every message before it was handed out)
        and let it go; ``code`` says how.  A clean close is only noted (the exception is
        made if a read asks for it); another end is read once from the connection, which
        tells why.  An ``async for`` waiting on it ends now (called after a batch, where no
        task runs)."""
        if code == _PEER_CLOSED:
            e: BaseException = _PEER_CLOSED_MARK
        else:
            try:
                self._conn.read(0, 65536)
                e = _errors.PeerClosed("the peer closed the connection")
            except _errors.SocketTimeout:
                e = _errors.PeerClosed("the peer closed the connection")
            except _errors.PeerClosed:
                e = _PEER_CLOSED_MARK
            except _errors.Error as exc:
                e = exc
        n = self._next
        if n is not None and self._end is None and not self._count and \
                _current_task(self._loop) is None:
            self._end = e
            self._next = None
            if not n.done():
                try:
                    self._cannot_wait(True)
                except BaseException as why:  # (StopAsyncIteration, or how it ended)
                    _settle_now(n, None, why)
        self._fail(e)

    def _fail(self, e: BaseException) -> None:
        if self._end is None:
            self._end = e
        self._wake()
        self._drained()

    def _drained(self) -> None:
        d = self._drain
        if d is not None:
            self._drain = None
            if not d.done():
                d.set_result(None)

    async def _until_drained(self, below: int) -> None:
        """Wait until at most ``below`` bytes are queued: the engine reports it (one
        SS_EV_WRITABLE event, asked for here), or the channel ends or closes.  Raises how
        it ended when the queue can no longer drain."""
        while True:
            ptr = self._conn._g.ptr
            eng = self._engine
            if self._closing or ptr is None or eng.closed:
                raise _errors.SocketClosed("the channel is closed")
            rc = lib.ss_hub_want_drain(eng._hub_ptr, ptr, below)
            if rc == 1:
                return
            if rc < 0:  # out of the engine: nobody sends its queue any more
                end = self._end
                if end is None or end is _PEER_CLOSED_MARK:
                    end = _errors.PeerClosed("the peer closed the connection with "
                                             "writes still queued")
                raise end
            d = self._drain
            if d is None:
                d = self._drain = self._loop.create_future()
            # shielded: one waiter cancelled does not cancel the others' future
            await asyncio.shield(d)

    def _pause(self, paused: bool) -> None:
        self._paused = paused
        ptr = self._conn._g.ptr
        eng = self._engine
        if ptr is not None and not eng.closed and not self._closing:
            lib.ss_hub_pause(eng._hub_ptr, ptr, int(paused))

    # -- reading ---------------------------------------------------------------------

    async def read(self) -> bytes:
        """The next message.  Raises PeerClosed once the peer has closed and every message
        before that was read, another ConnectionFailure if the connection broke, or
        SocketClosed after close().  Cancel it (or use ``asyncio.timeout``) to stop
        waiting: no message is lost."""
        while True:
            if self._count:
                return self._take()
            n = self._next
            if self._closing or self._end is not None or self._waiter is not None or \
                    (n is not None and not n.done()):
                self._cannot_wait(False)
            # The future only says "look again": the message itself stays in the inbox
            # until a read returns it, so a cancellation cannot lose it.  (Awaited here,
            # not in a coroutine of its own: a waiting channel holds one frame less.)
            w = self._waiter = _Future(loop=self._loop)
            try:
                await w
            finally:
                self._waiter = None

    def _cannot_wait(self, iterating: bool) -> None:
        """Why a read cannot wait for a message: raise how the channel ended, or that
        another task reads it."""
        if self._closing:
            raise _errors.SocketClosed("the channel is closed")
        end = self._end
        if end is not None:
            if end is _PEER_CLOSED_MARK or isinstance(end, _errors.PeerClosed):
                if iterating:
                    raise StopAsyncIteration
                raise _errors.PeerClosed("the peer closed the connection")
            raise end
        raise _errors.ProgrammingError(
            "another task is already reading this channel: read it from one task "
            "(or hand the messages on through an asyncio.Queue)")

    def __aiter__(self) -> Channel:
        return self

    def __anext__(self) -> asyncio.Future[bytes]:
        # The hot path: no coroutine per message.  A message in the inbox comes in a
        # future already done; otherwise the future is the channel's, and the engine sets
        # it to the next message (or how the channel ended) when it comes.
        if self._count:
            f: asyncio.Future[bytes] = _Future(loop=self._loop)
            f.set_result(self._take())
            return f
        w = self._next
        if self._closing or self._end is not None or self._waiter is not None or \
                (w is not None and not w.done()):
            self._cannot_wait(True)
        w = self._next = _Future(loop=self._loop)
        return w

    def _hand_next(self, w: asyncio.Future[bytes]) -> None:
        """Settle the future an ``async for`` waits on: the next message (handed over with
        the task's step run at once: see _resume_readers), or how the channel ended.  No
        task may be running."""
        if w.done():  # cancelled: the message stays for the next read
            self._next = None
        elif self._count:
            self._next = None
            _settle_now(w, self._take())
        elif self._closing or self._end is not None:
            self._next = None
            try:
                self._cannot_wait(True)
            except BaseException as e:  # (StopAsyncIteration, or how it ended)
                w.set_exception(e)

    # -- writing ---------------------------------------------------------------------

    async def write(self, data: Union[bytes, bytearray, memoryview, str]) -> None:
        """Send one message, framed by the mode (str as UTF-8).  It is framed, encrypted
        and handed to the kernel now as far as the socket takes it; the rest is queued and
        sent by the engine.  Waits only while more than the high-water mark is queued for
        this channel (a peer that does not read).  Cancelled while waiting, nothing of
        the message was queued."""
        if data.__class__ is not bytes:
            data = _as_bytes(data, "message")
        while True:
            if self._closing:
                raise _errors.SocketClosed("the channel is closed")
            # the one write call of every face (queued: the engine sends what the socket
            # does not take now); None when queued whole
            rc = _fast_write(self._conn._g, data, 0, True)
            if rc is None:
                return
            if rc != _TIMEOUT:
                _fast_error(rc)
            # over the high-water mark: nothing of this message is queued yet; the engine
            # says when the queue is down to the low-water mark
            await self._until_drained(self._engine.write_low)

    def queued(self) -> int:
        """Bytes written but not yet taken by the peer's socket."""
        try:
            with self._conn._g as ptr:
                return int(lib.ss_conn_queued(ptr))
        except _errors.SocketClosed:
            return 0

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        """Send what is queued (waiting at most the close time-out), then close_notify,
        and close.  Idempotent; a read waiting meanwhile raises SocketClosed."""
        if self._closing:
            if self._closed is not None:
                await asyncio.shield(self._closed)
            return
        self._closing = True
        self._wake()
        ptr = self._conn._g.ptr
        if self._end is not None or ptr is None or not lib.ss_conn_queued(ptr):
            self._finish_close()  # nothing to send first (the usual case)
            return
        self._closed = self._engine.loop.create_future()
        try:
            await asyncio.wait_for(self._close_drain(ptr), self._close_timeout)
        except asyncio.TimeoutError:
            pass  # what is left is dropped: close_notify is tried all the same
        finally:
            self._finish_close()

    async def _close_drain(self, ptr: Any) -> None:
        """Until the queue is empty, the channel ends or its engine stops: each wake-up
        is the engine's SS_EV_WRITABLE (or the end), never a timer."""
        eng = self._engine
        while self._end is None and not eng.closed:
            if lib.ss_hub_want_drain(eng._hub_ptr, ptr, 0) != 0:
                return  # drained, or out of the engine
            d = self._drain
            if d is None:
                d = self._drain = self._loop.create_future()
            await asyncio.shield(d)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        n = self._next
        if n is not None and not n.done():  # (a message is handed over where no task runs)
            try:
                self._loop.call_soon(self._hand_pending)
            except RuntimeError:  # the loop is closed: nobody can be waiting any more
                self._next = None

    def _hand_pending(self) -> None:
        w = self._next
        if w is not None:
            self._hand_next(w)

    def _finish_close(self) -> None:
        conn = self._conn
        self._engine.remove(self)
        ptr = conn._g.ptr
        if ptr is not None:
            lib.ss_conn_close(ptr, 0)  # close_notify, without waiting on the peer
        conn.close()  # (the batches are the hub's memory: nothing points into it)
        fut = self._closed
        if fut is not None and not fut.done():
            fut.set_result(None)
        self._drained()  # a write waiting for room raises SocketClosed
        on_close = getattr(self._engine, "channel_closed", None)
        if on_close is not None:
            on_close(self)

    def abort(self) -> None:
        """Close now, without sending what is queued (close_notify is still tried)."""
        if not self._closing:
            self._closing = True
            self._wake()
            self._finish_close()

    @property
    def closed(self) -> bool:
        return self._closing

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- information (SocketClientInfo) ------------------------------------------------

    def info(self) -> ConnectionInfo:
        """Peer and local address and port, protocol, cipher, state, mode, byte counts."""
        return self._conn.info()

    @property
    def peer_address(self) -> str:
        return self.info().peer_address

    @property
    def peer_port(self) -> int:
        return self.info().peer_port

    @property
    def protocol(self) -> str:
        return self.info().protocol

    @property
    def cipher(self) -> str:
        return self.info().cipher

    @property
    def mode(self) -> Mode:
        return self._conn.mode

    def peer_certificate(self) -> Any:
        """The peer's certificate (``cryptography.x509.Certificate``) or None."""
        return self._conn.peer_certificate()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's names: ``peername``, ``sockname``, ``cipher`` (name, protocol),
        ``peercert`` (a ``cryptography`` certificate), ``sslsock_info``."""
        if name == "peercert":
            return self.peer_certificate()
        i = self.info()
        return {"peername": (i.peer_address, i.peer_port),
                "sockname": (i.local_address, i.local_port),
                "cipher": (i.cipher, i.protocol) if i.protocol else None,
                "sslsock_info": i}.get(name, default)

    def __repr__(self) -> str:
        if self._closing:
            return "<sslsock.aio.Channel closed>"
        try:
            i = self.info()
        except _errors.SocketClosed:
            return "<sslsock.aio.Channel closed>"
        return (f"<sslsock.aio.Channel {i.peer_address}:{i.peer_port} "
                f"{i.protocol or 'TCP'} mode={i.mode.name}>")


class Server:
    """A listening server from :func:`start_server`: a handler task per accepted channel.

    ``close()`` stops accepting (the channels already open go on); ``wait_closed()``
    waits for their handlers to finish.  ``async with server`` does both on the way out.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, listener: Listener, handle: Handler,
                 *, thread: bool, max_bytes: int, high_water: int,
                 close_timeout: float) -> None:
        self._loop = loop
        self.listener = listener
        self.port = listener.port
        self._handle = handle
        self._close_timeout = close_timeout
        #: the handlers' tasks (and closes still sending) and their channels
        self._tasks: dict[asyncio.Future[Any], Optional[Channel]] = {}
        self._on_done = self._task_done
        self._done_context = contextvars.Context()
        self._serving: Optional[asyncio.Future[None]] = None
        self._closing = False
        self._all_done: Optional[asyncio.Future[None]] = None
        hub = Hub(listener, max_bytes=max_bytes, high_water=high_water)
        self._engine = _Engine(loop, hub, thread=thread, read_limit=high_water,
                               on_accept=self._accepted,
                               on_closed=self._engine_closed)

    def _accepted(self, conn: Connection) -> None:
        ch = Channel(conn, self._engine, self._close_timeout)
        self._engine.adopt(ch)
        if self._closing:
            ch.abort()
            return
        # The handler is the task's coroutine itself (no wrapper: an idle channel holds
        # one frame less); what a wrapper's try/finally did, _task_done does.
        try:
            task = asyncio.ensure_future(self._handle(ch), loop=self._loop)
        except Exception as exc:  # not an async function: said once, at its first client
            ch.abort()
            self._loop.call_exception_handler({
                "message": "sslsock.aio: the channel handler did not return an awaitable",
                "exception": exc})
            return
        self._tasks[task] = ch
        # (one bound method and one context for every task: none made per client)
        task.add_done_callback(self._on_done, context=self._done_context)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        ch = self._tasks.pop(task, None)
        if ch is not None:
            exc = None if task.cancelled() else task.exception()
            if isinstance(exc, _errors.ConnectionFailure):
                log.debug("sslsock.aio: channel %r ended: %s", ch, exc)
            elif exc is not None and not isinstance(exc, _errors.SocketClosed):
                self._loop.call_exception_handler({
                    "message": "sslsock.aio: unhandled exception in a channel handler",
                    "exception": exc})
            # the handler is done: so is its channel (sending its queue first, in a
            # task of its own, waited for by wait_closed)
            if not ch._closing:
                ptr = ch._conn._g.ptr
                if ch._end is None and ptr is not None and lib.ss_conn_queued(ptr):
                    closing = self._loop.create_task(ch.close())
                    self._tasks[closing] = None
                    closing.add_done_callback(self._task_done)
                else:
                    ch.abort()
        if self._closing and not self._tasks:
            self._shutdown_engine()

    def _engine_closed(self, e: BaseException) -> None:
        if not self._closing:
            self.close()

    def is_serving(self) -> bool:
        return not self._closing

    async def serve_forever(self) -> None:
        """Serve until close() (or until cancelled, which closes the server)."""
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
        """Stop accepting new clients; the channels already open are served until their
        handlers return.  Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._engine.stop_accepting(self.listener)
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)
        if not self._tasks:
            self._shutdown_engine()

    def _shutdown_engine(self) -> None:
        if not self._engine.closed:
            self._engine.close()
        if self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until close() was called and every handler has returned."""
        if self._closing and self._engine.closed:
            return
        if self._all_done is None:
            self._all_done = self._loop.create_future()
        await asyncio.shield(self._all_done)

    def close_channels(self) -> None:
        """Cancel every handler (their channels close as they end)."""
        for t in list(self._tasks):
            t.cancel()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "serving"
        return f"<sslsock.aio.Server port={self.port} {state} channels={len(self._tasks)}>"


def _check_size(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _errors.ArgumentError(f"{what} must be a positive number of bytes, got {value!r}")
    return value


async def start_server(
    handle: Handler,
    port: int = 0,
    certificate: Any = None,
    *,
    options: Mask = DEFAULT,
    host: Optional[str] = None,
    mode: Mode = Mode.SocketSizeAtBeginning,
    end_tag: bytes = b"<EOF>",
    max_message: int = DEFAULT_MAX_MESSAGE,
    max_bytes: int = 65536,
    high_water: int = DEFAULT_HIGH_WATER,
    close_timeout: float = 1.0,
    engine_thread: bool = False,
    tls: bool = True,
    **listener_args: Any,
) -> Server:
    """Listen on ``port`` (0: the system picks; see ``server.port``) and run
    ``await handle(channel)`` in a task of its own for each client, once its handshake is
    done.  The channel is closed when the handler returns.

    ``certificate``, ``options``, ``mode``, ``end_tag``, ``max_message`` and the other
    keyword arguments (``store``, ``password``, ``threads``, ``handshake_timeout``,
    ``client_ca_pem``, ``reuse_port``, ...) are :class:`sslsock.Listener`'s.
    ``max_bytes`` caps one message of SocketNoEndTag mode; ``high_water`` is what a channel
    may have queued before its writes wait.  ``engine_thread=True`` reads and decrypts on
    a C thread of the engine's own instead of in a C call from the loop's thread (the GIL
    is released either way; see docs/asyncio.md for what each costs)."""
    if not callable(handle):
        raise TypeError(f"handle must be an async function taking a Channel, not "
                        f"{type(handle).__name__}")
    _check_size(max_bytes, "max_bytes")
    _check_size(high_water, "high_water")
    close_s = _ms(close_timeout, "close_timeout") / 1000
    loop = asyncio.get_running_loop()
    listener = Listener(port, certificate, options=options, host=host or "", tls=tls,
                        mode=mode, end_tag=end_tag, max_message=max_message, **listener_args)
    try:
        return Server(loop, listener, handle, thread=engine_thread, max_bytes=max_bytes,
                      high_water=high_water, close_timeout=close_s)
    except BaseException:
        listener.close()
        raise


class _ClientEngine(_Engine):
    """The engine serving a loop's client channels; it stops with its last channel."""

    registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientEngine]

    def channel_closed(self, ch: Channel) -> None:
        if not self.channels and not self.closed:
            if self.registry.get(self.loop) is self:
                del self.registry[self.loop]
            self.close()


_client_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientEngine] = \
    weakref.WeakKeyDictionary()


def _client_engine(loop: asyncio.AbstractEventLoop, thread: bool, *,
                   registry: Optional[weakref.WeakKeyDictionary[
                       asyncio.AbstractEventLoop, _ClientEngine]] = None,
                   high_water: int = DEFAULT_HIGH_WATER) -> _ClientEngine:
    """The loop's client engine of ``registry`` (message channels by default; the
    transports keep theirs apart, for their own high-water mark), made at first use."""
    reg = _client_engines if registry is None else registry
    eng = reg.get(loop)
    if eng is None or eng.closed:
        eng = _ClientEngine(loop, Hub(None, high_water=high_water), thread=thread,
                            read_limit=high_water)
        eng.registry = reg
        reg[loop] = eng
    return eng


_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None


def _discard_connection(f: concurrent.futures.Future[Connection]) -> None:
    """A handshake whose caller was cancelled: close what it made."""
    if not f.cancelled() and f.exception() is None:
        f.result().close()


def _handshakes() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="sslsock-aio-connect")
    return _executor


async def connect(
    host: str,
    port: int,
    *,
    options: Mask = DEFAULT,
    timeout: Seconds = 30.0,
    mode: Mode = Mode.SocketSizeAtBeginning,
    end_tag: bytes = b"<EOF>",
    client_cert: Any = None,
    close_timeout: float = 1.0,
    engine_thread: bool = False,
    **connect_args: Any,
) -> Channel:
    """Connect to ``host:port`` and complete the TLS handshake (in a worker thread, in C,
    without the GIL), then serve the channel from this loop's client engine.

    ``options``, ``timeout``, ``mode``, ``end_tag`` and the other keyword arguments
    (``verify``, ``server_hostname``, ``store``, ``password``, ``cafile_pem``,
    ``max_message``, ``resume``, ``tls``) are :func:`sslsock.connect`'s; ``client_cert`` is
    its ``client_certificate`` (a store identifier for mutual TLS).  Cancelled during the
    handshake, the connection is closed as soon as the handshake ends.  The loop's client
    engine is made by the first connect (``engine_thread`` then says how it polls) and
    stops with its last channel."""
    close_s = _ms(close_timeout, "close_timeout") / 1000
    loop = asyncio.get_running_loop()

    def work() -> Connection:
        return _connect(host, port, options=options, timeout=timeout, mode=mode,
                        end_tag=end_tag, client_certificate=client_cert, **connect_args)

    cf = _handshakes().submit(work)
    try:
        conn = await asyncio.wrap_future(cf)
    except asyncio.CancelledError:
        cf.add_done_callback(_discard_connection)
        raise
    try:
        engine = _client_engine(loop, engine_thread)
        ch = Channel(conn, engine, close_s)
        engine.add(ch)
    except BaseException:
        conn.close()
        raise
    return ch
