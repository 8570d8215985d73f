"""Transmission modes (SPEC §5), checked byte for byte against a raw stdlib-ssl peer.

The sslsock side is a channel of a named listener (or, for the property tests, object-face
connections kept for the whole module); the other side is a plain ``ssl.SSLSocket`` that
writes and reads the exact bytes the wire format prescribes.
"""
from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sslsock
from sslsock._faces.registry import REGISTRY

LOOPBACK = "127.0.0.1"
WAIT_MS = 10_000
PEER_TIMEOUT = 10.0
MiB = 1 << 20


# --- helpers ------------------------------------------------------------------------------


def client_context(pki: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def raw_client(pki: Any, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT)
    return client_context(pki).wrap_socket(raw, server_hostname="localhost")


def recv_exact(sock: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def nothing_more(sock: ssl.SSLSocket, wait: float = 0.1) -> bool:
    """True if no further byte arrives within `wait` seconds."""
    old = sock.gettimeout()
    sock.settimeout(wait)
    try:
        sock.recv(1)
    except (TimeoutError, socket.timeout):
        return True
    finally:
        sock.settimeout(old)
    return False


def accept(listener: str) -> str:
    assert sslsock.SocketWaitForConnection(listener, WAIT_MS), sslsock.ErrorInfo()
    channel = sslsock.SocketAccept(listener)
    assert channel, sslsock.ErrorInfo()
    return channel


class Pair:
    """A named sslsock channel and the raw stdlib-ssl client at its other end."""

    def __init__(self, pki: Any, listener: str = "srv") -> None:
        self.raw = raw_client(pki, REGISTRY.get(listener).obj.port)
        self.channel = accept(listener)

    def read(self, timeout_ms: int = WAIT_MS, max_bytes: int = 4096) -> bytes:
        return sslsock.SocketRead(self.channel, False, timeout_ms, max_bytes)

    def write(self, data: Any) -> None:
        assert sslsock.SocketWrite(self.channel, data), sslsock.ErrorInfo()

    def expect(self, wire: bytes) -> None:
        """The raw side receives exactly `wire`, and nothing after it."""
        assert recv_exact(self.raw, len(wire)) == wire
        assert nothing_more(self.raw)

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def listener(pki: Any) -> str:
    assert sslsock.SocketCreateSSL("srv", 0, "localhost"), sslsock.ErrorInfo()
    return "srv"


@pytest.fixture
def pair(pki: Any, listener: str) -> Iterator[Pair]:
    p = Pair(pki, listener)
    yield p
    p.close()


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run fn in a thread; the returned function joins it (bounded) and returns or raises."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join() -> Any:
        t.join(PEER_TIMEOUT * 3)
        assert not t.is_alive(), "peer thread did not finish"
        if "error" in box:
            raise box["error"]
        return box.get("value")

    return join


def check_timed_out() -> None:
    """A read time-out: b"" with no error, as in WLanguage."""
    assert not sslsock.ErrorOccurred(), sslsock.ErrorInfo()


def check_error(code: sslsock.ErrorCode, *words: str) -> str:
    assert sslsock.ErrorOccurred()
    assert sslsock.ErrorInfo(sslsock.errCode) == code, sslsock.ErrorInfo()
    message = str(sslsock.ErrorInfo(sslsock.errMessage))
    for w in words:
        assert w.lower() in message.lower(), message
    return message


# --- SocketSizeAtBeginning -----------------------------------------------------------------


def test_size_at_beginning_both_ways(pair: Pair) -> None:
    pair.raw.sendall(b"11\r\nhello world")
    assert pair.read() == b"hello world"
    assert not sslsock.ErrorOccurred()
    pair.write(b"hello world")
    pair.expect(b"11\r\nhello world")


def test_size_header_with_bare_lf(pair: Pair) -> None:
    pair.raw.sendall(b"5\nhello" + b"3\r\nabc" + b"2\nxy")
    assert [pair.read(), pair.read(), pair.read()] == [b"hello", b"abc", b"xy"]


def test_several_frames_in_one_record_and_one_frame_in_many(pair: Pair) -> None:
    pair.raw.sendall(b"1\r\na2\r\nbc3\r\ndef")
    assert [pair.read(), pair.read(), pair.read()] == [b"a", b"bc", b"def"]


def test_partial_frame_survives_a_timeout(pair: Pair) -> None:
    """SPEC §2 SocketRead: a time-out loses nothing; the next read continues the frame."""
    pair.raw.sendall(b"11\r\nhello")
    t0 = time.monotonic()
    assert pair.read(300) == b""
    assert 0.25 <= time.monotonic() - t0 < 2
    check_timed_out()
    pair.raw.sendall(b" world")
    assert pair.read() == b"hello world"
    assert not sslsock.ErrorOccurred()


def test_empty_message_both_ways(pair: Pair) -> None:
    pair.write(b"")
    pair.expect(b"0\r\n")
    pair.raw.sendall(b"0\r\n")
    assert pair.read() == b""
    assert not sslsock.ErrorOccurred()  # an empty message, not a time-out nor an end
    pair.raw.sendall(b"0\r\n2\r\nok")
    assert pair.read() == b""
    assert pair.read() == b"ok"


def test_str_is_written_as_utf8(pair: Pair) -> None:
    text = "héllo €"  # 7 characters, 10 bytes: the header counts bytes
    pair.write(text)
    pair.expect(b"10\r\n" + text.encode("utf-8"))


def test_bytes_like_messages(pair: Pair) -> None:
    pair.write(bytearray(b"abc"))
    pair.expect(b"3\r\nabc")
    pair.write(memoryview(b"xxdefxx")[2:5])
    pair.expect(b"3\r\ndef")


@pytest.mark.parametrize("direction", ["to_sslsock", "from_sslsock"])
def test_large_message(pair: Pair, direction: str) -> None:
    payload = random.Random(5).randbytes(5 * MiB)
    wire = b"%d\r\n" % len(payload) + payload
    if direction == "to_sslsock":
        join = in_thread(lambda: pair.raw.sendall(wire))
        got = pair.read(WAIT_MS * 3)
        join()
        assert len(got) == len(payload), sslsock.ErrorInfo()
        assert got == payload
    else:
        join = in_thread(lambda: recv_exact(pair.raw, len(wire)))
        pair.write(payload)
        assert join() == wire


# --- end tags ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [sslsock.SocketEndTag, sslsock.SocketEndTagBuffer],
                         ids=["EndTag", "EndTagBuffer"])
@pytest.mark.parametrize("tag", [None, b"\r\n.\r\n", "§END§"],
                         ids=["default", "crlf-dot", "utf8-str"])
def test_end_tag_both_ways(pair: Pair, mode: int, tag: Any) -> None:
    if tag is None:
        assert sslsock.SocketChangeTransmissionMode(pair.channel, mode)
        wire_tag = b"<EOF>"
    else:
        assert sslsock.SocketChangeTransmissionMode(pair.channel, mode, tag)
        wire_tag = tag.encode("utf-8") if isinstance(tag, str) else tag
    pair.raw.sendall(b"hello world" + wire_tag)
    assert pair.read() == b"hello world"
    pair.write(b"reply")
    pair.expect(b"reply" + wire_tag)
    pair.write(b"")  # an empty message is the tag alone
    pair.expect(wire_tag)
    pair.raw.sendall(wire_tag)
    assert pair.read() == b""
    assert not sslsock.ErrorOccurred()


def test_end_tag_drops_what_follows_the_tag(pair: Pair) -> None:
    assert sslsock.SocketChangeTransmissionMode(pair.channel, sslsock.SocketEndTag)
    pair.raw.sendall(b"one<EOF>two<EOF>")
    assert pair.read() == b"one"
    assert pair.read(300) == b""
    check_timed_out()
    pair.raw.sendall(b"three<EOF>")  # what comes later is read normally
    assert pair.read() == b"three"


def test_end_tag_buffer_keeps_what_follows_the_tag(pair: Pair) -> None:
    assert sslsock.SocketChangeTransmissionMode(pair.channel, sslsock.SocketEndTagBuffer)
    pair.raw.sendall(b"one<EOF>two<EOF>")
    assert pair.read() == b"one"
    assert pair.read() == b"two"
    assert pair.read(300) == b""
    check_timed_out()


def test_end_tag_split_across_records(pair: Pair) -> None:
    assert sslsock.SocketChangeTransmissionMode(pair.channel, sslsock.SocketEndTagBuffer)
    for part in (b"ab<", b"EO", b"<E", b"OF", b">cd<EOF", b">"):
        pair.raw.sendall(part)
    assert pair.read() == b"ab<EO"
    assert pair.read() == b"cd"


def test_end_tag_length_is_checked(pair: Pair) -> None:
    assert not sslsock.SocketChangeTransmissionMode(pair.channel, sslsock.SocketEndTag, b"")
    check_error(sslsock.ErrorCode.ARGUMENT, "end tag")
    assert not sslsock.SocketChangeTransmissionMode(pair.channel, sslsock.SocketEndTag, b"x" * 65)
    check_error(sslsock.ErrorCode.ARGUMENT, "end tag")


# --- SocketNoEndTag ------------------------------------------------------------------------


def test_no_end_tag_with_max_bytes(pair: Pair) -> None:
    assert sslsock.SocketChangeTransmissionMode(pair.channel, sslsock.SocketNoEndTag)
    data = bytes(range(256)) * 40  # 10240 bytes
    pair.raw.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = pair.read(max_bytes=1000)
        assert chunk, sslsock.ErrorInfo()
        assert len(chunk) <= 1000
        got += chunk
    assert got == data
    assert pair.read(200, max_bytes=1000) == b""
    check_timed_out()
    pair.write(b"as is")
    pair.expect(b"as is")


def test_no_end_tag_default_max_bytes_is_4096(pair: Pair) -> None:
    assert sslsock.SocketChangeTransmissionMode(pair.channel, sslsock.SocketNoEndTag)
    pair.raw.sendall(b"z" * 10000)
    deadline = time.monotonic() + PEER_TIMEOUT
    sizes = []
    while sum(sizes) < 10000 and time.monotonic() < deadline:
        sizes.append(len(sslsock.SocketRead(pair.channel, False, WAIT_MS)))
    assert sum(sizes) == 10000
    assert max(sizes) <= 4096


# --- one byte at a time --------------------------------------------------------------------

WIRE = {
    sslsock.SocketSizeAtBeginning: b"26\r\nabcdefghijklmnopqrstuvwxyz",
    sslsock.SocketEndTag: b"abcdefghijklmnopqrstuvwxyz<EOF>",
    sslsock.SocketEndTagBuffer: b"abcdefghijklmnopqrstuvwxyz<EOF>",
    sslsock.SocketNoEndTag: b"abcdefghijklmnopqrstuvwxyz",
}


@pytest.mark.parametrize("mode", list(WIRE), ids=lambda m: sslsock.Mode(m).name)
def test_tiny_writes_are_reassembled(pair: Pair, mode: int) -> None:
    assert sslsock.SocketChangeTransmissionMode(pair.channel, mode)
    join = in_thread(lambda: [pair.raw.sendall(WIRE[mode][i:i + 1]) or time.sleep(0.002)
                              for i in range(len(WIRE[mode]))])
    if mode == sslsock.SocketNoEndTag:
        got = b""
        while len(got) < 26:
            chunk = pair.read(max_bytes=100)
            assert chunk, sslsock.ErrorInfo()
            got += chunk
    else:
        got = pair.read()
    join()
    assert got == b"abcdefghijklmnopqrstuvwxyz"


# --- broken frames break one connection only ------------------------------------------------


def assert_broken_and_other_works(pki: Any, bad: Pair, code: sslsock.ErrorCode,
                                  *words: str) -> None:
    """`bad` failed with `code`: later calls fail the same way; a fresh client works."""
    first = check_error(code, *words)
    assert bad.read(200) == b""
    assert sslsock.ErrorInfo(sslsock.errMessage) == first
    assert not sslsock.SocketWrite(bad.channel, b"x")
    assert sslsock.ErrorInfo(sslsock.errMessage) == first
    assert sslsock.SocketExist(bad.channel)
    good = Pair(pki)
    try:
        good.raw.sendall(b"2\r\nok")
        assert good.read() == b"ok"
        good.write(b"fine")
        good.expect(b"4\r\nfine")
    finally:
        good.close()


def test_malformed_size_header(pki: Any, listener: str) -> None:
    other = Pair(pki)  # an established connection on the same listener
    bad = Pair(pki)
    try:
        bad.raw.sendall(b"abc\r\n")
        assert bad.read() == b""
        assert_broken_and_other_works(pki, bad, sslsock.ErrorCode.FRAME,
                                      "size header", "not a decimal number")
        other.raw.sendall(b"3\r\nyes")
        assert other.read() == b"yes"
    finally:
        other.close()
        bad.close()


@pytest.mark.parametrize("header", [b"-5\r\n", b"5 \r\nhello", b"0x10\r\n", b"\r\n"])
def test_other_malformed_headers(pki: Any, listener: str, header: bytes) -> None:
    bad = Pair(pki)
    try:
        bad.raw.sendall(header)
        assert bad.read() == b""
        assert_broken_and_other_works(pki, bad, sslsock.ErrorCode.FRAME, "size header")
    finally:
        bad.close()


def test_oversized_size_header(pki: Any, listener: str) -> None:
    bad = Pair(pki)
    try:
        bad.raw.sendall(b"99999999999\r\n")
        assert bad.read() == b""
        assert_broken_and_other_works(pki, bad, sslsock.ErrorCode.TOO_BIG,
                                      "limit", str(64 * MiB))
    finally:
        bad.close()


def test_size_limit_boundary(pki: Any, listener: str) -> None:
    """64 MiB exactly is allowed (the read just waits for the bytes); one more is not."""
    at_limit = Pair(pki)
    over = Pair(pki)
    try:
        at_limit.raw.sendall(b"%d\r\n" % (64 * MiB))
        assert at_limit.read(300) == b""
        check_timed_out()
        over.raw.sendall(b"%d\r\n" % (64 * MiB + 1))
        assert over.read() == b""
        check_error(sslsock.ErrorCode.TOO_BIG, "limit")
    finally:
        at_limit.close()
        over.close()


def test_lowered_max_message_via_object_face(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", max_message=1000) as lst:
        raws = [raw_client(pki, lst.port) for _ in range(2)]
        try:
            conns = [lst.accept(PEER_TIMEOUT) for _ in range(2)]
            assert all(c.max_message == 1000 for c in conns)
            raws[0].sendall(b"1001\r\n")
            with pytest.raises(sslsock.FrameError) as excinfo:
                conns[0].read(PEER_TIMEOUT)
            assert excinfo.value.code == sslsock.ErrorCode.TOO_BIG
            assert "1000" in str(excinfo.value) and "limit" in str(excinfo.value)
            assert isinstance(excinfo.value, ConnectionError)
            with pytest.raises(sslsock.FrameError):  # broken for good
                conns[0].read(0.2)
            assert conns[0].info().state == "broken"
            raws[1].sendall(b"1000\r\n" + b"k" * 1000)  # at the limit: fine
            assert conns[1].read(PEER_TIMEOUT) == b"k" * 1000
            conns[1].write(b"ok")
            assert recv_exact(raws[1], 5) == b"2\r\nok"
            for c in conns:
                c.close()
        finally:
            for r in raws:
                r.close()


def test_end_tag_search_limited_by_max_message(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", max_message=100,
                          mode=sslsock.SocketEndTag) as lst:
        raw = raw_client(pki, lst.port)
        try:
            conn = lst.accept(PEER_TIMEOUT)
            raw.sendall(b"x" * 500)
            with pytest.raises(sslsock.FrameError) as excinfo:
                conn.read(PEER_TIMEOUT)
            assert "end tag" in str(excinfo.value)
            conn.close()
        finally:
            raw.close()


def test_oversized_header_closes_the_connection_as_the_message_says(pki: Any,
                                                                    listener: str) -> None:
    bad = Pair(pki)
    try:
        bad.raw.sendall(b"99999999999\r\n")
        assert bad.read() == b""
        check_error(sslsock.ErrorCode.TOO_BIG, "connection is closed")
        bad.raw.settimeout(2)
        try:
            data = bad.raw.recv(100)
        except (TimeoutError, socket.timeout):
            pytest.fail("the peer still sees an open connection 2 s later")
        except (ssl.SSLError, OSError):
            data = b""  # an alert or a reset also tells the peer
        assert data == b""
    finally:
        bad.close()


# --- property tests: random payloads round-trip in each mode --------------------------------

MODES = [sslsock.SocketSizeAtBeginning, sslsock.SocketEndTag, sslsock.SocketEndTagBuffer,
         sslsock.SocketNoEndTag]
TAG = b"<EOF>"


class ObjectPair:
    def __init__(self, conn: sslsock.Connection, raw: ssl.SSLSocket) -> None:
        self.conn, self.raw = conn, raw


@pytest.fixture(scope="module")
def object_pairs(pki: Any) -> Iterator[dict[int, ObjectPair]]:
    """One object-face connection per mode (not registered names, so they survive the
    per-test registry clean-up), each with its raw peer."""
    lst = sslsock.Listener(0, "localhost")
    pairs: dict[int, ObjectPair] = {}
    try:
        for mode in MODES:
            raw = raw_client(pki, lst.port)
            conn = lst.accept(PEER_TIMEOUT)
            conn.set_mode(mode)
            pairs[mode] = ObjectPair(conn, raw)
        yield pairs
    finally:
        for p in pairs.values():
            p.conn.close()
            p.raw.close()
        lst.close()


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


payloads = st.one_of(
    st.binary(max_size=2000),
    st.builds(_random_bytes, st.integers(0, 70000), st.integers(0, 2**32)),
    # many near-misses of the end tag
    st.lists(st.sampled_from([b"<", b"E", b"O", b"F", b">", b"<EO", b"OF>", b"x"]),
             max_size=200).map(b"".join),
)

PROPERTY = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def exchange(p: ObjectPair, mode: int, payload: bytes) -> None:
    """raw -> sslsock, then sslsock -> raw, both checked byte for byte."""
    if mode == sslsock.SocketSizeAtBeginning:
        wire = b"%d\r\n" % len(payload) + payload
    elif mode == sslsock.SocketNoEndTag:
        wire = payload
    else:
        wire = payload + TAG
    join = in_thread(lambda: p.raw.sendall(wire))
    if mode == sslsock.SocketNoEndTag:
        got = b""
        while len(got) < len(payload):
            got += p.conn.read(PEER_TIMEOUT, max_bytes=70000)
    else:
        got = p.conn.read(PEER_TIMEOUT)
    join()
    assert got == payload
    join = in_thread(lambda: recv_exact(p.raw, len(wire)))
    p.conn.write(payload)
    assert join() == wire


@PROPERTY
@given(payload=payloads)
def test_property_size_at_beginning(object_pairs: dict[int, ObjectPair], payload: bytes) -> None:
    exchange(object_pairs[sslsock.SocketSizeAtBeginning], sslsock.SocketSizeAtBeginning, payload)


@PROPERTY
@given(payload=payloads)
def test_property_end_tag(object_pairs: dict[int, ObjectPair], payload: bytes) -> None:
    assume((payload + TAG).find(TAG) == len(payload))
    exchange(object_pairs[sslsock.SocketEndTag], sslsock.SocketEndTag, payload)


@PROPERTY
@given(payload=payloads, second=payloads)
def test_property_end_tag_buffer(object_pairs: dict[int, ObjectPair], payload: bytes,
                                 second: bytes) -> None:
    assume((payload + TAG).find(TAG) == len(payload))
    assume((second + TAG).find(TAG) == len(second))
    p = object_pairs[sslsock.SocketEndTagBuffer]
    exchange(p, sslsock.SocketEndTagBuffer, payload)
    # two messages in one write: the second is kept for the next read
    join = in_thread(lambda: p.raw.sendall(payload + TAG + second + TAG))
    assert p.conn.read(PEER_TIMEOUT) == payload
    assert p.conn.read(PEER_TIMEOUT) == second
    join()


@PROPERTY
@given(payload=payloads)
def test_property_no_end_tag(object_pairs: dict[int, ObjectPair], payload: bytes) -> None:
    assume(payload)  # an empty write sends nothing: there is nothing to read
    exchange(object_pairs[sslsock.SocketNoEndTag], sslsock.SocketNoEndTag, payload)
