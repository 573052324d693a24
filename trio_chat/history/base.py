"""Ids, and what a joiner is replayed: the event-loop side of the history store.

:class:`History` is what the room sees; :class:`SqliteHistory` (below) keeps one
server's history in SQLite, :class:`trio_chat.cluster.RedisHistory` a cluster's in
Redis. For SQLite, ids are allocated here, in the event loop (continuing after the
store's last id), so they follow the one global order in which the room broadcasts.
The newest messages are also kept in memory (a ring at least as large as the store's
uncommitted window): a plain join and a recent ``since`` are answered from it at
once and atomically with the join, without touching the database. Only a resume from
further back reads the store, off the event loop (for a file, on a second connection
beside the writer), for the part older than the ring; every message older than the
ring is already committed, so that read cannot miss one.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, NamedTuple

from . import protocol
from .config import Config
from .store import BatchingStore, Snapshot, SqliteStore, StoredMessage, running

log = logging.getLogger(__name__)

#: Messages kept in memory for replay, at least (a plain ring of message objects).
RING: Final = 2048
#: Messages read from the store per page of a long replay.
PAGE: Final = 2048


class Unconfirmed(NamedTuple):
    """A message delivered here during a Redis outage, without an id: it has none yet
    (cluster mode, :class:`trio_chat.cluster.RedisHistory`)."""

    user: str
    text: str
    timestamp: str
    id: None = None


#: What a replay shows: stored messages, then (in cluster mode) unconfirmed ones.
Shown = StoredMessage | Unconfirmed


@dataclass(frozen=True)
class Replay:
    """What one joiner is owed, fixed at join time; rendered by its session's writer."""

    tail: Sequence[Shown]  # from the ring: replayed last
    last_id: int
    since: int | None = None
    #: Read the store for ``since < id < read_before`` first (None: nothing to read).
    read_before: int | None = None
    complete: bool = True


def chat_line(message: Shown, *, history: bool = False) -> str:
    return protocol.chat(
        message.user, message.text, message.timestamp, message.id, history=history
    )


class History(ABC):
    """What the room needs of a history, whichever store holds it: ids, the hand-over
    of new messages, and replays planned from an in-memory ring of the newest ones.

    Two implementations, chosen at start: :class:`SqliteHistory` (one server, a file)
    and :class:`trio_chat.cluster.RedisHistory` (every server on one Redis). The room
    only sees this class.
    """

    def __init__(self, tail: list[StoredMessage], *, last_id: int, replay: int, ring: int) -> None:
        self.replay_count = replay
        #: The newest id this server knows of (``history_end.last_id``).
        self.last_id = last_id
        self._ring: deque[StoredMessage] = deque(tail[-ring:], maxlen=ring)
        #: True once the store may hold retained messages older than the ring.
        self._older_in_store = False

    @property
    @abstractmethod
    def full(self) -> bool:
        """The store's hand-over buffer is full: a sender must wait (backpressure)."""

    @property
    @abstractmethod
    def pruned_through(self) -> int:
        """Messages with ids up to this one may be missing (pruned, or lost in a crash):
        a replay from before it is not complete."""

    @abstractmethod
    async def wait_writable(self) -> None:
        """Return once :meth:`record` will not raise ``trio.WouldBlock``."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every message recorded so far is stored (for a graceful stop)."""

    @abstractmethod
    def record(self, user: str, text: str, ts: str) -> str | None:
        """Hand a message to the store. Returns the line to broadcast now, or None when
        the store broadcasts it itself once it has an id (the Redis backplane does).
        Raises ``trio.WouldBlock`` (nothing changed) when the store is full."""

    @abstractmethod
    async def _read(
        self, after: int, before: int, limit: int
    ) -> tuple[list[StoredMessage], int]:
        """Stored messages with ``after < id < before`` (the first ``limit``), and
        ``pruned_through``; only called for replays the ring cannot answer."""

    def _remember(self, message: StoredMessage) -> None:
        if len(self._ring) == self._ring.maxlen:
            self._older_in_store = True
        self._ring.append(message)

    def replay(self, since: int | None) -> Replay:
        """What a joiner gets now: the last N messages, or every one after ``since``."""
        ring = self._ring
        if since is None:
            count = min(self.replay_count, len(ring))
            tail = [ring[i] for i in range(len(ring) - count, len(ring))]
            return Replay(tail, self.last_id)
        tail = []
        for message in reversed(ring):
            if message.id <= since:
                break
            tail.append(message)
        tail.reverse()
        if ring and since < ring[0].id - 1 and self._older_in_store:
            return Replay(tail, self.last_id, since, read_before=ring[0].id)
        return Replay(tail, self.last_id, since, complete=since >= self.pruned_through)

    async def read_page(self, replay: Replay, limit: int) -> tuple[list[StoredMessage], Replay]:
        """Up to ``limit`` of the messages ``replay`` must read from the store, oldest
        first, and the replay of what remains (``read_before`` is None once the store's
        part is done). A session writes page by page, so it never holds more."""
        assert replay.since is not None and replay.read_before is not None
        try:
            older, pruned = await self._read(replay.since, replay.read_before, limit)
        except Exception as error:  # a broken disk costs this replay, not the session
            log.error("history: replay read failed: %s", error)
            return [], replace(replay, read_before=None, complete=False)
        complete = replay.complete and replay.since >= pruned
        if len(older) < limit:
            return older, replace(replay, read_before=None, complete=complete)
        return older, replace(replay, since=older[-1].id, complete=complete)

    async def collect(self, replay: Replay) -> tuple[list[Shown], str]:
        """The replay's messages, oldest first (reading the store if it must), and its
        ``history_end`` line. The caller encodes them chunk by chunk, so a long replay
        never holds the event loop for long."""
        older: list[Shown] = []
        while replay.read_before is not None:
            page, replay = await self.read_page(replay, PAGE)
            older += page
        return [*older, *replay.tail], protocol.history_end(
            replay.last_id, complete=replay.complete
        )

    async def render(self, replay: Replay) -> list[str]:
        """The replay's lines, ``history_end`` last."""
        messages, end = await self.collect(replay)
        return [chat_line(m, history=True) for m in messages] + [end]


