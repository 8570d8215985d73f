"""asyncio's streams over the channel engine: ``start_server`` and ``open_connection``
with the standard :class:`asyncio.StreamReader` / :class:`asyncio.StreamWriter` pair.

::

    from sslsock.streams import open_connection, start_server   # was: from asyncio import

    async def handle(reader, writer):
        line = await reader.readline()
        writer.write(line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await start_server(handle, "0.0.0.0", 8443, certificate="my-cert")
    reader, writer = await open_connection("example.org", 8443)

The reader and writer are asyncio's own classes, over a :class:`sslsock.transports
.Transport` (a byte stream: ``SocketNoEndTag`` mode), so ``read``, ``readexactly``,
``readline``, ``readuntil``, ``at_eof``, ``IncompleteReadError``, ``LimitOverrunError``,
``drain``, ``close``, ``wait_closed`` and ``get_extra_info`` behave exactly as with
asyncio.  Only the TLS arguments differ: ``certificate=``, ``options=``, ... (those of
:func:`sslsock.transports.create_server` and ``create_connection``) instead of ``ssl=``.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from sslsock import transports as _transports
from sslsock.transports import Server

__all__ = ["start_server", "open_connection", "StreamReader", "StreamWriter",
           "IncompleteReadError", "LimitOverrunError", "Server"]

StreamReader = asyncio.StreamReader
StreamWriter = asyncio.StreamWriter
IncompleteReadError = asyncio.IncompleteReadError
LimitOverrunError = asyncio.LimitOverrunError

#: asyncio's: the largest line (or readuntil separator search) a reader buffers
_DEFAULT_LIMIT = 2 ** 16

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


async def start_server(client_connected_cb: ClientConnected, host: Optional[str] = None,
                       port: Optional[int] = None, *, limit: int = _DEFAULT_LIMIT,
                       **kwds: Any) -> Server:
    """asyncio.start_server: ``client_connected_cb(reader, writer)`` for each client (a
    coroutine function runs as a task), once its TLS handshake is done.  ``kwds`` are
    :func:`sslsock.transports.create_server`'s (``certificate``, ``options``, ...)."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await _transports.create_server(factory, host, port, **kwds)


async def open_connection(host: Optional[str] = None, port: Optional[int] = None, *,
                          limit: int = _DEFAULT_LIMIT, **kwds: Any
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection: connect, complete the TLS handshake and return
    ``(reader, writer)``.  ``kwds`` are :func:`sslsock.transports.create_connection`'s
    (``options``, ``server_hostname``, ``cafile_pem``, ``verify``, ...)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await _transports.create_connection(lambda: protocol, host, port, **kwds)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
