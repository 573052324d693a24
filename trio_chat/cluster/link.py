"""Several servers, one room: Redis as the backplane, the history and the presence.

With ``--redis``, a chat message is not broadcast by the server that received it: it
goes to the *history stream* in Redis (a Lua script gives it the next id), and every
server, that one included, reads the stream and broadcasts what it reads to its own
members. So ids are one sequence, and every server delivers in the stream's order.
Joins, leaves and renames go to a second stream, *events*, read in the same ``XREAD``.
Reads are pulls of at most :data:`READ_COUNT` entries, so nothing piles up in this
process faster than the room takes it (coredis's pub/sub would buffer without bound).

Each server keeps the newest messages in memory (the ring of
:class:`~trio_chat.history.History`, as large as the retention): replays and ``since``
resumes are answered from it, whichever server a client reconnects to.

Presence: every server renews its entry in a sorted set (its expiry) every
``presence_ttl / 4`` seconds and keeps its members in a hash; a name is claimed in
Redis before a join. A server whose entry expires is reaped by the first server to
notice, which tells the others its members left.

Redis lost while running: members stay connected, and what they send is delivered on
this server at once (without an id) and kept, in order, in a bounded outbox; on
reconnection it is published (the other servers get it late, with ids; this server
does not deliver it twice, and replays it, without an id, to members who join
meanwhile). If Redis came back empty (a restart without
persistence), the servers first merge their rings back into the history stream, so a
``since`` resume misses nothing any live server had; and none publishes before every
server it knew has done so (for a bounded time): a message restored after another
server had moved past its id would never reach that server, and one whose own
server had published it but not read it back yet would be published again under a
second id. docs/protocol.md states exactly what is and is not guaranteed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from itertools import chain, takewhile
from typing import Any, Final, NamedTuple

import coredis
import coredis.exceptions
import trio
from coredis.commands.script import Script

from . import cluster_scripts as lua
from . import protocol
from .config import Config
from .history import History, Replay, Unconfirmed, chat_line
from .room import PACE_SHARE, Room
from .startup import StartupError
from .store import MAX_PENDING, StoredMessage

log = logging.getLogger(__name__)

#: Every key starts with this.
PREFIX: Final = "trio-chat:"
#: Stream entries taken per read: the most this process holds that the room has not.
READ_COUNT: Final = 512
#: Milliseconds a read blocks in Redis waiting for entries.
BLOCK_MS: Final = 1000
#: Messages published per script call.
PUBLISH_BATCH: Final = 256
#: Presence changes sent per script call.
PRESENCE_BATCH: Final = 512
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

#: What a lost or unusable Redis connection raises.
LINK_ERRORS: Final = (coredis.exceptions.RedisError, OSError, trio.TooSlowError)


class Outgoing(NamedTuple):
    """A message this server took from a member and Redis has not (yet) shown back."""

    seq: int
    user: str
    text: str
    timestamp: str
    #: Already delivered here (sent while Redis was unreachable).
    local: bool


class RedisHistory(History):
    """The cluster's history: the ring mirrors the Redis stream as this server reads
    it; :meth:`record` queues a message in the outbox, and the link publishes it."""

    def __init__(self, node: str, *, replay: int, keep: int, max_pending: int = MAX_PENDING):
        super().__init__([], last_id=0, replay=replay, ring=keep)
        self.node = node
        self.keep = keep
        self.max_pending = max_pending
        self.connected = False
        self._pruned = 0
        self._origins: deque[tuple[str, int]] = deque(maxlen=keep)  # beside the ring
        self._queue: deque[Outgoing] = deque()  # not yet published
        self._sent: deque[Outgoing] = deque()  # published, not yet read back
        self._seq = 0
        self._dropped = 0
        self._work = trio.Event()
        self._progress = trio.Event()

    # ------------------------------------------------------------ the room's side

    @property
    def full(self) -> bool:
        # Published and not read back counts too: a server whose reader falls behind
        # makes its senders wait, as the SQLite store's writer does.
        return self.connected and self.outbox >= self.max_pending

    @property
    def pruned_through(self) -> int:
        return self._pruned

    async def wait_writable(self) -> None:
        while self.full:
            await self._progress.wait()

    def record(self, user: str, text: str, ts: str) -> str | None:
        if self.full:
            raise trio.WouldBlock
        self._seq += 1
        local = not self.connected
        self._queue.append(Outgoing(self._seq, user, text, ts, local))
        self._work.set()
        if not local:
            return None  # broadcast when it comes back from the stream, with its id
        if len(self._queue) > self.keep:
            # A long outage: the oldest unpublished message is delivered here but will
            # not reach the other servers or the history.
            self._drop_oldest_unpublished()
        return protocol.chat(user, text, ts)

    @property
    def outbox(self) -> int:
        """Messages taken here that Redis has not shown back yet."""
        return len(self._sent) + len(self._queue)

    async def flush(self) -> None:
        """Wait (a bounded time) until Redis has shown back every message this server
        took; with Redis unreachable, say how many it never got."""
        with trio.move_on_after(STOP_TIMEOUT):
            while self.outbox and self.connected:
                await self._progress.wait()
        if self.outbox:
            log.warning(
                "cluster: stopping with %d messages Redis has not confirmed", self.outbox
            )

    async def _read(self, after: int, before: int, limit: int) -> tuple[list[StoredMessage], int]:
        # The ring holds everything the stream retains: replays never read Redis.
        raise AssertionError("a cluster replay is answered from the ring")

    def replay(self, since: int | None) -> Replay:
        """The ring's replay, then the messages delivered here during an outage that
        Redis has not shown back yet (without ids: they have none). A member seated
        now would otherwise never see them: they are not delivered here again when
        they come back with their ids."""
        replay = super().replay(since)
        # The outbox is in order, and the ones delivered here come first.
        outbox = takewhile(lambda out: out.local, chain(self._sent, self._queue))
        pending = [Unconfirmed(o.user, o.text, o.timestamp) for o in outbox]
        if not pending:
            return replay
        tail = [*replay.tail, *pending]
        if since is None:
            tail = tail[-self.replay_count:] if self.replay_count else []
        return replace(replay, tail=tail)

    def _remember(self, message: StoredMessage, origin: tuple[str, int] = ("", 0)) -> None:
        ring = self._ring
        if len(ring) == ring.maxlen:
            self._pruned = ring[0].id
        ring.append(message)
        self._origins.append(origin)

    # ------------------------------------------------------------ the link's side

    def load(self, entries: Sequence[Any], pruned: int) -> None:
        """Fill the ring from the stream's newest entries (oldest first) at start."""
        for entry in entries:
            message, origin = _parse_entry(entry)
            self._remember(message, origin)
            self.last_id = message.id
        self._pruned = max(self._pruned, pruned)

    def deliver(self, entry: Any) -> str | None:
        """One entry read from the stream: remembered, and the line to broadcast here
        (None for this server's own outage messages, delivered already)."""
        message, origin = _parse_entry(entry)
        if self._ring and message.id <= self._ring[-1].id:
            return None  # restored behind us: already seen or never ours to deliver
        self._remember(message, origin)
        self.last_id = message.id
        if origin[0] == self.node and self._confirm(origin[1]):
            return None  # delivered here during an outage already
        return chat_line(message)

    def _confirm(self, seq: int) -> bool:
        """Redis has this server's message ``seq`` (and every earlier one): out of the
        outbox. True if it was delivered here already."""
        shown = False
        # Read back, maybe before the publisher saw the script's reply.
        for queue in (self._sent, self._queue):
            while queue and queue[0].seq <= seq:
                out = queue.popleft()
                shown = out.local if out.seq == seq else shown
        self._wake()
        return shown

    def unpublished(self, limit: int) -> list[Outgoing]:
        queue = self._queue
        return [queue[i] for i in range(min(limit, len(queue)))]

    def mark_published(self, batch: list[Outgoing]) -> None:
        if batch:
            queue, last = self._queue, batch[-1].seq
            while queue and queue[0].seq <= last:
                self._sent.append(queue.popleft())
        self._wake()

    async def wait_work(self) -> None:
        while not self._queue:
            self._work = trio.Event()
            await self._work.wait()

    def went_down(self) -> list[str]:
        """Redis is unreachable: every message it has not shown back is delivered here
        now, in order; returns their lines. (Redis may have some of them: when they
        come back they are not delivered here again.)"""
        self.connected = False
        lines = []
        for queue in (self._sent, self._queue):
            for i, out in enumerate(queue):
                if not out.local:
                    queue[i] = out._replace(local=True)
                    lines.append(protocol.chat(out.user, out.text, out.timestamp))
        self._wake()
        return lines

    def came_back(self) -> None:
        """Redis answers again: what was published may have been lost with it, so
        everything not shown back is published again (the script skips repeats)."""
        self._sent.extend(self._queue)
        self._queue, self._sent = self._sent, deque()
        self.connected = True
        self._wake()
        self._work.set()

    def restore_args(self) -> list[str | int]:
        args: list[str | int] = []
        for message, (node, seq) in zip(self._ring, self._origins, strict=True):
            args += [message.id, message.user, message.text, message.timestamp, node, seq]
        return args

    def _drop_oldest_unpublished(self) -> None:
        self._queue.popleft()
        self._dropped += 1
        if self._dropped == 1 or self._dropped % 1000 == 0:
            log.warning(
                "cluster: outbox full during the outage; %d messages delivered here only",
                self._dropped,
            )

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()


