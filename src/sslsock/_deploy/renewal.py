"""Certificate renewal and ticket-key rotation without restart: one thread per process
looks, every few seconds, whether the store file behind each open listener's certificate
(or its session-ticket key file) was rewritten, and has the listener take the new one
(:meth:`Listener.reload`).  Looking costs a few ``stat`` calls; nothing is read until a
file changed.

A replacement that cannot be served (not a certificate, a key that does not match, a
certificate too weak for the listener's versions) is logged once, as an error, on the
``sslsock`` logger, and the listener keeps its certificate.  A failure is only reported when
the store still looks the same at the next look: a certificate and key written as two files
are briefly out of step while they are replaced.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

log = logging.getLogger("sslsock")

_lock = threading.Lock()
# every open listener with something to renew (what SIGHUP looks at) ...
_known: weakref.WeakSet[Any] = weakref.WeakSet()
# ... and those looked at every few seconds, with their interval
_watched: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_thread: threading.Thread | None = None
_wake = threading.Event()


def register(listener: Any) -> None:
    """Make ``listener`` one that SIGHUP (:func:`check_all` with ``every=True``) reloads."""
    with _lock:
        _known.add(listener)


def watch(listener: Any, interval: float) -> None:
    """Look at ``listener``'s certificate and ticket keys every ``interval`` seconds."""
    global _thread
    with _lock:
        _known.add(listener)
        _watched[listener] = max(0.2, interval)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="sslsock-reload", daemon=True)
            _thread.start()
        else:
            _wake.set()


def check_all(quiet: bool = True, every: bool = False) -> None:
    """Look at every watched listener now (``quiet=False``, as after SIGHUP: report a
    broken replacement at once; ``every=True``, as after SIGHUP too: the listeners that
    are not looked at periodically as well)."""
    with _lock:
        listeners = list(_known) if every else list(_watched.keys())
    for listener in listeners:
        _check(listener, quiet)


def _check(listener: Any, quiet: bool = True) -> None:
    if listener.closed:
        with _lock:
            _watched.pop(listener, None)
            _known.discard(listener)
        return
    try:
        listener.reload(quiet_first_failure=quiet)
    except Exception as e:  # noqa: BLE001 - a broken file must not stop the watching
        log.error("%s", e)


def _run() -> None:
    while True:
        with _lock:
            if not _watched:
                globals()["_thread"] = None
                return
            interval = min(_watched.values())
        _wake.wait(interval)
        _wake.clear()
        check_all()
