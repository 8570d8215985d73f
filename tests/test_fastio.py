"""The per-message path of every read and write (sslsock._fastio, the CPython C API, the
only one): it behaves with real peers on channel threads and on the main thread (which waits
in slices), and closing frees a connection exactly once, after the last call that uses it
has left.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sslsock
from sslsock._core import connection as _objects
from sslsock._core.connection import Connection, Mode

ROOT = Path(__file__).resolve().parent.parent

# One program, run with and without the C-API path: a named-face server whose channel
# threads echo (SocketRead / SocketWrite), a stdlib ssl client, then the failure cases.
SCRIPT = textwrap.dedent('''
    import socket, ssl, sys, threading, time
    import sslsock as ss
    from sslsock._core import connection as _objects
    cafile = sys.argv[1]
    assert ss.SocketCreateSSL("srv", 0, "localhost"), ss.ErrorInfo()
    port = int(ss.SocketClientInfo("srv", ss.SocketPort))
    done = {}
    def serve(ch):
        n = 0
        while True:
            data = ss.SocketRead(ch, True, 0, 65536)
            if not data:
                done[ch] = ss.ErrorInfo(ss.errCode)
                break
            assert ss.SocketWrite(ch, data), ss.ErrorInfo()
            n += 1
        done[ch + ":n"] = n
    def accept_one():
        assert ss.SocketWaitForConnection("srv", 10000), ss.ErrorInfo()
        ch = ss.SocketAccept("srv")
        assert ch, ss.ErrorInfo()
        t = threading.Thread(target=serve, args=(ch,))
        t.start()
        return ch, t
    ctx = ssl.create_default_context(cafile=cafile)
    def frame(b):
        return str(len(b)).encode() + b"\\r\\n" + b
    def read_frame(s):
        buf = b""
        while b"\\r\\n" not in buf:
            buf += s.recv(1)
        head, rest = buf.split(b"\\r\\n", 1)
        n = int(head)
        while len(rest) < n:
            rest += s.recv(n - len(rest))
        return rest
    # 1. echo of many sizes, then the client closes: the reader ends with PEER_CLOSED
    c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="localhost")
    ch, t = accept_one()
    sizes = [0, 1, 63, 64, 4096, 16384, 16385, 70000, 300000] + [64] * 200
    for i, n in enumerate(sizes):
        msg = bytes((i + k) % 251 for k in range(n)) if n else b""
        if not msg:
            continue
        c.sendall(frame(msg))
        assert read_frame(c) == msg, (i, n)
    c.close()
    t.join(10)
    assert not t.is_alive()
    assert done[ch + ":n"] == len([n for n in sizes if n]), done
    assert done[ch], "the reader's end reported no error"
    # 2. SocketClose from another thread wakes a channel thread blocked in SocketRead
    c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="localhost")
    ch, t = accept_one()
    c.sendall(frame(b"ping")); assert read_frame(c) == b"ping"
    time.sleep(0.2)  # the channel thread now waits in SocketRead
    assert ss.SocketClose(ch)
    t.join(10)
    assert not t.is_alive(), "SocketClose did not wake the blocked read"
    assert done[ch], "the woken read reported no error"
    assert not ss.SocketExist(ch)
    c.close()
    ss.SocketClose("srv")
    print("OK", done)
''')


def test_named_face_channel_threads(pki: Any) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(pki.ca_file)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert out.stdout.startswith("OK"), out.stdout


def test_the_c_api_path_is_built_and_used() -> None:
    a, b = socket.socketpair()
    with Connection.adopt(a) as ca:
        assert type(ca._g).__module__ == "sslsock._fastio"
        b.close()


def test_close_during_a_read_frees_after_the_read_leaves() -> None:
    a, b = socket.socketpair()
    conn = Connection.adopt(a, mode=Mode.SocketNoEndTag)
    got: list[Any] = []

    def reader() -> None:
        try:
            got.append(conn.read(None, 100))
        except sslsock.Error as e:
            got.append(e)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    assert conn._g.ptr is not None
    conn.close()  # shuts the socket down: the blocked read wakes
    t.join(10)
    assert not t.is_alive()
    assert isinstance(got[0], sslsock.SocketClosed), got
    assert conn._g.ptr is None, "the connection was not freed once its last call left"
    with pytest.raises(sslsock.SocketClosed, match="is closed"):
        conn.read(1.0)
    with pytest.raises(sslsock.SocketClosed):
        conn.write(b"x")
    conn.close()  # again: nothing happens
    b.close()


def test_errors_from_the_fast_path_name_the_cause(pki: Any) -> None:
    a, b = socket.socketpair()
    conn = Connection.adopt(a, mode=Mode.SocketSizeAtBeginning)
    result: list[Any] = []

    def reader() -> None:  # a channel thread: the C-API path
        for _ in range(2):
            try:
                result.append(conn.read(None))
            except sslsock.Error as e:
                result.append(e)

    t = threading.Thread(target=reader)
    t.start()
    b.sendall(b"5\r\nhello" + b"12x\r\n")  # one good frame, then a malformed size header
    t.join(10)
    assert result[0] == b"hello"
    err = result[1]
    assert isinstance(err, sslsock.Error) and "size" in str(err).lower(), err
    # broken for good: the same error again, and the process carries on
    with pytest.raises(type(err)):
        conn.read(1.0)
    conn.close()
    b.close()
    c, d = socket.socketpair()
    with Connection.adopt(c) as other, pytest.raises(sslsock.ArgumentError, match="max_bytes"):
        other.read(1.0, max_bytes=0)
    d.close()


def test_on_free_runs_once_whether_taken_early_or_at_free() -> None:
    # sslsock.aio takes a hub's on_free (the listener's release) when its server closes,
    # before the hub itself goes: it must then not run a second time at free.
    calls: list[str] = []

    def make(tag: str) -> Any:
        raw = _objects.ffi.new("char[16]")  # released (freed) by the guard, once
        return _objects._Guard(raw, lambda p: None, tag, lambda: calls.append(tag))

    g1 = make("early")
    cb = g1.take_on_free()
    assert cb is not None and g1.take_on_free() is None
    cb()
    g1.close()
    g2 = make("at-free")
    g2.enter()
    g2.close()
    assert calls == ["early"], "on_free ran before the last call left"
    g2.leave()
    assert calls == ["early", "at-free"]
    assert g1.ptr is None and g2.ptr is None


def test_a_bridge_built_against_another_core_is_refused() -> None:
    """sslsock._fastio and the cffi core are compiled separately: one of another interface
    version is refused at import, with what to do, instead of calling through stale
    prototypes."""
    import subprocess
    import sys

    code = ("import importlib, sslsock._fastio as f, sslsock._core.connection as o\n"
            "f.ABI_VERSION = -1\n"
            "importlib.reload(o)\n")  # (the check that runs when it is imported)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "built against another version of the core" in proc.stderr
    assert "rebuild sslsock" in proc.stderr


def test_the_main_thread_reads_in_slices_and_loses_nothing() -> None:
    """On the main thread a read longer than a slice waits in slices (Ctrl-C is seen in
    between): a message that arrives in a later slice is read whole, and a time-out comes
    when it is due, not a slice early."""
    assert threading.current_thread() is threading.main_thread()
    a, b = socket.socketpair()
    with Connection.adopt(a) as conn:
        timer = threading.Timer(0.4, b.sendall, args=(b"5\r\nhel",))
        timer2 = threading.Timer(0.6, b.sendall, args=(b"lo",))
        timer.start()
        timer2.start()
        t0 = time.monotonic()
        assert conn.read(5.0) == b"hello"  # the frame straddles two slices
        assert 0.5 < time.monotonic() - t0 < 4.0
        t0 = time.monotonic()
        with pytest.raises(sslsock.SocketTimeout):
            conn.read(0.7)
        assert 0.65 < time.monotonic() - t0 < 3.0
        timer.join()
        timer2.join()
    b.close()


# -- the asyncio face's inboxes (fastio_inbox.c) ----------------------------------------


def _batch(*events: tuple[int, int, bytes]) -> tuple[Any, Any, list[Any]]:
    """An event array as the hub fills it: (kind, channel id, message)."""
    from sslsock._core.binding import ffi

    ev = ffi.new("ss_event[]", len(events))
    keep = []
    for i, (kind, ident, data) in enumerate(events):
        buf = ffi.new("char[]", data or b"\0")
        keep.append(buf)
        ev[i].kind, ev[i].id, ev[i].data, ev[i].len = kind, ident, buf, len(data)
    return ev, int(ffi.cast("uintptr_t", ev)), keep


def test_feed_puts_each_message_in_its_channels_inbox_as_python_bytes() -> None:
    """One call per run of messages: each becomes bytes of Python's own (the hub's buffer
    is reused by its next poll), in order, in its channel's inbox; it stops at the first
    event that is not a message; a channel with a reader waiting (or over its read limit)
    is listed once; an unknown channel (closed during the poll) is skipped."""
    from sslsock._core.binding import ffi, lib
    from sslsock._fastio import Inbox, feed

    msg, other = lib.SS_EV_MESSAGE, lib.SS_EV_ENDED
    a, b, c = Inbox(), Inbox(), Inbox()
    b._next = object()  # a reader waits
    c._limit = 5
    ev, addr, keep = _batch((msg, 1, b"one"), (msg, 2, b"two"), (msg, 9, b"gone"),
                            (msg, 2, b"three"), (msg, 3, b"sixsix"), (other, 1, b""),
                            (msg, 1, b"after"))
    fed: list[Any] = []
    assert feed(addr, 0, 7, {1: a, 2: b, 3: c}, fed) == 5
    assert fed == [b, c]  # b once although fed twice; c over its limit
    keep[0][0:3] = b"XXX"  # the hub's buffer reused: the message is Python's copy
    assert (a._count, a._unread, a._take()) == (1, 3, b"one")
    assert [b._take(), b._take()] == [b"two", b"three"] and b._count == 0
    with pytest.raises(IndexError, match="no message"):
        b._take()
    assert feed(addr, 6, 7, {1: a}, fed) == 7 and a._take() == b"after"
    b._unlist()
    fed.clear()
    assert feed(addr, 1, 2, {2: b}, fed) == 2 and fed == [b]  # listed again after _unlist
    del ev, ffi


def test_feed_refuses_what_is_not_an_inbox_and_a_bad_range() -> None:
    from sslsock._core.binding import lib
    from sslsock._fastio import Inbox, feed

    ev, addr, _keep = _batch((lib.SS_EV_MESSAGE, 1, b"x"))
    with pytest.raises(TypeError, match="not an Inbox"):
        feed(addr, 0, 1, {1: "a str"}, [])
    with pytest.raises(ValueError, match="bad range"):
        feed(addr, 1, 0, {1: Inbox()}, [])
    with pytest.raises(TypeError, match="fed: list"):
        feed(addr, 0, 1, {1: Inbox()}, ())
    good = Inbox()
    assert feed(addr, 0, 1, {1: good}, []) == 1 and good._take() == b"x"  # and it carries on
    del ev
    from sslsock._fastio import resume

    with pytest.raises(TypeError, match="resume\\(fed: list, rest: list\\)"):
        resume((good,), [])  # type: ignore[arg-type]
    rest: list[Any] = []
    resume([good, "not a channel"], rest)  # nothing waits: both left to Python
    assert rest == [good, "not a channel"]


def test_an_inbox_over_its_limit_asks_for_a_pause_and_resumes_at_half() -> None:
    from sslsock._fastio import Inbox

    calls: list[bool] = []

    class Paused(Inbox):
        def _pause(self, paused: bool) -> None:
            calls.append(paused)
            self._paused = paused

    box = Paused()
    box._limit = 10
    assert box._push(b"123456") is False
    assert box._push(b"123456") is True  # 12 > 10: the caller pauses the peer
    box._pause(True)
    assert box._push(b"1") is False  # paused already
    assert box._take() == b"123456" and calls == [True]  # 7 unread: still over half
    assert box._take() == b"123456" and calls == [True, False]  # 1 <= 5: resumed
    with pytest.raises(TypeError, match="takes bytes"):
        box._push("text")  # type: ignore[arg-type]