def _parse_entry(entry: Any) -> tuple[StoredMessage, tuple[str, int]]:
    fields = entry.field_values
    message_id = int(str(entry.identifier).partition("-")[0])
    message = StoredMessage(message_id, fields["u"], fields["x"], fields["ts"])
    return message, (fields.get("node", ""), int(fields.get("seq", 0)))


class ClusterPresence:
    """The other servers' members as this server knows them, and the changes of its
    own members on their way to Redis (:class:`~trio_chat.room.Presence`)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self.version = 0
        self._remote: dict[str, dict[str, str]] = {}  # server -> casefolded -> name
        self._names: list[str] | None = None
        self._count = 0
        #: (op, name, old name): changes not yet sent. Bounded: a reconnection sends
        #: the whole member list instead, so the oldest can go.
        self.changes: deque[tuple[str, str, str]] = deque(maxlen=PRESENCE_BATCH * 20)
        self._work = trio.Event()

    def names(self) -> list[str]:
        if self._names is None:
            self._names = [name for users in self._remote.values() for name in users.values()]
        return self._names

    def count(self) -> int:
        return self._count

    async def claim(self, name: str) -> bool:
        return await self._cluster.claim(name)

    def release(self, name: str) -> None:
        self._change("release", name)

    def joined(self, name: str) -> None:
        self._change("join", name)

    def left(self, name: str) -> None:
        self._change("leave", name)

    def renamed(self, old: str, new: str) -> None:
        self._change("rename", new, old)

    def _change(self, op: str, name: str, old: str = "") -> None:
        self.changes.append((op, name, old))
        self._work.set()

    async def wait_work(self) -> None:
        while not self.changes:
            self._work = trio.Event()
            await self._work.wait()

    # ------------------------------------------------------------ the view

    def replace(self, view: dict[str, dict[str, str]]) -> None:
        if view != self._remote:
            self._remote = view
            self._changed()

    def add(self, node: str, name: str) -> None:
        users = self._remote.setdefault(node, {})
        if users.get(name.casefold()) != name:
            users[name.casefold()] = name
            self._changed()

    def remove(self, node: str, name: str) -> None:
        if self._remote.get(node, {}).pop(name.casefold(), None) is not None:
            self._changed()

    def nodes(self) -> set[str]:
        """The other servers this one knows to be live."""
        return set(self._remote)

    def forget(self, node: str) -> list[str]:
        users = self._remote.pop(node, {})
        if users:
            self._changed()
        return list(users.values())

    def _changed(self) -> None:
        self.version += 1
        self._names = None
        self._count = sum(len(users) for users in self._remote.values())


class Cluster:
    """The link to Redis: connects (and reconnects with backoff), reads both streams
    into the room, publishes the outbox and presence changes, and heartbeats."""

    def __init__(self, config: Config, node: str | None = None) -> None:
        self.config = config
        self.node = node or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.history = RedisHistory(
            self.node, replay=config.history_replay, keep=config.history_keep
        )
        self.presence = ClusterPresence(self)
        self.room = Room(history=self.history, presence=self.presence)
        self._client: coredis.Redis[str] | None = None
        self._scripts: dict[str, Script[str]] = {}
        self._epoch: str | None = None
        self._history_cursor = "0-0"
        self._events_cursor = "0-0"
        self._ttl_ms = int(config.presence_ttl * 1000)
        #: Set whenever the link comes up or goes down (tests wait on it).
        self.changed = trio.Event()
        #: Times the link came up.
        self.links = 0
        #: After Redis lost its data: the servers this one waits for (tests watch it).
        self.waiting: set[str] = set()

    @property
    def connected(self) -> bool:
        return self.history.connected

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay linked to Redis until cancelled. The first connection must work
        (``StartupError``, exit code 2, if not); later losses are retried."""
        backoff = BACKOFF_MIN
        first = True
        down_since = reminded = trio.current_time()
        while True:
            try:
                async with self._connect() as client:
                    known = self.presence.nodes()
                    if await self._sync(client, first):
                        await self._await_restores(client, known)
                    self._up()
                    if first:
                        task_status.started()
                        first = False
                    backoff = BACKOFF_MIN
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._read_loop, client)
                        nursery.start_soon(self._publish_loop, client)
                        nursery.start_soon(self._presence_loop, client)
                        nursery.start_soon(self._heartbeat_loop, client)
            except* LINK_ERRORS as group:
                error = _first_error(group)
                if first:
                    raise StartupError(
                        f"cannot use Redis at {self.config.redis}: {error}", exit_code=2
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
                                self.history.outbox)
                    reminded = now
                else:
                    log.debug("cluster: Redis still unreachable: %s", error)
            await trio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(BACKOFF_MAX, backoff * 2)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[coredis.Redis[str]]:
        url = self.config.redis
        assert url is not None
        client: coredis.Redis[str] = coredis.Redis.from_url(
            url,
            decode_responses=True,
            connect_timeout=COMMAND_TIMEOUT,
            stream_timeout=COMMAND_TIMEOUT + BLOCK_MS / 1000,
            retry_policy=coredis.retry.NoRetryPolicy(),
        )
        async with client:
            self._client = client
            self._scripts.clear()
            try:
                yield client
            finally:
                self._client = None

    async def close(self) -> None:
        """A clean stop: wait (bounded) for Redis to take the outbox, then leave the
        cluster at once, telling the others this server's members left."""
        await self.history.flush()
        client = self._client
        if client is None:
            return
        with trio.move_on_after(STOP_TIMEOUT):
            try:
                await self._script(client, lua.BYE, [self.node, EVENTS_KEEP])
            except* LINK_ERRORS as group:
                log.warning("cluster: could not leave cleanly: %s", _first_error(group))

    # ------------------------------------------------------------ (re)connection

    async def _sync(self, client: coredis.Redis[str], first: bool) -> bool:
        """Before the link counts as up: notice a Redis that lost its data (and merge
        this server's ring back), load the history at start, register presence.
        True if Redis had lost its data."""
        with trio.fail_after(COMMAND_TIMEOUT):
            await client.set(PREFIX + "epoch", secrets.token_hex(8), condition=coredis.PureToken.NX)
            epoch = await client.get(PREFIX + "epoch")
            wiped = self._epoch is not None and epoch != self._epoch
            self._epoch = epoch
            if first:
                await self._load(client)
            elif wiped:
                log.warning("cluster: Redis came back without its data; restoring history")
                added = await self._script(
                    client, lua.RESTORE, [self.history.keep, *self.history.restore_args()]
                )
                log.info("cluster: restored %s messages from this server", added)
                self._events_cursor = "0-0"
            await self._register(client, announce=not first and not wiped)
            await self._refresh(client)
        return wiped

    async def _await_restores(self, client: coredis.Redis[str], known: set[str]) -> None:
        """Redis lost its data: wait (at most RESTORE_WAIT) until every server this one
        knew has merged its ring back (it registers right after), before publishing.
        Otherwise a message only a late server had would be restored behind ids the
        others have read past (they would never get it), and a message whose own
        server published it but had not read it back would be published again."""
        self.waiting = set(known)
        try:
            with trio.move_on_after(RESTORE_WAIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeat_loop, client)  # stay registered
                    while self.waiting:
                        self._signal()
                        await trio.sleep(RESTORE_POLL)
                        with trio.fail_after(COMMAND_TIMEOUT):
                            back = await client.zrange(PREFIX + "nodes", 0, -1)
                        self.waiting -= {str(node) for node in back}
                    nursery.cancel_scope.cancel()
            if self.waiting:
                log.warning("cluster: %d servers did not come back within %.0f s; going on",
                            len(self.waiting), RESTORE_WAIT)
        finally:
            self.waiting = set()

    async def _register(self, client: coredis.Redis[str], *, announce: bool) -> None:
        """Put this server and its full member list in Redis. With ``announce``, if the
        others had given this server up (and announced its members' leaving), tell
        them the members are back."""
        # From here on, changes are sent after this full list, so none is lost.
        self.presence.changes.clear()
        members = self.room.names
        args: list[str | int] = [self._ttl_ms]
        for name in members:
            args += [name.casefold(), name]
        result = await self._script(client, lua.REGISTER, [self.node, *args])
        for name in result[1:]:
            log.warning("cluster: name %r is also held on another server", name)
        if result[0] == 1 and announce and members:
            await client.xadd(PREFIX + "events", {
                "e": "hello", "node": self.node, "names": json.dumps(members),
            })

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
        log.info(
            "cluster: node %s on %s; %d messages in the history, ids continue after %d",
            self.node, self.config.redis, len(entries), self.history.last_id,
        )

    def _up(self) -> None:
        self.links += 1
        self.history.came_back()
        log.info("cluster: linked to Redis (%d other servers' members)", self.presence.count())
        self._signal()

    def _down(self) -> None:
        for line in self.history.went_down():
            self.room.broadcast(line)
        self._signal()

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    # ------------------------------------------------------------ the tasks

    async def _read_loop(self, client: coredis.Redis[str]) -> None:
        history, room = self.history, self.room
        budget = max(1, self.config.queue_size // PACE_SHARE)
        history_key, events_key = PREFIX + "history", PREFIX + "events"
        while True:
            read = await client.xread(
                {history_key: self._history_cursor, events_key: self._events_cursor},
                count=READ_COUNT,
                block=BLOCK_MS,
            )
            if not read:
                continue
            for entry in read.get(events_key, ()):
                self._events_cursor = str(entry.identifier)
                self._on_event(entry.field_values)
            for entry in read.get(history_key, ()):
                self._history_cursor = str(entry.identifier)
                try:
                    line = history.deliver(entry)
                except (KeyError, ValueError):
                    log.warning("cluster: skipped a malformed history entry %s", entry)
                    continue
                if line is not None:
                    room.broadcast(line)
                    await room.pacer.step(budget)

    def _on_event(self, fields: Any) -> None:
        try:
            self._apply_event(fields)
        except (TypeError, ValueError):
            log.warning("cluster: skipped a malformed event %s", fields)

    def _apply_event(self, fields: Any) -> None:
        node = fields.get("node", "")
        if node == self.node:
            return
        presence, room = self.presence, self.room
        # Each event is read once; the view may have it already (a refresh read the
        # other server's list first), but the notice is still due.
        event, name = fields.get("e"), fields.get("n", "")
        if event == "join":
            presence.add(node, name)
            room.remote("join", name)
        elif event == "leave":
            presence.remove(node, name)
            room.remote("leave", name)
        elif event == "rename":
            old = fields.get("o", "")
            presence.remove(node, old)
            presence.add(node, name)
            room.remote("rename", name, old)
        elif event in ("gone", "hello"):
            names = json.loads(fields.get("names", "[]")) or []  # Lua's empty list is {}
            if event == "gone":
                presence.forget(node)
                for name in names:
                    room.remote("leave", name)
            else:
                for name in names:
                    presence.add(node, name)
                    room.remote("join", name)

    async def _publish_loop(self, client: coredis.Redis[str]) -> None:
        history = self.history
        while True:
            await history.wait_work()
            batch = history.unpublished(PUBLISH_BATCH)
            args: list[str | int] = [history.keep, self.node]
            for out in batch:
                args += [out.seq, out.user, out.text, out.timestamp]
            with trio.fail_after(COMMAND_TIMEOUT):
                await self._script(client, lua.PUBLISH, args)
            history.mark_published(batch)

    async def _presence_loop(self, client: coredis.Redis[str]) -> None:
        presence, room = self.presence, self.room
        while True:
            await presence.wait_work()
            args: list[str | int] = [EVENTS_KEEP]
            for _ in range(min(PRESENCE_BATCH, len(presence.changes))):
                op, name, old = presence.changes.popleft()
                # A member here holds the name again (left and came back, or a claim
                # for a join that failed locally): its claim stays.
                keep = int(room.holds(old if op == "rename" else name))
                args += [op, name.casefold(), name, old.casefold(), old, keep]
            with trio.fail_after(COMMAND_TIMEOUT):
                await self._script(client, lua.PRESENCE, [self.node, *args])

    async def _heartbeat_loop(self, client: coredis.Redis[str]) -> None:
        interval = self.config.presence_ttl / 4
        while True:
            await trio.sleep(interval)
            with trio.fail_after(COMMAND_TIMEOUT):
                result = await self._script(
                    client, lua.HEARTBEAT, [self.node, self._ttl_ms, EVENTS_KEEP]
                )
                if result[0] == 1:
                    # Given up by the others (this process stalled past the TTL): its
                    # members' entries are gone; put them back.
                    log.warning("cluster: this server's presence had expired; registering again")
                    await self._register(client, announce=True)
                for node in result[1:]:
                    log.warning("cluster: server %s stopped heartbeating; its members left",
                                node)
                await self._refresh(client)

    async def _refresh(self, client: coredis.Redis[str]) -> None:
        """Read the other servers' member lists in full (events may have been trimmed
        or missed while away)."""
        result = await self._script(client, lua.VIEW, [self.node])
        view: dict[str, dict[str, str]] = {}
        for node, users_json in zip(result[::2], result[1::2], strict=True):
            flat = json.loads(users_json) or []
            view[node] = dict(zip(flat[::2], flat[1::2], strict=True))
        self.presence.replace(view)

    async def claim(self, name: str) -> bool:
        """Claim ``name`` for this server; while Redis is unreachable, names are
        unique on this server only (checked by the room)."""
        client = self._client
        if client is None or not self.connected:
            return True
        failure: BaseException = trio.TooSlowError("timed out")
        with trio.move_on_after(CLAIM_TIMEOUT):
            try:
                return bool(await self._script(client, lua.CLAIM, [self.node, name.casefold()]))
            except* LINK_ERRORS as group:
                failure = _first_error(group)
        log.warning("cluster: name claim failed (%s); joining locally", failure)
        return True

    async def _script(self, client: coredis.Redis[str], source: str,
                      args: Iterable[str | int]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            # Loaded once per connection: EVALSHA from then on (SCRIPT LOAD is cheap,
            # and a Redis that restarted has forgotten them anyway).
            await client.script_load(source)
            script = self._scripts[source] = client.register_script(source)
        return await script(keys=[], args=[PREFIX, *args])


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def open_cluster(config: Config) -> AsyncIterator[Cluster]:
    """Link to the Redis in ``config.redis`` (raises ``StartupError``, exit code 2, if
    it cannot be used) and keep the link up until exit; then leave the cluster."""
    cluster = Cluster(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(cluster.run)
        try:
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                await cluster.close()
            nursery.cancel_scope.cancel()

