"""One gRPC call, seen from both sides of the bridge.

:class:`Call` is the loop's side: grpcio's context, the reads and writes made there,
and how the call ends. :class:`GrpcTransport` is Trio's side, the
:class:`~trio_chat.server.session.Transport` a ``Session`` stream gives the room's
:class:`~trio_chat.server.session.Session` (so limits, history and the slow-consumer
rule are the ones every transport has); :class:`PostTransport` turns a ``Post`` stream
into the same thing, a session whose client only posts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, Final

import grpc
import trio

from ...config import Config
from ...protocol import (
    BANNED,
    IDLE_TIMEOUT,
    LOBBY,
    MISSING_FIELD,
    NAME_INVALID,
    NAME_REGISTERED,
    NAME_TAKEN,
    RATE_LIMITED,
    ROOM_INVALID,
    SERVER_FULL,
    SLOW_CONSUMER,
    TOO_LONG,
    TOO_MANY_ROOMS,
    Chat,
    Event,
    ProtocolError,
    room_key,
    validate_name,
    validate_room,
    validate_text,
)
from ...server.room import RESUMED
from ...server.session import GONE, SHUTDOWN, PeerGone
from .bridge import Bridge
from .events import client_event, event_bytes, pack, post_summary, post_text

log = logging.getLogger(__name__)

#: The gRPC status a call ends with, for each reason a session ends (docs/protocol.md).
STATUSES: Final[dict[str, tuple[grpc.StatusCode, str]]] = {
    SLOW_CONSUMER: (grpc.StatusCode.RESOURCE_EXHAUSTED, "you were not reading fast enough"),
    RATE_LIMITED: (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many messages; slow down"),
    SERVER_FULL: (grpc.StatusCode.RESOURCE_EXHAUSTED, "server full"),
    IDLE_TIMEOUT: (grpc.StatusCode.DEADLINE_EXCEEDED, "no join in time"),
    SHUTDOWN: (grpc.StatusCode.UNAVAILABLE, "server shutting down"),
    NAME_TAKEN: (grpc.StatusCode.ALREADY_EXISTS, "name taken"),
    TOO_MANY_ROOMS: (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many rooms"),
    NAME_REGISTERED: (grpc.StatusCode.ALREADY_EXISTS, "name registered"),
    # Another stream (or connection) took this seat back with its resume token: the
    # WebSocket close 4009. Not worth retrying with that token: it is spent.
    RESUMED: (grpc.StatusCode.ABORTED, "resumed elsewhere"),
    BANNED: (grpc.StatusCode.PERMISSION_DENIED, "banned"),
}
#: What grpcio's ``read()`` returns at the end of the client's stream (not in grpc-stubs).
_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]
#: Error codes that are the caller's input (INVALID_ARGUMENT), whatever else ends a call.
_INVALID = grpc.StatusCode.INVALID_ARGUMENT


def status_for(code: str, text: str | None = None) -> tuple[grpc.StatusCode, str]:
    """The status and details for a protocol error code: the details start with the
    code (``rate_limited: ...``), so a program can tell them apart."""
    status, default = STATUSES.get(code, (_INVALID, code))
    return status, f"{code}: {text or default}"


def peer_address(peer: str) -> str:
    """grpcio's peer (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``) as ``host:port``, the form
    the per-address limits key on."""
    kind, _, address = peer.partition(":")
    if kind == "ipv6" and address.startswith("["):
        host, _, port = address[1:].partition("]")
        return f"{host}{port}"
    return address if kind in ("ipv4", "ipv6") else peer


@dataclass(frozen=True)
class Ending:
    """How a call ends: OK (with the unary reply, if any), or a status."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    reply: bytes | None = None


