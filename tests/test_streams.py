"""sslsock.streams side by side with asyncio's own streams over stdlib ssl.

The same scenario runs with every pairing of server and client (asyncio + ssl, or
sslsock.streams), on the standard loop and on uvloop; each transcript must equal the one
asyncio gives against itself: readline, readexactly, readuntil, read(n), LimitOverrunError,
IncompleteReadError at EOF, at_eof, drain with a slow reader, close / wait_closed /
is_closing, get_extra_info.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable

import pytest
from test_aio import LOOPBACK, TLS, run

import sslsock
import sslsock.streams as streams
from sslsock import transports

__all__ = ["run"]

IMPLS = ["asyncio", "sslsock"]


def server_context(pki: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_cert_file), str(pki.server_key_file))
    return ctx


async def serve(impl: str, pki: Any, handler: Callable[..., Any], limit: int = 2 ** 16
                ) -> tuple[Any, int]:
    if impl == "asyncio":
        server: Any = await asyncio.start_server(handler, LOOPBACK, 0, limit=limit,
                                                 ssl=server_context(pki))
    else:
        server = await streams.start_server(handler, LOOPBACK, 0, limit=limit,
                                            certificate="localhost", options=TLS)
    return server, server.sockets[0].getsockname()[1]


async def open_conn(impl: str, pki: Any, port: int, limit: int = 2 ** 16) -> Any:
    if impl == "asyncio":
        return await asyncio.open_connection(LOOPBACK, port, limit=limit,
                                             ssl=pki.client_context(),
                                             server_hostname="localhost")
    return await streams.open_connection(LOOPBACK, port, limit=limit,
                                         cafile_pem=pki.ca_file.read_bytes(),
                                         server_hostname="localhost", options=TLS)


def scenario(pki: Any, server_impl: str, client_impl: str) -> Any:
    """What the server's reader saw, and what the client saw, as comparable values."""
    seen: list[Any] = []
    done: asyncio.Future[None]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(("readline", await reader.readline()))
            seen.append(("readexactly", await reader.readexactly(6)))
            seen.append(("readuntil", await reader.readuntil(b"--sep--")))
            seen.append(("read(5)", await reader.read(5)))
            big = await reader.readexactly(300_000)
            seen.append(("big", len(big), big == bytes(range(256)) * 1171 + bytes(range(224))))
            try:
                await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as e:
                seen.append(("LimitOverrunError", e.consumed > 0))
            seen.append(("after overrun", len(await reader.readexactly(5000))))
            try:
                await reader.readuntil(b"!")
            except asyncio.IncompleteReadError as e:  # (not reached: '!' comes)
                seen.append(("early", e.partial))
            writer.write(b"ready\n")
            await writer.drain()
            try:
                await reader.readexactly(10)
            except asyncio.IncompleteReadError as e:
                seen.append(("IncompleteReadError", e.partial, e.expected))
            seen.append(("at_eof", reader.at_eof(), await reader.read()))
            seen.append(("peername", writer.get_extra_info("peername")[0]))
            seen.append(("cipher", writer.get_extra_info("cipher")[1]))
            writer.close()
            seen.append(("is_closing", writer.is_closing()))
            await writer.wait_closed()
        except Exception as e:  # noqa: BLE001 - compared below
            seen.append(("error", type(e).__name__, str(e)))
        finally:
            if not done.done():
                done.set_result(None)

    async def main() -> Any:
        nonlocal done
        done = asyncio.get_running_loop().create_future()
        server, port = await serve(server_impl, pki, handler, limit=4096)
        async with server:
            reader, writer = await open_conn(client_impl, pki, port)
            client: list[Any] = [
                ("sockname", writer.get_extra_info("sockname")[0]),
                ("peercert", dict(x[0] for x in writer.get_extra_info("peercert")["subject"])),
                ("version", writer.get_extra_info("ssl_object").version()),
            ]
            writer.write(b"line one\nabcdef")
            writer.writelines([b"up to here--", b"sep--", b"12345"])
            writer.write(bytes(range(256)) * 1171 + bytes(range(224)))
            writer.write(b"x" * 5000 + b"!")
            await writer.drain()
            client.append(("ready", await reader.readline()))
            writer.write(b"end")
            await writer.drain()
            writer.close()
            client.append(("is_closing", writer.is_closing()))
            await writer.wait_closed()
            client.append(("after close", await reader.read()))
            await asyncio.wait_for(done, 10)
        return seen, client

    return main()


@pytest.mark.parametrize("server_impl", IMPLS)
@pytest.mark.parametrize("client_impl", IMPLS)
def test_streams_behave_as_asyncio(pki: Any, run: Any, server_impl: str,
                                   client_impl: str) -> None:
    expected = run(scenario(pki, "asyncio", "asyncio"))
    got = run(scenario(pki, server_impl, client_impl))
    assert got == expected
    server_side, client_side = got
    assert ("IncompleteReadError", b"end", 10) in server_side  # (the reference is sane)
    assert ("LimitOverrunError", True) in server_side
    assert ("ready", b"ready\n") in client_side


@pytest.mark.parametrize("engine_thread", [False, True])
def test_drain_waits_for_a_slow_reader(pki: Any, run: Any, engine_thread: bool) -> None:
    """8 MiB written by a sslsock stream server with drain() to an asyncio client that
    reads slowly: drain() waits (the transport paused the protocol), everything arrives,
    then the close waits for the client's close_notify (a uvloop client whose reading is
    paused would drop the end of the data if the server's FIN came first)."""
    size = 8 << 20
    waits: list[float] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        chunk = b"d" * 65536
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            t0 = loop.time()
            await writer.drain()
            waits.append(loop.time() - t0)
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await streams.start_server(handler, LOOPBACK, 0, certificate="localhost",
                                            options=TLS, engine_thread=engine_thread)
        async with server:
            reader, writer = await open_conn("asyncio", pki, server.port)
            total = 0
            await asyncio.sleep(0.3)  # not reading
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                total += len(data)
            writer.close()
            assert total == size
        assert max(waits) > 0.1  # drain() did wait while the client did not read

    run(main())


def test_arguments_of_asyncio_only_say_what_to_use(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(sslsock.ArgumentError, match="certificate="):
            await streams.start_server(lambda r, w: None, LOOPBACK, 0,
                                       ssl=ssl.create_default_context())
        with pytest.raises(sslsock.ArgumentError, match="host and port"):
            await streams.open_connection(None, None)
        with pytest.raises(TypeError, match="protocol_factory must be callable"):
            await transports.create_server(None, LOOPBACK, 0)  # type: ignore[arg-type]

    run(main())
