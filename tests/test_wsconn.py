"""The one reach-into trio-websocket (trio_chat/transports/wsconn.py), pinned: these
fail loudly on a trio-websocket release whose ``WebSocketConnection`` no longer has
the private ``_stream`` and ``_stream_lock`` that pre-built frames are written under.

Real connections over memory streams: trio-websocket's server end (what the server
holds) and its client end (what a browser or ``trio-chat join`` would be).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream
from wsproto import ConnectionType, WSConnection

from tests.support.waits import VIRTUAL_WAIT
from tests.support.ws import close_reason, get_text, wrap_client
from trio_chat import protocol
from trio_chat.transports import wsconn

pytestmark = pytest.mark.usefixtures("autojump_clock")


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    """A real trio-websocket connection over memory: (server end, client end)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        server: list[WebSocketConnection] = []

        async def accept() -> None:
            request = await wrap_server_stream(nursery, server_stream)
            server.append(await request.accept())

        nursery.start_soon(accept)
        with trio.fail_after(VIRTUAL_WAIT):
            client = await wrap_client(nursery, client_stream, "localhost", "/")
            await trio.testing.wait_all_tasks_blocked()
        (ws,) = server
        yield ws, client
        nursery.cancel_scope.cancel()


async def test_a_real_connection_has_what_wsconn_reaches_into() -> None:
    async with connected() as (ws, _):
        for name in wsconn.PRIVATE_ATTRIBUTES:
            assert hasattr(ws, name), f"trio-websocket's WebSocketConnection lost {name}"
        assert isinstance(ws._stream, trio.abc.Stream)
        assert isinstance(ws._stream_lock, trio.StrictFIFOLock)
        wsconn.check(ws)  # what handle_ws runs on every connection: no error


def test_check_refuses_a_connection_without_them() -> None:
    """What a trio-websocket release without them would get: a clear error, at the
    first connection, rather than frames written past the library."""

    class Renamed:
        _stream = None
        _send_lock = trio.StrictFIFOLock()  # not the name wsconn uses

    with pytest.raises(RuntimeError, match="trio-websocket's WebSocketConnection changed"):
        wsconn.check(cast(WebSocketConnection, Renamed()))

    class NotALock:
        _stream = None
        _stream_lock = trio.Lock()  # a different kind of lock
        _wsproto = WSConnection(ConnectionType.SERVER)

    with pytest.raises(RuntimeError, match="_stream_lock"):
        wsconn.check(cast(WebSocketConnection, NotALock()))

    class NotWsproto:
        _stream = None
        _stream_lock = trio.StrictFIFOLock()
        _wsproto = object()  # not wsproto's connection

    with pytest.raises(RuntimeError, match="_wsproto"):
        wsconn.check(cast(WebSocketConnection, NotWsproto()))


async def test_a_connection_without_its_handshake_state_still_talks() -> None:
    """Once open, the server end lets go of wsproto's handshake (memory per idle
    connection): messages both ways, a ping's pong and the closing handshake still
    work."""
    async with connected() as (ws, client):
        wsconn.shed_handshake(ws)
        wsconn.shed_handshake(ws)  # twice is harmless
        await client.send_message("hello")
        with trio.fail_after(VIRTUAL_WAIT):
            assert await ws.get_message() == "hello"
            await ws.send_message("back")
            assert await client.get_message() == "back"
            await client.ping(b"1234")  # the server end answers it
            await ws.ping(b"5678")  # and reads the client's pong
            await client.aclose(1000, "bye")
        assert ws.closed is not None and ws.closed.code == 1000


async def test_prebuilt_frames_reach_a_real_client_as_messages() -> None:
    """One message's frame is built once (Encoded.frame) and written as is; a batch
    is one frame of newline-separated lines. trio-websocket's client reads both."""
    chat = protocol.chat("Ann", "héllo", "2026-12-01T00:00:00.000Z")
    assert isinstance(chat, protocol.Encoded)  # the broadcast kind: its frame built once
    lines: list[str] = [protocol.encode({"n": 1}), protocol.encode({"n": 2})]
    async with connected() as (ws, client):
        await wsconn.send_frames(ws, chat.frame + protocol.wire_batch_frame(lines))
        assert await get_text(client) == chat
        assert await get_text(client) == "\n".join(lines)
        # The library's own sends go through the same lock and stream: in order.
        await ws.send_message("after")
        await wsconn.send_frames(ws, protocol.wire_frame("last"))
        assert [await get_text(client), await get_text(client)] == ["after", "last"]


async def test_frames_never_follow_the_close() -> None:
    async with connected() as (ws, client):
        await ws.aclose(1000, "bye")
        with pytest.raises(trio.ClosedResourceError):
            await wsconn.send_frames(ws, protocol.wire_frame("too late"))
        with pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
        assert close_reason(closed.value).code == 1000
