"""Sessions over trio's in-memory streams, through the real connection handlers
(``handle_tcp``, ``handle_ws``): no sockets, so tests can run on ``autojump_clock``.

``ends`` lets a test put its own stream on the server's side (a
:class:`WrappedStream` that watches or holds the server's writes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from trio_websocket import WebSocketConnection

from trio_chat.config import Config
from trio_chat.server.limits import Gate
from trio_chat.server.rooms import Rooms
from trio_chat.server.session import Session
from trio_chat.transports.admission import Admission
from trio_chat.transports.tcp import handle_tcp
from trio_chat.transports.ws import handle_ws

from .tcp import TcpClient
from .waits import VIRTUAL_WAIT
from .ws import wrap_client

#: A client's end and the server's end of one connection.
Ends = tuple[trio.abc.Stream, trio.abc.Stream]
#: A connection handler: ``handle_tcp`` or ``handle_ws``.
Handler = Callable[[Admission, trio.abc.Stream], Awaitable[None]]


def memory_tcp(
    nursery: trio.Nursery,
    room: Rooms,
    config: Config,
    *,
    gate: Gate[Session] | None = None,
    ends: Ends | None = None,
) -> TcpClient:
    """A TCP-protocol session on a memory stream; returns the client end."""
    client, server = ends or trio.testing.memory_stream_pair()
    nursery.start_soon(handle_tcp, Admission(room, config, gate), server)
    return TcpClient(client, wait=VIRTUAL_WAIT)


async def memory_ws(
    nursery: trio.Nursery,
    room: Rooms,
    config: Config,
    *,
    gate: Gate[Session] | None = None,
    ends: Ends | None = None,
    admission: Admission | None = None,
    **client_options: Any,
) -> WebSocketConnection:
    """A WebSocket session on a memory stream; returns the client's connection
    (trio-websocket's, with ``client_options`` such as ``max_message_size``).
    ``admission``: the server's, shared with other connections (its pinger, say)."""
    client, server = ends or trio.testing.memory_stream_pair()
    if admission is None:
        admission = Admission(room, config, gate)
    nursery.start_soon(handle_ws, admission, server)
    return await wrap_client(nursery, client, "localhost", "/", **client_options)


class WrappedStream(trio.abc.Stream):
    """A stream that passes everything to ``inner``; tests override ``send_all`` to
    watch or hold the server's writes."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingStream(WrappedStream):
    """A stream that records each ``send_all`` it is given (the transport's writes)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)
