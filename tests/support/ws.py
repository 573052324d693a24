"""WebSocket clients: :class:`WsClient` on a trio-websocket connection (the one a
test talks through), :func:`ws_client`/:func:`ws_over` to open one on a socket we own,
and :class:`LeanWs`, a lean client on wsproto for load tests.

trio-websocket's client hands over one message per scheduler round (a size-1 queue
between its reader task and ``get_message``); with hundreds of clients in one process
a round is long, so a client that gets one frame per message falls behind however
fast the server is. :class:`LeanWs` handles every frame of a read in one go.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, wrap_client_stream
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from .tcp import Message as ChatMessage
from .tcp import matches
from .waits import WAIT


class WsClient:
    """A chat client on a trio-websocket connection: JSON in, objects out (a batched
    frame is split into its lines); each wait bounded by ``wait`` seconds."""

    def __init__(self, ws: WebSocketConnection, wait: float = WAIT) -> None:
        self.ws = ws
        self.wait = wait
        self._pending: list[ChatMessage] = []

    async def send(self, obj: Any) -> None:
        await self.ws.send_message(json.dumps(obj))

    async def recv(self) -> ChatMessage:
        with trio.fail_after(self.wait):
            while not self._pending:
                message = await self.ws.get_message()
                assert isinstance(message, str)
                self._pending.extend(json.loads(part) for part in message.split("\n"))
        return self._pending.pop(0)

    async def recv_until(self, **match: Any) -> ChatMessage:
        while True:
            msg = await self.recv()
            if matches(msg, match):
                return msg

    async def join(self, name: str, **extra: Any) -> ChatMessage:
        await self.send({"type": "join", "user": name, **extra})
        welcome = await self.recv_until(type="welcome")
        await self.recv_until(type="system", event="join", name=name)
        return welcome


async def wrap_client(
    nursery: trio.Nursery, stream: trio.abc.Stream, host: str, path: str, **options: Any
) -> WebSocketConnection:
    """trio-websocket's ``wrap_client_stream`` on any Trio stream: it annotates its
    argument as a socket or TLS stream, but uses only the ``Stream`` interface (memory
    streams in these tests)."""
    return await wrap_client_stream(nursery, stream, host, path, **options)  # type: ignore[arg-type]


async def get_text(ws: WebSocketConnection) -> str:
    """The next message, which must be text (the chat protocol sends no binary)."""
    message = await ws.get_message()
    assert isinstance(message, str), message
    return message


def close_reason(closed: ConnectionClosed) -> CloseReason:
    """Why the connection closed (trio-websocket types the reason as optional; a
    ``ConnectionClosed`` it raises always has one)."""
    assert closed.reason is not None
    return closed.reason


@asynccontextmanager
async def ws_client(
    port: int, path: str = "/", **kwargs: Any
) -> AsyncIterator[WebSocketConnection]:
    """``async with ws_client(port) as ws:`` yields a raw trio-websocket connection.

    We own the socket so it is closed however the server ended the connection
    (trio-websocket's client leaves it to the garbage collector after a 1009 close).
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with ws_over(stream, "127.0.0.1", path, **kwargs) as ws:
        yield ws


@asynccontextmanager
async def ws_over(
    stream: trio.abc.Stream, host: str, path: str, **kwargs: Any
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket on a stream we own, closed (socket included) on the way out."""
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client(nursery, stream, host, path, **kwargs)
        try:
            yield ws
        finally:
            with trio.move_on_after(WAIT) as scope:
                scope.shield = True
                await ws.aclose()
            nursery.cancel_scope.cancel()


class LeanWs:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self._send_lock = trio.Lock()
        self._text: list[str] = []

    @classmethod
    async def connect(cls, stream: trio.SocketStream, path: str = "/") -> LeanWs:
        self = cls(stream)
        await self._write(self.ws.send(Request(host="127.0.0.1", target=path)))
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("closed during the handshake")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return self
                if isinstance(event, RejectConnection):
                    raise trio.BrokenResourceError(f"rejected: {event.status_code}")

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    async def send(self, text: str) -> None:
        try:
            data = self.ws.send(Message(data=text))
        except LocalProtocolError:
            raise trio.ClosedResourceError("the WebSocket is closed") from None
        await self._write(data)

    async def read(self, on_message: Callable[[str], object]) -> None:
        """Call ``on_message`` for each text message until the connection ends;
        answers pings and the server's close."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        on_message("".join(self._text))
                        self._text.clear()
                elif isinstance(event, Ping):
                    try:
                        await self._write(self.ws.send(event.response()))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    # The server may already have closed (a reset): the reply is a courtesy.
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self._write(self.ws.send(event.response()))
                    return
