"""Run N TLS handshakes against an sslsock listener (one client in ten is sslsock's, the
others the stdlib's), each with an echo, plus
the usual failures (refused versions, garbage instead of a ClientHello, an oversized frame,
a close while a read is blocked), then N/10 (2 to 20) through a listener expecting the
PROXY header with shared ticket keys, bad headers and a certificate renewed under it, then
free everything.  Used for leak checks: under
LeakSanitizer (scripts/sanitize-tests.sh) and under valgrind (tests/test_hostile.py).

    python scripts/handshake_loop.py [N]
"""
from __future__ import annotations

import gc
import socket
import ssl
import sys
import tempfile
import threading
from pathlib import Path

import sslsock
from sslsock._certs import generate as _certgen
from sslsock._certs.store import CertStore
from sslsock._faces.objects import Listener, connect
from sslsock._tls.options import SSLOption as O


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        ca = _certgen.make_ca("leak-check CA")
        _certgen.make_leaf(ca, "localhost").write_pem(Path(d) / "localhost.pem")
        store = CertStore(d)
        ca_pem = ca.cert_pem()
        options = O.ProtocolTLS1_2 | O.ProtocolTLS1_3
        with Listener(0, "localhost", store=store, options=options, host="127.0.0.1",
                      threads=2, handshake_timeout=10.0) as listener:  # valgrind is slow
            port = listener.port
            warm_up(listener, port, store, ca_pem)
            stdlib = ssl.create_default_context(cadata=ca_pem.decode())
            for i in range(n):
                msg = b"ping %d" % i
                with listener_side(listener) as served:
                    if i % SSLSOCK_CLIENT_EVERY == 0:
                        # the sslsock client (its context is built by the first one, then
                        # shared; it resumes its session): one in ten
                        client_opts = O.ProtocolTLS1_2 if i % 2 else O.ProtocolTLS1_3
                        with connect("127.0.0.1", port, store=store, cafile_pem=ca_pem,
                                     server_hostname="localhost", options=client_opts,
                                     timeout=10) as c:
                            c.write(msg)
                            assert c.read(timeout=10) == msg
                    else:
                        stdlib.maximum_version = (ssl.TLSVersion.TLSv1_2 if i % 2
                                                  else ssl.TLSVersion.TLSv1_3)
                        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                                stdlib.wrap_socket(raw, server_hostname="localhost") as c:
                            c.sendall(b"%d\r\n%s" % (len(msg), msg))
                            want = b"%d\r\n%s" % (len(msg), msg)
                            got = b""
                            while len(got) < len(want):
                                chunk = c.recv(4096)
                                assert chunk, "the server closed early"
                                got += chunk
                            assert got == want, got
                    served.join(10)
                    assert served.ok
            failures(listener, port, store, ca_pem)
            engine(listener, port, stdlib)
        del listener
        deployment(Path(d), store, ca, stdlib, rounds=max(2, min(20, n // 10)))
    gc.collect()


SSLSOCK_CLIENT_EVERY = 10


def warm_up(listener: Listener, port: int, store: CertStore, ca_pem: bytes) -> None:
    """One sslsock handshake before the counted ones, whatever becomes of it: the first
    client builds its context (the system's CA bundle), and the first handshake of a
    process fetches OpenSSL's algorithms; under valgrind on a loaded machine that takes
    seconds, and the counted cycles should not pay for it."""
    try:
        with connect("127.0.0.1", port, store=store, cafile_pem=ca_pem,
                     server_hostname="localhost", timeout=60) as c:
            c.write(b"warm-up")
            with listener.accept(timeout=10) as s:
                s.read(timeout=10)
    except sslsock.Error:
        pass


class listener_side(threading.Thread):
    """Accept one client, echo one message, close: the server half of a cycle."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(daemon=True)
        self.listener = listener
        self.ok = False

    def run(self) -> None:
        with self.listener.accept(timeout=10) as s:
            s.write(s.read(timeout=10))
        self.ok = True

    def __enter__(self) -> listener_side:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join(10)


def failures(listener: Listener, port: int, store: CertStore, ca_pem: bytes) -> None:
    # a version the listener refuses
    try:
        connect("127.0.0.1", port, store=store, cafile_pem=ca_pem, server_hostname="localhost",
                options=O.ProtocolTLS1, timeout=5).close()
    except sslsock.Error:
        pass
    # garbage, half a ClientHello, a silent client that the time-out drops
    for payload in (b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x02"):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(payload)
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except OSError:
                pass
    # an oversized size header breaks the channel; a blocked read woken by close()
    with connect("127.0.0.1", port, store=store, cafile_pem=ca_pem, server_hostname="localhost",
                 timeout=5, mode=sslsock.Mode.SocketNoEndTag) as c, listener.accept(timeout=5) as s:
        c.write(b"99999999999\r\n")
        try:
            s.read(timeout=5)
        except sslsock.FrameError:
            pass
    with connect("127.0.0.1", port, store=store, cafile_pem=ca_pem, server_hostname="localhost",
                 timeout=5) as c, listener.accept(timeout=5) as s:
        t = threading.Thread(target=lambda: _swallow(s.read))
        t.start()
        s.close()
        t.join(5)
    # a connection left in the ready queue, freed by the listener's close
    connect("127.0.0.1", port, store=store, cafile_pem=ca_pem, server_hostname="localhost",
            timeout=5).close()
    listener.wait(timeout=5)


def engine(listener: Listener, port: int, ctx: ssl.SSLContext) -> None:
    """A few clients served by the channel engine (Listener.messages()): one sends two
    frames in one write, one a frame in two halves, one a malformed header."""
    def client(payload: bytes, halves: bool, want: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as c:
                if halves:
                    c.sendall(payload[:3])
                    c.sendall(payload[3:])
                else:
                    c.sendall(payload)
                c.settimeout(10)
                got = 0
                while got < want:  # the echo (then this client leaves), or the server's end
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    got += len(chunk)
        except (OSError, ssl.SSLError):
            pass

    payloads = [(b"2\r\nab3\r\ncde", False, 11), (b"5\r\nhello", True, 1 << 20),
                (b"x\r\n", False, 1 << 20)]
    threads = [threading.Thread(target=client, args=p, daemon=True) for p in payloads]
    for t in threads:
        t.start()
    ended = 0
    for conn, message in listener.messages(timeout=10):
        if message:
            conn.write(message)
            if message == b"hello":
                conn.close()  # the server ends this one
        else:
            ended += 1
        if ended == 2:
            break
    for t in threads:
        t.join(10)


def deployment(d: Path, store: CertStore, ca: _certgen.Issued, ctx: ssl.SSLContext,
               rounds: int) -> None:
    """The PROXY header (good, bad, cut short), shared ticket keys (set, resumed, rotated)
    and a renewed certificate taken by a running listener (its context replaced)."""
    import time

    from sslsock._deploy import tickets as _tickets

    keys = d / "ticket-keys"
    _tickets.rotate(keys)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    good = [b"PROXY TCP4 192.0.2.1 10.0.0.1 1000 443\r\n",
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12)]
    bad = [b"GET / HTTP/1.0\r\n\r\n", b"PROXY TCP4 1.2.3.4",
           b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"]
    with Listener(0, "localhost", store=store, host="127.0.0.1", threads=2,
                  proxy_protocol=True, proxy_allow=["127.0.0.0/8"], ticket_keys=str(keys),
                  handshake_timeout=10.0, reload_interval=None) as lst:
        session = None
        for i in range(rounds):
            with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
                raw.sendall(good[i % 2])
                with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as c:
                    conn = lst.accept(timeout=10)
                    conn.write(b"x")
                    assert c.recv(8) == b"1\r\nx"
                    session = c.session
                    conn.close()
            if i == rounds // 2:
                _tickets.rotate(keys)
                lst.reload()
        for data in bad:
            with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
                try:
                    raw.sendall(data)
                    raw.shutdown(socket.SHUT_WR)
                    raw.recv(1)
                except OSError:
                    pass  # refused: closed, perhaps reset
        deadline = time.monotonic() + 10
        while lst.stats().proxy_refused < len(bad) and time.monotonic() < deadline:
            time.sleep(0.01)
        # renewal: the store file replaced, the listener's context swapped
        (d / "localhost.pem").unlink()
        _certgen.make_leaf(ca, "localhost").write_pem(d / "localhost.pem")
        time.sleep(0.06)
        assert lst.reload()
        with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw:
            raw.sendall(good[0])
            with ctx.wrap_socket(raw, server_hostname="localhost") as c:
                lst.accept(timeout=10).close()


def _swallow(fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except sslsock.Error:
        pass


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
    print("handshake loop: done")
