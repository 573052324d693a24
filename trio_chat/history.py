"""Ids, and what a joiner is replayed: the event-loop side of the history store.

Ids are allocated here, in the event loop (continuing after the store's last id), so
they follow the one global order in which the room broadcasts. The newest messages
are also kept in memory (a ring at least as large as the store's uncommitted window):
a plain join and a recent ``since`` are answered from it at once and atomically with
the join, without touching the database. Only a resume from further back reads the
store, off the event loop (for a file, on a second connection beside the writer), for
the part older than the ring; every message older than the ring is already committed,
so that read cannot miss one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final

from . import protocol
from .config import Config
from .store import BatchingStore, Snapshot, SqliteStore, StoredMessage, running

log = logging.getLogger(__name__)

#: Messages kept in memory for replay, at least (a plain ring of message objects).
RING: Final = 2048


@dataclass(frozen=True)
class Replay:
    """What one joiner is owed, fixed at join time; rendered by its session's writer."""

    tail: list[StoredMessage]  # from the ring: replayed last
    last_id: int
    since: int | None = None
    #: Read the store for ``since < id < read_before`` first (None: nothing to read).
    read_before: int | None = None
    complete: bool = True


def chat_line(message: StoredMessage, *, history: bool = False) -> str:
    return protocol.chat(
        message.user, message.text, message.timestamp, message.id, history=history
    )


class History:
    """Allocates ids, hands messages to the store, and plans replays."""

    def __init__(
        self, store: BatchingStore, snapshot: Snapshot, *, replay: int, ring: int = RING
    ) -> None:
        self.store = store
        self.replay_count = replay
        self.last_id = snapshot.last_id
        size = self.ring_size(store, replay, ring)
        self._ring: deque[StoredMessage] = deque(snapshot.tail[-size:], maxlen=size)
        # True once the store may hold retained messages older than the ring.
        self._older_in_store = snapshot.count > len(self._ring)

    @staticmethod
    def ring_size(store: BatchingStore, replay: int, ring: int = RING) -> int:
        """Never smaller than the store's uncommitted window (see the module doc)."""
        return min(store.keep, max(ring, replay, store.max_pending))

    @property
    def full(self) -> bool:
        """The store's hand-over buffer is full: a sender must wait (backpressure)."""
        return self.store.full

    async def wait_writable(self) -> None:
        await self.store.wait_writable()

    async def flush(self) -> None:
        """Wait until every message recorded so far is committed (for a graceful stop)."""
        await self.store.flush()

    def record(self, user: str, text: str, ts: str) -> str:
        """Give a message the next id and hand it to the store; return the broadcast
        line. Raises ``trio.WouldBlock`` (nothing changed) when the store is full."""
        message = StoredMessage(self.last_id + 1, user, text, ts)
        self.store.put_nowait(message)
        self.last_id = message.id
        if len(self._ring) == self._ring.maxlen:
            self._older_in_store = True
        self._ring.append(message)
        return chat_line(message)

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
        return Replay(tail, self.last_id, since, complete=since >= self.store.pruned_through)

    async def read_page(self, replay: Replay, limit: int) -> tuple[list[StoredMessage], Replay]:
        """Up to ``limit`` of the messages ``replay`` must read from the store, oldest
        first, and the replay of what remains (``read_before`` is None once the store's
        part is done). A session writes page by page, so it never holds more."""
        assert replay.since is not None and replay.read_before is not None
        try:
            older, pruned = await self.store.read(replay.since, replay.read_before, limit)
        except Exception as error:  # a broken disk costs this replay, not the session
            log.error("history: replay read failed: %s", error)
            return [], replace(replay, read_before=None, complete=False)
        complete = replay.complete and replay.since >= pruned
        if len(older) < limit:
            return older, replace(replay, read_before=None, complete=complete)
        return older, replace(replay, since=older[-1].id, complete=complete)

    async def collect(self, replay: Replay) -> tuple[list[StoredMessage], str]:
        """The replay's messages, oldest first (reading the store if it must), and its
        ``history_end`` line. The caller encodes them chunk by chunk, so a long replay
        never holds the event loop for long."""
        older: list[StoredMessage] = []
        while replay.read_before is not None:
            page, replay = await self.read_page(replay, self.store.keep)
            older += page
        return older + replay.tail, protocol.history_end(
            replay.last_id, complete=replay.complete
        )

    async def render(self, replay: Replay) -> list[str]:
        """The replay's lines, ``history_end`` last."""
        messages, end = await self.collect(replay)
        return [chat_line(m, history=True) for m in messages] + [end]


@asynccontextmanager
async def open_history(
    config: Config, store: BatchingStore | None = None
) -> AsyncIterator[History]:
    """The configured store, running; everything handed over is committed on exit.

    Raises :class:`~trio_chat.store.StoreError` if the database cannot be used.
    """
    if store is None:
        store = SqliteStore(config.db, keep=config.history_keep)
    tail = History.ring_size(store, config.history_replay)
    async with running(store, tail) as snapshot:
        log.info(
            "history: %s, %d messages kept, ids continue after %d",
            config.db, snapshot.count, snapshot.last_id,
        )
        yield History(store, snapshot, replay=config.history_replay)
