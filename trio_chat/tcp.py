"""The raw-TCP listener: newline-delimited JSON (and plain text for ``nc``)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from contextlib import suppress
from functools import partial

import trio

from . import tls
from .config import Config
from .protocol import SLOW_CONSUMER, Event, LineBuffer, ProtocolError, decode_line
from .room import Room
from .session import PeerGone, Session

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


def peer_name(stream: trio.abc.Stream) -> str:
    """``host:port`` of a socket stream's peer, for logs and per-IP accounting."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            host, port, *_ = stream.socket.getpeername()
        except OSError:
            return "?"
        return f"{host}:{port}"
    return "memory"


class TcpTransport:
    """Moves NDJSON lines over any trio Stream (a socket, TLS, or a memory stream)."""

    def __init__(self, stream: trio.abc.Stream, config: Config, peer: str = "?") -> None:
        self.stream = stream
        self.peer = peer
        self._lines = LineBuffer(config.max_line)
        self._max_text = config.max_text
        self._eof = False

    async def receive(self) -> Sequence[Event | ProtocolError] | None:
        if self._eof:
            return None
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except _STREAM_ERRORS:
            data = b""
        try:
            if data:
                lines = self._lines.feed(data)
            else:
                # EOF: a last line without its newline still counts.
                self._eof = True
                lines = self._lines.feed(b"\n") if self._lines.pending else []
        except ProtocolError as error:
            return [error]
        return [item for item in map(self._decode, lines) if item is not None]

    def _decode(self, line: bytes) -> Event | ProtocolError | None:
        try:
            return decode_line(line, self._max_text)
        except ProtocolError as error:
            return error

    async def send(self, lines: list[str], *, batch: bool = True) -> None:
        data = ("\n".join(lines) + "\n").encode()
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS as exc:
            raise PeerGone from exc

    async def close(self, reason: str | None) -> None:
        if reason == SLOW_CONSUMER:
            error = ProtocolError(SLOW_CONSUMER, "disconnected: you were not reading fast enough")
            # Only if it goes out at once (the peer has stopped reading); a fresh
            # line, since a cancelled write may have left half of one behind.
            with trio.move_on_after(0.05), suppress(PeerGone):
                await self.send(["", error.to_message()])
        await self.stream.aclose()


async def handle_tcp(room: Room, config: Config, stream: trio.abc.Stream) -> None:
    """One TCP connection. Never raises: an escaping error would end the listener."""
    peer = peer_name(stream)
    log.info("connect tcp %s", peer)
    if not await tls.handshake(stream, config.handshake_timeout, peer):
        await trio.aclose_forcefully(stream)
        log.info("disconnect tcp %s", peer)
        return
    try:
        await Session(room, config, TcpTransport(stream, config, peer)).run()
    except Exception:
        log.exception("connection %s failed", peer)
        await trio.aclose_forcefully(stream)
    log.info("disconnect tcp %s", peer)


async def serve_tcp_chat(
    room: Room,
    config: Config,
    handler_nursery: trio.Nursery | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[
        list[trio.abc.Listener[trio.abc.Stream]]
    ] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept TCP chat connections (TLS with ``ssl_context``); reports the listeners
    through ``task_status``."""
    listeners = await tls.open_listeners(config.tcp_port, config.host, ssl_context)
    await trio.serve_listeners(
        partial(handle_tcp, room, config),
        list(listeners),
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
