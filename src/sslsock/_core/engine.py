"""The channel engine's Python side, and its one driver: one thread (or a pool, or an
event loop) serves many channels.

A :class:`Hub` wraps the C hub (``src/_native/hub.c``): its channels stay in C, which
reads, decrypts and deframes whatever arrives, and each poll returns a whole batch of
events in one C call (the GIL is released while it waits and works).  :meth:`Hub.events`
is the one place where a batch becomes Python objects; :meth:`Hub.wait_ready` and
:meth:`Hub.read` deliver batches to threads (``SocketWaitForMessage``,
``Listener.messages()``, and a read of any channel the hub serves); ``sslsock.aio``
dispatches the same events on its event loop.

A listener is passed in as any object with the object face's ``Listener`` attributes the
hub uses (``_g``, ``_conn_args``, ``tls``): this module sits below the faces.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from threading import get_ident as _get_ident
from time import monotonic as _monotonic
from typing import Any, Callable, Optional

from sslsock import _fastio
from sslsock._core import errors as _errors
from sslsock._core.binding import ffi, lib, new_err
from sslsock._core.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_MESSAGE,
    ENDED_MARK,
    Connection,
    Mode,
    _Guard,
    _sliced,
)
from sslsock._core.errors import raise_err

#: Events per batch: a poll returns at most this many (messages, new and ended channels).
DEFAULT_BATCH = 256

_feed = _fastio.feed

MESSAGE, ACCEPTED, ENDED = lib.SS_EV_MESSAGE, lib.SS_EV_ACCEPTED, lib.SS_EV_ENDED
#: A channel's write queue drained as its consumer asked (``ss_hub_want_drain``).
WRITABLE = lib.SS_EV_WRITABLE


class Hub:
    """A set of channels served by one consumer (see the module docstring).

    ``listener``: the hub accepts that listener's clients itself (they get the listener's
    transmission mode).  ``max_bytes``: the largest message handed out at once in
    ``SocketNoEndTag`` mode.  ``high_water``: writes to a channel of the hub are queued and
    sent by the hub as the socket takes them; a write waits only while more than this many
    bytes are queued for that channel.  Channels from elsewhere join with :meth:`add`.
    """

    def __init__(self, listener: Any = None, *, max_bytes: int = 65536,
                 batch: int = DEFAULT_BATCH, high_water: int = DEFAULT_HIGH_WATER,
                 on_accept: Optional[Callable[[Connection], None]] = None) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise _errors.ArgumentError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if isinstance(high_water, bool) or not isinstance(high_water, int) or high_water < 1:
            raise _errors.ArgumentError(
                f"high_water must be a positive number of bytes, got {high_water!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
            raise _errors.ArgumentError(f"batch must be an integer >= 2, got {batch!r}")
        self.listener = listener
        args: dict[str, Any] = dict(listener._conn_args) if listener is not None else {}
        self._mode = Mode(args.get("mode", Mode.SocketSizeAtBeginning))
        self._end_tag: bytes = args.get("end_tag", b"<EOF>")
        self._max_message: int = args.get("max_message", DEFAULT_MAX_MESSAGE)
        self._tls = listener.tls if listener is not None else True
        out = ffi.new("ss_hub **")
        err = new_err()
        # The hub uses the listener until it is freed itself: the listener stays entered
        # (closing it only shuts it down, which ends the hub's polls) until then.
        lptr = listener._g.enter() if listener is not None else ffi.NULL
        rc = lib.ss_hub_new(lptr, int(self._mode), self._end_tag, len(self._end_tag),
                            self._max_message, max_bytes, out, err)
        if rc != 0:
            if listener is not None:
                listener._g.leave()
            raise_err(rc, err)
        self._g = _Guard(ffi.gc(out[0], lib.ss_hub_free), lib.ss_hub_shutdown,
                         "the channel engine",
                         on_free=listener._g.leave if listener is not None else None)
        lib.ss_hub_set_high_water(out[0], high_water)
        self._events = ffi.new("ss_event[]", batch)
        self._batch = batch
        self._err = new_err()
        self._poll_lock = threading.Lock()
        self.channels: dict[int, Connection] = {}
        self._on_accept = on_accept  # a new channel, before any of its messages
        self._cv = threading.Condition(threading.RLock())  # (a close from on_accept)
        self._polling = False
        self._ready: collections.deque[Connection] = collections.deque()
        self._busy: set[Connection] = set()
        self._serving: dict[int, Connection] = {}  # thread ident -> its channel
        self._reading: set[Connection] = set()  # channels a thread waits to read

    def fileno(self) -> int:
        """A descriptor that is readable whenever :meth:`poll` would return events."""
        with self._g as ptr:
            return int(lib.ss_hub_fd(ptr))

    def add(self, conn: Connection) -> None:
        """Serve ``conn`` from this hub: its messages come through :meth:`poll`."""
        with self._g as ptr, conn._g as cptr:
            idp = ffi.new("uint64_t *")
            rc = lib.ss_hub_add(ptr, cptr, idp, self._err)
            if rc != 0:
                raise_err(rc, self._err)
        conn._hub = self
        conn._hub_id = int(idp[0])
        self.channels[conn._hub_id] = conn

    def discard(self, conn: Connection) -> None:
        """Stop serving ``conn`` (it stays open, and is read directly again once the
        messages the engine had read for it are taken)."""
        if conn._hub is not self:
            return
        self.channels.pop(conn._hub_id, None)
        conn._hub = None
        try:
            with self._g as ptr, conn._g as cptr:
                lib.ss_hub_remove(ptr, cptr)
        except _errors.SocketClosed:
            pass  # closed already: freeing it left the hub
        with self._cv:
            self._cv.notify_all()  # a thread reading it through the hub reads it itself

    def poll(self, timeout_ms: int) -> list[tuple[int, Connection, bytes]]:
        """Wait at most ``timeout_ms`` (-1: no limit) and return a batch of
        ``(kind, connection, message)``: MESSAGE with its bytes, ACCEPTED (a new channel,
        already served), ENDED (``b""``; the connection is out of the hub, its next read
        tells why) and WRITABLE (``b""``; its queue drained, for a consumer that asked with
        ``ss_hub_want_drain``).  An empty list means the time-out passed.

        The raw batch, for one consumer that dispatches it itself; threads sharing the hub
        use :meth:`wait_ready` and :meth:`read`, which deliver batches into the channels'
        inboxes."""
        with self._g as ptr, self._poll_lock:
            ev, batch, err = self._events, self._batch, self._err
            n = _sliced(lambda t: lib.ss_hub_poll(ptr, t, ev, batch, err), timeout_ms)
            if n == lib.SS_E_TIMEOUT:
                return []
            if n < 0:
                raise_err(n, err)
            return self.events(ev, n)

    def events(self, ev: Any, n: int) -> list[tuple[int, Connection, bytes]]:
        """The one place where a batch of the C hub (``n`` events at ``ev``, from
        ss_hub_poll or the pump) becomes Python objects: every message is copied into
        bytes before the caller runs any code (the batch's memory is the hub's, reused by
        its next poll); a new channel becomes a Connection of this hub; an ended channel
        leaves the hub (its next read, directly, tells how it ended).  :meth:`feed` is the
        same for a consumer whose channels keep their messages in C inboxes."""
        channels = self.channels
        unpack = ffi.unpack
        out: list[tuple[int, Connection, bytes]] = []
        append = out.append
        for i in range(n):
            e = ev[i]
            if e.kind == MESSAGE:
                conn = channels.get(e.id)
                if conn is not None:  # (None: closed or discarded during the poll)
                    append((MESSAGE, conn, unpack(e.data, e.len) if e.len else b""))
            else:
                item = self._event(e)
                if item is not None:
                    append(item)
        return out

    def feed(self, ev: Any, n: int, inboxes: dict[int, Any], fed: list[Any],
             on_accept: Callable[[Connection], None]) -> list[tuple[int, Connection, int]]:
        """:meth:`events` for sslsock.aio, whose channels are inboxes in C
        (``sslsock._fastio.Inbox``, keyed by hub id in ``inboxes``): the messages go into
        them in one C call per run of messages (``_fastio.feed``), which lists in ``fed``
        each channel that has a reader waiting (or went over its read limit).  A new
        channel goes to ``on_accept`` at once, before its messages in the same batch (it
        must run no user code); the other events are returned, for after the batch, as
        ``(kind, connection, code)`` (an ENDED's code: SS_E_PEER_CLOSED or what broke it)."""
        addr = int(ffi.cast("uintptr_t", ev))
        later: list[tuple[int, Connection, int]] = []
        i = 0
        while i < n:
            i = _feed(addr, i, n, inboxes, fed)
            if i < n:
                item = self._event(ev[i])
                if item is not None:
                    if item[0] == ACCEPTED:
                        on_accept(item[1])
                    else:
                        later.append((item[0], item[1], int(ev[i].code)))
                i += 1
        return later

    def _event(self, e: Any) -> Optional[tuple[int, Connection, bytes]]:
        """An event of the batch that is not a message (see :meth:`events`), or None when
        its channel is no longer this hub's."""
        kind = e.kind
        if kind == ACCEPTED:
            conn = Connection._from_engine(e.conn, tls=self._tls, mode=self._mode,
                                           end_tag=self._end_tag,
                                           max_message=self._max_message)
            conn._hub = self
            conn._hub_id = int(e.id)
            self.channels[conn._hub_id] = conn
            return (ACCEPTED, conn, b"")
        if kind == WRITABLE:
            known = self.channels.get(e.id)
            return None if known is None else (WRITABLE, known, b"")
        ended = self.channels.pop(e.id, None)  # ENDED
        if ended is None:
            return None
        ended._hub = None
        try:  # give its slot back now (a closed one left when it was freed)
            with ended._g as cptr:
                lib.ss_hub_remove(self._g.ptr, cptr)
        except _errors.SocketClosed:
            pass
        return (ENDED, ended, b"")

    # -- the driver: threads sharing the hub ----------------------------------------------
    #
    # One thread at a time polls (``_polling``); the others wait on ``_cv`` for its batch.
    # A batch is delivered into the channels' inboxes (an end as ENDED_MARK behind the
    # messages); a channel with something in its inbox is on ``_ready`` once.  A channel
    # handed out by wait_ready is its thread's until that thread asks again (``_busy``), so
    # a pool never splits one channel's messages between two threads.

    def _deliver(self, batch: list[tuple[int, Connection, bytes]]) -> None:
        """Batch -> inboxes (cv held)."""
        ready = self._ready
        for kind, conn, data in batch:
            if kind == ACCEPTED:
                if self._on_accept is not None:
                    self._on_accept(conn)
                continue
            if kind == WRITABLE:  # (threads do not ask: their writes wait in C)
                continue
            inbox = conn._inbox
            if inbox is None:  # (made at its first message: an idle channel has none)
                inbox = conn._inbox = collections.deque()
            inbox.append(data if kind == MESSAGE else ENDED_MARK)
            if not conn._queued:
                conn._queued = True
                ready.append(conn)
        # wake the threads waiting for a channel (one per ready channel, one more to poll
        # next), or all of them when one waits to read a channel of this batch
        if self._reading and any(conn in self._reading for _k, conn, _d in batch):
            self._cv.notify_all()
        else:
            self._cv.notify(len(ready) + 1)

    def _advance(self, left_ms: int) -> None:
        """Poll once (or, while another thread polls, wait for its batch) for at most
        ``left_ms`` (-1: no limit).  cv held on entry and on return."""
        if self._polling:
            self._cv.wait(None if left_ms < 0 else left_ms / 1000)
            return
        self._polling = True
        self._cv.release()
        try:
            batch = self.poll(left_ms)
        finally:
            self._cv.acquire()
            self._polling = False
        self._deliver(batch)
        if not batch:
            self._cv.notify()  # a thread waiting without a poll of its own polls next

    def _take(self, me: int) -> Optional[Connection]:
        """A ready channel no other thread is serving, or None (cv held)."""
        ready, busy = self._ready, self._busy
        for _ in range(len(ready)):
            conn = ready.popleft()
            if not conn._inbox or conn.closed:  # read by its thread meanwhile, or closed
                conn._queued = False
            elif conn in busy:
                ready.append(conn)  # its thread takes it when it comes back
            else:
                conn._queued = False
                busy.add(conn)
                self._serving[me] = conn
                return conn
        return None

    def _release(self, me: int) -> None:
        """Thread ``me`` is through with the channel it was given last (cv held)."""
        done = self._serving.pop(me, None)
        if done is not None:
            self._busy.discard(done)
            if done._inbox and not done._queued:  # what it left unread: ready again
                done._queued = True
                self._ready.append(done)

    def take_ready(self) -> list[Connection]:
        """Every ready channel that no thread is serving, at once (one consumer that
        serves them all, as messages() does: one lock per batch, not per channel)."""
        with self._cv:
            self._release(_get_ident())
            out = []
            ready, busy = self._ready, self._busy
            for _ in range(len(ready)):
                conn = ready.popleft()
                if conn in busy:
                    ready.append(conn)
                    continue
                conn._queued = False
                if conn._inbox:
                    out.append(conn)
            return out

    def wait_ready(self, timeout_ms: int) -> Optional[Connection]:
        """Wait at most ``timeout_ms`` (-1: no limit) for a channel with a message (or its
        end) in its inbox, and return it; None on time-out.  The channel this thread was
        given last is released (see above).  SocketClosed once the hub is closed."""
        deadline = None if timeout_ms < 0 else _monotonic() + timeout_ms / 1000
        me = _get_ident()
        with self._cv:
            self._release(me)  # this thread is through with its last channel
            tried = False
            while True:
                conn = self._take(me)
                if conn is not None:
                    return conn
                if deadline is None:
                    self._advance(-1)
                    continue
                left = deadline - _monotonic()
                if left <= 0 and tried:
                    return None  # (after one look at least, even with no time at all)
                tried = left <= 0
                self._advance(max(0, int(left * 1000)))

    def read(self, conn: Connection, timeout_ms: int) -> Optional[bytes]:
        """The next message of ``conn``, a channel of this hub: from its inbox, or the
        engine's next batches (this thread polls, or waits for the thread that does).
        None once the channel has left the hub (its end was reached, or the hub closed):
        read it directly then.  SocketTimeout after ``timeout_ms`` (-1: no limit)."""
        if not conn._inbox:
            deadline = None if timeout_ms < 0 else _monotonic() + timeout_ms / 1000
            with self._cv:
                self._reading.add(conn)
                try:
                    polled = False
                    while not conn._inbox and conn._hub is self:
                        left = -1 if deadline is None else \
                            max(0, int((deadline - _monotonic()) * 1000))
                        if left == 0 and polled:
                            raise _errors.SocketTimeout("no message within the time-out")
                        try:
                            self._advance(left)
                        except _errors.SocketClosed:
                            break  # the hub was closed: the channel is its own again
                        polled = True
                finally:
                    self._reading.discard(conn)
        inbox = conn._inbox
        if not inbox:
            return None
        data = inbox.popleft()
        return None if data is ENDED_MARK else data

    @property
    def closed(self) -> bool:
        return self._g.closed

    def close(self) -> None:
        """Stop: a poll in progress returns SocketClosed.  Channels stay open, and write
        as channels of no hub do (their queued bytes go first)."""
        for conn in list(self.channels.values()):
            conn._hub = None
        self._g.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def messages(listener: Any, timeout_ms: int, max_bytes: int, high_water: int
             ) -> Iterator[tuple[Connection, bytes]]:
    """Listener.messages(): (connection, message) as they arrive; ``b""`` once a connection
    has ended, which is then closed.  Ends after ``timeout_ms`` without any event, or when
    the listener is closed."""
    hub = Hub(listener, max_bytes=max_bytes, high_water=high_water)
    try:
        while True:
            ready = hub.take_ready()
            if not ready:
                try:
                    conn = hub.wait_ready(timeout_ms)
                except _errors.SocketClosed:
                    return
                if conn is None:
                    return
                ready = [conn]
            for conn in ready:
                inbox = conn._inbox
                while inbox:  # (the loop body may read the connection itself: fine)
                    data = inbox.popleft()
                    if data is not ENDED_MARK:
                        yield conn, data
                    elif not conn.closed:
                        try:
                            yield conn, b""
                        finally:
                            conn.close()
    finally:
        # the caller's loop is over: its channels go with it (close_notify to each)
        for conn in list(hub.channels.values()):
            conn.close()
        hub.close()
