"""The WebSocket listener, on trio-websocket.

We own the accept loop and wrap each stream with ``wrap_server_stream``, so every
connection's errors stay inside its handler (in trio-websocket 0.12.2 an exception
escaping a ``serve_websocket`` handler takes the whole server down).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from .config import Config
from .protocol import (
    SLOW_CONSUMER,
    TOO_LONG,
    Event,
    ProtocolError,
    decode_frame,
    wire_batch_frame,
    wire_frame,
)
from .room import Room
from .session import PeerGone, Session
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
        """Write everything queued in one ``send_all``: one frame per message, or
        (``batch``) one frame holding them all, newline-separated.

        ``send_message`` would cost a wsproto encode and a lock round per message
        per client; server frames are unmasked and uncompressed (we negotiate no
        extensions), so each broadcast's frame is built once (``Encoded.frame``)
        and the frames are written straight to the connection's stream, under the
        same lock trio-websocket takes for its own writes.
        """
        if batch and len(lines) > 1:
            data = wire_batch_frame(lines)
        else:
            data = b"".join(map(wire_frame, lines))
        ws = self.ws
        async with ws._stream_lock:
            if ws.closed is not None:  # closing: nothing may follow the close frame
                raise PeerGone
            try:
                await ws._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise PeerGone from exc

    async def close(self, reason: str | None) -> None:
        code, text = CLOSE_CODES.get(reason, (1011, reason or "error"))
        await self.ws.aclose(code, text)


async def handle_ws(room: Room, config: Config, stream: trio.abc.Stream) -> None:
    """One WebSocket connection. Never raises: an escaping error would end the listener."""
    peer = peer_name(stream)
    try:
        async with trio.open_nursery() as nursery:
            ws: WebSocketConnection | None = None
            with trio.move_on_after(config.handshake_timeout):
                request = await wrap_server_stream(
                    nursery, stream, max_message_size=config.max_line
                )
                ws = await request.accept()
                log.info("connect ws %s", peer)
            if ws is None:
                log.info("ws handshake from %s timed out", peer)
            else:
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
    await trio.serve_tcp(
        partial(handle_ws, room, config),
        config.ws_port,
        host=config.host,
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
