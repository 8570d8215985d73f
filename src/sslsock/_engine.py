"""The channel engine's Python side: one thread serves many channels.

A :class:`Hub` wraps the C hub (``src/_native/hub.c``): its channels stay in C, which
reads, decrypts and deframes whatever arrives, and each :meth:`Hub.poll` returns a whole
batch of events in one C call (the GIL is released while it waits and works).  Python
only turns the batch into ``bytes`` and dispatches it.

:meth:`Listener.messages` (object face) and ``SocketWaitForMessage`` (named face) are the
two ways in; both accept new clients on the way.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Optional

from . import _errors
from ._binding import ffi, lib, new_err, raise_err
from ._objects import Connection, Listener, Mode, _Guard, _sliced

#: Events per batch: a poll returns at most this many (messages, new and ended channels).
DEFAULT_BATCH = 256
#: What a channel may have queued (replies the socket did not take yet) before a write on
#: it waits: 1 MiB.
DEFAULT_HIGH_WATER = 1 << 20

MESSAGE, ACCEPTED, ENDED = 0, 1, 2


class Hub:
    """A set of channels served by one consumer (see the module docstring).

    ``listener``: the hub accepts that listener's clients itself (they get the listener's
    transmission mode).  ``max_bytes``: the largest message handed out at once in
    ``SocketNoEndTag`` mode.  ``high_water``: writes to a channel of the hub are queued and
    sent by the hub as the socket takes them; a write waits only while more than this many
    bytes are queued for that channel.  Channels from elsewhere join with :meth:`add`.
    """

    def __init__(self, listener: Optional[Listener] = None, *, max_bytes: int = 65536,
                 batch: int = DEFAULT_BATCH, high_water: int = DEFAULT_HIGH_WATER) -> None:
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
        self._max_message: int = args.get("max_message", 64 << 20)
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

    def fileno(self) -> int:
        """A descriptor that is readable whenever :meth:`poll` would return events."""
        ptr = self._g.enter()
        try:
            return int(lib.ss_hub_fd(ptr))
        finally:
            self._g.leave()

    def add(self, conn: Connection) -> None:
        """Serve ``conn`` from this hub: its messages come through :meth:`poll`."""
        ptr = self._g.enter()
        try:
            cptr = conn._g.enter()
            try:
                idp = ffi.new("uint64_t *")
                rc = lib.ss_hub_add(ptr, cptr, idp, self._err)
                if rc != 0:
                    raise_err(rc, self._err)
            finally:
                conn._g.leave()
        finally:
            self._g.leave()
        conn._hub = self
        conn._hub_id = int(idp[0])
        self.channels[conn._hub_id] = conn

    def discard(self, conn: Connection) -> None:
        """Stop serving ``conn`` (it stays open)."""
        if conn._hub is not self:
            return
        self.channels.pop(conn._hub_id, None)
        conn._hub = None
        ptr = self._g.enter()
        try:
            cptr = conn._g.enter()
            try:
                lib.ss_hub_remove(ptr, cptr)
            finally:
                conn._g.leave()
        except _errors.SocketClosed:
            pass  # closed already: freeing it left the hub
        finally:
            self._g.leave()

    def poll(self, timeout_ms: int) -> list[tuple[int, Connection, bytes]]:
        """Wait at most ``timeout_ms`` (-1: no limit) and return a batch of
        ``(kind, connection, message)``: MESSAGE with its bytes, ACCEPTED (a new channel,
        already served) and ENDED (``b""``; the connection is out of the hub, its next read
        tells why).  An empty list means the time-out passed."""
        ptr = self._g.enter()
        try:
            with self._poll_lock:
                ev, batch, err = self._events, self._batch, self._err
                n = _sliced(lambda t: lib.ss_hub_poll(ptr, t, ev, batch, err), timeout_ms)
                if n == lib.SS_E_TIMEOUT:
                    return []
                if n < 0:
                    raise_err(n, err)
                return self._dispatch(n)
        finally:
            self._g.leave()

    def _dispatch(self, n: int) -> list[tuple[int, Connection, bytes]]:
        # Every message is copied out before the caller runs any code: the bytes in C are
        # only valid until the next poll or read.
        channels = self.channels
        unpack = ffi.unpack
        out: list[tuple[int, Connection, bytes]] = []
        append = out.append
        for i in range(n):
            e = self._events[i]
            kind = e.kind
            if kind == MESSAGE:
                append((MESSAGE, channels[e.id], unpack(e.data, e.len) if e.len else b""))
            elif kind == ACCEPTED:
                conn = Connection._from_engine(e.conn, tls=self._tls, mode=self._mode,
                                               end_tag=self._end_tag,
                                               max_message=self._max_message)
                conn._hub = self
                conn._hub_id = int(e.id)
                channels[conn._hub_id] = conn
                append((ACCEPTED, conn, b""))
            else:
                conn = channels.pop(e.id)
                conn._hub = None
                cptr = conn._g.ptr
                if cptr is not None:  # give its slot back now
                    lib.ss_hub_remove(self._g.ptr, cptr)
                append((ENDED, conn, b""))
        return out

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


def messages(listener: Listener, timeout_ms: int, max_bytes: int, high_water: int
             ) -> Iterator[tuple[Connection, bytes]]:
    """Listener.messages(): (connection, message) as they arrive; ``b""`` once a connection
    has ended, which is then closed.  Ends after ``timeout_ms`` without any event, or when
    the listener is closed."""
    hub = Hub(listener, max_bytes=max_bytes, high_water=high_water)
    live: dict[int, Connection] = hub.channels
    try:
        while True:
            try:
                batch = hub.poll(timeout_ms)
            except _errors.SocketClosed:
                return
            if not batch:
                return
            for kind, conn, data in batch:
                if kind == MESSAGE:
                    yield conn, data
                elif kind == ENDED and not conn.closed:
                    try:
                        yield conn, b""
                    finally:
                        conn.close()
    finally:
        # the caller's loop is over: its channels go with it (close_notify to each)
        for conn in list(live.values()):
            conn.close()
        hub.close()
