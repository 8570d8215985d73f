"""Socket names -> objects, process-wide and thread-safe (the named face's only state
besides ErrorInfo)."""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Optional, Union

from sslsock._core.connection import Connection
from sslsock._core.errors import NameTakenError, SocketNameError
from sslsock._faces.objects import Listener

# the simple_lock of every channel and client entry: only listeners' are ever taken
_UNUSED_LOCK = threading.Lock()


class Entry:
    """What a name stands for.  A channel's entry is the smallest (ten thousand idle
    channels hold ten thousand of them): slots, and no lock of its own."""

    __slots__ = ("obj", "kind", "simple", "simple_lock", "channels", "engine", "waiting")

    def __init__(self, obj: Union[Listener, Connection], kind: str) -> None:
        self.obj = obj
        self.kind = kind  # "listener", "channel" or "client"
        # simplified server: the client talked to through the listener's own name, under
        # simple_lock (a listener's only)
        self.simple: Optional[Connection] = None
        self.simple_lock = threading.Lock() if kind == "listener" else _UNUSED_LOCK
        self.channels = 0  # how many channel names this listener has handed out
        # SocketWaitForMessage: the listener's channel engine and what it found (named.py)
        self.engine: Any = None
        # clients SocketWaitForConnection took off the listener, for SocketAccept /
        # SocketDeny (a listener's only: made at its first such call)
        self.waiting: Optional[collections.deque[Any]] = None


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Entry] = {}

    @staticmethod
    def check_name(name: Any) -> str:
        if not isinstance(name, str):
            raise TypeError(f"a socket name must be a str, not {type(name).__name__}")
        if not name:
            raise SocketNameError("a socket name must be a non-empty string (WLanguage "
                                  "names are case-sensitive and never empty)")
        return name

    def reserve(self, name: str) -> None:
        """Fail early (before any work) if the name is taken."""
        with self._lock:
            if name in self._items:
                raise NameTakenError(f'the socket name "{name}" is already in use: close it '
                                     "with SocketClose, or choose another name")

    def add(self, name: str, entry: Entry) -> None:
        with self._lock:
            if name in self._items:
                raise NameTakenError(f'the socket name "{name}" is already in use: close it '
                                     "with SocketClose, or choose another name")
            self._items[name] = entry

    def add_channel(self, listener_name: str, listener: Entry, conn: Connection) -> str:
        """Register an accepted channel under a fresh name derived from the listener's."""
        with self._lock:
            while True:
                listener.channels += 1
                name = f"{listener_name}#{listener.channels}"
                if name not in self._items:
                    self._items[name] = Entry(conn, "channel")
                    return name

    def get(self, name: Any) -> Entry:
        # Every SocketRead/SocketWrite comes here: no lock.  dict.get is atomic (under the
        # GIL, or the dict's own lock on free-threaded builds); a shared lock here would be
        # a queue that all channel threads meet on whenever a GIL switch lands inside it.
        entry = self._items.get(name) if isinstance(name, str) else None
        if entry is None:
            self.check_name(name)
            raise SocketNameError(f'no socket is named "{name}" (names are case-sensitive; '
                                  "was it closed, or never created?)")
        return entry

    def lookup(self, name: str) -> Optional[Entry]:
        """The entry of a name, or None (no lock: see get).  The hot paths of SocketRead
        and SocketWrite use ``fast_lookup``, the dict's own get (one C call)."""
        return self._items.get(name)

    @property
    def fast_lookup(self) -> Callable[[str], Optional[Entry]]:
        return self._items.get

    def pop(self, name: Any) -> Entry:
        self.check_name(name)
        with self._lock:
            entry = self._items.pop(name, None)
        if entry is None:
            raise SocketNameError(f'no socket is named "{name}" (names are case-sensitive; '
                                  "was it closed, or never created?)")
        return entry

    def exists(self, name: Any) -> bool:
        if not isinstance(name, str):
            raise TypeError(f"a socket name must be a str, not {type(name).__name__}")
        with self._lock:
            return name in self._items

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)


REGISTRY = Registry()
