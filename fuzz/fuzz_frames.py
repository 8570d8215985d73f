"""Fuzz the C core's frame decoders (every transmission mode) through Connection.adopt.

Invariant: for any byte stream, in every transmission mode, with any message limit,
  - the process does not crash, and reading only ever raises FrameError (malformed or
    oversized frame: the connection is broken), PeerClosed (the stream ended) or, between
    deliveries, SocketTimeout -- never anything else, and never with an empty message;
  - the stream delivered whole and delivered one byte at a time give the same frames up to
    the first error, and the same kind of error;
  - after a FrameError every later read fails with the same error (the state is kept);
  - SocketNoEndTag hands back exactly the bytes sent, however they were cut;
  - SocketEndTag (which drops what follows the tag in the same delivery) and
    SocketEndTagBuffer agree when bytes arrive one at a time, and SocketEndTag delivered
    whole yields the first SocketEndTagBuffer frame, if any;
  - no frame is longer than the connection's message limit.

Input layout: byte 0 picks the message limit (bits 0-1) and the end tag (bits 2-3); the rest
is the stream.  The size headers that matter -- huge, negative, non-decimal, never ending --
come from the seed corpus and the dictionary (fuzz/dicts/frames.dict).
"""
from __future__ import annotations

import socket
import sys

import atheris

with atheris.instrument_imports(include=["sslsock"]):
    from sslsock._core import errors as _errors
    from sslsock._core.connection import Connection, Mode

LIMITS = (64 << 20, 4096, 16, 1)  # the default, then small ones that make TOO_BIG reachable
TAGS = (b"<EOF>", b"\r\n", b"x", b"<END-OF-A-RATHER-LONG-TAG>")
EXPECTED: tuple[type[_errors.Error], ...] = (_errors.FrameError, _errors.PeerClosed)


def _pair(mode: Mode, tag: bytes, limit: int) -> tuple[socket.socket, Connection]:
    a, b = socket.socketpair()
    conn = Connection.adopt(b, mode=mode, end_tag=tag, max_message=limit)
    return a, conn


def _drain(conn: Connection, frames: list[bytes]) -> _errors.Error | None:
    """Read until the connection has nothing more right now; return the error that ended
    it (None on a plain time-out)."""
    while True:
        try:
            frames.append(conn.read(timeout=0, max_bytes=65536))
        except _errors.SocketTimeout as e:
            assert str(e), "empty SocketTimeout message"
            return None
        except EXPECTED as e:
            return e


def _check_error(e: _errors.Error, conn: Connection) -> None:
    assert str(e) and e.message, f"empty error message: {e!r}"
    if isinstance(e, _errors.FrameError):
        try:
            conn.read(timeout=0)
        except _errors.FrameError as again:
            assert again.message == e.message, (e, again)
        else:
            raise AssertionError("a broken connection read a frame")


def _whole(data: bytes, mode: Mode, tag: bytes, limit: int) -> tuple[list[bytes], type | None]:
    a, conn = _pair(mode, tag, limit)
    try:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        frames: list[bytes] = []
        err = _drain(conn, frames)
        assert err is not None, "a stream that ended did not end the reads"
        _check_error(err, conn)
        return frames, type(err)
    finally:
        a.close()
        conn.close()


def _bytewise(data: bytes, mode: Mode, tag: bytes, limit: int) -> tuple[list[bytes], type | None]:
    a, conn = _pair(mode, tag, limit)
    try:
        frames: list[bytes] = []
        err = None
        for i in range(len(data)):
            a.send(data[i : i + 1])
            err = _drain(conn, frames)
            if err is not None:
                break
        if err is None:
            a.shutdown(socket.SHUT_WR)
            err = _drain(conn, frames)
        assert err is not None, "a stream that ended did not end the reads"
        _check_error(err, conn)
        return frames, type(err)
    finally:
        a.close()
        conn.close()


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    limit = LIMITS[data[0] & 3]
    tag = TAGS[(data[0] >> 2) & 3]
    stream = data[1:]

    for mode in (Mode.SocketSizeAtBeginning, Mode.SocketEndTagBuffer):
        whole, whole_err = _whole(stream, mode, tag, limit)
        each, each_err = _bytewise(stream, mode, tag, limit)
        assert whole == each, (mode, whole, each)
        assert whole_err is each_err, (mode, whole_err, each_err)
        assert all(len(f) <= limit for f in whole), (mode, limit, [len(f) for f in whole])
        if mode is Mode.SocketEndTagBuffer:
            buffered = whole

    raw, raw_err = _whole(stream, Mode.SocketNoEndTag, tag, limit)
    assert b"".join(raw) == stream and raw_err is _errors.PeerClosed
    raw, raw_err = _bytewise(stream, Mode.SocketNoEndTag, tag, limit)
    assert b"".join(raw) == stream and raw_err is _errors.PeerClosed

    each, each_err = _bytewise(stream, Mode.SocketEndTag, tag, limit)
    assert each == buffered, (each, buffered)
    whole, whole_err = _whole(stream, Mode.SocketEndTag, tag, limit)
    assert whole[:1] == buffered[:1], (whole, buffered)
    assert all(len(f) <= limit for f in whole + each)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
