"""Fuzz a live TLS listener (object face, port 0, created once per process) from the
network: arbitrary bytes as a ClientHello, and arbitrary bytes after a real handshake.

Invariant: whatever a client sends,
  - the process survives (no crash in the C accept engine, handshake or record layer);
  - the server side only ever sees sslsock errors (TLSError, PeerClosed, FrameError,
    SocketTimeout ...) from accept() and read(), never another exception;
  - once the client has finished sending (shutdown of its write side), the server answers
    and closes the connection within a few seconds: nothing hangs;
  - a well-behaved client connecting at the same time is served: every 50th input, while
    the hostile connection is still open (its bytes sent, its EOF not yet), a verified
    sslsock client connects, and its message comes back (echo); so it is at start-up.

Input layout: byte 0 picks what the rest is:
  bit 0 = 0: raw bytes sent in place of a ClientHello (the seed corpus holds real
             ClientHellos captured from the stdlib ssl module, TLS 1.2 and 1.3);
  bit 0 = 1: a stdlib ssl client completes a handshake first, then
             bit 2 picks TLS 1.2 (0) or TLS 1.3 (1), and
             bit 3 = 0: the rest is injected raw into the TCP stream (TLS records,
                        or garbage shaped like them);
             bit 3 = 1: the rest is sent as application data inside TLS (so the server's
                        SocketSizeAtBeginning decoder reads it);
  bit 1: deliver the rest whole (0) or one byte at a time (1).
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from typing import Callable

import atheris

with atheris.instrument_imports(include=["sslsock"]):
    import sslsock
    from sslsock._certs import generate as _certgen
    from sslsock._certs.store import CertStore
    from sslsock._faces.objects import Listener, connect
    from sslsock._tls.options import SSLOption

HEALTH_EVERY = 50
ANSWER_WITHIN = 8.0  # seconds for the server to finish with a connection after EOF

_DIR = tempfile.mkdtemp(prefix="sslsock-fuzz-listener-")
atexit.register(shutil.rmtree, _DIR, True)
_CA = _certgen.make_ca("sslsock fuzz CA")
_certgen.make_leaf(_CA, "localhost").write_pem(os.path.join(_DIR, "localhost.pem"))
STORE = CertStore(_DIR)
CA_PEM = _CA.cert_pem()
OPTIONS = (SSLOption.ProtocolTLS1 | SSLOption.ProtocolTLS1_1 | SSLOption.ProtocolTLS1_2
           | SSLOption.ProtocolTLS1_3)

LISTENER = Listener(0, "localhost", store=STORE, options=OPTIONS, handshake_timeout=2.0,
                    host="127.0.0.1")
PORT = LISTENER.port
FAILURES: list[str] = []
_count = 0


def _serve(conn: sslsock.Connection) -> None:
    try:
        while True:
            msg = conn.read(timeout=5.0)
            conn.write(msg, timeout=5.0)
    except sslsock.Error:
        pass
    except BaseException as e:  # noqa: BLE001 - the finding we are looking for
        FAILURES.append(f"server read/write raised {e!r}")
    finally:
        conn.close()


def _accept_loop() -> None:
    while True:
        try:
            conn = LISTENER.accept(timeout=None)
        except sslsock.SocketClosed:
            return
        except sslsock.Error as e:
            FAILURES.append(f"accept() raised {e!r}")
            return
        except BaseException as e:  # noqa: BLE001
            FAILURES.append(f"accept() raised {e!r}")
            return
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


threading.Thread(target=_accept_loop, daemon=True, name="accept").start()


def _send(sock: socket.socket, data: bytes, bytewise: bool) -> None:
    try:
        if bytewise:
            for i in range(len(data)):
                sock.sendall(data[i : i + 1])
        else:
            sock.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server gave up on us early: allowed


def _eof(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # already reset by the server: allowed


def _until_closed(sock: socket.socket, what: str) -> None:
    """After our EOF, the server must answer and close within ANSWER_WITHIN seconds."""
    sock.settimeout(ANSWER_WITHIN)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"{what}: the server neither closed nor answered within "
                             f"{ANSWER_WITHIN} s after the client's EOF") from None


def _client_context(tls13: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    return ctx


_CTX = {False: _client_context(False), True: _client_context(True)}


def _pump(sock: socket.socket, out: ssl.MemoryBIO) -> None:
    data = out.read()
    if data:
        sock.sendall(data)


def _handshake(sock: socket.socket, tls13: bool) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = _CTX[tls13].wrap_bio(inc, out, server_side=False)
    sock.settimeout(ANSWER_WITHIN)
    while True:
        try:
            obj.do_handshake()
            _pump(sock, out)
            return obj, inc, out
        except ssl.SSLWantReadError:
            _pump(sock, out)
            data = sock.recv(65536)
            if not data:
                raise AssertionError("the server closed during a good handshake") from None
            inc.write(data)


def _raw_hello(payload: bytes, bytewise: bool, during: Callable[[], None]) -> None:
    with socket.create_connection(("127.0.0.1", PORT), timeout=ANSWER_WITHIN) as s:
        _send(s, payload, bytewise)
        during()
        _eof(s)
        _until_closed(s, "raw ClientHello")


def _after_handshake(payload: bytes, bytewise: bool, tls13: bool, inside: bool,
                     during: Callable[[], None]) -> None:
    with socket.create_connection(("127.0.0.1", PORT), timeout=ANSWER_WITHIN) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        obj, _inc, out = _handshake(s, tls13)
        if inside:
            if bytewise:
                for i in range(len(payload)):
                    obj.write(payload[i : i + 1])
                    _send(s, out.read(), False)
            elif payload:
                obj.write(payload)
                _send(s, out.read(), False)
        else:
            _send(s, payload, bytewise)
        during()
        _eof(s)
        _until_closed(s, "bytes after the handshake")


def health_check() -> None:
    """A well-behaved, verifying client is served (and the server threads are clean)."""
    assert not FAILURES, FAILURES
    tag = f"health-{_count}".encode()
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect("localhost", PORT, store=STORE, cafile_pem=CA_PEM, timeout=5.0) as c:
                c.write(tag, timeout=5.0)
                got = c.read(timeout=5.0)
            break
        except sslsock.Error as e:
            if time.monotonic() > deadline:  # one retry window: never a silent pass
                raise AssertionError(f"a good client is not served: {e!r}; stats: "
                                     f"{LISTENER.stats()}") from None
            time.sleep(0.1)
    assert got == tag, (got, tag)


def TestOneInput(data: bytes) -> None:
    global _count
    if not data:
        return
    _count += 1
    during = health_check if _count % HEALTH_EVERY == 0 else _nothing
    sel, payload = data[0], data[1:]
    bytewise = bool(sel & 2)
    if sel & 1:
        _after_handshake(payload, bytewise, tls13=bool(sel & 4), inside=bool(sel & 8),
                         during=during)
    else:
        _raw_hello(payload, bytewise, during)


def _nothing() -> None:
    pass


def main() -> None:
    health_check()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
