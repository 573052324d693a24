"""The raw-TCP listener: newline-delimited JSON (and plain text for ``nc``)."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence
from contextlib import suppress
from functools import partial

import trio

from . import tls
from .config import Config
from .limits import Gate
from .protocol import SLOW_CONSUMER, Event, LineBuffer, ProtocolError, decode_line, wire_line
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


def peer_host(peer: str) -> str:
    """The address part of :func:`peer_name`'s ``host:port`` (what per-IP caps count)."""
    return peer.rpartition(":")[0] or peer


#: TCP keepalive: first probe after this many idle seconds, then every
#: KEEPALIVE_INTERVAL, giving up after KEEPALIVE_COUNT unanswered probes, so a peer
#: whose machine vanished is noticed in about 90 s even if we never write to it.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def set_keepalive(stream: trio.abc.Stream) -> None:
    """Turn on TCP keepalive for a socket stream, or the socket under a TLS stream
    (a no-op for other streams)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return
    try:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ):
            if hasattr(socket, name):
                stream.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass  # the peer may already be gone; the session will notice


async def refuse_tcp(stream: trio.abc.Stream, error: ProtocolError, timeout: float) -> None:
    """Tell a connection over a cap why, if that can be done quickly, and close it
    (lingering like :meth:`TcpTransport.close`, so what it already sent cannot turn
    our close into a reset that destroys the error line)."""
    with trio.move_on_after(timeout), suppress(*_STREAM_ERRORS, OSError):
        await stream.send_all(error.to_message().encode() + b"\n")
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
            while await stream.receive_some(RECEIVE_SIZE):
                pass
        elif isinstance(stream, trio.SSLStream):
            await stream.aclose()  # close_notify: a TLS client sees a clean end, not a cut
    await trio.aclose_forcefully(stream)


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
        errors: list[ProtocolError] = []
        try:
            if data:
                lines = self._lines.feed(data)
            else:
                # EOF: a last line without its newline still counts.
                self._eof = True
                lines = self._lines.feed(b"\n") if self._lines.pending else []
        except ProtocolError as error:
            # The lines before the overlong one came first: they still count.
            lines, errors = self._lines.before_error, [error]
        return [*(item for item in map(self._decode, lines) if item is not None), *errors]

    def _decode(self, line: bytes) -> Event | ProtocolError | None:
        try:
            return decode_line(line, self._max_text)
        except ProtocolError as error:
            return error

    async def send(self, lines: list[str], *, batch: bool = True) -> None:
        # Broadcast messages arrive already encoded (protocol.Encoded): no per-client
        # encoding, and the whole queue leaves in one write.
        data = b"".join(map(wire_line, lines))
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS as exc:
            raise PeerGone from exc

    async def close(self, reason: str | None) -> None:
        """Lingering close: send our FIN after the last line, then read and discard
        until the peer's (the caller bounds the wait). Closing a socket with unread
        input sends a RST, which can destroy the error line the peer has not read yet
        (a flooder cut off with ``rate_limited`` would never learn why)."""
        try:
            if reason == SLOW_CONSUMER:
                error = ProtocolError(
                    SLOW_CONSUMER, "disconnected: you were not reading fast enough"
                )
                # Only if it goes out at once (the peer has stopped reading); a fresh
                # line, since a cancelled write may have left half of one behind.
                with trio.move_on_after(0.05), suppress(PeerGone):
                    await self.send(["", error.to_message()])
            elif isinstance(self.stream, trio.abc.HalfCloseableStream) and not self._eof:
                with suppress(*_STREAM_ERRORS, trio.BusyResourceError, OSError):
                    await self.stream.send_eof()
                    while await self.stream.receive_some(RECEIVE_SIZE):
                        pass
        finally:
            await self.stream.aclose()


async def handle_tcp(
    room: Room, config: Config, stream: trio.abc.Stream, gate: Gate[Session] | None = None
) -> None:
    """One TCP connection. Never raises: an escaping error would end the listener."""
    peer = peer_name(stream)
    host = peer_host(peer)
    set_keepalive(stream)
    if gate is not None:
        try:
            gate.admit(host)
        except ProtocolError as error:
            log.info(
                "refuse tcp %s (%s)", peer, error.text,
                extra={"event": "refuse", "transport": "tcp", "peer": peer, "reason": error.code},
            )
            await refuse_tcp(stream, error, config.goodbye_timeout)
            return
    log.info("connect tcp %s", peer, extra={"event": "connect", "transport": "tcp", "peer": peer})
    session: Session | None = None
    handshaken = False
    try:
        handshaken = await tls.handshake(stream, config.handshake_timeout, peer)
        if not handshaken:
            await trio.aclose_forcefully(stream)
        else:
            session = Session(
                room, config, TcpTransport(stream, config, peer), join_timeout=config.idle_timeout
            )
            if gate is not None:
                gate.live.add(session)
                if gate.closing:
                    session.shutdown()
            await session.run()
    except Exception:
        log.exception("connection %s failed", peer)
        await trio.aclose_forcefully(stream)
    finally:
        if gate is not None:
            if session is not None:
                gate.live.discard(session)
            gate.release(host)
    reason = session.reason if session else "error" if handshaken else "tls_handshake"
    log.info(
        "disconnect tcp %s (%s)", peer, reason,
        extra={"event": "disconnect", "transport": "tcp", "peer": peer, "reason": reason},
    )


async def serve_tcp_chat(
    room: Room,
    config: Config,
    handler_nursery: trio.Nursery | None = None,
    *,
    gate: Gate[Session] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[
        list[trio.abc.Listener[trio.abc.Stream]]
    ] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept TCP chat connections (TLS with ``ssl_context``); reports the listeners
    through ``task_status``."""
    listeners = await tls.open_listeners(config.tcp_port, config.host, ssl_context)
    await trio.serve_listeners(
        partial(handle_tcp, room, config, gate=gate),
        list(listeners),
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
