"""The stream trio-websocket reads a client through: every frame is checked first.

trio-websocket reads the connection in a task of its own and answers pings itself,
and it has two gaps a hostile client can use (see :mod:`trio_chat.protocol.wsinput`):
fragments that grow memory without bound, and protocol violations that end the
connection without a close frame. :class:`FrameGuard` sits between it and the socket,
feeds every byte after the opening handshake to a
:class:`~trio_chat.protocol.wsinput.FrameChecker`, and hands on only what is sound.

- A violation stops the library's reader there (it waits until the handler cancels
  it): the frame that broke the rules never reaches wsproto. Once the library has
  handled the bytes before it, the session is told (``on_failure``), and the
  transport fails the connection itself: a close frame with the violation's code
  (1002, or 1009 for size), then a lingering close.
- Pings and pongs are input too: each spends from the session's token bucket
  (``on_control``), and one over the limit is held back like a message (the library
  reads nothing more meanwhile); past the ceiling the session is cut off
  (``rate_limited``), the same way.

No private attribute of trio-websocket is touched here (that is :mod:`.wsconn`).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Final, Protocol

import trio

from ..protocol import ProtocolError
from ..protocol.wsinput import FrameChecker, Violation
from ..server.session import PROTOCOL_ERROR
from .http import ReplayStream
from .net import direct_socket, receive_direct

#: Bytes read and thrown away while lingering after the close frame, at most.
MAX_DRAIN: Final = 64 * 1024
#: What one direct read asks the socket for when trio-websocket does not say.
RECEIVE_SIZE: Final = 64 * 1024
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)

#: Why the guard stopped the connection: a framing violation, or flood control.
Failure = Violation | ProtocolError


class Watcher(Protocol):
    """Who the guard reports to: the connection's session."""

    def take_control(self) -> float:
        """Flood control for a ping or pong: seconds to wait, or raise
        ``ProtocolError`` (``rate_limited``) past the ceiling."""

    def stop(self, failure: ProtocolError | str) -> None:
        """The guard stopped reading the peer: ``protocol_error: <what>`` for a
        violation, or the flood-control error to answer."""


class Unwatched:
    """What the guard reports to before :meth:`FrameGuard.attach`, and for a connection
    refused after its handshake: pings are free, failures go unreported."""

    def take_control(self) -> float:
        return 0.0

    def stop(self, failure: ProtocolError | str) -> None:
        pass


UNWATCHED: Final = Unwatched()


class FrameGuard(trio.abc.Stream):
    """Wraps ``stream`` (which replays the HTTP request head first: its first ``head``
    bytes are handed on unchecked); ``transport`` is the socket (or TLS) stream
    under it, for the lingering close."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        transport: trio.abc.Stream,
        checker: FrameChecker,
        *,
        head: int = 0,
    ) -> None:
        self.stream = stream
        self.transport = transport
        self.checker = checker
        #: A plain socket under ``stream`` (directly, or under the replay of the request
        #: head): once nothing is left to replay, frames are read from it directly
        #: (:func:`.net.receive_direct`: less held per idle connection).
        self._socket = None
        if stream is transport or (
            isinstance(stream, ReplayStream) and stream.stream is transport
        ):
            self._socket = direct_socket(transport)
        self._head = head
        self._early = bytearray()  # frames that came with the request head
        #: Set by :meth:`attach`, then let go of (memory per idle connection).
        self._attached: trio.Event | None = trio.Event()
        #: Set once the guard stopped handing bytes on, and the session was told: why.
        self.failure: Failure | None = None
        self._found: Failure | None = None  # found, told when the library asks again
        self._watcher: Watcher = UNWATCHED
        #: Nothing more may be written (the close frame went out).
        self.sealed = False
        #: What a partial direct write (:meth:`.ws.WsTransport.send_now`) left: written
        #: first by whoever writes next, trio-websocket (through :meth:`send_all`) or
        #: the session's writer (:func:`.wsconn.send_frames`).
        self.pending = b""

    def attach(self, watcher: Watcher) -> None:
        """Start checking frames: count pings and pongs with ``watcher.take_control``
        and report a failure with ``watcher.stop``. Until then (the opening handshake,
        and the session not built yet) nothing after the request head is handed on, so
        every frame is counted. (One object, not two bound methods: memory per idle
        connection.)"""
        self._watcher = watcher
        attached, self._attached = self._attached, None
        if attached is not None:
            attached.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._found is not None:
            # The library has handled every byte before the violation (the messages
            # are queued, the pongs sent): now the session hears of it.
            self.failure = found = self._found
            self._found = None
            if isinstance(found, Violation):
                self._watcher.stop(f"{PROTOCOL_ERROR}: {found.what}")
            else:
                self._watcher.stop(found)
        if self.failure is not None:
            await trio.sleep_forever()  # the handler cancels the library's reader
        if self._head:
            data = await self.stream.receive_some(max_bytes)
            head, rest = data[: self._head], data[self._head :]
            self._head -= len(head)
            self._early += rest
            return head
        if self._attached is not None:
            await self._attached.wait()
        if self._early:
            size = len(self._early) if max_bytes is None else max_bytes
            data, self._early = bytes(self._early[:size]), self._early[size:]
        else:
            # Read here, not in a helper: an idle connection waits on this line, and
            # every coroutine on the wait holds a frame.
            stream, sock = self.stream, self._socket
            if sock is None or (isinstance(stream, ReplayStream) and stream.replaying):
                data = await stream.receive_some(max_bytes)
            else:
                if stream is not self.transport:
                    self.stream = self.transport  # the replay is over: let go of it
                data = await receive_direct(sock, max_bytes or RECEIVE_SIZE)
            if not data:
                return data
        checked = self.checker.feed(data)
        sound = checked.sound
        failure: Failure | None = checked.violation
        delay = 0.0
        for start in checked.controls:
            try:
                delay = self._watcher.take_control()
            except ProtocolError as flood:
                sound, failure = start, flood
                break
        if delay:
            await trio.sleep(delay)  # fakelag: this peer's pings wait; nobody else does
        if failure is not None:
            self._found = failure
            if not sound:
                return await self.receive_some(max_bytes)  # tell, and stop
        return data[:sound]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.sealed:
            raise trio.ClosedResourceError("the connection was failed")
        if self.pending:  # the rest of a partial direct write of ours goes first
            data, self.pending = self.pending + bytes(data), b""
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()

    def seal(self) -> None:
        """Nothing more may be written (the close frame went out)."""
        self.sealed = True

    async def linger(self) -> None:
        """After the close frame: send our FIN and read (and discard) what the client
        still sends, until its end or :data:`MAX_DRAIN` bytes, so closing the socket
        with unread input does not reset the connection and destroy the close frame
        before the client reads it. The caller bounds the time."""
        transport = self.transport
        with suppress(*_STREAM_ERRORS, trio.BusyResourceError, OSError):
            if isinstance(transport, trio.abc.HalfCloseableStream):
                await transport.send_eof()
            drained = 0
            while drained < MAX_DRAIN:
                data = await transport.receive_some(MAX_DRAIN)
                if not data:
                    break
                drained += len(data)