class Call:
    """One call on the loop's side: grpcio's context, and the future its handler
    waits on until Trio says how the call ends."""

    def __init__(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        self.context = context
        self.peer = peer_address(context.peer())
        self.ended: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()

    async def read(self) -> bytes | None:
        """The next message, or None at the end of the client's stream (or of the call)."""
        try:
            message = await self.context.read()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return None
        if message is _EOF:
            return None
        assert isinstance(message, bytes)
        return message

    async def write(self, messages: Sequence[bytes]) -> bool:
        """Write ``messages`` in order (grpcio waits for HTTP/2 flow control); False if
        the call is over."""
        try:
            for message in messages:
                await self.context.write(message)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return False
        return True

    def end(self, ending: Ending) -> None:
        if not self.ended.done():
            self.ended.set_result(ending)


class Hops:
    """Trio's side of a call: each operation crosses the bridge, and every one in
    progress is cut short once the call is gone (the client cancelled, or its
    connection broke)."""

    def __init__(self, bridge: Bridge, call: Call) -> None:
        self.bridge = bridge
        self.call = call
        self.peer = call.peer
        self.gone = False
        self._waiting: set[trio.CancelScope] = set()

    def lost(self) -> None:
        """The call is over on grpcio's side (run on Trio)."""
        self.gone = True
        for scope in self._waiting:
            scope.cancel()

    @contextmanager
    def _watch(self) -> Iterator[trio.CancelScope]:
        with trio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                yield scope
            finally:
                self._waiting.discard(scope)

    async def read(self) -> bytes | None:
        if self.gone:
            return None
        with self._watch(), suppress(trio.ClosedResourceError):
            return await self.bridge.run(self.call.read())
        return None  # the call went away meanwhile (or the whole server did)

    async def write(self, messages: Sequence[bytes]) -> None:
        """Raises :class:`PeerGone` when the call is over."""
        if not self.gone:
            with self._watch(), suppress(trio.ClosedResourceError):
                if await self.bridge.run(self.call.write(messages)):
                    return
        raise PeerGone

    def end(self, ending: Ending) -> None:
        self.bridge.to_loop(self.call.end, ending)


class GrpcTransport:
    """A ``Session`` call as a session's :class:`~trio_chat.server.session.Transport`:
    each read is one ``ClientEvent``; each write is everything queued, one
    ``ServerEvent`` per message (or one ``batch`` of them for a client that asked),
    written in one hop."""

    kind = "grpc"

    def __init__(self, hops: Hops, config: Config) -> None:
        self.hops = hops
        self.peer = hops.peer
        self.messages_out = self.bytes_out = 0
        self._max_text = config.max_text

    async def receive(self) -> Sequence[Event | ProtocolError] | None:
        data = await self.hops.read()
        if data is None:
            return None
        try:
            return [client_event(data, self._max_text)]
        except ProtocolError as error:
            return [error]

    async def send(self, lines: list[str], *, batch: bool) -> None:
        events = [data for data in map(event_bytes, lines) if data]
        if not events:
            return
        if batch and len(events) > 1:
            events = [pack(events)]
        await self.hops.write(events)
        self.messages_out += len(lines)
        self.bytes_out += sum(map(len, events))

    async def close(self, reason: str | None) -> None:
        """End the call: OK after ``leave`` or the client's end of stream; a status
        saying why otherwise (``RESOURCE_EXHAUSTED`` for a slow consumer or a flood,
        ``UNAVAILABLE`` at shutdown...)."""
        if reason is None or reason == GONE:
            self.hops.end(Ending())
        else:
            self.hops.end(Ending(*status_for(reason)))


#: Messages one ``Post`` call takes (its summary holds an id for each): a bot posting
#: more starts another call.
MAX_POST: Final = 10_000
#: JSON prefixes of the server messages a poster's session must look at.
_CHAT: Final = '{"type":"chat"'
_ERROR: Final = '{"type":"error"'


class PostTransport:
    """A ``Post`` call as a session's transport: each ``PostRequest`` becomes the chat
    of a client that names itself in its first message (the seed's way to join: the
    poster is in the room while the call lasts, with the notices that go with it), and
    the echoes of its own messages give their ids. One message at a time: the next
    is read only once the room has taken the last one (its echo came back) or refused
    it (the call ends with that error), so a summary is exact."""

    kind = "grpc"

    def __init__(self, hops: Hops, config: Config) -> None:
        self.hops = hops
        self.peer = hops.peer
        self.messages_out = self.bytes_out = 0
        self._max_text = config.max_text
        self.name: str | None = None
        self.room = LOBBY
        self.ids: list[int] = []
        self._posted = 0
        self.error: ProtocolError | None = None
        self._settled = trio.Event()
        self._settled.set()

    async def receive(self) -> Sequence[Event | ProtocolError] | None:
        await self._settled.wait()
        if self.error is not None:
            return None
        data = await self.hops.read()
        if data is None:
            return None
        try:
            if self._posted >= MAX_POST:
                raise ProtocolError(
                    TOO_LONG, f"a Post call takes at most {MAX_POST} messages; start another"
                )
            event = self._chat(*post_text(data))
        except ProtocolError as error:
            self.error = error
            return [ProtocolError(error.code, error.text, fatal=True)]
        self._posted += 1
        self._settled = trio.Event()
        return [event]

    def _chat(self, user: str, text: str, room: str) -> Chat:
        if self.name is None:
            if not user:
                raise ProtocolError(
                    MISSING_FIELD, "the first PostRequest must name its poster: user"
                )
            self.name = validate_name(user)
            self.room = validate_room(room) if room else LOBBY
        else:
            if user and validate_name(user) != self.name:
                raise ProtocolError(NAME_INVALID, f"this call posts as '{self.name}' only")
            if room and room_key(validate_room(room)) != room_key(self.room):
                raise ProtocolError(ROOM_INVALID, f"this call posts into {self.room} only")
        return Chat(text=validate_text(text, self._max_text), user=self.name, room=self.room)

    async def send(self, lines: list[str], *, batch: bool) -> None:
        """Nothing goes to the poster but the summary: its own echoes (their ids) and
        errors are all this looks for."""
        for line in lines:
            if line.startswith(_CHAT):
                message: dict[str, Any] = json.loads(line)
                if (message.get("user") == self.name and not message.get("history")
                        and room_key(message.get("room", LOBBY)) == room_key(self.room)):
                    self.ids.append(message.get("id", 0))
                    self._settle()
            elif line.startswith(_ERROR) and self.error is None:
                message = json.loads(line)
                self.error = ProtocolError(message["code"], message["text"])
                self._settle()
        self.messages_out += len(lines)

    def _settle(self) -> None:
        if len(self.ids) >= self._posted or self.error is not None:
            self._settled.set()

    async def close(self, reason: str | None) -> None:
        """The summary; or the status of the error that stopped the call, saying how
        many messages went out before it."""
        if reason == SHUTDOWN:
            ending = Ending(*status_for(SHUTDOWN))
        elif self.error is not None:
            ending = Ending(*status_for(self.error.code, self.error.text))
        elif reason is not None and reason != GONE:
            ending = Ending(*status_for(reason))
        else:
            self.hops.end(Ending(reply=post_summary(self.ids)))
            return
        if self.ids:
            ending = replace(ending, details=f"{ending.details} ({len(self.ids)} posted "
                             f"before it: ids {', '.join(map(str, self.ids))})")
        self.hops.end(ending)
