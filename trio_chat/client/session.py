"""One user's presence in the chat's rooms, across connections.

:class:`ChatSession` connects, joins (its first room with the name, then the others),
hands every server message to its front end (:class:`Frontend`), sends what the user
typed in order, and when the connection breaks reconnects with capped, jittered
exponential backoff and rejoins under the same name every room it was in, asking each
only for what it has not seen (``since`` per room: ids are one sequence, but which of
them a room has seen is the room's). It never prints: the line and urwid front ends
decide how things look.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import trio

from ..protocol import (
    BANNED,
    LOGIN_FAILED,
    NAME_INVALID,
    NAME_REGISTERED,
    NAME_TAKEN,
    RATE_LIMITED,
    WRONG_PORT,
    dumps,
)
from .config import ClientConfig
from .incoming import Incoming
from .rooms import LOBBY, MAX_ROOMS, ROOM_ERRORS, in_room, room_key
from .tokens import TokenFile
from .transport import (
    ClientError,
    ConnectError,
    Disconnected,
    ServerConnection,
    open_connection,
    wrong_tcp_port,
)

log = logging.getLogger(__name__)

Message = dict[str, Any]
Connector = Callable[[ClientConfig], AbstractAsyncContextManager[ServerConnection]]


class JoinRefused(ClientError):
    """The server refused our name and the front end could not choose another."""


class ConnectionLost(ClientError):
    """The connection ended and reconnecting is off (or it ended before we joined)."""


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True)
class Status:
    """What the status line shows: where, how, as whom, and how many are online."""

    state: State
    address: str
    name: str | None
    online: int | None = None
    #: Why we are not connected, and when we try again.
    reason: str | None = None
    retry_in: float | None = None


class Frontend(Protocol):
    def message(self, message: Message) -> None:
        """Show one message from the server (unknown types are the front end's to ignore)."""

    def status(self, status: Status) -> None:
        """The connection state, name or online count changed."""

    async def choose_name(self, refused: str | None, reason: str | None) -> str:
        """Return a name to join under (``refused``: the one the server just turned
        down, because of ``reason``); raise :class:`JoinRefused` to give up."""

    async def ask_password(self, name: str, reason: str) -> str | None:
        """The password of the account ``name`` (registered: the server said
        ``reason``); None to choose another name; raise :class:`JoinRefused` to give up."""


def backoff_delay(
    attempt: int, initial: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before reconnection attempt ``attempt`` (0-based).

    Doubles from ``initial`` up to ``cap``, then takes a random 50-100 % of that, so
    that clients dropped together by a restarting server do not come back in step.
    """
    base = min(cap, initial * 2.0 ** min(attempt, 32))
    return base * (0.5 + 0.5 * rand())


class _Inbox:
    """Server messages one at a time (a WebSocket frame or TCP read may hold several),
    each checked (:mod:`.incoming`): what does not fit is never seen above."""

    def __init__(self, conn: ServerConnection, incoming: Incoming) -> None:
        self.conn = conn
        self.incoming = incoming
        self._pending: deque[Message] = deque()

    async def next(self) -> Message:
        while True:
            while not self._pending:
                self._pending.extend(await self.conn.receive())
            message = self.incoming.check(self._pending.popleft())
            if message is not None:
                return message


class _NameRefused(Exception):
    """The server refused the name we joined under (taken, or invalid); says why."""


class _PasswordWanted(Exception):
    """The name is registered (or the password was wrong): log in; says why."""


class _TokenRefused(Exception):
    """The login token is expired or revoked: it is dropped, and we join again (or,
    ``keep``, a resume failed: we log in with the token next)."""

    def __init__(self, *, keep: bool = False) -> None:
        super().__init__()
        self.keep = keep


#: Chats without an id remembered to recognise their copy with one (a bounded window).
UNCONFIRMED_KEPT = 1024


class ChatSession:
    def __init__(
        self,
        config: ClientConfig,
        frontend: Frontend,
        *,
        connect: Connector = open_connection,
        ping_interval: float = 20.0,
    ) -> None:
        self.config = config
        self.frontend = frontend
        self.name = config.name
        #: Highest ``id`` seen on a ``chat`` message (of any room).
        self.last_id: int | None = None
        self._rooms: dict[str, str] = {}  # by room_key
        #: Per room (by :func:`room_key`), the highest id seen there: a rejoin asks each
        #: room for what came after its own.
        self._room_last: dict[str, int] = {}
        #: The last ``welcome``'s ``resume`` token: a rejoin brings it back, and within
        #: the server's grace takes our seat back without a leave and a join notice.
        self.resume: str | None = None
        #: Chats shown without an id (sent while the cluster's Redis was unreachable),
        #: by a digest of (user, text, timestamp): their later copy with an id is not
        #: shown again. (A digest: a hostile server's texts are not kept here.)
        self._unconfirmed: dict[bytes, None] = {}
        self._incoming = Incoming()
        self.online: int | None = None
        self.state = State.CONNECTING
        self._reason: str | None = None
        self._retry_in: float | None = None
        self._connect = connect
        self._ping_interval = ping_interval
        self._outbox_in, self._outbox = trio.open_memory_channel[Message](config.outbox_size)
        self._unsent: Message | None = None  # taken from the outbox, not yet written
        self._left = False
        #: The text of a server-wide ``banned`` error, once one came: no reconnecting.
        self._banned: str | None = None
        self._stop = trio.CancelScope()
        self._send_lock = trio.Lock()
        self._last_heard = 0.0
        self._heard = 0  # messages received: a ping is answered if this moved
        #: The login token (``--token-file``), kept fresh from each ``token`` message.
        self._tokens = TokenFile(config.token_file)
        self.token: str | None = self._tokens.load()
        #: A password typed for the next login only (dropped once sent).
        self._password: str | None = None
        self._sent_token = False  # the last join was a login with the token

    # ------------------------------------------------------------ what front ends call

    async def send(self, message: Message) -> None:
        """Queue a message to the server, in order; waits while the outbox is full."""
        await self._outbox_in.send(message)

    def send_nowait(self, message: Message) -> bool:
        """Queue a message without waiting; False when the outbox is full."""
        try:
            self._outbox_in.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    async def leave(self) -> None:
        """Leave after everything queued so far is sent; :meth:`run` then returns
        once the server has closed the connection (or ``leave_timeout`` passed)."""
        await self.send({"type": "leave"})

    def receive(self, obj: object) -> None:
        """Take one decoded server message as if it had come over the connection
        (checked, then handed to the front end): the seam for a transport of its own,
        and for tests of a front end."""
        message = self._incoming.check(obj)
        if message is not None:
            self._dispatch(message)

    def stop(self) -> None:
        """End :meth:`run` now, dropping whatever was not sent yet."""
        self._stop.cancel()

    @property
    def status(self) -> Status:
        return Status(
            self.state, self.config.address, self.name, self.online, self._reason, self._retry_in
        )

    # ------------------------------------------------------------ the connection's life

    async def run(self) -> None:
        """Stay in the room until :meth:`leave` or :meth:`stop`.

        Raises :class:`ConnectError` if the first connection fails, :class:`JoinRefused`
        if the name is refused and no other is chosen, :class:`ConnectionLost` when the
        connection ends and reconnecting is off.
        """
        try:
            with self._stop:
                await self._run()
        finally:
            self._set_state(State.CLOSED)

    async def _run(self) -> None:
        self._set_state(State.CONNECTING)
        if self.name is None:
            self.name = await self.frontend.choose_name(None, None)
        attempt = 0
        joined_once = False
        while True:
            try:
                async with self._connect(self.config) as conn:
                    inbox = _Inbox(conn, self._incoming)
                    await self._join(inbox, rejoin=joined_once)
                    joined_once = True
                    attempt = 0
                    self._set_state(State.CONNECTED)
                    await self._serve(conn, inbox)
                    return  # only after our leave, once the server closed or took too long
            except ConnectError as exc:
                if not joined_once:
                    raise
                reason = str(exc)
            except Disconnected as exc:
                if self._left:
                    return
                if self._banned is not None or exc.banned:
                    # Banned from the server: coming back would be refused again.
                    raise ConnectionLost(self._banned or str(exc)) from None
                if not joined_once:
                    raise ConnectionLost(str(exc)) from None
                reason = str(exc)
            except _PasswordWanted as exc:
                # Asked with no connection open, as a name is.
                assert self.name is not None
                self._password = await self.frontend.ask_password(self.name, str(exc))
                if self._password is None:
                    self.name = await self.frontend.choose_name(self.name, str(exc))
                continue
            except _TokenRefused as exc:
                if not exc.keep:
                    self.token = None
                    self._tokens.forget()
                continue
            except _NameRefused as exc:
                if not joined_once:
                    # Ask with no connection open: a person may take a while to answer.
                    self.name = await self.frontend.choose_name(self.name, str(exc))
                    continue
                # Most likely our own dead connection, which the server has not
                # noticed yet: the name is ours, so try again later.
                reason = f"name {self.name!r} is still in use ({exc})"
            if not self.config.reconnect:
                raise ConnectionLost(reason)
            delay = backoff_delay(attempt, self.config.backoff_initial, self.config.backoff_max)
            attempt += 1
            log.info("%s; reconnecting in %.1f s", reason, delay)
            self._set_state(State.RECONNECTING, reason, delay)
            await trio.sleep(delay)
            self._set_state(State.RECONNECTING, reason)

    async def _join(self, inbox: _Inbox, *, rejoin: bool) -> None:
        """Join the first room with our name and wait for its welcome
        (:class:`_NameRefused` if the name is refused), then ask for the other rooms:
        the ones we were in (a rejoin) or the ones asked for (``--room``). A room we
        are in already (a resumed seat keeps its rooms) answers with its welcome and
        the replay after its ``since`` again, which shows nothing twice."""
        assert self.name is not None
        rooms = self.rooms if rejoin else list(self.config.rooms)
        self._rooms.clear()  # the welcomes (re)fill it
        keys = {room_key(room) for room in rooms}
        self._room_last = {key: last for key, last in self._room_last.items() if key in keys}
        first = rooms[0] if rooms else LOBBY
        join: Message = {"type": "join", "user": self.name, "batch": True}
        if self._password is not None:
            join = {"type": "login", "user": self.name, "password": self._password,
                    "batch": True}
            self._password = None
        elif rejoin and self.resume is not None:
            join["resume"] = self.resume  # a logged-in seat stays logged in
        elif self.token is not None:
            join = {"type": "login", "token": self.token, "batch": True}
        self._sent_token = "token" in join
        join = in_room(join, first)
        since = self._since(first)
        if rejoin and since is not None:
            join["since"] = since
        async with self._send_lock:
            await inbox.conn.send(join)
        lobby = {key: value for key, value in join.items() if key not in ("room", "since")}
        refusal = await self._await_welcome(inbox, lobby)
        if refusal is not None:
            raise _NameRefused(refusal)
        for room in rooms[1:]:
            await self._enter(inbox.conn, room, rejoin=rejoin)

    async def _enter(self, conn: ServerConnection, room: str, *, rejoin: bool) -> None:
        join: Message = {"type": "join", "room": room}
        since = self._since(room)
        if rejoin and since is not None:
            join["since"] = since
        async with self._send_lock:
            await conn.send(join)

    def _since(self, room: str) -> int | None:
        return self._room_last.get(room_key(room))

    async def _await_welcome(self, inbox: _Inbox, lobby: Message) -> str | None:
        """None once welcomed; the error text if the name was refused. ``lobby``: the
        join (or login) again without its room, sent if the room cannot be entered."""
        fell_back = False
        with trio.move_on_after(self.config.connect_timeout):
            while True:
                message = await inbox.next()
                kind = message.get("type")
                code = message.get("code") if kind == "error" else None
                if code in (NAME_TAKEN, NAME_INVALID):
                    return str(message.get("text") or code)
                if code in (NAME_REGISTERED, LOGIN_FAILED, RATE_LIMITED):
                    if code == LOGIN_FAILED and self._sent_token:
                        raise _TokenRefused()
                    if code == NAME_REGISTERED and self.token is not None:
                        self.resume = None  # the seat is gone: log in with the token
                        raise _TokenRefused(keep=True)
                    raise _PasswordWanted(str(message.get("text") or code))
                if kind == "error" and message.get("code") == WRONG_PORT and not self.config.url:
                    raise wrong_tcp_port(self.config, str(message.get("text", "")))
                self._dispatch(message)
                if kind == "error" and message.get("code") in ROOM_ERRORS and not fell_back:
                    fell_back = True
                    # The first room cannot be entered (the server is full, say), and
                    # a join that fails takes no name either: join #lobby instead.
                    async with self._send_lock:
                        await inbox.conn.send(lobby)
                if kind == "welcome":
                    return None
        raise Disconnected("the server did not answer our join")

    async def _serve(self, conn: ServerConnection, inbox: _Inbox) -> None:
        """Receive, send and keep alive until the connection ends (Disconnected)."""
        self._last_heard = trio.current_time()
        lost: list[Disconnected] = []

        async def until_disconnected(loop: Callable[[], Awaitable[None]]) -> None:
            try:
                await loop()
            except Disconnected as exc:  # one plain error, not an ExceptionGroup
                lost.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_disconnected, partial(self._receive_loop, inbox))
            nursery.start_soon(
                until_disconnected, partial(self._send_loop, conn, nursery.cancel_scope)
            )
            nursery.start_soon(until_disconnected, partial(self._keepalive, conn))
        if lost:
            raise lost[0]

    async def _receive_loop(self, inbox: _Inbox) -> None:
        while True:
            message = await inbox.next()
            self._last_heard = trio.current_time()
            self._heard += 1
            self._dispatch(message)

    async def _send_loop(self, conn: ServerConnection, scope: trio.CancelScope) -> None:
        while True:
            if self._unsent is None:
                self._unsent = await self._outbox.receive()
            message = self._unsent
            async with self._send_lock:
                await conn.send(message)
            self._unsent = None  # written; if the connection broke first, it is sent again
            if message.get("type") == "leave":
                self._left = True
                # Everything before it is written; the server flushes and closes.
                scope.deadline = trio.current_time() + self.config.leave_timeout
                return

    async def _keepalive(self, conn: ServerConnection) -> None:
        """Notice a server that vanished without closing (no FIN): after
        ``ping_interval`` of silence, ping; no answer within another interval ends
        the connection."""
        interval = self._ping_interval
        while True:
            await trio.sleep_until(self._last_heard + interval)
            if trio.current_time() - self._last_heard < interval:
                continue  # heard from the server meanwhile
            heard = self._heard
            async with self._send_lock:
                await conn.send({"type": "ping"})
            await trio.sleep(interval)
            if self._heard == heard:
                raise Disconnected(f"no answer from the server for {interval:g} s")

    def _dispatch(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "error" and message.get("code") == BANNED and "room" not in message:
            # Server-wide: the connection is closing, and no reconnection would do.
            self._banned = str(message.get("text") or BANNED)
        if kind in ("pong", "hello"):
            return  # hello: the TCP greeting, for a person at nc
        if kind == "token":
            token = message.get("token")  # checked: a string (incoming.py)
            if isinstance(token, str):
                self.token = token
                self._tokens.save(token)
            return  # kept, never shown
        if kind == "history_end":
            # Resume from here even when the room was quiet and no chat carried an id.
            last = message.get("last_id")
            if isinstance(last, int) and not isinstance(last, bool):
                self._seen(message, last)
        room = message.get("room")
        if kind in ("chat", "system", "history_end") and isinstance(room, str) and (
            not self.in_room(room)
        ):
            self._incoming.report(f"a '{kind}' for a room we are not in")
            return
        if kind == "chat" and not self._new_chat(message):
            return
        if kind == "welcome" and not self._entered(message):
            return
        if kind == "system" and message.get("event") == "leave":
            self._parted(message)
        count = message.get("clients_count")
        if isinstance(count, int) and kind in ("welcome", "system", "users"):
            self.online = count
        if kind == "welcome":
            if "user" in message:  # checked: a valid name (see incoming.py)
                self.name = message["user"]
            else:
                message["user"] = self.name
            if "resume" in message or len(self._rooms) <= 1:
                # Checked; a server without resumes: None. A welcome to one more room
                # without a token leaves the seat's token as it was.
                self.resume = message.get("resume")
        self.frontend.message(message)
        if kind in ("welcome", "system", "users"):
            self.frontend.status(self.status)

    def _entered(self, message: Message) -> bool:
        """A welcome: its room is one of ours (a welcome without ``room``, from a
        server without rooms, is #lobby's). False for one room too many."""
        room = message.get("room", LOBBY)  # checked: a room name (incoming.py)
        key = room_key(room)
        if key in self._rooms:
            return True  # a resync, or a rename's welcome
        if len(self._rooms) >= MAX_ROOMS:
            self._incoming.report(f"a welcome to more than {MAX_ROOMS} rooms")
            return False
        self._rooms[key] = room
        return True

    def _parted(self, message: Message) -> None:
        """Our own leave notice in a room: we are no longer in it (a ``part``)."""
        name, room = message.get("name"), message.get("room")
        if not isinstance(room, str) or not isinstance(name, str) or self.name is None:
            return
        if name.casefold() != self.name.casefold():
            return
        key = room_key(room)
        self._rooms.pop(key, None)
        self._room_last.pop(key, None)

    @property
    def rooms(self) -> list[str]:
        """The rooms we are in (as the server names them), in the order entered: a
        welcome with ``room`` adds one, our own ``leave`` notice removes it. At most
        :data:`MAX_ROOMS` (a server's welcomes beyond are ignored)."""
        return list(self._rooms.values())

    def in_room(self, room: str) -> bool:
        return room_key(room) in self._rooms

    def _seen(self, message: Message, msg_id: int) -> None:
        """``msg_id`` of ``message``'s room has been seen (or was before our time)."""
        self.last_id = msg_id if self.last_id is None else max(self.last_id, msg_id)
        room = message.get("room", LOBBY)
        key = room_key(room) if isinstance(room, str) else room_key(LOBBY)
        if key in self._room_last or self.in_room(room):
            self._room_last[key] = max(self._room_last.get(key, 0), msg_id)

    def _room_since(self, message: Message) -> int | None:
        room = message.get("room", LOBBY)
        return self._room_last.get(room_key(room) if isinstance(room, str) else "")

    def _new_chat(self, message: Message) -> bool:
        """False for a chat already shown: replayed again after a rejoin, or the copy
        with an id of one shown without (docs/protocol.md, *Several servers*)."""
        msg_id = message.get("id")
        key = _chat_key(message)
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            if key in self._unconfirmed:
                return False  # replayed again while its server waits for Redis
            self._unconfirmed[key] = None
            if len(self._unconfirmed) > UNCONFIRMED_KEPT:
                del self._unconfirmed[next(iter(self._unconfirmed))]
            return True
        history = message.get("history") is True
        seen = self._room_since(message)
        if history and seen is not None and msg_id <= seen:
            return False  # replayed again after a rejoin (or a resync): already shown
        self._seen(message, msg_id)
        if key in self._unconfirmed:
            del self._unconfirmed[key]
            return False  # shown already, without its id
        return True

    def _set_state(
        self, state: State, reason: str | None = None, retry_in: float | None = None
    ) -> None:
        self.state, self._reason, self._retry_in = state, reason, retry_in
        self.frontend.status(self.status)


def _chat_key(message: Message) -> bytes:
    """What tells two copies of one chat apart from other chats: user, text, timestamp."""
    triple = [message.get("user"), message.get("text"), message.get("timestamp")]
    return hashlib.blake2b(dumps(triple).encode("utf-8", "surrogatepass"), digest_size=16).digest()
