"""sslsock.transports: standard asyncio.Protocol objects over the channel engine, side by
side with asyncio's own TLS transport (loop.create_server / create_connection with
ssl=...), on the standard loop and on uvloop.

Protocol libraries nobody here wrote: an HTTP/1.1 server on h11 (tested with curl) and a
WebSocket echo on the websockets sans-I/O core (tested with the websockets client).
"""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import struct
import time
from typing import Any, Optional

import h11
import pytest
from conftest import peer_env
from test_aio import LOOPBACK, TLS, in_thread, run, stdlib_client
from test_streams import server_context
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

import sslsock
from sslsock import transports

__all__ = ["run"]

IMPLS = ["asyncio", "sslsock"]


async def create_server(impl: str, pki: Any, factory: Any) -> tuple[Any, int]:
    if impl == "asyncio":
        server: Any = await asyncio.get_running_loop().create_server(
            factory, LOOPBACK, 0, ssl=server_context(pki))
    else:
        server = await transports.create_server(factory, LOOPBACK, 0,
                                                certificate="localhost", options=TLS)
    return server, server.sockets[0].getsockname()[1]


async def create_connection(impl: str, pki: Any, factory: Any, port: int) -> Any:
    if impl == "asyncio":
        return await asyncio.get_running_loop().create_connection(
            factory, LOOPBACK, port, ssl=pki.client_context(), server_hostname="localhost")
    return await transports.create_connection(factory, LOOPBACK, port, options=TLS,
                                              cafile_pem=pki.ca_file.read_bytes(),
                                              server_hostname="localhost")


