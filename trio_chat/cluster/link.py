"""The link to Redis, and the cluster's side of the delivery seam.

With ``--redis``, a chat message is not broadcast by the server that received it: it
goes to the *history stream* in Redis (a Lua script gives it the next id), and every
server, that one included, reads the stream and broadcasts what it reads to its own
members. So ids are one sequence, and every server delivers in the stream's order.
``#lobby``'s stream is ``history``; every other room has its own, ``history:<room>``,
which a server reads only while it has members in that room (one ``XREAD`` over the
streams it needs), so adding rooms and servers does not make every server read
everything. A direct message goes to the *inbox* stream of the recipient's server
(``inbox:<node>``), read by that server only; the sender's server echoes it. Joins,
leaves, renames, entering and leaving rooms and topics go to the *events* stream,
read by every server (presence is small next to messages: it keeps ``who`` and
``rooms`` answerable from memory).
Reads are pulls of at most :data:`READ_COUNT` entries, so nothing piles up in this
process faster than the room takes it (coredis's pub/sub would buffer without bound).

Presence: every server renews its entry in a sorted set (its expiry) every
``presence_ttl / 4`` seconds and keeps its members in a hash; a name is claimed in
Redis before a join. A server whose entry expires is reaped by the first server to
notice, which tells the others its members left.

Redis lost while running: members stay connected, and what they send is delivered on
this server at once (without an id) and kept in the :class:`~.outbox.Outbox`. If
Redis came back empty (a restart without persistence), the servers first merge their
rings back into the history stream, so a ``since`` resume misses nothing any live
server had; and none publishes before every server it knew has done so (for a
bounded time): a message restored after another server had moved past its id would
never reach that server, and one whose own server had published it but not read it
back yet would be published again under a second id. docs/protocol.md states exactly
what is and is not guaranteed.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import islice
from typing import Any, Final, NamedTuple

import coredis
import coredis.exceptions
import trio
from coredis.commands.script import Script
from coredis.connection import TCPLocation

from .. import protocol
from ..accounts.store import StoredDM
from ..config import SENTINEL_SCHEME, Config, parse_sentinel_url, redacted_url
from ..errors import StartupError, first_leaf
from ..history.base import chat_line
from ..history.writer import MAX_PENDING
from ..protocol import LOBBY, LOBBY_KEY, NO_SUCH_USER, ProtocolError, room_key, skeleton
from ..pulse import Pulse
from ..server.delivery import Delivery
from ..server.metrics import Histogram
from ..server.pacing import PACE_SHARE
from ..server.room import Member, Room
from ..server.rooms import Rooms
from ..server.seats import token_key
from . import scripts as lua
from .history import ClusterHistory
from .outbox import Outbox
from .presence import PRESENCE_BATCH, ClusterPresence
from .resp import Endpoint, LeanConnection, open_lean

log = logging.getLogger(__name__)

#: Every key starts with this.
PREFIX: Final = "trio-chat:"
#: Stream entries taken per read: the most this process holds that the room has not.
READ_COUNT: Final = 512
#: Milliseconds a read blocks in Redis waiting for entries.
BLOCK_MS: Final = 1000
#: Messages published per script call.
PUBLISH_BATCH: Final = 256
#: Entries the events stream keeps (about; a server further behind refreshes its view).
EVENTS_KEEP: Final = 10_000
#: Seconds a Redis command may take (besides a read's block) before the link is down.
COMMAND_TIMEOUT: Final = 5.0
#: Seconds a name claim may wait for Redis before the join goes ahead locally.
CLAIM_TIMEOUT: Final = 2.0
#: Reconnection backoff: first and longest wait, in seconds (with jitter).
BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: Seconds between two log lines saying Redis is still unreachable.
OUTAGE_REMINDER: Final = 30.0
#: Seconds a stopping server waits for Redis to take its outbox, and to forget it.
STOP_TIMEOUT: Final = 5.0
#: Seconds a server that found Redis empty waits for the other servers it knew to
#: restore their history before it publishes (each reconnects within its backoff).
RESTORE_WAIT: Final = BACKOFF_MAX + COMMAND_TIMEOUT
#: Seconds between two looks at which servers are back, during that wait.
RESTORE_POLL: Final = 0.05
#: Milliseconds one ``WAIT`` for ``--redis-wait`` replicas may take before it is asked
#: again (deliveries wait meanwhile; ``/readyz`` says why).
FENCE_MS: Final = 1000

#: Direct messages waiting for Redis (their id, and where the recipient is); senders
#: wait past it.
MAX_DIRECT: Final = 1024
#: Tries, and seconds between them, for a direct message to a name whose join is on
#: its way to Redis (claimed, not yet registered): a presence batch's round trip.
DIRECT_TRIES: Final = 20
DIRECT_RETRY: Final = 0.05
#: Entries an inbox stream keeps (about): a server that falls further behind its
#: direct messages loses the oldest.
INBOX_KEEP: Final = 10_000
#: Topics Redis keeps for servers that start later (one per room).
TOPICS_KEPT: Final = 10_000

#: Variants tried for a member renamed after a name clash (``Ann2``, ``Ann3``...).
MAX_VARIANTS: Final = 1000
#: Seconds a seat held for a resume outlives its token in Redis here (see
#: :attr:`Cluster.hold_margin`).
HOLD_MARGIN: Final = 1.0


class Entry(NamedTuple):
    """One stream entry as the lean connection reads it (the shape of coredis's)."""

    identifier: str
    field_values: dict[str, str]


def _stream_id(identifier: str) -> tuple[int, int]:
    ms, _, seq = identifier.partition("-")
    return int(ms), int(seq or 0)


def _entries(reply: list[Any]) -> dict[str, list[Entry]]:
    """An ``XREAD`` reply as {stream key: its entries}, each entry's fields a dict
    (built once: every use of the entry reads it)."""
    read: dict[str, list[Entry]] = {}
    for key, entries in reply:
        read[key] = [
            Entry(identifier, dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {})
            for identifier, flat in entries
        ]
    return read


class LinkBroken(Exception):
    """The link must start over although the connection works: Redis lost its data
    while connected (its epoch changed), or a name claim timed out."""


#: What a lost or unusable Redis connection raises.
LINK_ERRORS: Final = (coredis.exceptions.RedisError, OSError, trio.TooSlowError, LinkBroken)


class LinkState(enum.Enum):
    """Where the link to Redis is (``/readyz`` and the tests read it)."""

    #: Not linked yet, or lost: chat is delivered on this server only.
    DOWN = "down"
    #: Redis came back without its data: waiting for the servers this one knew to
    #: restore their history before publishing.
    RESTORING = "restoring"
    UP = "up"


class Cluster(Delivery):
    """Every server on one Redis shares the rooms: the delivery that publishes to the
    rooms' streams, and the link that connects (and reconnects with backoff), reads the
    streams this server needs into its rooms, publishes the outbox, direct messages
    and presence changes, and heartbeats. Bind it to the rooms (``Rooms(cluster)``)
    before :meth:`run`."""

    def __init__(self, config: Config, node: str | None = None) -> None:
        self.config = config
        self.node = node or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        keep = config.history_keep
        self.outbox = Outbox(max_pending=min(MAX_PENDING, keep), keep=keep)
        self.history: ClusterHistory = ClusterHistory(
            self.outbox, replay=config.history_replay, keep=keep
        )
        self.presence = ClusterPresence()
        self._client: coredis.Redis[str] | None = None
        #: Where the client connects, for the lean connections of the hot loops.
        self._endpoint: Endpoint | None = None
        self._scripts: dict[str, Script[str]] = {}
        self._epoch: str | None = None
        self._history_cursor = "0-0"
        self._events_cursor = "0-0"
        self._ttl_ms = int(config.presence_ttl * 1000)
        self.state = LinkState.DOWN
        #: Cancelled (with the reason in _broken) to make the link start over.
        self._link_scope: trio.CancelScope | None = None
        self._broken: str | None = None
        #: Fires whenever :attr:`state` changes.
        self.state_changed = Pulse()
        #: Times the link came up (the ``trio_chat_redis_links`` counter, read
        #: through :attr:`link`).
        self._times_linked = 0
        #: Seconds each publish script took (the cluster's "history commit").
        self._publish_seconds = Histogram()
        #: Redis's replication id when last synced: a new one is a new primary.
        self._replid: str | None = None
        #: The newest id a publish script returned (Redis had it then).
        self._published_through = 0
        #: With --redis-wait: fewer replicas than asked acknowledge; deliveries wait.
        self._replicas_behind = False
        #: The rooms besides #lobby whose streams this server reads: key -> cursor.
        self._reading: dict[str, str] = {}
        self._inbox_cursor = "0-0"
        #: Direct messages waiting for their script: (sender, to, the recipient's name
        #: if known here, text, ts).
        self._directs: deque[tuple[Member, str, str | None, str, str]] = deque()
        self._direct_work = Pulse()
        self._direct_room = Pulse()
        #: Where a room's stream ended when a join of it was prepared (room key -> id).
        self._prepared: dict[str, int] = {}
        #: Broadcasts of the read loop since it last waited (see :meth:`_pace`).
        self._unpaced = 0
        self.history.read_range = self._read_range
        self.history.read_newest = self._read_newest

    @property
    def connected(self) -> bool:
        return self.outbox.connected

    @property
    def client(self) -> coredis.Redis[str] | None:
        """The connection to Redis while linked (None while it is down)."""
        return self._client if self.connected else None

    async def moderate(self, source: str, args: Iterable[str | int]) -> Any:
        """Run a moderation script (:mod:`.moderation`); ``not_permitted`` saying why
        when Redis cannot take it now."""
        client = self.client
        failure = "Redis is unreachable"
        if client is not None:
            try:
                with trio.fail_after(COMMAND_TIMEOUT):
                    return await self._script(client, source, args)
            except* LINK_ERRORS as group:
                failure = f"Redis did not take it ({first_leaf(group)})"
        raise ProtocolError(protocol.NOT_PERMITTED, f"moderation is unavailable: {failure}")

    # ------------------------------------------------------------ the delivery

    async def wait_writable(self) -> None:
        await self.outbox.wait_writable()
        while len(self._directs) >= MAX_DIRECT:
            await self._direct_room.wait()

    def publish(self, room: Room, user: str, text: str, ts: str) -> None:
        if self.outbox.add(user, text, ts, room.name):
            # Redis is unreachable: delivered here now, without an id.
            room.broadcast(protocol.chat(user, text, ts, room=room.name))
        # Else every server reading the room broadcasts it when it reads it back.

    def direct(self, sender: Member, to: str, text: str, ts: str) -> None:
        """A direct message: to the user's server's inbox through Redis (which gives
        it its id); the echo to the sender when Redis has taken it. Without Redis, a
        user of this server gets it, without an id."""
        assert sender.name is not None
        local = self.rooms.user(to)
        if not self.connected:
            if local is None or local.name is None:
                raise ProtocolError(NO_SUCH_USER, (
                    f"nobody here is called '{to}' (other servers cannot be reached now: "
                    "Redis is unreachable)"))
            line = protocol.direct(sender.name, local.name, text, ts)
            local.deliver(line)
            if local is not sender:
                sender.deliver(line)
            return
        if len(self._directs) >= MAX_DIRECT:
            raise trio.WouldBlock
        # The recipient's name as it is held, if known here; else Redis says (the
        # view of the other servers may not have a name taken a moment ago).
        name = local.name if local is not None else next(
            (name for name in self.presence.names()
             if protocol.name_key(name) == protocol.name_key(to)), None)
        self._directs.append((sender, to, name, text, ts))
        self._direct_work.fire()

    def room_saved(self, room: Room) -> None:
        pass  # topics go through the events stream (topic_changed)

    def room_removed(self, room: Room) -> None:
        if room.log is not None:
            self.history.forget(room.log)

    # ------------------------------------------------------------ rooms

    def _room_client(self) -> coredis.Redis[str]:
        client = self._client
        if client is None or not self.connected:
            raise ConnectionError("Redis is unreachable")
        return client

    async def _read_range(self, key: str, after: int, before: int, limit: int) -> list[Any]:
        """A page of a room's stream for a replay: ids in ``(after, before)``."""
        if before - 1 <= after:
            await trio.lowlevel.checkpoint()
            return []
        with trio.fail_after(COMMAND_TIMEOUT):
            return list(await self._room_client().xrange(
                PREFIX + "history:" + key, f"{after + 1}-0", f"{before - 1}-0", count=limit
            ))

    async def _read_newest(self, key: str, before: int, count: int) -> list[Any]:
        """The newest ``count`` entries of a room's stream before ``before``, newest
        first (where a replay without ``since`` starts)."""
        if count <= 0 or before <= 1:
            await trio.lowlevel.checkpoint()
            return []
        with trio.fail_after(COMMAND_TIMEOUT):
            return list(await self._room_client().xrevrange(
                PREFIX + "history:" + key, f"{before - 1}-0", "-", count=count
            ))

    async def prepare(self, room: str) -> None:
        """Where the room's stream ends now (one ``XREVRANGE``), unless this server
        reads it already: its first member here reads it from there on, and is
        replayed what came up to there (see :meth:`occupied`)."""
        key = room_key(room)
        if key == LOBBY_KEY or key in self._reading:
            await trio.lowlevel.checkpoint()
            return
        try:
            newest = await self._read_newest(key, 2**62, 1)
        except (ConnectionError, *LINK_ERRORS):
            return  # occupied() starts from what this server has read, then
        end = int(str(newest[0].identifier).partition("-")[0]) if newest else 0
        if len(self._prepared) >= MAX_DIRECT:
            self._prepared.clear()  # joins that never happened: bounded
        self._prepared[key] = end

    def occupied(self, room: Room) -> None:
        if room.lobby or room.key in self._reading or room.log is None:
            return
        start = self.history.start_reading(room.log, self._prepared.pop(room.key, None))
        self._reading[room.key] = f"{start}-0"
        self.rooms.metrics.cluster_streams = len(self._reading) + 1
        # The read loop takes the new stream once its XREAD returns: the event of this
        # member entering the room, which this server publishes next, returns it.

    def vacated(self, room: Room) -> None:
        if self._reading.pop(room.key, None) is not None and room.log is not None:
            self.history.stop_reading(room.log)
            self.outbox.stop_watching(room.name)
        self.rooms.metrics.cluster_streams = len(self._reading) + 1

    def entered(self, name: str, room: Room) -> None:
        self.presence.change("enter", name, room.key, room.name)

    def parted(self, name: str, room: Room) -> None:
        self.presence.change("part", name, room.key, room.name)

    def topic_changed(self, room: Room, name: str) -> None:
        self.presence.change("topic", name, room.key, json.dumps([room.name, room.topic]))

    async def flush(self) -> None:
        """Wait (a bounded time) until Redis has shown back every message this server
        took; with Redis unreachable, say how many it never got."""
        outbox = self.outbox
        with trio.move_on_after(STOP_TIMEOUT):
            while len(outbox) and outbox.connected:
                await outbox.progress.wait()
        if len(outbox):
            log.warning("cluster: stopping with %d messages Redis has not confirmed",
                        len(outbox))

    @property
    def version(self) -> int:
        return self.presence.version

    def other_names(self, room: str | None = None) -> list[str]:
        return self.presence.names(room)

    def other_count(self, room: str | None = None) -> int:
        return self.presence.count(room)

    async def kick_elsewhere(self, room: Room, name: str, by: str, reason: str) -> bool:
        """A kick of a member another server has in ``room`` (as this server sees
        them): through that server's inbox (:data:`~.scripts.KICK`); it expels them
        with the notice. ``not_permitted`` while Redis cannot take it."""
        found = self.presence.holder(room.key, name)
        if found is None:
            return False
        _, held = found
        result = await self.moderate(lua.KICK, [
            self.node, skeleton(held), held, room.key, by, reason, INBOX_KEEP,
            lua.PUB_TTL_MS,
        ])
        return int(result[0]) == 1

    def release(self, name: str) -> None:
        self.presence.change("release", name)

    def joined(self, name: str) -> None:
        self.presence.change("join", name)

    def left(self, name: str) -> None:
        self.presence.change("leave", name)

    def renamed(self, old: str, new: str) -> None:
        member = self.rooms.user(new)
        rooms = {room.key: room.name for room in member.rooms.values()} if member else {}
        self.presence.change("rename", new, old, json.dumps(rooms))

    # ------------------------------------------------------------ seats held for a resume

    @property
    def hold_margin(self) -> float:
        """A seat held here leaves HOLD_MARGIN after its token expired in Redis: a
        resume on another server reaches this one (as a ``move`` event) before."""
        return HOLD_MARGIN

    def held(self, name: str, token: str, grace: float) -> None:
        # The token (its hash) goes to Redis for the grace, with the seat's rooms: any
        # server can take it.
        self.presence.hold(name, token_key(token), int(grace * 1000), self._rooms_of(name))

    def _rooms_of(self, name: str) -> str:
        """The rooms the member ``name`` here is in, as JSON (names)."""
        member = self.rooms.user(name)
        return json.dumps([room.name for room in member.rooms.values()]
                          if member is not None else [])

    def resumed(self, name: str, token: str, *, held: bool) -> None:
        if held:
            self.presence.change("unhold", name, token_key(token))

    async def take_seat(self, token: str, name: str) -> tuple[str, list[str]] | None:
        """Move the seat another server holds for ``token`` here (the RESUME script),
        with the rooms it was in; None if there is none, or Redis cannot
        say within CLAIM_TIMEOUT. Shielded: once the script has run, the seat is this
        server's, and the caller must seat it."""
        client = self._client
        if client is None or not self.connected:
            return None
        result: Any = None
        with trio.CancelScope(shield=True), trio.move_on_after(CLAIM_TIMEOUT):
            try:
                result = await self._script(
                    client, lua.RESUME, [self.node, token_key(token), skeleton(name), EVENTS_KEEP]
                )
            except* LINK_ERRORS as group:
                log.warning("cluster: a resume failed (%s); an ordinary join", first_leaf(group))
        if not result or int(result[0]) != 1:
            return None
        moved = str(result[1])
        try:
            # A seat held by a server before rooms has none stored: it was in #lobby.
            rooms = ([str(room) for room in json.loads(result[2]) or []]
                     if len(result) > 2 else [LOBBY])
        except ValueError:
            rooms = [LOBBY]
        log.info("cluster: %s resumed here from another server", moved)
        self.presence.forget_name(moved)  # its old server's entry; ours is the room's
        return moved, rooms

    async def shared_token_key(self) -> str | None:
        """The login tokens' key every server of the cluster signs with when none was
        given (``--secret``): made once, by the first server to ask, and kept in Redis
        (whoever can read Redis can forge tokens: it can do anything to the room
        already). None if Redis cannot say now."""
        client = self._client
        if client is None or not self.connected:
            return None
        with trio.move_on_after(COMMAND_TIMEOUT):
            try:
                await client.set(PREFIX + "token-key", secrets.token_hex(32),
                                 condition=coredis.PureToken.NX)
                value = await client.get(PREFIX + "token-key")
                return str(value) if value else None
            except* LINK_ERRORS as group:
                log.warning("cluster: cannot read the token key (%s)", first_leaf(group))
        return None

    @property
    def pending(self) -> int:
        return len(self.outbox)

    @property
    def commit_seconds(self) -> Histogram:
        return self._publish_seconds

    @property
    def link(self) -> tuple[str, int]:
        return self.state.value, self._times_linked

    def not_ready(self) -> str | None:
        if self.state is LinkState.DOWN:
            return "Redis is unreachable (delivering on this server only)"
        if self.state is LinkState.RESTORING:
            return "Redis lost data: waiting for the other servers to restore it"
        if self._replicas_behind:
            return (f"fewer than {self.config.redis_wait} Redis replicas acknowledge "
                    "writes: deliveries wait (--redis-wait)")
        return None

    def _set_state(self, state: LinkState) -> None:
        self.state = state
        self.state_changed.fire()

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay linked to Redis until cancelled. The first connection must work
        (``StartupError``, exit code 2, if not); later losses are retried."""
        backoff = BACKOFF_MIN
        first = True
        down_since = reminded = trio.current_time()
        while True:
            error: BaseException | None = None
            try:
                with trio.CancelScope() as self._link_scope:
                    async with self._connect() as client:
                        known = self.presence.nodes()
                        generation = await self._sync(client, first)
                        if generation is not None:
                            await self._await_restores(client, known, generation)
                        self._up()
                        if first:
                            task_status.started()
                            first = False
                        backoff = BACKOFF_MIN
                        async with self._lean() as reader, self._lean() as publisher, \
                                trio.open_nursery() as nursery:
                            nursery.start_soon(self._read_loop, client, reader)
                            nursery.start_soon(self._publish_loop, publisher)
                            nursery.start_soon(self._presence_loop, client)
                            nursery.start_soon(self._heartbeat_loop, client)
                            nursery.start_soon(self._direct_loop, client)
            except* LINK_ERRORS as group:
                error = first_leaf(group)
            if self._broken is not None:
                error, self._broken = LinkBroken(self._broken), None
            if error is not None:
                if first:
                    raise StartupError(
                        f"cannot use Redis at {redacted_url(self.config.redis or '')}: {error}",
                        exit_code=2,
                    ) from None
                now = trio.current_time()
                if self.connected:
                    log.error("cluster: lost Redis (%s); delivering locally, reconnecting",
                              error)
                    self._down()
                    down_since = reminded = now
                elif now - reminded >= OUTAGE_REMINDER:
                    log.warning("cluster: Redis unreachable for %.0f s (%s); %d messages "
                                "waiting to be published", now - down_since, error,
                                len(self.outbox))
                    reminded = now
                else:
                    log.debug("cluster: Redis still unreachable: %s", error)
            await trio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(BACKOFF_MAX, backoff * 2)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[coredis.Redis[str]]:
        url = self.config.redis
        assert url is not None
        async with redis_endpoint(url) as (client, endpoint):
            self._client = client
            self._endpoint = endpoint
            self._scripts.clear()
            try:
                yield client
            finally:
                self._client = None

    @asynccontextmanager
    async def _lean(self) -> AsyncIterator[LeanConnection]:
        """A lean connection (:mod:`.resp`) to where the client connects, for one hot
        loop."""
        assert self._endpoint is not None
        with trio.fail_after(COMMAND_TIMEOUT):
            connection = await open_lean(self._endpoint)
        try:
            yield connection
        finally:
            await trio.aclose_forcefully(connection)

    async def close(self) -> None:
        """A clean stop: wait (bounded) for Redis to take the outbox, then leave the
        cluster at once, telling the others this server's members left."""
        await self.flush()
        client = self._client
        if client is None:
            return
        with trio.move_on_after(STOP_TIMEOUT):
            try:
                await self._script(client, lua.BYE, [self.node, EVENTS_KEEP])
            except* LINK_ERRORS as group:
                log.warning("cluster: could not leave cleanly: %s", first_leaf(group))

    # ------------------------------------------------------------ (re)connection

    async def _sync(self, client: coredis.Redis[str], first: bool) -> str | None:
        """Before the link counts as up: load the history at start; on a reconnection,
        notice a Redis that lost data or changed primary and merge this server's ring
        back; register presence. Returns the generation (epoch and replication id)
        every server this one knew must have synced with before anything is published,
        or None if nothing was lost or changed.

        Three things are checked: the *epoch* (a random key set once: another one means
        Redis came back empty or was flushed), the primary's *replication id* (another
        one means a failover, which may have lost the newest writes: Redis replicates
        asynchronously; every server that saw it re-syncs, so none publishes past a
        message another still has to restore), and the history's *last id* (behind
        what this server read or published means writes were lost)."""
        metrics = self.rooms.metrics
        with trio.fail_after(COMMAND_TIMEOUT):
            await client.set(PREFIX + "epoch", secrets.token_hex(8), condition=coredis.PureToken.NX)
            epoch = await client.get(PREFIX + "epoch")
            info = await client.info("replication")
            replid = str(info.get("master_replid", ""))
            last = int(await client.get(PREFIX + "last-id") or 0)
            seen = max(self.history.last_id, self._published_through)
            wiped = self._epoch is not None and epoch != self._epoch
            failover = not wiped and self._replid is not None and replid != self._replid
            lost = not first and not wiped and last < seen
            if lost and not failover:
                # The same primary went back in time (an old snapshot): a new epoch makes
                # every server notice, as after a FLUSHALL.
                epoch = secrets.token_hex(8)
                await client.set(PREFIX + "epoch", epoch)
            self._epoch, self._replid = epoch, replid
            resync = not first and (wiped or failover or lost)
            if first:
                await self._load(client)
            elif resync:
                for cause, happened in (("wiped", wiped), ("failover", failover),
                                        ("lost_writes", lost)):
                    metrics.redis_resyncs[cause] += int(happened)
                if wiped:
                    log.warning("cluster: Redis came back without its data; restoring history")
                elif lost:
                    log.warning("cluster: Redis lost writes (its last id %d is behind %d, "
                                "which this server had): restoring history", last, seen)
                else:
                    log.warning("cluster: Redis has a new primary; checking the history")
                added = await self._script(
                    client, lua.RESTORE, [self.history.keep, *self.history.restore_args()]
                )
                log.info("cluster: restored %s messages from this server", added)
                self._events_cursor = "0-0" if wiped else await self._events_tail(client)
                # What this server published and Redis lost is in the outbox again.
                self._published_through = 0
            clashes = await self._register(client, announce=not first and not wiped)
            await self._refresh(client)
            for name in clashes:
                await self._give_way(client, name)
            generation = f"{epoch}:{replid}"
            if resync:
                key = PREFIX + "synced:" + generation
                await client.sadd(key, [self.node])
                await client.pexpire(key, lua.PUB_TTL_MS)
        return generation if resync else None

    async def _events_tail(self, client: coredis.Redis[str]) -> str:
        """Where to read the events stream from after a failover: here, unless the new
        primary's stream ends before (its newest entries were lost)."""
        newest = await client.xrevrange(PREFIX + "events", "+", "-", count=1)
        tail = str(newest[0].identifier) if newest else "0-0"

        def key(stream_id: str) -> tuple[int, int]:
            ms, _, seq = stream_id.partition("-")
            return int(ms), int(seq or 0)

        return min(self._events_cursor, tail, key=key)

    async def _await_restores(
        self, client: coredis.Redis[str], known: set[str], generation: str
    ) -> None:
        """Redis lost data, or changed primary: wait (at most RESTORE_WAIT) until every
        server this one knew has merged its ring back (each marks the generation
        synced), before publishing. Otherwise a message only a late server had would
        be restored behind ids the others have read past (they would never get it),
        and a message whose own server published it but had not read it back would be
        published again."""
        waiting = set(known)
        if waiting:
            self._set_state(LinkState.RESTORING)
        with trio.move_on_after(RESTORE_WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat_loop, client)  # stay registered
                while waiting:
                    await trio.sleep(RESTORE_POLL)
                    with trio.fail_after(COMMAND_TIMEOUT):
                        back = await client.smembers(PREFIX + "synced:" + generation)
                    waiting -= {str(node) for node in back}
                nursery.cancel_scope.cancel()
        if waiting:
            log.warning("cluster: %d servers did not come back within %.0f s; going on",
                        len(waiting), RESTORE_WAIT)

    async def _register(self, client: coredis.Redis[str], *, announce: bool) -> list[str]:
        """Put this server and its full member list in Redis. With ``announce``, if the
        others had given this server up (and announced its members' leaving), tell
        them the members are back. Returns the names another server claimed first
        (see :meth:`_give_way`)."""
        # From here on, changes are sent after this full list, so none is lost.
        self.presence.changes.clear()
        members = self.rooms.user_names
        for member, left in self.rooms.seats.held():
            # Redis may have lost the tokens (or never got them): put them back.
            if member.name is not None and member.token is not None and left > 0:
                self.presence.hold(member.name, token_key(member.token), int(left * 1000),
                                   self._rooms_of(member.name))
        args: list[str | int] = [self._ttl_ms]
        where: dict[str, list[str]] = {}
        for name in members:
            holder = self.rooms.user(name)
            rooms = list(holder.rooms.values()) if holder is not None else []
            where[name] = [room.name for room in rooms]
            args += [skeleton(name), name, json.dumps({room.key: room.name for room in rooms})]
        result = await self._script(client, lua.REGISTER, [self.node, *args])
        clashes = [str(name) for name in result[1:]]
        if result[0] == 1 and announce and members:
            kept = [name for name in members if name not in clashes]
            await client.xadd(PREFIX + "events", {
                "e": "hello", "node": self.node, "names": json.dumps(kept),
                "where": json.dumps({name: where[name] for name in kept}),
            })
        return clashes

    async def _give_way(self, client: coredis.Redis[str], name: str) -> None:
        """Another server claimed ``name`` in Redis while a member here took it
        locally (Redis unreachable, or too slow to ask): the member here, the later
        claimer, is renamed to the first free variant (``Ann2``...)."""
        for variant in islice(protocol.variants(name), MAX_VARIANTS):
            if self.rooms.holds(variant):
                continue
            if await self._script(client, lua.CLAIM, [self.node, skeleton(variant)]):
                log.warning("cluster: name %r was claimed on another server first; "
                            "renaming the member here to %r", name, variant)
                self.rooms.rename(name, variant)
                return
        log.error("cluster: no free variant of the name %r", name)

    async def _load(self, client: coredis.Redis[str]) -> None:
        keep = self.history.keep
        newest = await client.xrevrange(PREFIX + "history", "+", "-", count=keep + 1)
        entries = list(reversed(newest))
        pruned = 0
        if len(entries) > keep:
            pruned = int(str(entries.pop(0).identifier).partition("-")[0])
        if entries:
            info = await client.xinfo_stream(PREFIX + "history")
            deleted = str(info.get("max-deleted-entry-id") or "0-0")
            pruned = max(pruned, int(deleted.partition("-")[0]))
        self.history.load(entries, pruned)
        last = int(await client.get(PREFIX + "last-id") or 0)
        self.history.last_id = max(self.history.last_id, last)
        self._history_cursor = f"{self.history.last_id}-0"
        events = await client.xrevrange(PREFIX + "events", "+", "-", count=1)
        self._events_cursor = str(events[0].identifier) if events else "0-0"
        self._inbox_cursor = f"{self.history.last_id}-0"
        topics = await client.hgetall(PREFIX + "topics")
        for value in islice(topics.values(), self.config.max_rooms):
            try:
                name, topic = json.loads(value)
                room = self.rooms.remote_room(protocol.validate_room(name))
            except (ValueError, TypeError, ProtocolError):
                continue
            if room is not None:
                room.topic = str(topic)
        log.info(
            "cluster: node %s on %s; %d messages in the history, ids continue after %d",
            self.node, redacted_url(self.config.redis or ""), len(entries),
            self.history.last_id,
        )

    def _up(self) -> None:
        self._times_linked += 1
        self.outbox.came_back()
        log.info("cluster: linked to Redis (%d other servers' members)", self.presence.count())
        self._set_state(LinkState.UP)

    def _down(self) -> None:
        for out in self.outbox.went_down():
            room = self.rooms.room(out.room)
            if room is not None:
                room.broadcast(protocol.chat(out.user, out.text, out.timestamp, room=room.name))
        self._set_state(LinkState.DOWN)

    # ------------------------------------------------------------ the tasks

    async def _read_loop(self, client: coredis.Redis[str], reader: LeanConnection) -> None:
        """One ``XREAD`` at a time over the streams this server needs: events, its
        inbox, ``#lobby``'s, and those of the other rooms it has members in (the set
        changes as members enter and leave rooms: the next read takes it)."""
        rooms = self.rooms
        lobby = rooms.lobby
        metrics = rooms.metrics
        reads = metrics.cluster_reads
        budget = max(1, self.config.queue_size // PACE_SHARE)
        history_key, events_key = PREFIX + "history", PREFIX + "events"
        inbox_key = PREFIX + "inbox:" + self.node
        room_prefix = history_key + ":"
        timeout = COMMAND_TIMEOUT + BLOCK_MS / 1000
        while True:
            keys = [history_key, events_key, inbox_key]
            cursors = [self._history_cursor, self._events_cursor, self._inbox_cursor]
            for key, cursor in self._reading.items():
                keys.append(room_prefix + key)
                cursors.append(cursor)
            with trio.fail_after(timeout):
                reply = await reader.call("XREAD", "COUNT", READ_COUNT, "BLOCK", BLOCK_MS,
                                          "STREAMS", *keys, *cursors)
            self._unpaced = 0  # the writers had their turn: see _pace
            if not reply:
                continue
            read = _entries(reply)
            if self.config.redis_wait and any(key != events_key for key in read):
                await self._fence(client)
            now_us = time.time() * 1e6  # ids are Redis's clock in microseconds
            lag = metrics.publish_lag
            for entry in read.get(events_key, ()):
                self._events_cursor = str(entry.identifier)
                reads["events"] += 1
                self._on_event(entry.field_values)
            for entry in read.get(history_key, ()):
                self._history_cursor = str(entry.identifier)
                reads["lobby"] += 1
                try:
                    line = self._entry_line(entry)
                except (KeyError, ValueError):
                    log.warning("cluster: skipped a malformed history entry %s", entry)
                    continue
                if line is not None:
                    lag.observe(max(0.0, now_us - self.history.last_id) / 1e6)
                    lobby.broadcast(line)
                    await self._pace(budget)
            for stream, entries in read.items():
                if not stream.startswith(room_prefix):
                    continue
                key = stream[len(room_prefix):]
                for entry in entries:
                    reads["rooms"] += 1
                    await self._room_entry(key, entry, now_us, budget)
            for entry in read.get(inbox_key, ()):
                self._inbox_cursor = str(entry.identifier)
                reads["inbox"] += 1
                self._inbox_entry(entry)

    async def _room_entry(self, key: str, entry: Any, now_us: float, budget: int) -> None:
        """One entry of another room's stream: broadcast to the room's members here,
        if this server still reads the room."""
        room = self.rooms.room(key)
        cursor = self._reading.get(key)
        if room is None or room.log is None or cursor is None:
            return  # its last member here left meanwhile
        identifier = str(entry.identifier)
        if _stream_id(identifier) > _stream_id(cursor):
            self._reading[key] = identifier
        try:
            message = self.history.take_room(room.log, entry)
        except (KeyError, ValueError):
            log.warning("cluster: skipped a malformed history entry %s", entry)
            return
        if message is None:
            return
        self.rooms.metrics.publish_lag.observe(max(0.0, now_us - message.id) / 1e6)
        node, seq = entry.field_values.get("node", ""), int(entry.field_values.get("seq", 0))
        if node == self.node and self.outbox.confirm(seq):
            return  # delivered here during an outage already
        room.broadcast(chat_line(message))
        await self._pace(budget)

    async def _pace(self, budget: int) -> None:
        """Count one broadcast of the read loop; once it has broadcast ``budget``
        messages since it last waited, let the writers run.

        Not the session readers' pacer (:class:`~trio_chat.server.pacing.ReadPacer`):
        with Redis a line read from a member goes to the outbox, not to the members'
        queues, yet it counted there; so the read loop waited in the middle of about two
        pages in five, and each member was written such a page in two writes.
        Every ``XREAD`` waits (Trio's socket calls always do), so the writers still
        get a turn at least every ``budget`` broadcasts, and a page of fewer goes to
        each member in one write."""
        self._unpaced += 1
        if self._unpaced >= budget:
            self._unpaced = 0
            await trio.lowlevel.checkpoint()

    def _inbox_entry(self, entry: Any) -> None:
        """A direct message to a member of this server, or a kick of one."""
        try:
            fields = entry.field_values
            if "k" in fields:  # a kick from another server (kick_elsewhere)
                moderation = self.rooms.moderation
                if moderation is not None:
                    moderation.kicked(fields["k"], fields["t"], fields["by"], fields["r"])
                return
            message_id = int(str(entry.identifier).partition("-")[0])
            self.history.last_id = max(self.history.last_id, message_id)
            recipient = self.rooms.user(fields["t"])
            if recipient is None:
                return  # gone meanwhile: direct messages are not stored
            recipient.deliver(protocol.direct(fields["f"], fields["t"], fields["x"],
                                              fields["ts"], message_id))
            accounts = self.rooms.accounts
            if fields.get("a") and recipient.account is not None and accounts is not None:
                # Between two accounts: kept in Redis by the recipient's server, for
                # replay at either one's next login on any server.
                accounts.dms.record(StoredDM(message_id, fields["a"], recipient.account,
                                             fields["x"], fields["ts"]))
        except (KeyError, ValueError):
            log.warning("cluster: skipped a malformed inbox entry %s", entry)

    async def _direct_loop(self, client: coredis.Redis[str]) -> None:
        """Hand the queued direct messages to Redis, one script each: the id, and the
        recipient's server's inbox; then the echo to the sender (or ``no_such_user``,
        if the name was gone by then)."""
        while True:
            while not self._directs:
                await self._direct_work.wait()
            sender, to, name, text, ts = self._directs[0]
            assert sender.name is not None
            result: Any = [2]
            for _ in range(DIRECT_TRIES):
                with trio.fail_after(COMMAND_TIMEOUT):
                    if name is None:
                        found = await self._script(client, lua.LOOKUP,
                                                   [self.node, skeleton(to)])
                        result = [int(found[0])]  # 0: nobody; 2: not registered yet
                        # The same name in any case or width; never a look-alike.
                        if result[0] == 1 and (
                            protocol.name_key(str(found[1])) == protocol.name_key(to)
                        ):
                            name = str(found[1])
                        elif result[0] == 1:
                            result = [0]
                    if name is not None:
                        result = await self._script(client, lua.DIRECT, [
                            self.node, skeleton(name), sender.name, text, ts, INBOX_KEEP,
                            lua.PUB_TTL_MS, name, sender.account or "",
                        ])
                if int(result[0]) != 2:
                    break
                # Its join is on its way to Redis (a presence batch): a moment.
                await trio.sleep(DIRECT_RETRY)
            self._directs.popleft()
            self._direct_room.fire()
            if int(result[0]) != 1:
                error = ProtocolError(NO_SUCH_USER, f"nobody is called '{to}'")
                self.rooms.metrics.errors[error.code] += 1
                sender.deliver(error.to_message())
                continue
            message_id, recipient, holder = int(result[1]), str(result[2]), str(result[3])
            if holder == self.node and recipient == sender.name:
                continue  # to oneself, here: the inbox brings the one copy
            sender.deliver(protocol.direct(sender.name, recipient, text, ts, message_id))

    async def _fence(self, client: coredis.Redis[str]) -> None:
        """``--redis-wait N``: return once N replicas have everything Redis had when the
        last read returned, so what is delivered (acknowledged) survives a failover.

        A write issued after the read and ``WAIT``ed for (on the same connection) comes
        after the entries read in Redis's one replication stream: once N replicas
        acknowledge it, they have those entries too, whoever published them. While
        fewer acknowledge, deliveries wait (and senders, once the outbox is full)."""
        replicas = self.config.redis_wait
        while True:
            try:
                with trio.fail_after(COMMAND_TIMEOUT + FENCE_MS / 1000):
                    with client.ensure_replication(replicas, FENCE_MS):
                        await client.set(PREFIX + "fence:" + self.node, self._history_cursor,
                                         px=lua.PUB_TTL_MS)
            except coredis.exceptions.ReplicationError:
                if not self._replicas_behind:
                    log.warning("cluster: fewer than %d Redis replicas acknowledge writes; "
                                "deliveries wait (--redis-wait)", replicas)
                self._replicas_behind = True
                continue
            if self._replicas_behind:
                log.info("cluster: Redis replicas acknowledge writes again")
                self._replicas_behind = False
            return

    def _entry_line(self, entry: Any) -> str | None:
        """One history stream entry: remembered, and the line to broadcast here (None
        for what is not new here, and for this server's own outage messages, which
        were delivered here already)."""
        taken = self.history.take(entry)
        if taken is None:
            return None
        message, (node, seq) = taken
        if node == self.node and self.outbox.confirm(seq):
            return None
        return chat_line(message)

    def _on_event(self, fields: Any) -> None:
        try:
            self._apply_event(fields)
        except (TypeError, ValueError, ProtocolError):
            log.warning("cluster: skipped a malformed event %s", fields)

    def _apply_event(self, fields: Any) -> None:
        node = fields.get("node", "")
        if node == self.node:
            return
        presence, rooms = self.presence, self.rooms
        # Each event is read once; the view may have it already (a refresh read the
        # other server's list first), but the notice is still due.
        event, name = fields.get("e"), fields.get("n", "")
        if event == "join":
            presence.add(node, name)  # the rooms it enters follow (enter)
        elif event in ("enter", "part"):
            room = rooms.remote_room(protocol.validate_room(fields.get("r", "")))
            if room is None:
                return  # this server keeps --max-rooms already: it does not know it
            if event == "enter":
                presence.enter(node, name, room.key)
                room.remote("join", name)
            else:
                presence.part(node, name, room.key)
                room.remote("leave", name)
        elif event == "topic":
            room = rooms.remote_room(protocol.validate_room(fields.get("r", "")))
            if room is not None:
                room.remote("topic", name, fields.get("t", ""))
        elif event == "leave":
            for key in presence.remove(node, name):
                self._remote(key, "leave", name)
        elif event == "rename":
            old = fields.get("o", "")
            keys = presence.rename(node, old, name)
            for shown in (json.loads(fields.get("r", "{}")) or {}).values():
                room = rooms.remote_room(protocol.validate_room(shown))
                if room is not None and room.key not in keys:
                    keys.add(room.key)
                    presence.enter(node, name, room.key)
            for key in keys:
                self._remote(key, "rename", name, old)
        elif event == "move":
            # A seat held on one server was taken back on another (node): no notice.
            source = fields.get("from", "")
            if source == self.node:
                seat = rooms.user(name)
                moved = set(seat.rooms) if seat is not None else set()
                rooms.moved_away(name)
            else:
                moved = presence.remove(source, name)
            presence.add(node, name, moved)
        elif event in ("gone", "hello"):
            names = json.loads(fields.get("names", "[]")) or []  # Lua's empty list is {}
            if event == "gone":
                for name, keys in presence.forget(node).items():
                    for key in keys:
                        self._remote(key, "leave", name)
            else:
                where = json.loads(fields.get("where", "{}")) or {}
                for name in names:
                    entered = [rooms.remote_room(protocol.validate_room(room))
                               for room in where.get(name, [LOBBY])]
                    keys = {room.key for room in entered if room is not None}
                    presence.add(node, name, keys)
                    for key in keys:
                        self._remote(key, "join", name)

    def _remote(self, key: str, event: str, name: str, old: str | None = None) -> None:
        room = self.rooms.room(key)
        if room is not None:
            room.remote(event, name, old)

    async def _publish_loop(self, publisher: LeanConnection) -> None:
        """Publish the outbox, one script call at a time: what arrives while a call is
        on its way goes in the next, so the publishes keep step with the reads.

        Up to four calls were sent ahead of their replies before: each went out with
        whatever one scheduling round had added (about ten messages at saturation),
        and each woke the read loop's ``XREAD`` with a page of its own, so members
        were written smaller pages more often (docs/bench.md, the third pass). One in
        flight, a message waits at most one round trip to Redis before it is sent.
        A lost connection republishes everything not read back."""
        outbox = self.outbox
        with trio.fail_after(COMMAND_TIMEOUT):
            sha = await publisher.load(lua.PUBLISH)
        expiry_ms = max(1, int(self.config.room_expiry * 1000))
        while True:
            await outbox.wait_work()
            batch = outbox.unpublished(PUBLISH_BATCH)
            args: list[str | int] = [PREFIX, self.history.keep, self.node, expiry_ms]
            for out in batch:
                key = room_key(out.room)
                args += [out.seq, out.user, out.text, out.timestamp,
                         "" if key == LOBBY_KEY else key]
            started = time.perf_counter()
            with trio.fail_after(COMMAND_TIMEOUT):
                last = await publisher.call("EVALSHA", sha, 0, *args)
            self._publish_seconds.observe(time.perf_counter() - started)
            self._published_through = max(self._published_through, int(last))
            outbox.mark_published(batch)

    async def _presence_loop(self, client: coredis.Redis[str]) -> None:
        presence, rooms = self.presence, self.rooms
        while True:
            await presence.wait_work()
            args: list[str | int] = [EVENTS_KEEP, TOPICS_KEPT]
            for _ in range(min(PRESENCE_BATCH, len(presence.changes))):
                op, name, old, extra = presence.changes.popleft()
                if op in ("hold", "unhold"):  # old: the token's key (and the grace)
                    key, _, ttl_ms = old.partition(":")
                    args += [op, skeleton(name), name, key, ttl_ms or "0", extra or "[]", ""]
                    continue
                if op in ("enter", "part"):  # old: the room's key; extra: its name
                    args += [op, skeleton(name), name, old, extra, 0, ""]
                    continue
                if op == "topic":  # old: the room's key; extra: [its name, the topic]
                    shown, topic = json.loads(extra)
                    args += [op, skeleton(name), name, old, shown, topic, ""]
                    continue
                # A member here holds the name again (left and came back, or a claim
                # for a join that failed locally): its claim stays.
                keep = int(rooms.holds(old if op == "rename" else name))
                args += [op, skeleton(name), name, skeleton(old) if old else "", old, keep,
                         extra or "{}"]
            with trio.fail_after(COMMAND_TIMEOUT):
                await self._script(client, lua.PRESENCE, [self.node, *args])

    async def _heartbeat_loop(self, client: coredis.Redis[str]) -> None:
        interval = self.config.presence_ttl / 4
        while True:
            await trio.sleep(interval)
            with trio.fail_after(COMMAND_TIMEOUT):
                if await client.get(PREFIX + "epoch") != self._epoch:
                    # FLUSHALL, or a failover to a replica without our data, on a
                    # connection that never dropped: start over, as after a reconnection
                    # to an empty Redis (the history is restored from memory).
                    raise LinkBroken("Redis lost its data while connected")
                result = await self._script(
                    client, lua.HEARTBEAT, [self.node, self._ttl_ms, EVENTS_KEEP]
                )
                clashes = []
                if result[0] == 1:
                    # Given up by the others (this process stalled past the TTL): its
                    # members' entries are gone; put them back.
                    log.warning("cluster: this server's presence had expired; registering again")
                    clashes = await self._register(client, announce=True)
                for node in result[1:]:
                    log.warning("cluster: server %s stopped heartbeating; its members left",
                                node)
                await self._refresh(client)
                for name in clashes:
                    await self._give_way(client, name)

    async def _refresh(self, client: coredis.Redis[str]) -> None:
        """Read the other servers' member lists in full (events may have been trimmed
        or missed while away)."""
        result = await self._script(client, lua.VIEW, [self.node])
        view: dict[str, dict[str, str]] = {}
        where: dict[str, dict[str, set[str]]] = {}
        for node, users_json, where_json in zip(
            result[::3], result[1::3], result[2::3], strict=True
        ):
            flat = json.loads(users_json) or []
            view[node] = dict(zip(flat[::2], flat[1::2], strict=True))
            flat = json.loads(where_json) or []
            where[node] = {}
            for key, rooms_json in zip(flat[::2], flat[1::2], strict=True):
                rooms = json.loads(rooms_json) or {}
                where[node][key] = set(rooms)
                for name in rooms.values():
                    self.rooms.remote_room(name)  # known here from now on
        self.presence.replace(view, where)

    async def claim(self, name: str) -> bool:
        """Claim ``name`` for this server; while Redis is unreachable, names are
        unique on this server only (checked by the room)."""
        client = self._client
        if client is None or not self.connected:
            return True
        failure: BaseException = trio.TooSlowError("timed out")
        with trio.move_on_after(CLAIM_TIMEOUT):
            try:
                return bool(await self._script(client, lua.CLAIM, [self.node, skeleton(name)]))
            except* LINK_ERRORS as group:
                failure = first_leaf(group)
        # Redis answers too slowly to decide: as if it were gone. The join goes on here,
        # and the link starts over; a clash is resolved when this server registers again.
        log.warning("cluster: name claim failed (%s); joining locally", failure)
        self._break(f"a name claim failed: {failure}")
        return True

    def _break(self, reason: str) -> None:
        """Make the link start over (the run loop treats it as a lost connection)."""
        if self._link_scope is not None and self._broken is None:
            self._broken = reason
            self._link_scope.cancel()

    async def _script(self, client: coredis.Redis[str], source: str,
                      args: Iterable[str | int]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            # Loaded once per connection: EVALSHA from then on (SCRIPT LOAD is cheap,
            # and a Redis that restarted has forgotten them anyway).
            await client.script_load(source)
            script = self._scripts[source] = client.register_script(source)
        return await script(keys=[], args=[PREFIX, *args])



@asynccontextmanager
async def connect_redis(url: str) -> AsyncIterator[coredis.Redis[str]]:
    """A connection to the Redis at ``url`` (a Sentinel URL: the primary its sentinels
    name now), with the cluster's timeouts and no retries (the caller decides)."""
    async with redis_endpoint(url) as (client, _):
        yield client


@asynccontextmanager
async def redis_endpoint(url: str) -> AsyncIterator[tuple[coredis.Redis[str], Endpoint]]:
    """:func:`connect_redis`, and where it connected (the lean connections of the hot
    loops open to the same place: :mod:`.resp`)."""
    timeouts: dict[str, Any] = {
        "connect_timeout": COMMAND_TIMEOUT,
        "stream_timeout": COMMAND_TIMEOUT + BLOCK_MS / 1000,
    }
    async with AsyncExitStack() as stack:
        client: coredis.Redis[str]
        if url.startswith(SENTINEL_SCHEME + ":"):
            # Ask the sentinels which Redis is the primary now, at each (re)connection;
            # a connection to a primary that was demoted fails its role check.
            target = parse_sentinel_url(url)
            sentinel = await stack.enter_async_context(coredis.Sentinel(
                [TCPLocation(host, port) for host, port in target.sentinels],
                sentinel_kwargs={"connect_timeout": COMMAND_TIMEOUT,
                                 "stream_timeout": COMMAND_TIMEOUT},
                decode_responses=True,
                retry_policy=coredis.retry.NoRetryPolicy(),
                **timeouts,
            ))
            with trio.fail_after(COMMAND_TIMEOUT):
                host, port = await sentinel.discover_primary(target.service)
            log.debug("cluster: sentinels name %s:%s as %s's primary", host, port,
                      target.service)
            client = sentinel.primary_for(target.service, db=target.db,
                                          username=target.username,
                                          password=target.password)
            endpoint = Endpoint(host=host, port=port, username=target.username,
                                password=target.password, db=target.db)
        else:
            client = coredis.Redis.from_url(
                url, decode_responses=True, retry_policy=coredis.retry.NoRetryPolicy(),
                **timeouts,
            )
            endpoint = Endpoint.of_pool(client.connection_pool)
        await stack.enter_async_context(client)
        yield client, endpoint


@asynccontextmanager
async def open_cluster(config: Config) -> AsyncIterator[Cluster]:
    """Link to the Redis in ``config.redis`` (raises ``StartupError``, exit code 2, if
    it cannot be used) and keep the link up until exit; then leave the cluster.

    The cluster is the rooms' delivery: ``Rooms(cluster)``. It binds the rooms it
    serves when entered, so they must be built before the link starts."""
    from ..moderation.service import ModerationService
    from ..server.moderating import Moderator
    from .moderation import RedisBackend

    cluster = Cluster(config)
    # Binds itself as cluster.rooms, which the link reads from the start.
    rooms = Rooms(cluster, config=config)
    # Bans, ops and modes in Redis: shared by every server.
    admins = tuple(protocol.name_key(name) for name in config.admins)
    rooms.moderation = Moderator(
        rooms, ModerationService(RedisBackend(cluster), admins=lambda: admins)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(cluster.run)
        try:
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                await cluster.close()
            nursery.cancel_scope.cancel()

