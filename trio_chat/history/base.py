"""What the room keeps of the past: ids, the newest messages in memory, and replays.

:class:`History` is the part every server has, whatever holds the messages: an
in-memory ring of the newest ones, from which a plain join and a recent ``since`` are
answered at once and atomically with the join, and the planning of a longer replay
(which reads the store page by page, off the event loop). Two stores implement it:
:class:`trio_chat.history.sqlite.SqliteHistory` (one server, a file) and
:class:`trio_chat.cluster.history.ClusterHistory` (every server on one Redis).
Where a *new* message goes is not the history's business but the delivery's
(:mod:`trio_chat.server.delivery`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from .. import protocol

log = logging.getLogger(__name__)

#: Messages kept in memory for replay, at least (a plain ring of message objects).
RING: Final = 2048
#: Messages read from the store per page of a long replay.
PAGE: Final = 2048


class IdsExhausted(Exception):
    """Every id up to ``protocol.MAX_ID`` is used: a new message cannot get one."""


class StoredMessage(NamedTuple):
    """One chat message as stored; a tuple, so ``executemany`` binds it as it is."""

    id: int
    user: str
    text: str
    timestamp: str


@dataclass(frozen=True)
class Snapshot:
    """What a store knows when it opens: where ids continue, and the newest rows."""

    last_id: int
    pruned_through: int
    count: int
    tail: list[StoredMessage] = field(default_factory=list)


class Unconfirmed(NamedTuple):
    """A message delivered here during a Redis outage, without an id: it has none yet
    (cluster mode, :class:`trio_chat.cluster.history.ClusterHistory`)."""

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
    """Ids and replays, planned from an in-memory ring of the newest messages,
    whichever store holds the rest (see the module doc)."""

    def __init__(self, tail: list[StoredMessage], *, last_id: int, replay: int, ring: int) -> None:
        self.replay_count = replay
        #: The newest id this server knows of (``history_end.last_id``).
        self.last_id = last_id
        self._ring: deque[StoredMessage] = deque(tail[-ring:], maxlen=ring)
        #: True once the store may hold retained messages older than the ring.
        self._older_in_store = False

    @property
    @abstractmethod
    def pruned_through(self) -> int:
        """Messages with ids up to this one may be missing (pruned, or lost in a crash):
        a replay from before it is not complete."""

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

    def caught_up(self) -> Replay:
        """The replay of a joiner that has been sent every message already (a listener):
        nothing, then ``history_end`` with the newest id."""
        return Replay((), self.last_id)

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