class Recorder(asyncio.Protocol):
    """Records the calls a transport makes."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.transport: Any = None
        self.received = bytearray()
        self.lost: asyncio.Future[Optional[BaseException]] = \
            asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.calls.append("made")

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> Optional[bool]:
        self.calls.append("eof")
        return None

    def pause_writing(self) -> None:
        self.calls.append("pause_writing")

    def resume_writing(self) -> None:
        self.calls.append("resume_writing")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.calls.append(("lost", None if exc is None else "error"))
        if not self.lost.done():
            self.lost.set_result(exc)


def reading_client(pki: Any, port: int, delay: float) -> int:
    """Reads everything after `delay` seconds, answers close_notify, returns the count."""
    with stdlib_client(pki, port) as s:
        s.settimeout(20)
        time.sleep(delay)
        total = 0
        while True:
            try:
                data = s.recv(1 << 20)
            except ssl.SSLZeroReturnError:
                break
            if not data:
                break
            total += len(data)
        try:
            s.unwrap()  # our close_notify: the server's close completes
        except (ssl.SSLError, OSError):
            pass
        return total


def test_write_flow_control_as_asyncio(pki: Any, run: Any) -> None:
    """4 MiB written at once with 64 KiB limits, then close(): pause_writing at once,
    resume_writing once the slow peer has read, connection_lost(None) after the peer's
    close_notify; every byte arrives.  The same calls, in the same order, as asyncio's
    up to close(); after it, asyncio's loops differ (the standard loop calls
    resume_writing and eof_received while closing, uvloop neither): sslsock calls
    resume_writing (the queue did drain) and no eof_received (no data after close())."""
    size = 4 << 20

    def scenario(impl: str) -> Any:
        async def main() -> Any:
            protos: list[Recorder] = []

            class Writer(Recorder):
                def connection_made(self, transport: Any) -> None:
                    super().connection_made(transport)
                    protos.append(self)
                    transport.set_write_buffer_limits(high=65536)
                    self.calls.append(("limits", transport.get_write_buffer_limits()))
                    for _ in range(size // 65536):
                        transport.write(b"w" * 65536)
                    self.calls.append(("buffered", transport.get_write_buffer_size() > 65536))
                    transport.close()
                    self.calls.append(("is_closing", transport.is_closing()))

            server, port = await create_server(impl, pki, Writer)
            async with server:
                total = await in_thread(reading_client, pki, port, 0.3)
                await asyncio.wait_for(protos[0].lost, 10)
            return total, protos[0].calls

        return main()

    expected = run(scenario("asyncio"))
    got = run(scenario("sslsock"))
    until_close = expected[1].index(("is_closing", True)) + 1
    assert got[0] == expected[0] == size
    assert got[1][:until_close] == expected[1][:until_close]
    assert "pause_writing" in expected[1][:until_close]
    assert got[1][until_close:] == ["resume_writing", ("lost", None)]
    assert expected[1][-1] == ("lost", None)


def test_pause_reading_holds_data_back(pki: Any, run: Any) -> None:
    """pause_reading() in connection_made: nothing reaches data_received while paused
    (the client's 1 MiB waits), everything in order once resumed; as asyncio's."""
    payload = bytes(range(256)) * 4096

    def scenario(impl: str) -> Any:
        async def main() -> Any:
            protos: list[Recorder] = []

            class Paused(Recorder):
                def connection_made(self, transport: Any) -> None:
                    super().connection_made(transport)
                    protos.append(self)
                    transport.pause_reading()
                    self.calls.append(("reading", transport.is_reading()))

            def client(port: int) -> None:
                with stdlib_client(pki, port) as s:
                    s.settimeout(5)
                    s.sendall(payload)
                    try:
                        s.sendall(b"")
                        s.recv(1)  # until the server closes
                    except (ssl.SSLError, OSError):
                        pass

            server, port = await create_server(impl, pki, Paused)
            async with server:
                task = asyncio.ensure_future(in_thread(client, port))
                await asyncio.sleep(0.5)
                p = protos[0]
                during = len(p.received)
                p.transport.resume_reading()
                for _ in range(200):
                    if len(p.received) >= len(payload):
                        break
                    await asyncio.sleep(0.02)
                ok = bytes(p.received) == payload
                p.transport.close()
                await asyncio.wait_for(p.lost, 10)
                await task
            return during, ok, p.calls[:2]

        return main()

    expected = run(scenario("asyncio"))
    assert expected == (0, True, ["made", ("reading", False)])
    assert run(scenario("sslsock")) == expected


def test_errors_reach_connection_lost(pki: Any, run: Any) -> None:
    """data_received raising: the loop's exception handler hears of it and
    connection_lost gets the exception; a peer's reset: connection_lost(an OSError);
    abort(): connection_lost(None) at once, the peer sees the connection end."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        handled: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _l, ctx: handled.append(ctx))
        protos: list[Recorder] = []

        class Faulty(Recorder):
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                protos.append(self)

            def data_received(self, data: bytes) -> None:
                if data.startswith(b"boom"):
                    raise ValueError("protocol bug")
                if data.startswith(b"abort"):
                    self.transport.abort()
                    self.calls.append(("closing", self.transport.is_closing()))

        def client(port: int, first: bytes, reset: bool) -> bytes:
            with stdlib_client(pki, port) as s:
                s.settimeout(10)
                s.sendall(first)
                if reset:
                    time.sleep(0.2)  # (served: then reset)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                    return b""
                try:
                    return s.recv(10)
                except (ssl.SSLError, OSError) as e:
                    return type(e).__name__.encode()

        server = await transports.create_server(Faulty, LOOPBACK, 0,
                                                certificate="localhost", options=TLS)
        async with server:
            await in_thread(client, server.port, b"boom", False)
            exc = await asyncio.wait_for(protos[0].lost, 10)
            assert isinstance(exc, ValueError)
            assert handled and handled[0]["exception"] is exc
            assert "data_received" in handled[0]["message"]

            await in_thread(client, server.port, b"hello", True)
            exc = await asyncio.wait_for(protos[1].lost, 10)
            assert isinstance(exc, OSError), exc

            got = await in_thread(client, server.port, b"abort", False)
            assert await asyncio.wait_for(protos[2].lost, 10) is None
            assert protos[2].calls == ["made", ("closing", True), ("lost", None)]
            assert got in (b"", b"SSLEOFError", b"ConnectionResetError", b"SSLError")
        assert len(handled) == 1  # the reset and the abort are not "unhandled"

    run(main())


def test_client_transport_and_extra_info(pki: Any, run: Any) -> None:
    """create_connection against asyncio's TLS server: an echo both ways, the extra
    info asyncio's code asks for, writes after close dropped, write_eof refused."""
    async def main() -> None:
        class Echo(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def data_received(self, data: bytes) -> None:
                self.t.write(data)

        server, port = await create_server("asyncio", pki, Echo)
        async with server:
            t, p = await create_connection("sslsock", pki, Recorder, port)
            assert isinstance(t, asyncio.Transport)
            t.writelines([b"ping ", memoryview(b"pong "), bytearray(b"end")])
            for _ in range(100):
                if bytes(p.received) == b"ping pong end":
                    break
                await asyncio.sleep(0.02)
            assert bytes(p.received) == b"ping pong end"
            assert t.get_extra_info("peername") == (LOOPBACK, port)
            assert t.get_extra_info("cipher")[1] in ("TLSv1.2", "TLSv1.3")
            ssl_object = t.get_extra_info("ssl_object")
            assert ssl_object.version() == t.get_extra_info("cipher")[1]
            cert = ssl_object.getpeercert()
            assert dict(x[0] for x in cert["subject"])["commonName"] == "localhost"
            assert ("DNS", "localhost") in cert["subjectAltName"]
            assert ssl_object.getpeercert(True)[:1] == b"\x30"  # DER
            assert t.get_extra_info("nothing", "dflt") == "dflt"
            assert not t.can_write_eof()
            with pytest.raises(NotImplementedError):
                t.write_eof()
            with pytest.raises(TypeError, match="bytes-like"):
                t.write("text")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="must be >="):
                t.set_write_buffer_limits(high=10, low=20)
            t.close()
            t.write(b"dropped")  # (as asyncio: no error)
            assert await asyncio.wait_for(p.lost, 10) is None
            assert p.calls[-1] == ("lost", None)
            assert t.get_extra_info("peername") == (LOOPBACK, port)  # kept after close

    run(main())


# ---------------------------------------------------------------------------------------
# h11 (HTTP/1.1) and curl


class HTTPServer(asyncio.Protocol):
    """A small HTTP/1.1 server on h11: echoes the method, path and body as JSON;
    keep-alive as h11 decides."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.body = b""
        self.request: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._events()

    def eof_received(self) -> Optional[bool]:
        self.conn.receive_data(b"")
        self._events()
        return None

    def _events(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if self.conn.our_state is h11.MUST_CLOSE:
                    self.transport.close()
                elif event is h11.PAUSED and self.conn.our_state is h11.DONE \
                        and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                    continue
                return
            if isinstance(event, h11.Request):
                self.request, self.body = event, b""
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                info = self.transport.get_extra_info("cipher")
                reply = json.dumps({"method": self.request.method.decode(),
                                    "target": self.request.target.decode(),
                                    "body": self.body.decode(),
                                    "tls": info[1] if info else None}).encode()
                for out in (h11.Response(status_code=200, headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(reply)))]),
                            h11.Data(data=reply), h11.EndOfMessage()):
                    self.transport.write(self.conn.send(out))
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("impl", IMPLS)
def test_h11_server_with_curl(pki: Any, run: Any, impl: str) -> None:
    """curl makes two requests on one connection (keep-alive), a GET and a POST; the
    answers are the same from asyncio's transport and from sslsock's."""
    async def main() -> Any:
        server, port = await create_server(impl, pki, HTTPServer)
        async with server:
            base = f"https://localhost:{port}"
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sS", "-v", "--http1.1", "--cacert", str(pki.ca_file),
                "--max-time", "10", f"{base}/first?x=1", "--next", "--http1.1",
                "--cacert", str(pki.ca_file), "--max-time", "10", "-d", "hello=world",
                f"{base}/second", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=peer_env())
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        replies = [json.loads(line) for line in out.replace(b"}{", b"}\n{").splitlines()]
        reused = b"Re-using existing" in err or b"Reusing existing" in err
        return replies, reused

    replies, reused = run(main())
    assert replies == [
        {"method": "GET", "target": "/first?x=1", "body": "", "tls": "TLSv1.3"},
        {"method": "POST", "target": "/second", "body": "hello=world", "tls": "TLSv1.3"},
    ]
    assert reused  # one connection, two requests


# ---------------------------------------------------------------------------------------
# websockets (sans-I/O core) and the websockets client


class WebSocketEcho(asyncio.Protocol):
    """A WebSocket echo on websockets' sans-I/O ServerProtocol."""

    def __init__(self) -> None:
        self.ws = ServerProtocol()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._step()

    def eof_received(self) -> Optional[bool]:
        self.ws.receive_eof()
        self._step()
        return None

    def _step(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.ws.send_response(self.ws.accept(event))
            elif event.opcode is Opcode.TEXT:
                self.ws.send_text(event.data)
            elif event.opcode is Opcode.BINARY:
                self.ws.send_binary(event.data[::-1])
        for out in self.ws.data_to_send():
            if out:
                self.transport.write(out)
            else:
                self.transport.close()  # the protocol says: end of stream
        if self.ws.close_expected():
            self.transport.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_websocket_echo_with_the_websockets_client(pki: Any, run: Any, impl: str) -> None:
    async def main() -> Any:
        server, port = await create_server(impl, pki, WebSocketEcho)
        async with server:
            async with ws_connect(f"wss://localhost:{port}/echo", ssl=pki.client_context(),
                                  open_timeout=10, close_timeout=5) as ws:
                got = []
                for text in ["hello", "é" * 70000, ""]:
                    await ws.send(text)
                    got.append(await ws.recv())
                await ws.send(b"\x00\x01\x02")
                got.append(await ws.recv())
                await ws.ping()
            code = ws.close_code
        return got, code

    got, code = run(main())
    assert got == ["hello", "é" * 70000, "", b"\x02\x01\x00"]
    assert code == 1000


def test_many_protocol_clients_from_threads(pki: Any, run: Any) -> None:
    """Eight stdlib clients at once against one sslsock server of an echo protocol."""
    async def main() -> None:
        class Echo(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def data_received(self, data: bytes) -> None:
                self.t.write(data)

        def client(port: int, k: int) -> bool:
            with stdlib_client(pki, port) as s:
                s.settimeout(10)
                msg = b"client %d " % k * 1000
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    got += s.recv(65536)
                return got == msg

        server = await transports.create_server(Echo, LOOPBACK, 0, certificate="localhost",
                                                options=TLS)
        async with server:
            assert all(await asyncio.gather(*(in_thread(client, server.port, k)
                                              for k in range(8))))

    run(main())


def test_bad_arguments(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(sslsock.ArgumentError, match="certificate="):
            await transports.create_server(asyncio.Protocol, LOOPBACK, 0,
                                           ssl=ssl.create_default_context())
        with pytest.raises(sslsock.ArgumentError, match="handshake_timeout="):
            await transports.create_connection(asyncio.Protocol, LOOPBACK, 1,
                                               ssl_handshake_timeout=3)
        with pytest.raises(TypeError, match="protocol_factory"):
            await transports.create_connection(None, LOOPBACK, 1)  # type: ignore[arg-type]

    run(main())


