"""A lean WebSocket client on wsproto, for load tests.

trio-websocket's client hands over one message per scheduler round (a size-1 queue
between its reader task and ``get_message``); with hundreds of clients in one process
a round is long, so a client that gets one frame per message falls behind however
fast the server is. This one handles every frame of a read in one go.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

import trio
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
