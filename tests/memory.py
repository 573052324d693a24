"""Connections over trio's in-memory streams, for tests that need a virtual clock."""

from __future__ import annotations

import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

from tests.helpers import TcpClient
from trio_chat.config import Config
from trio_chat.server.room import Room
from trio_chat.transports.admission import Admission
from trio_chat.transports.tcp import handle_tcp
from trio_chat.transports.ws import handle_ws

#: Under autojump_clock a wait is virtual: this bound never costs real time.
VIRTUAL_WAIT = 1000


def tcp_client(nursery: trio.Nursery, room: Room, config: Config) -> TcpClient:
    """A TCP-protocol session on a memory stream; returns the client end."""
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_tcp, Admission(room, config), server)
    return TcpClient(client, wait=VIRTUAL_WAIT)


async def ws_client(nursery: trio.Nursery, room: Room, config: Config) -> WebSocketConnection:
    """A WebSocket session on a memory stream; returns the client's connection."""
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, Admission(room, config), server)
    return await wrap_client_stream(nursery, client, "localhost", "/")


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
