"""The WebSocket transport, on trio-websocket; the same port also serves the chat page.

Each connection starts in :mod:`trio_chat.transports.http`: plain HTTP requests get the page,
WebSocket upgrades come back here. We own the accept loop and wrap each stream with
``wrap_server_stream``, so every connection's errors stay inside its handler (in
trio-websocket 0.12.2 an exception escaping a ``serve_websocket`` handler takes the
whole server down).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import suppress

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream
from wsproto.utilities import LocalProtocolError

from ..config import Config
from ..errors import first_leaf
from ..protocol import (
    BANNED,
    RATE_LIMITED,
    SERVER_FULL,
    SLOW_CONSUMER,
    TOO_LONG,
    Event,
    ProtocolError,
    decode_frame,
    wire_batch_frame,
    wire_frame,
)
from ..protocol.wsframes import close_frame
from ..protocol.wsinput import FrameChecker, Violation
from ..server.room import RESUMED
from ..server.session import PING_TIMEOUT, SHUTDOWN, PeerGone
from . import http, tls, wsconn
from .admission import Admission, log_connection
from .net import write_nonblocking
from .pinger import Pinged, keepalive
from .wsguard import UNWATCHED, Failure, FrameGuard

log = logging.getLogger(__name__)

#: WebSocket close codes for the reasons a session ends (docs/protocol.md).
CLOSE_CODES: dict[str | None, tuple[int, str]] = {
    None: (1000, "bye"),
    SLOW_CONSUMER: (4008, "slow consumer"),
    TOO_LONG: (1009, "message too big"),
    SHUTDOWN: (1001, "server shutting down"),
    SERVER_FULL: (1013, "server full"),
    RATE_LIMITED: (4029, "rate limited"),
    PING_TIMEOUT: (4001, "ping timeout"),
    RESUMED: (4009, "resumed elsewhere"),
    BANNED: (4003, "banned"),
}

#: WebSocket close codes for a connection refused at once: over a cap, or over the
#: connection rate of its address.
REFUSALS: dict[str, tuple[int, str]] = {
    SERVER_FULL: CLOSE_CODES[SERVER_FULL],
    RATE_LIMITED: (4029, "too many connections"),
    BANNED: CLOSE_CODES[BANNED],
}


class WsTransport:
    """Moves protocol messages as WebSocket text frames."""

    __slots__ = ("_fd", "_max_text", "bytes_out", "guard", "messages_out", "peer", "ws")

    kind = "ws"

    def __init__(
        self,
        ws: WebSocketConnection,
        config: Config,
        peer: str = "?",
        guard: FrameGuard | None = None,
    ) -> None:
        self.ws = ws
        self.peer = peer
        self.guard = guard
        self.messages_out = self.bytes_out = 0
        self._max_text = config.max_text
        #: The socket's descriptor for direct writes (-1: none, TLS or no guard).
        self._fd = -1
        if guard is not None and isinstance(guard.transport, trio.SocketStream):
            self._fd = guard.transport.socket.fileno()

    async def receive(self) -> Sequence[Event | ProtocolError] | None:
        try:
            message = await self.ws.get_message()
        except ConnectionClosed:
            return None
        try:
            return [decode_frame(message, self._max_text)]
        except ProtocolError as error:
            return [error]

    async def send(self, lines: list[str], *, batch: bool) -> None:
        """Write everything queued in one ``send_all``: one frame per message, or
        (``batch``) one frame holding them all, newline-separated.

        Each broadcast's frame is built once (``Encoded.frame``) and written
        straight to the connection (:mod:`.wsconn` says why and how).
        """
        if batch and len(lines) > 1:
            data = wire_batch_frame(lines)
        else:
            data = b"".join(map(wire_frame, lines))
        guard = self.guard
        try:
            if guard is None:
                await wsconn.send_frames(self.ws, data)
            elif guard.sealed:
                raise trio.ClosedResourceError("the connection was failed")
            else:
                await wsconn.send_frames(self.ws, data, guard.transport, self._take_pending)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone from exc
        self.messages_out += len(lines)
        self.bytes_out += len(data)

    def _take_pending(self) -> bytes:
        guard = self.guard
        assert guard is not None
        data, guard.pending = guard.pending, b""
        return data

    @property
    def pending(self) -> bool:
        return self.guard is not None and bool(self.guard.pending)

    def send_now(self, lines: list[str], *, batch: bool) -> bool | None:
        """The write-through fast path (:mod:`trio_chat.server.outbox`): the frames of
        :meth:`send` in one non-blocking ``write`` on the socket, if nothing else is
        being written on the connection (trio-websocket's pongs and close frame take
        its lock) and nothing is pending; what the socket did not take waits in the
        guard, written first by whoever writes next. TLS cannot."""
        guard = self.guard
        if self._fd < 0 or guard is None or guard.sealed or guard.pending:
            return None
        if not wsconn.writable_now(self.ws):
            return None
        if batch and len(lines) > 1:
            data = wire_batch_frame(lines)
        else:
            data = b"".join(map(wire_frame, lines))
        written = write_nonblocking(self._fd, data)
        if written < 0:
            self._fd, written = -1, 0
        self.messages_out += len(lines)
        self.bytes_out += len(data)
        if written < len(data):
            guard.pending = data[written:]
            return False
        return True

    async def close(self, reason: str | None) -> None:
        self._fd = -1  # no direct write from here on (the number may be reused)
        guard = self.guard
        if guard is not None and guard.failure is not None:
            await self._fail(guard, guard.failure)
            return
        code, text = CLOSE_CODES.get(reason, (1011, reason or "error"))
        await self.ws.aclose(code, text)

    async def _fail(self, guard: FrameGuard, failure: Failure) -> None:
        """Fail the connection (RFC 6455 7.1.7) after the guard stopped trio-websocket's
        reader: our close frame, then no more writes, then a lingering close."""
        if isinstance(failure, Violation):
            code, text = failure.code, f"protocol error: {failure.what}"
        else:
            code, text = CLOSE_CODES.get(failure.code, (1011, failure.code))
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await wsconn.send_frames(self.ws, close_frame(code, text))
        guard.seal()
        await guard.linger()


async def handle_ws(admission: Admission, stream: trio.abc.Stream) -> None:
    """One connection on the WebSocket port: a chat over WebSocket, or a plain HTTP
    request for the page. Never raises: an escaping error would end the listener."""
    config = admission.config
    with admission.arrive(stream, "ws") as arrival:
        peer, refusal = arrival.peer, arrival.refusal
        # A refused connection gets only short handshakes, to say why (1013, 4029).
        timeout = config.goodbye_timeout if refusal else config.handshake_timeout
        try:
            if not await tls.handshake(stream, timeout, peer):
                return
            async with trio.open_nursery() as nursery:
                ws, guard, timed_out = await _open(nursery, admission, stream, timeout, peer)
                if timed_out:
                    log_connection("disconnect", "ws", peer, "handshake_timeout")
                elif ws is not None and refusal is not None:
                    assert guard is not None
                    guard.attach(UNWATCHED)  # only its close reply
                    log_connection(
                        "refuse", "ws", peer, refusal.code, refusal.text,
                        level=arrival.log_level,
                    )
                    code, text = REFUSALS[refusal.code]
                    with trio.move_on_after(config.goodbye_timeout):
                        await ws.aclose(code, text)
                elif ws is not None:
                    wsconn.check(ws)
                    wsconn.shed_handshake(ws)
                    log_connection("connect", "ws", peer)
                    # A quiet one listens (config.listen_after): the seed's client does
                    # without asking, while the page and trio-chat join speak at once
                    # (and rely on nothing live coming before their welcome).
                    session = admission.session(
                        WsTransport(ws, config, peer, guard), listen_after=config.listen_after
                    )
                    assert guard is not None
                    guard.attach(session)
                    pinged: Pinged | None = None
                    if config.ping_interval <= 0:
                        pass
                    elif admission.pinger.running:  # one task for the server's pings
                        pinged = admission.pinger.watch(ws, session, nursery)
                    else:
                        nursery.start_soon(keepalive, ws, session, config)
                    try:
                        with admission.running(arrival, session):
                            await session.run()
                    finally:
                        if pinged is not None:
                            pinged.done = True
                nursery.cancel_scope.cancel()  # the library's reader task, if still running
        except Exception as exc:
            if _peer_fault(exc):
                log.info("ws %s dropped: %s", peer, first_leaf(exc))
            else:
                log.exception("connection %s failed", peer)
        finally:
            await trio.aclose_forcefully(stream)


async def _open(
    nursery: trio.Nursery, admission: Admission, stream: trio.abc.Stream, timeout: float,
    peer: str,
) -> tuple[WebSocketConnection | None, FrameGuard | None, bool]:
    """The opening handshake, within ``timeout``: the page's HTTP requests are answered
    (no connection), or a WebSocket is accepted, its frames read through a guard.
    Returns them and whether the time ran out. A function of its own so that the
    handshake's objects (the request and its headers, the scope) are let go of once
    it returns: an idle connection keeps only what it uses (issue 20)."""
    config = admission.config
    ws: WebSocketConnection | None = None
    guard: FrameGuard | None = None
    with trio.move_on_after(timeout) as handshake:
        upgrade = await http.serve_http(stream, config, peer, admission.ports)
        if upgrade is not None:
            checker = FrameChecker(config.max_line)
            guard = FrameGuard(upgrade, stream, checker, head=upgrade.head)
            # No read-ahead queue: when the guard asks for more bytes, the session has
            # taken every message before them.
            request = await wrap_server_stream(
                nursery, guard, message_queue_size=0, max_message_size=config.max_line,
            )
            ws = await request.accept()
    return ws, guard, handshake.cancelled_caught


#: What trio-websocket 0.12.2's reader task lets escape when the peer misbehaves: a
#: second oversized message after the 1009 close makes wsproto refuse another close
#: frame (LocalProtocolError); a bad request from a peer that already hung up makes
#: sending the 400 fail (ConnectionClosed).
_PEER_FAULTS = (LocalProtocolError, ConnectionClosed)


def _peer_fault(exc: Exception) -> bool:
    """True when only the peer's misbehaviour escaped the library: it is dropped, and
    no traceback is logged."""
    if not isinstance(exc, BaseExceptionGroup):
        return isinstance(exc, _PEER_FAULTS)
    return exc.split(_PEER_FAULTS)[1] is None
