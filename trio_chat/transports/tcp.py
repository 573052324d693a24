"""The raw-TCP transport: newline-delimited JSON (and plain text for ``nc``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import suppress

import trio

from ..config import Config
from ..protocol import SLOW_CONSUMER, Event, LineBuffer, ProtocolError, decode_line, wire_line
from ..server.session import PeerGone
from . import tls
from .admission import Admission, log_connection

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
#: Most lines, and bytes of lines, one ``receive()`` decodes; the rest of a read waits
#: in the buffer for the next call (a checkpoint). Every line, blank ones included,
#: is a message to flood control.
MAX_INPUTS = 64
MAX_INPUT_BYTES = 16 * 1024
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


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

    kind = "tcp"

    def __init__(self, stream: trio.abc.Stream, config: Config, peer: str = "?") -> None:
        self.stream = stream
        self.peer = peer
        self.messages_out = self.bytes_out = 0
        self._lines = LineBuffer(config.max_line)
        self._max_text = config.max_text
        self._eof = False
        self._failed = False

    async def receive(self) -> Sequence[Event | ProtocolError] | None:
        """At most :data:`MAX_INPUTS` lines or :data:`MAX_INPUT_BYTES` bytes of them
        per call; lines already read wait in the buffer for the next call, which
        checkpoints first. So one read of 64 KiB of newlines is handled a slice at a
        time, each line counted (flood control), never in one pass."""
        items = self._take()
        if items:
            await trio.lowlevel.checkpoint()
            return items
        if self._eof or self._failed:
            return None
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except _STREAM_ERRORS:
            data = b""
        if data:
            self._lines.push(data)
        else:
            # EOF: a last line without its newline still counts.
            self._eof = True
            if self._lines.pending:
                self._lines.push(b"\n")
        return self._take()

    def _take(self) -> list[Event | ProtocolError]:
        """Decode the next buffered lines, within the per-call bounds."""
        items: list[Event | ProtocolError] = []
        size = 0
        while not self._failed and len(items) < MAX_INPUTS and size < MAX_INPUT_BYTES:
            try:
                line = self._lines.pop()
            except ProtocolError as error:
                # The lines before the overlong one came first: they were returned.
                self._failed = True
                items.append(error)
                break
            if line is None:
                break
            size += len(line) + 1
            items.append(self._decode(line))
        return items

    def _decode(self, line: bytes) -> Event | ProtocolError:
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
        self.messages_out += len(lines)
        self.bytes_out += len(data)

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


async def handle_tcp(admission: Admission, stream: trio.abc.Stream) -> None:
    """One TCP connection. Never raises: an escaping error would end the listener."""
    config = admission.config
    with admission.arrive(stream, "tcp") as arrival:
        peer = arrival.peer
        if arrival.refusal is not None:
            error = arrival.refusal
            log_connection("refuse", "tcp", peer, error.code, error.text, level=arrival.log_level)
            await refuse_tcp(stream, error, config.goodbye_timeout)
            return
        log_connection("connect", "tcp", peer)
        try:
            if not await tls.handshake(stream, config.handshake_timeout, peer):
                log_connection("disconnect", "tcp", peer, "tls_handshake")
                await trio.aclose_forcefully(stream)
                return
            transport = TcpTransport(stream, config, peer)
            session = admission.session(transport, join_timeout=config.idle_timeout)
            await admission.run(arrival, session)
        except Exception:
            log.exception("connection %s failed", peer)
            log_connection("disconnect", "tcp", peer, "error")
            await trio.aclose_forcefully(stream)