class SqliteHistory(History):
    """One server's history in SQLite: ids allocated here, in the event loop
    (continuing after the store's last id), so they follow the order in which the
    room broadcasts."""

    def __init__(
        self, store: BatchingStore, snapshot: Snapshot, *, replay: int, ring: int = RING
    ) -> None:
        size = self.ring_size(store, replay, ring)
        super().__init__(snapshot.tail, last_id=snapshot.last_id, replay=replay, ring=size)
        self.store = store
        self._older_in_store = snapshot.count > len(self._ring)

    @staticmethod
    def ring_size(store: BatchingStore, replay: int, ring: int = RING) -> int:
        """Never smaller than the store's uncommitted window (see the module doc)."""
        return min(store.keep, max(ring, replay, store.max_pending))

    @property
    def full(self) -> bool:
        return self.store.full

    @property
    def pruned_through(self) -> int:
        return self.store.pruned_through

    async def wait_writable(self) -> None:
        await self.store.wait_writable()

    async def flush(self) -> None:
        await self.store.flush()

    def record(self, user: str, text: str, ts: str) -> str:
        message = StoredMessage(self.last_id + 1, user, text, ts)
        self.store.put_nowait(message)
        self.last_id = message.id
        self._remember(message)
        return chat_line(message)

    async def _read(
        self, after: int, before: int, limit: int
    ) -> tuple[list[StoredMessage], int]:
        return await self.store.read(after, before, limit)


@asynccontextmanager
async def open_history(
    config: Config, store: BatchingStore | None = None
) -> AsyncIterator[SqliteHistory]:
    """The configured store, running; everything handed over is committed on exit.

    Raises :class:`~trio_chat.store.StoreError` if the database cannot be used.
    """
    if store is None:
        store = SqliteStore(config.db, keep=config.history_keep)
    tail = SqliteHistory.ring_size(store, config.history_replay)
    async with running(store, tail) as snapshot:
        log.info(
            "history: %s, %d messages kept, ids continue after %d",
            config.db, snapshot.count, snapshot.last_id,
        )
        yield SqliteHistory(store, snapshot, replay=config.history_replay)
