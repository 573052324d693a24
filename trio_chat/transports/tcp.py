"""The raw-TCP transport: newline-delimited JSON (and plain text for ``nc``).

A new connection is given a moment first (``Config.greet_after``, 0.25 s): a program
speaks at once, and an HTTP request (a browser or a WebSocket client at the wrong port) is
answered with a 400 that says where the page and the WebSocket are, and closed; a
connection still quiet then is a person at ``nc``, greeted with ``hello``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from contextlib import suppress
from typing import Final

import trio

from .. import protocol
from ..config import Config
from ..protocol import SLOW_CONSUMER, Event, LineBuffer, ProtocolError, decode_line, wire_line
from ..server.session import PeerGone
from . import http, tls
from .admission import Admission, log_connection
from .net import (
    Ports,
    direct_socket,
    local_host,
    receive_direct,
    reset_if_delivered,
    say_and_close,
    write_nonblocking,
)

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
#: Most lines, and bytes of lines, one ``receive()`` decodes; the rest of a read waits
#: in the buffer for the next call (a checkpoint). Every line, blank ones included,
#: is a message to flood control.
MAX_INPUTS = 64
MAX_INPUT_BYTES = 16 * 1024
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)
#: An HTTP request line (RFC 9112: method, target, version), as the first line.
_HTTP_REQUEST: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ \S+ HTTP/\d\.\d\r?")


async def refuse_tcp(stream: trio.abc.Stream, error: ProtocolError, timeout: float) -> None:
    """Tell a connection over a cap why, if that can be done quickly, and close it
    (lingering like :meth:`TcpTransport.close`, so what it already sent cannot turn
    our close into a reset that destroys the error line)."""
    data = error.to_message().encode() + b"\n"
    if isinstance(stream, trio.SSLStream):
        with trio.move_on_after(timeout), suppress(*_STREAM_ERRORS, OSError):
            await stream.send_all(data)
            await stream.aclose()  # close_notify: a TLS client sees a clean end, not a cut
    else:
        with suppress(OSError):
            await say_and_close(stream, data, send_timeout=timeout, goodbye_timeout=timeout,
                                max_drain=1 << 30)
    await trio.aclose_forcefully(stream)


async def first_line(stream: trio.abc.Stream, wait: float) -> bytes:
    """What the peer sends within ``wait`` seconds of connecting, read up to its first
    newline (at most :data:`RECEIVE_SIZE` bytes); empty if it stayed quiet."""
    data = bytearray()
    with trio.move_on_after(wait):
        while b"\n" not in data and len(data) < RECEIVE_SIZE:
            try:
                chunk = await stream.receive_some(RECEIVE_SIZE)
            except _STREAM_ERRORS:
                break
            if not chunk:
                break  # EOF: the transport's next read says so again
            data += chunk
    return bytes(data)


def is_http_request(data: bytes) -> bool:
    """The first line is an HTTP request line (``GET / HTTP/1.1``)."""
    line, newline, _ = data.partition(b"\n")
    return bool(newline) and _HTTP_REQUEST.fullmatch(line) is not None


def wrong_port_reply(ports: Ports, host: str) -> bytes:
    """The HTTP 400 an HTTP request on the TCP port gets: where the page and the
    WebSocket are."""
    return http.raw_reply(
        400,
        f"400 wrong port: this is trio-chat's TCP port, for NDJSON lines (nc, trio-chat "
        f"join --port {ports.tcp}). The chat page is at {ports.page_url(host)} and "
        f"WebSocket clients connect to {ports.ws_url(host)}",
    )


class TcpTransport:
    """Moves NDJSON lines over any trio Stream (a socket, TLS, or a memory stream)."""

    __slots__ = (
        "_eof", "_failed", "_fd", "_lines", "_max_text", "_pending", "_socket",
        "bytes_out", "messages_out", "peer", "stream",
    )

    kind = "tcp"

    def __init__(
        self, stream: trio.abc.Stream, config: Config, peer: str = "?", first: bytes = b""
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.messages_out = self.bytes_out = 0
        self._lines = LineBuffer(config.max_line)
        if first:
            self._lines.push(first)  # read before the session began (first_line)
        self._max_text = config.max_text
        self._eof = False
        self._failed = False
        #: The plain socket, read directly (:func:`.net.receive_direct`); None for TLS
        #: and memory streams, read through the stream.
        self._socket = sock = direct_socket(stream)
        #: The socket's descriptor for direct writes (-1: none, TLS or not a socket).
        self._fd = sock.fileno() if sock is not None else -1
        self._pending = b""  # what a partial direct write left, sent first by send()

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
        data: bytes | bytearray
        try:
            if self._socket is not None:
                data = await receive_direct(self._socket, RECEIVE_SIZE)
            else:
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
        if self._pending:  # the rest of a partial direct write goes first
            data, self._pending = self._pending + data, b""
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS as exc:
            raise PeerGone from exc
        self.messages_out += len(lines)
        self.bytes_out += len(data)

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def send_now(self, lines: list[str], *, batch: bool = True) -> bool | None:
        """The write-through fast path (:mod:`trio_chat.server.outbox`): one
        non-blocking ``write`` on the socket, which Trio keeps non-blocking; what it
        did not take waits in ``_pending`` for the next :meth:`send`. TLS cannot (its
        records are Trio's to write)."""
        if self._fd < 0 or self._pending:
            return None
        data = b"".join(map(wire_line, lines))
        return self._write_now(data, len(lines))

    def _write_now(self, data: bytes, messages: int) -> bool:
        written = write_nonblocking(self._fd, data)
        if written < 0:
            self._fd, written = -1, 0
        self.messages_out += messages
        self.bytes_out += len(data)
        if written < len(data):
            self._pending = data[written:]
            return False
        return True

    async def close(self, reason: str | None) -> None:
        """Lingering close: send our FIN after the last line, then read and discard
        until the peer's (the caller bounds the wait). Closing a socket with unread
        input sends a RST, which can destroy the error line the peer has not read yet
        (a flooder cut off with ``rate_limited`` would never learn why). A peer still
        open when the wait is cut short is reset once it has everything
        (:func:`~.net.reset_if_delivered`: that is what makes ``nc`` exit)."""
        lingering = False
        self._fd = -1  # no direct write from here on (the number may be reused)
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
                    lingering = True
                    while await self.stream.receive_some(RECEIVE_SIZE):
                        pass
                    lingering = False
        finally:
            if lingering:
                reset_if_delivered(self.stream)
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
            wait = config.greet_after
            # Never greeted: still a moment (as short as the greeting's) for an HTTP
            # request to be told where to go.
            first = await first_line(stream, wait if wait is not None else 0.25)
            if is_http_request(first):
                log_connection("disconnect", "tcp", peer, "http_request")
                host = local_host(stream, config.host)
                await say_and_close(
                    stream, wrong_port_reply(admission.ports, host),
                    send_timeout=config.send_timeout, goodbye_timeout=config.goodbye_timeout,
                    max_drain=http.MAX_DRAIN,
                )
                await trio.aclose_forcefully(stream)
                return
            transport = TcpTransport(stream, config, peer, first)
            session = admission.session(
                transport, join_timeout=config.idle_timeout,
                greeting=None if first or wait is None else protocol.hello(admission.version),
            )
            with admission.running(arrival, session):
                await session.run()
        except Exception:
            log.exception("connection %s failed", peer)
            log_connection("disconnect", "tcp", peer, "error")
        finally:
            # Closed already, as a rule; not when cancelled from outside (the server's
            # grace ran out) or after a failure.
            await trio.aclose_forcefully(stream)
