"""One connection's life in the room, the same for every transport.

A session is its reader task, which decodes what the peer sends and acts on it, and,
while something waits that the write-through fast path cannot write, a writer task
that drains the member's outgoing queue, writing everything queued at once (one
``send_all`` on TCP). Transports only move bytes; they implement :class:`Transport`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from itertools import islice
from typing import Protocol

import trio

from .. import protocol
from ..config import Config
from ..history.base import Replay, Shown, history_end
from ..protocol import (
    HERE,
    IDLE_TIMEOUT,
    LOBBY,
    NAME_TAKEN,
    NOT_IN_ROOM,
    NOT_JOINED,
    SLOW_CONSUMER,
    Blank,
    Chat,
    Event,
    Help,
    Join,
    Leave,
    Listen,
    ListRooms,
    Login,
    Logout,
    Msg,
    Part,
    Password,
    Ping,
    ProtocolError,
    Register,
    RoomRef,
    Topic,
    Who,
    skeleton,
)
from ..protocol.moderation import CURRENT, ListBans, Mode, Moderate
from .limits import TokenBucket
from .logins import Logins, check_guest_name
from .outbox import MAX_BATCH as MAX_BATCH
from .outbox import DirectSend, Outbox
from .pacing import PACE_SHARE
from .replays import CHUNK_BYTES, REPLAY_PAGE, WRITE_BYTES, render_chunk, utf8_size
from .room import CLOSED_BY_PEER as CLOSED_BY_PEER
from .room import GONE as GONE
from .room import LOST, Member, Room
from .room import PING_TIMEOUT as PING_TIMEOUT
from .rooms import PICK_A_NAME, Rooms

log = logging.getLogger(__name__)

#: Events the store takes something of (a message, a direct message's id): the sender
#: waits while it is full.
_HANDED_OVER = (Chat, Msg)
#: Moderation messages: the rooms' moderator acts on them (it may write to the store).
_MODERATION = (Moderate, ListBans, Mode)


#: End reason when the server stops (WebSocket close 1001).
SHUTDOWN = "shutdown"
#: End reason for a WebSocket peer that broke the protocol (logged as
#: ``protocol_error: <what>``; the close code is the violation's, 1002 or 1009).
PROTOCOL_ERROR = "protocol_error"
#: Variants tried for a seed-style join whose name is taken (``Ann2``, ``Ann3``...).
MAX_VARIANTS = 1000
#: The events :class:`~.logins.Logins` acts on.
_ACCOUNT_EVENTS = (Register, Login, Logout, Password)


class PeerGone(Exception):
    """The peer closed or reset the connection while we were writing."""


class Transport(Protocol):
    peer: str
    #: The transport's name in metrics and logs (``tcp``, ``ws``).
    kind: str
    #: Messages and bytes written so far (the server's metrics sum them: counting per
    #: connection keeps the write path off any shared counter).
    messages_out: int
    bytes_out: int

    async def receive(self) -> Sequence[Event | ProtocolError] | None:
        """Wait for input; return what it decoded to (maybe nothing), or None at EOF."""

    async def send(self, lines: list[str], *, batch: bool) -> None:
        """Write encoded messages; ``batch`` lets several share one frame. Raises PeerGone."""

    async def close(self, reason: str | None) -> None:
        """Close the connection, saying why if ``reason`` (an error code) calls for it
        and it can be said quickly."""


class Session:
    """One connection: its reader task, and a writer task around the member's queue
    while the fast path cannot write (for the session's life without one: TLS, gRPC).

    ``join_timeout`` (seconds) closes a connection that has not joined by then with
    ``idle_timeout``; ``None`` lets it wait forever. ``bucket`` is its flood control,
    when not a fresh one; ``host`` its address (for what is limited per address).
    ``greeting`` is its first line (the TCP ``hello``); ``listen_after`` (seconds) makes
    it a listener of ``#lobby`` if it has sent nothing by then (a WebSocket: the seed's
    clients listen without asking). ``variants``: a seed-style join whose name is taken
    joins under a variant (``Ann2``: the seed's client cannot choose another name);
    False: it gets ``name_taken`` (a gRPC ``Post``, whose caller can).
    """

    __slots__ = (
        "_active", "_cut", "_deadline", "_direct", "_ended", "_halted", "_held_until",
        "_join_timeout", "_listen_after", "_listen_at", "_logins", "_metrics", "_outbox",
        "_stop", "_timed_out", "_variants", "_waiting", "_wanted", "_writer_done",
        "_writer_scope", "_writers", "_writing", "bucket", "config", "current", "member",
        "messages_in", "rooms", "transport",
    )

    def __init__(
        self,
        rooms: Rooms,
        config: Config,
        transport: Transport,
        *,
        join_timeout: float | None = None,
        bucket: TokenBucket | None = None,
        host: str | None = None,
        greeting: str | None = None,
        listen_after: float | None = None,
        variants: bool = True,
    ) -> None:
        self.rooms = rooms
        self.config = config
        self.transport = transport
        #: Where the writer task runs (see :meth:`run`), and its cancel scope while it
        #: does; how many are alive (0 or 1), and what the session waits on for them
        #: to end (made only then: a writer starts often under load).
        self._writers: trio.Nursery | None = None
        self._writer_scope: trio.CancelScope | None = None
        self._writing = 0
        self._writer_done: trio.Event | None = None
        self._cut = False  # evicted: the reader stops and the writer with it, at once
        self._join_timeout = join_timeout
        #: The join deadline, for the reader's cancel scopes (see :meth:`_serve`).
        self._deadline = math.inf
        if join_timeout is not None:
            self._deadline = trio.current_time() + join_timeout
        self._active: trio.CancelScope | None = None  # the reader's scope now, if any
        self._waiting = False  # ... and it is the wait for input
        self._halted = False  # shutdown() or eviction stopped the reader
        self._timed_out = False  # the join deadline did
        self._ended = CLOSED_BY_PEER
        self._listen_after = listen_after
        self._listen_at = math.inf  # when a quiet connection becomes a listener
        self._variants = variants
        self._wanted: str | None = None  # the name a seed-style join asked for
        self._stop: ProtocolError | str | None = None
        self._held_until = -math.inf  # the end of the last wait take_control() imposed
        #: Flood control: fresh, or (``bucket``) where the peer's address left off.
        self.bucket = bucket if bucket is not None else TokenBucket(
            config.rate_limit, config.rate_burst, config.rate_ceiling, trio.current_time
        )
        self._outbox = outbox = Outbox(config.queue_size, rooms.flusher)
        self.member = Member(outbox, peer=transport.peer, host=host,
                             on_evict=self._on_evict)
        self.member.halt = self.stop
        self._logins: Logins | None = None  # made at its first use (most never log in)
        #: The transport's write without waiting, if it has one (plain sockets).
        self._direct = transport if isinstance(transport, DirectSend) else None
        if self._direct is not None:
            outbox.direct = self._send_now
        #: Where a plain-text (nc) line goes: the room last joined, or switched to.
        self.current: Room | None = None
        if greeting is not None:
            outbox.put(greeting)
        #: Chat messages taken from this connection (folded into the metrics at close).
        self.messages_in = 0
        self._metrics = rooms.metrics

    @property
    def logins(self) -> Logins:
        """Its account events (register, login, logout, password); made when first
        needed, not for every idle connection (memory per connection, issue 20)."""
        logins = self._logins
        if logins is None:
            member = self.member
            logins = self._logins = Logins(self.rooms, member, self.config, member.host)
        return logins

    @property
    def account(self) -> str | None:
        """The account this connection is logged in to; None for a guest (or before
        it joins). Several connections may be logged in to one account."""
        return self.member.account

    @property
    def queued(self) -> int:
        """Entries waiting in this member's queue now."""
        return self.member.queued

    @property
    def reason(self) -> str:
        """Why the session ended (or will): an error code, ``shutdown``, ``leave``..."""
        return self.member.evicted or self._ended

    async def run(self) -> None:
        """Serve the connection until EOF, ``leave``, a fatal error or eviction.

        The session's own task reads; a writer task exists only while something waits
        to be written that the fast path cannot write (with a direct write), or for the
        session's life (without). It runs in the server's writers nursery
        (:attr:`Rooms.writers`), or, when none runs (a handler run on its own, as in
        tests), in a nursery of the session's own. Why not always the latter: an idle
        connection then holds no nursery, no cancel scope but the reader's wait, and no
        task but its own (memory per idle connection, issue 20)."""
        writers = self.rooms.writers
        if writers is not None:
            await self._serve(writers)
        else:
            async with trio.open_nursery() as nursery:
                await self._serve(nursery)
        # Whatever an evicted writer left queued goes now: a seat held for a resume
        # keeps its member (and so its outbox) for the grace, not its backlog.
        outbox = self._outbox
        outbox.clear()
        outbox.spawn = None
        with trio.move_on_after(self.config.goodbye_timeout) as goodbye:
            goodbye.shield = True
            await self.transport.close(self.member.evicted)

    async def _serve(self, writers: trio.Nursery) -> None:
        """Read until EOF, a stop, ``leave``, a fatal error, eviction or the join
        deadline; then let the writer drain the queue.

        The reader uses two cancel scopes, one after the other and never nested: the
        wait for input (which :meth:`stop` may cut short too, and which ends when a
        quiet connection becomes a listener) and the handling of what it brought (which
        only :meth:`shutdown`, eviction and the join deadline cut short: what was
        received came before the reason to stop, and is handled). An idle connection
        waits for its whole life, in one scope and this one frame (issue 20)."""
        member, outbox = self.member, self._outbox
        self._writers = writers
        if self._listen_after is not None:
            self._listen_at = trio.current_time() + self._listen_after
        if self._direct is None:
            outbox.writer_started()
            self._spawn_writer()
        else:
            # Started when there is something the fast path cannot write.
            outbox.spawn = self._spawn_writer
            if outbox.items:
                outbox.wake()
        try:
            try:
                while not self._halted:
                    received = None
                    # One name for both scopes: the handling's is let go of while waiting.
                    with trio.CancelScope(deadline=self._wait_deadline()) as scope:
                        self._active, self._waiting = scope, True
                        if self._stop is None:
                            received = await self.transport.receive()
                    self._active, self._waiting = None, False
                    if self._halted:
                        break
                    if received is None:
                        if self._stop is not None:
                            self._stopped(self._stop)
                        elif not scope.cancelled_caught:
                            break  # the peer's end
                        elif trio.current_time() < self._deadline:
                            self._listen()  # quiet until now: a listener
                            continue
                        else:
                            self._timed_out = True
                        break
                    if received:
                        self._listen_at = math.inf  # heard: never a listener by silence
                    with trio.CancelScope(deadline=self._deadline) as scope:
                        self._active = scope
                        more = await self._handle_received(received)
                    self._active = received = None
                    if scope.cancelled_caught:
                        self._timed_out = not self._halted
                        break
                    if not more:
                        break
                if self._timed_out and member.evicted is None:
                    # Only the join deadline ends the reader without a reason.
                    error = ProtocolError(
                        IDLE_TIMEOUT,
                        f"closing: no join within {self._join_timeout:g} seconds",
                        fatal=True,
                    )
                    self._tell(error)
                    member.evicted = IDLE_TIMEOUT
            finally:
                try:
                    self.rooms.leave(member, hold=self.reason in LOST)
                finally:
                    outbox.close()  # the writer drains what is queued, then stops
            await self._writer_stopped()
        except BaseException:
            # Cancelled from outside (the shutdown grace ran out), or a failure: the
            # writer goes too, and is gone before the handler closes the socket.
            self._cut_writer()
            with trio.move_on_after(self.config.goodbye_timeout) as gone:
                gone.shield = True
                await self._writer_stopped()
            raise

    async def _writer_stopped(self) -> None:
        """Wait until no writer task is left (one may start another on its way out)."""
        while self._writing:
            self._writer_done = done = trio.Event()
            await done.wait()

    def _no_deadline(self) -> None:
        """Joined (or listening): no join deadline any more."""
        self._deadline = math.inf
        if self._active is not None:
            self._active.deadline = self._wait_deadline() if self._waiting else math.inf

    def _wait_deadline(self) -> float:
        """When the wait for input ends without input: the join deadline, or (quiet so
        far) the moment the connection becomes a listener."""
        return min(self._deadline, self._listen_at)

    def _on_evict(self) -> None:
        """The room evicted the member: the reader stops at once, and the writer."""
        self._halted = True
        if self._active is not None:
            self._active.cancel()
        self._cut_writer()

    def _cut_writer(self) -> None:
        self._cut = True
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    def _spawn_writer(self) -> None:
        """Start the writer task (the outbox's ``spawn``, with a direct write)."""
        assert self._writers is not None
        if self._cut:
            self._outbox.writer_done()  # nothing more is written
            return
        self._writing += 1
        self._writers.start_soon(self._write_loop)

    def _listen(self) -> None:
        """Quiet since it connected: a listener of #lobby (``listen_after``)."""
        self._listen_at = math.inf
        try:
            self.rooms.listen(self.member)
        except ProtocolError as error:  # #lobby is closed to it (a ban, a mode)
            self._tell(error)
        if self.member.listening:
            self._no_deadline()  # a listener has no join deadline

    def shutdown(self, notice: str | None = None) -> None:
        """Queue the shutdown notice (``notice``, the same for every session, or one
        built now), stop reading, and let the writer drain the queue."""
        member = self.member
        member.deliver(notice if notice is not None else protocol.shutdown(self.rooms.count))
        if member.evicted is None:
            member.evicted = SHUTDOWN  # not evict(): that would cancel the writer too
        self._halted = True
        if self._active is not None:
            self._active.cancel()

    def stop(self, failure: ProtocolError | str) -> None:
        """End the session for a reason found outside the reader: the WebSocket
        transport checks frames (a protocol violation: ``failure`` is the reason to
        log) and counts pings (past the flood ceiling: a fatal ``ProtocolError`` to
        answer), which the reader never sees. The reader finishes the message it is
        handling, if any, then stops; the writer drains the queue."""
        if self._stop is None:
            self._stop = failure
            if self._waiting and self._active is not None:
                self._active.cancel()

    def take_control(self) -> float:
        """Flood control for input the reader never sees, a WebSocket ping or pong: a
        token from the same bucket, and the seconds to wait (the frame guard waits them
        out; raises ``rate_limited`` past the ceiling). Counted in the metrics like a
        message's delay; several in one read share one wait (the last, longest), so
        only the seconds past the wait already counted are added."""
        delay = self.bucket.take()
        if delay:
            now = trio.current_time()
            until = now + delay
            metrics = self._metrics
            metrics.rate_limit_delays += 1
            metrics.rate_limit_delay_seconds += until - max(now, self._held_until)
            self._held_until = until
        return delay

    def _stopped(self, failure: ProtocolError | str) -> None:
        member = self.member
        if isinstance(failure, ProtocolError):
            self._tell(failure)
            failure = failure.code
        if member.evicted is None:
            member.evicted = failure

    async def _handle_received(self, received: Sequence[Event | ProtocolError]) -> bool:
        """Handle one read's messages in order; False when reading must stop."""
        bucket, pacer = self.bucket, self.rooms.pacer
        budget = max(1, self.config.queue_size // PACE_SHARE)
        for received_item in received:
            item = received_item
            try:
                delay = bucket.take()
            except ProtocolError as flood:
                item = flood  # past the ceiling: this message is refused, and said so
            else:
                if delay:
                    # Fakelag: this sender waits; nobody else does.
                    self._metrics.rate_limit_delays += 1
                    self._metrics.rate_limit_delay_seconds += delay
                    await trio.sleep(delay)
                else:
                    # One read can hold a thousand lines: let the writers drain
                    # the queues every few broadcasts, or they overflow.
                    await pacer.step(budget)
            if isinstance(item, ProtocolError):
                self._tell(item)
                if item.fatal:
                    self.member.evicted = item.code
                    return False
                continue
            if isinstance(item, Join) and item.resume and await self._resume(item):
                continue
            claimed: str | None = None
            try:
                if isinstance(item, _ACCOUNT_EVENTS):
                    await self.logins.handle(item)
                    if self.member.joined:
                        self._no_deadline()
                    continue
                # Released below unless a member here holds it by then (also when
                # the claim is refused or cut short: releasing checks the holder).
                if isinstance(item, Chat) and not self.member.joined and item.user:
                    claimed = await self._claim_seed_name(protocol.validate_name(item.user))
                    item = replace(item, user=claimed)
                elif (claimed := self._claims(item)) is not None:
                    await self.rooms.claim(claimed)  # maybe a Redis round trip, first
                if isinstance(item, Join) and item.room is not None:
                    await self.rooms.prepare(item.room)
                if isinstance(item, _HANDED_OVER):
                    # The store must take the message (or a direct message's id)
                    # before it is delivered; if it is full, only this sender waits.
                    # No checkpoint between this and _handle, so the rooms cannot
                    # fill it again meanwhile.
                    await self.rooms.wait_writable()
                    accounts = self.rooms.accounts
                    if isinstance(item, Msg) and accounts is not None:
                        await accounts.dms.wait_writable()  # a DM may be kept too
                if isinstance(item, _MODERATION):
                    # Another connection of an account acts as its member.
                    await self.rooms.moderation.handle(
                        self.member.primary or self.member, item,
                        self._moderation_room(item.room),
                    )
                elif not self._handle(item):
                    self._ended = "leave"
                    return False
            except ProtocolError as error:
                if isinstance(item, Join) and item.plain and item.user is not None:
                    error = ProtocolError(
                        error.code, f"{error.text}; type /nick with another name",
                        fatal=error.fatal, fields=error.fields,
                    )
                self._tell(error)
                if error.fatal:  # banned server-wide, at a join
                    self.member.evicted = error.code
                    return False
            finally:
                if claimed is not None:
                    self.rooms.unclaim(claimed)
        return True

    async def _resume(self, join: Join) -> bool:
        """A join bringing a ``resume`` token: take its seat back, here or from another
        server; False (an ordinary join follows) for an unknown or expired token."""
        member = self.member
        if member.joined or join.resume is None or join.plain or join.user is None:
            return False
        batch = member.batch
        member.batch = join.batch
        if await self.rooms.take_seat(member, join.resume, join.user, join.since):
            self._no_deadline()
            if member.rooms:
                self.current = next(reversed(member.rooms.values()))
            if join.room is not None and protocol.room_key(join.room) not in member.rooms:
                await self.rooms.prepare(join.room)
                try:
                    self._entered(self.rooms.enter(member, join.room, join.since))
                except ProtocolError as error:
                    self._tell(error)
            return True
        member.batch = batch
        return False

    async def _claim_seed_name(self, wanted: str) -> str:
        """The name a seed-style join takes, claimed: ``wanted``, or when it is taken
        (here, or on another server) the first free variant (``Ann2``...): that client
        cannot choose another name. Raises ``name_taken`` if none is free (or, without
        variants, if ``wanted`` is taken on another server)."""
        self._wanted = wanted
        rooms = self.rooms
        if not self._variants:
            check_guest_name(self.rooms, self.member, wanted)
            await rooms.claim(wanted)  # the join says name_taken if it is taken here
            return wanted
        candidates = (wanted, *islice(protocol.variants(wanted), MAX_VARIANTS))
        accounts = rooms.accounts
        for name in candidates:
            if rooms.holds(name) or skeleton(name) == skeleton(protocol.SYSTEM_USER):
                continue
            if accounts is not None and accounts.registered(name) is not None:
                continue  # registered (or a look-alike of one): a guest cannot have it
            try:
                await rooms.claim(name)
            except ProtocolError:
                continue
            return name
        raise ProtocolError(NAME_TAKEN, f"name '{wanted}' and its variants are taken")

    def _claims(self, event: Event) -> str | None:
        """The name this event joins (or renames) under, which the room must claim
        first (other servers may hold it); None for everything else."""
        if isinstance(event, Join):
            if event.user is not None:
                check_guest_name(self.rooms, self.member, event.user)
            return event.user
        return None

    def _handle(self, event: Event) -> bool:
        """Act on one event; False ends the session."""
        member, rooms = self.member, self.rooms
        # Another connection of an account acts as the account's member: what it
        # enters, parts or says reaches every connection of the account.
        acting = member.primary or member
        if isinstance(event, Blank):
            return True  # counted by flood control; it neither joins nor keeps one alive
        if isinstance(event, Chat):
            if not member.joined:
                if event.user is None:
                    if event.plain:
                        raise ProtocolError(
                            NOT_JOINED, "join first: type /nick NAME, then your message again"
                        )
                    raise ProtocolError(NOT_JOINED, "join first: {\"type\":\"join\",\"user\":NAME}")
                # Seed compatibility: its client never joins and names itself in each chat
                # (the name was claimed first: the one it asked for, or a variant). A
                # chat that names its room (a gRPC Post into one) enters that room.
                self._entered(rooms.join(
                    member, event.user, welcome=False, wanted=self._wanted,
                    room=event.room if isinstance(event.room, str) else None,
                ))
            rooms.say(acting, event.text, self._room(event.room))
            self.messages_in += 1
        elif isinstance(event, Join):
            if not member.joined:
                member.batch = event.batch
            self._entered(rooms.join(acting, event.user, event.since, room=event.room,
                                     resumable=not event.plain))
        elif isinstance(event, Msg):
            rooms.direct(acting, event.to, event.text)
        elif isinstance(event, Who):
            member.deliver(rooms.who(self._room(event.room, anywhere=True)))
        elif isinstance(event, Part):
            if not member.joined:
                raise ProtocolError(NOT_IN_ROOM, "you are in no room")
            parted = rooms.part(acting, self._room(event.room))
            if parted is self.current:  # nc: back to the room entered last, if any
                self.current = next(reversed(member.rooms.values()), None)
        elif isinstance(event, Topic):
            if not member.joined:
                raise ProtocolError(NOT_JOINED, PICK_A_NAME)
            rooms.topic(acting, self._room(event.room), event.topic)
        elif isinstance(event, ListRooms):
            member.deliver(rooms.list_rooms())
        elif isinstance(event, Ping):
            member.deliver(protocol.pong())
        elif isinstance(event, Listen):
            rooms.listen(member)
            if member.listening:
                self._no_deadline()  # a listener has no join deadline
        elif isinstance(event, Help):
            member.deliver(protocol.help_message(protocol.HELP_TEXT))
        elif isinstance(event, Leave):
            return False
        if member.joined:
            self._no_deadline()
        return True

    def _entered(self, room: Room | None) -> None:
        if room is not None:
            self.current = room

    def _room(self, ref: RoomRef, *, anywhere: bool = False) -> str:
        """The room an event means: the one it names, or (a plain-text line) the
        current one; ``not_in_room`` when there is none (``anywhere``: ``#lobby``)."""
        if ref is not HERE:
            assert isinstance(ref, str)
            return ref
        if self.current is not None and self.current.key in self.member.rooms:
            return self.current.name
        if anywhere or not self.member.joined:
            return LOBBY
        if self.member.rooms:  # the room joined last
            return next(reversed(self.member.rooms.values())).name
        raise ProtocolError(NOT_IN_ROOM, "you are in no room: /join #ROOM")

    def _moderation_room(self, ref: str | None) -> str | None:
        """The room a moderation message means: the one it names, the current one (nc),
        or None (server-wide)."""
        if ref == CURRENT:
            return self._room(HERE, anywhere=True)
        return ref

    def _tell(self, error: ProtocolError) -> None:
        """Send the client an error message, counted by its code."""
        self._metrics.errors[error.code] += 1
        self.member.deliver(error.to_message())

    def _send_now(self, lines: list[str]) -> bool | None:
        """The outbox's direct write (:mod:`.outbox`): the transport's, in this
        member's framing."""
        assert self._direct is not None
        return self._direct.send_now(lines, batch=self.member.batch)

    async def _write_loop(self) -> None:
        """Write what the outbox holds whenever the fast path could not: a backlog, the
        rest of a partial direct write, a replay, or a transport without one. With a
        direct write it ends when nothing is left (the outbox starts it again).

        It may run in the server's writers nursery, so nothing escapes it: a failure
        is logged and ends the session (``error``), as it would have ended the
        session's own nursery."""
        try:
            with trio.CancelScope() as self._writer_scope:
                if self._cut:
                    self._writer_scope.cancel()
                await self._write_outbox()
        except Exception:
            log.exception("writing to %s failed", self.transport.peer)
            member = self.member
            if member.evicted is None:
                member.evicted = "error"
            self._on_evict()
        finally:
            self._writer_scope = None
            self._writing -= 1
            self._outbox.writer_done()
            done, self._writer_done = self._writer_done, None
            if done is not None:
                done.set()

    async def _write_outbox(self) -> None:
        outbox, metrics, direct = self._outbox, self._metrics, self._direct
        items = outbox.items
        while True:
            if items:
                head = items[0]
                if isinstance(head, Replay):
                    # A replay may be longer than the queue: it is one queue item,
                    # rendered here and written in chunks at the peer's pace.
                    del items[0]
                    if not await self._replay(head):
                        return
                    continue
                lines, size = outbox.take(WRITE_BYTES)
                taken = len(lines)
                if taken > metrics.queue_high_water or taken >= MAX_BATCH or size >= WRITE_BYTES:
                    # Everything queued was taken at once, up to MAX_BATCH lines or
                    # WRITE_BYTES: with what is left, the queue's depth.
                    metrics.queue_depth(taken + len(items))
                if not await self._write(lines):
                    return
            elif direct is not None and direct.pending:
                if not await self._write([]):  # the rest of a partial direct write
                    return
            elif outbox.closed or direct is not None:
                return
            else:
                await outbox.wait()

    async def _replay(self, replay: Replay) -> bool:
        """Write a replay a chunk at a time (see :mod:`.replays`): read a page at a time
        (from the room's tail, or the store), and render each chunk only once the
        server's replay budget has room for it. A short replay, its ``history_end``
        included, is one write."""
        history = self.rooms.history
        assert history is not None
        page, replay = await history.read_page(replay, REPLAY_PAGE)
        while not replay.done:
            if not await self._write_replay(page):
                return False
            page, replay = await history.read_page(replay, REPLAY_PAGE)
        return await self._write_replay([*page, *replay.pending], history_end(replay))

    async def _write_replay(self, messages: Sequence[Shown], end: str | None = None) -> bool:
        """Write ``messages`` (then ``end``) as replay lines, chunk by chunk; each chunk
        waits for the budget and is written within one ``send_timeout``."""
        budget = self.rooms.replays
        start = 0
        metrics = self._metrics

        async def next_chunk() -> None:
            nonlocal start, end
            async with budget.slot():
                lines, start, size = render_chunk(messages, start, CHUNK_BYTES)
                if start >= len(messages) and end is not None:
                    lines.append(end)  # a short replay is one write
                    size += utf8_size(end) + 1
                    end = None
                # What the budget holds, in bytes: rendered, not yet written.
                metrics.replay_bytes_in_flight += size
                try:
                    await self.transport.send(lines, batch=self.member.batch)
                finally:
                    metrics.replay_bytes_in_flight -= size

        while start < len(messages) or end is not None:
            if not await self._bounded(next_chunk):
                return False
        return True

    async def _write(self, lines: list[str]) -> bool:
        """One bounded write; False (and eviction) if the peer is gone or too slow.
        (The same as ``_bounded(send)``, without its extra coroutine on the path every
        broadcast takes.)"""
        with trio.move_on_after(self.config.send_timeout):
            try:
                await self.transport.send(lines, batch=self.member.batch)
            except PeerGone:
                self.member.evict(GONE)
                return False
            return True
        log.debug("%s stopped reading; evicting", self.member)
        self.member.evict(SLOW_CONSUMER)
        return False

    async def _bounded(self, write: Callable[[], Awaitable[None]]) -> bool:
        """Run ``write`` within ``send_timeout``; False (and eviction) if the peer is
        gone or too slow."""
        with trio.move_on_after(self.config.send_timeout):
            try:
                await write()
            except PeerGone:
                self.member.evict(GONE)
                return False
            return True
        log.debug("%s stopped reading; evicting", self.member)
        self.member.evict(SLOW_CONSUMER)
        return False
