"""The WebSocket listener, on trio-websocket, which also serves the chat page.

Each connection starts in :mod:`trio_chat.http`: plain HTTP requests get the page,
WebSocket upgrades come back here. We own the accept loop and wrap each stream with
``wrap_server_stream``, so every connection's errors stay inside its handler (in
trio-websocket 0.12.2 an exception escaping a ``serve_websocket`` handler takes the
whole server down).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from . import http
from .config import Config
from .protocol import SLOW_CONSUMER, TOO_LONG, Event, ProtocolError, decode_frame
from .room import Room
from .session import PeerGone, Session
from .startup import open_listeners
from .tcp import peer_name

log = logging.getLogger(__name__)

#: WebSocket close codes for the reasons a session ends (docs/protocol.md).
CLOSE_CODES: dict[str | None, tuple[int, str]] = {
    None: (1000, "bye"),
    SLOW_CONSUMER: (4008, "slow consumer"),
    TOO_LONG: (1009, "message too big"),
}


class WsTransport:
    """Moves protocol messages as WebSocket text frames."""

    def __init__(self, ws: WebSocketConnection, config: Config, peer: str = "?") -> None:
        self.ws = ws
        self.peer = peer
        self._max_text = config.max_text

    async def receive(self) -> Sequence[Event | ProtocolError] | None:
        try:
            message = await self.ws.get_message()
        except ConnectionClosed:
            return None
        try:
            event = decode_frame(message, self._max_text)
        except ProtocolError as error:
            return [error]
        return [] if event is None else [event]

    async def send(self, lines: list[str], *, batch: bool) -> None:
        try:
            if batch:
                await self.ws.send_message("\n".join(lines))
            else:
                for line in lines:
                    await self.ws.send_message(line)
        except ConnectionClosed as exc:
            raise PeerGone from exc

    async def close(self, reason: str | None) -> None:
        code, text = CLOSE_CODES.get(reason, (1011, reason or "error"))
        await self.ws.aclose(code, text)


async def handle_ws(room: Room, config: Config, stream: trio.abc.Stream) -> None:
    """One connection on the WebSocket port: a chat over WebSocket, or a plain HTTP
    request for the page. Never raises: an escaping error would end the listener."""
    peer = peer_name(stream)
    try:
        async with trio.open_nursery() as nursery:
            ws: WebSocketConnection | None = None
            with trio.move_on_after(config.handshake_timeout) as handshake:
                upgrade = await http.serve_http(stream, config, peer)
                if upgrade is not None:
                    request = await wrap_server_stream(
                        nursery, upgrade, max_message_size=config.max_line
                    )
                    ws = await request.accept()
                    log.info("connect ws %s", peer)
            if handshake.cancelled_caught:
                log.info("handshake from %s timed out", peer)
            elif ws is not None:
                await Session(room, config, WsTransport(ws, config, peer)).run()
                log.info("disconnect ws %s", peer)
            nursery.cancel_scope.cancel()  # the library's reader task, if still running
    except Exception:
        log.exception("connection %s failed", peer)
    finally:
        await trio.aclose_forcefully(stream)


async def serve_ws_chat(
    room: Room,
    config: Config,
    handler_nursery: trio.Nursery | None = None,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept WebSocket chat connections; reports the listeners through ``task_status``."""
    listeners = await open_listeners(config.host, config.ws_port)
    await trio.serve_listeners(
        partial(handle_ws, room, config),
        listeners,
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
