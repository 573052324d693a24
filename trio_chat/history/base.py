"""What the rooms keep of the past: ids, the newest messages in memory, and replays.

Ids are one strictly increasing sequence across every room. Each room has a
:class:`RoomLog`: its newest id, how far its stored history was pruned, and its newest
messages in memory. Those in-memory tails share one budget in bytes for the whole
server (:class:`Tails`, an LRU: the rooms used least recently give up their oldest
messages first), so a server of ten thousand quiet rooms holds what its busy rooms
need, not ten thousand rings. A replay is fixed at join time (which ids it owes: so
nothing is missed or repeated between it and the live messages) but holds no
message: the joiner's writer reads them a page at a time when it renders them, from
the room's tail when it has them, else from the store, off the event loop
(:meth:`History.read_page`).

:class:`History` is what every server has, whatever holds the messages. Two stores
implement it: :class:`trio_chat.history.sqlite.SqliteHistory` (one server, a file)
and :class:`trio_chat.cluster.history.ClusterHistory` (every server on one Redis).
Where a *new* message goes is not the history's business but the delivery's
(:mod:`trio_chat.server.delivery`).
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from .. import protocol
from ..protocol import LOBBY

log = logging.getLogger(__name__)

#: Messages one room keeps in memory, at most (fewer under the server's byte budget).
RING: Final = 2048
#: Messages read from the store per page of a long replay.
PAGE: Final = 2048
#: Bytes of the server's in-memory tails, by default (``--history-memory-mb``).
MEMORY_BUDGET: Final = 64 * 2**20


class IdsExhausted(Exception):
    """Every id up to ``protocol.MAX_ID`` is used: a new message cannot get one."""


class StoredMessage(NamedTuple):
    """One chat message as stored, and the room it was said in (as the room is shown)."""

    id: int
    user: str
    text: str
    timestamp: str
    room: str = LOBBY


@dataclass(frozen=True)
class StoredRoom:
    """A room as the store knows it when it opens."""

    name: str
    topic: str = ""
    #: When the room was last used (a message, or its last member leaving): Unix time.
    active: float = 0.0
    #: This room's messages with ids up to this one were pruned.
    pruned_through: int = 0
    #: Its newest message id, and how many messages it has stored.
    last_id: int = 0
    count: int = 0


@dataclass(frozen=True)
class Snapshot:
    """What a store knows when it opens: where ids continue, its rooms, the newest rows."""

    last_id: int
    pruned_through: int
    count: int
    tail: list[StoredMessage] = field(default_factory=list)
    rooms: list[StoredRoom] = field(default_factory=list)


class Unconfirmed(NamedTuple):
    """A message delivered here during a Redis outage, without an id: it has none yet
    (cluster mode, :class:`trio_chat.cluster.history.ClusterHistory`)."""

    user: str
    text: str
    timestamp: str
    id: None = None
    room: str = LOBBY


#: What a replay shows: stored messages, then (in cluster mode) unconfirmed ones.
Shown = StoredMessage | Unconfirmed


@dataclass(frozen=True)
class Replay:
    """What one joiner of one room is owed, fixed at join time: the room's messages
    with ``since < id <= last_id`` (or, without ``since``, the newest ``count`` up to
    ``last_id``). It holds no message: its session's writer reads them a page at a
    time when it renders them (:meth:`History.read_page`), from the room's tail in
    memory or from the store, so a joiner that does not read pins nothing, however
    many rooms it joins."""

    last_id: int
    since: int | None = None
    complete: bool = True
    room: str = LOBBY
    #: Without ``since``: how many of the newest messages.
    count: int = 0
    #: Messages delivered here during a Redis outage, without ids: shown last.
    pending: Sequence[Shown] = ()
    #: Nothing more to read (``pending`` may still be due).
    done: bool = False
    #: The room's log, to read its tail (not part of what the replay is).
    log: RoomLog | None = field(default=None, compare=False, repr=False)


def chat_line(message: Shown, *, history: bool = False) -> str:
    return protocol.chat(
        message.user, message.text, message.timestamp, message.id, history=history,
        room=message.room,
    )


#: What Python holds for a message beside its text: the tuple, the int, a deque slot,
#: its timestamp (24 ASCII characters), and a name at its largest (32 characters of 4
#: bytes; most are shared by the sender's messages, so this overcounts).
_MESSAGE_OVERHEAD: Final = (
    sys.getsizeof(StoredMessage(0, "", "", "")) + 32 + 8
    + sys.getsizeof("2026-11-26T18:00:00.000Z") + sys.getsizeof("\U0001f600" * 32)
)


def message_size(message: StoredMessage) -> int:
    """Bytes a message takes in memory, at most: its text as Python holds it (1, 2 or
    4 bytes a character) and the rest around it. O(1), and cheap: it runs for every
    message."""
    return sys.getsizeof(message.text) + _MESSAGE_OVERHEAD


class RoomLog:
    """One room's history as the server knows it: its newest id, how far the store has
    pruned it, and its newest messages in memory.

    Every message of the room with an id above ``floor`` is in ``messages``; older ones
    may only be in the store (``floor`` is 0 while memory has them all)."""

    __slots__ = ("cap", "floor", "key", "last_id", "messages", "name", "pruned", "size")

    def __init__(self, name: str, *, cap: int = RING, last_id: int = 0, floor: int = 0,
                 pruned: int = 0) -> None:
        self.name = name
        self.key = protocol.room_key(name)
        self.cap = cap
        self.messages: deque[StoredMessage] = deque()
        self.floor = floor
        self.last_id = last_id
        self.pruned = pruned
        self.size = 0  # bytes of ``messages`` (message_size)

    def plan(self, since: int | None, count: int) -> Replay:
        """What a joiner gets now: the last ``count`` messages, or every one after
        ``since``, up to the newest now (read later: see :class:`Replay`)."""
        if since is None:
            return Replay(self.last_id, room=self.name, count=count, log=self,
                          done=count == 0)
        return Replay(self.last_id, since, room=self.name, log=self,
                      done=since >= self.last_id)

    def newest_start(self, last_id: int, count: int) -> int | None:
        """Where the newest ``count`` messages up to ``last_id`` begin (the id before
        the first), if memory holds them all; None if the store must say."""
        messages = self.messages
        end = _index_after(messages, last_id)
        if end >= count:
            return messages[end - count].id - 1 if count else last_id
        if self.floor == 0:  # memory has every message the room has
            return 0
        return None

    def page(self, since: int, last_id: int, limit: int) -> list[StoredMessage] | None:
        """Up to ``limit`` messages with ``since < id <= last_id``, oldest first, if
        memory holds them all (every message above ``floor`` is here); else None."""
        if since < self.floor:
            return None
        messages = self.messages
        start = _index_after(messages, since)
        end = min(_index_after(messages, last_id), start + limit)
        return [messages[i] for i in range(start, end)]


def _index_after(messages: deque[StoredMessage], message_id: int) -> int:
    """The index of the first message with an id above ``message_id``."""
    low, high = 0, len(messages)
    while low < high:
        middle = (low + high) // 2
        if messages[middle].id <= message_id:
            low = middle + 1
        else:
            high = middle
    return low


class Tails:
    """The rooms' in-memory messages under one budget in bytes for the whole server.

    A least-recently-used order of the rooms that hold messages: a message added, or a
    replay planned, makes its room the most recent; over the budget, the least recent
    room gives up its oldest message, then the next... (a room's own cap works the
    same way). Whatever a room gave up, the store still has."""

    def __init__(self, budget: int = MEMORY_BUDGET) -> None:
        self.budget = budget
        #: Bytes held now (``message_size`` of every message in every tail).
        self.size = 0
        self._lru: OrderedDict[str, RoomLog] = OrderedDict()

    def __len__(self) -> int:
        """Rooms with messages in memory."""
        return len(self._lru)

    def add(self, room: RoomLog, message: StoredMessage) -> None:
        """A new message of ``room``: the newest in memory. (On every message's path:
        a room at its cap gives up its oldest here, inline.)"""
        messages = room.messages
        messages.append(message)
        size = sys.getsizeof(message.text) + _MESSAGE_OVERHEAD  # message_size
        if len(messages) > room.cap:
            oldest = messages.popleft()
            size -= sys.getsizeof(oldest.text) + _MESSAGE_OVERHEAD
            room.floor = oldest.id  # ids only grow
        room.size += size
        self.size += size
        lru, key = self._lru, room.key
        if key in lru:
            lru.move_to_end(key)
        else:
            lru[key] = room
        while self.size > self.budget and lru:
            self._drop_oldest(next(iter(lru.values())))

    def touch(self, room: RoomLog) -> None:
        """``room`` was just used (a replay): the last to give up its messages."""
        if room.key in self._lru:
            self._lru.move_to_end(room.key)

    def trim(self, room: RoomLog, through: int) -> None:
        """The store pruned ``room`` through this id: memory keeps nothing older."""
        room.pruned = max(room.pruned, through)
        room.floor = max(room.floor, through)
        while room.messages and room.messages[0].id <= through:
            self._drop_oldest(room)

    def forget(self, room: RoomLog) -> None:
        """``room`` is gone: free what it held."""
        self.size -= room.size
        room.size = 0
        room.messages.clear()
        self._lru.pop(room.key, None)

    def _drop_oldest(self, room: RoomLog) -> None:
        message = room.messages.popleft()
        size = message_size(message)
        room.size -= size
        self.size -= size
        room.floor = max(room.floor, message.id)
        if not room.messages:
            self._lru.pop(room.key, None)


class History(ABC):
    """Ids, and replays planned from the rooms' in-memory tails, whichever store holds
    the rest (see the module doc)."""

    def __init__(self, *, last_id: int, replay: int) -> None:
        self.replay_count = replay
        #: The newest id given out (to a message or a direct message), in any room.
        self.last_id = last_id
        #: The rooms the store had when it opened (the server seats them again).
        self.stored_rooms: list[StoredRoom] = []

    @property
    def memory_bytes(self) -> int | None:
        """Bytes of messages held in memory for replays (None: not counted)."""
        return None

    @property
    def stored_bytes(self) -> int | None:
        """Bytes of stored history as the server-wide bound counts them (None: this
        store does not count them)."""
        return None

    @property
    @abstractmethod
    def pruned_through(self) -> int:
        """Messages of any room with ids up to this one may be missing (lost in a
        crash, a batch that could not be written): a replay from before it is not
        complete. (Each room's own pruning is its log's ``pruned``.)"""

    @abstractmethod
    def log(self, name: str) -> RoomLog:
        """The log of the room called ``name`` (created, empty, if it has none)."""

    @abstractmethod
    def replay(self, since: int | None, room: RoomLog | None = None) -> Replay:
        """What a joiner of ``room`` (``#lobby`` if None) gets now (see
        :meth:`RoomLog.plan`)."""

    @abstractmethod
    async def _read(
        self, room: str, after: int, before: int, limit: int
    ) -> tuple[list[StoredMessage], int]:
        """Stored messages of ``room`` with ``after < id < before`` (the first
        ``limit``), and how far that room is pruned; only called for replays the
        tails cannot answer."""

    async def _start(self, room: str, before: int, count: int) -> int:
        """The id after which the newest ``count`` stored messages of ``room`` before
        ``before`` begin (0 if it has no more than that)."""
        raise NotImplementedError

    def caught_up(self, room: RoomLog) -> Replay:
        """The replay of a joiner of ``room`` that has been sent every message already
        (a listener): nothing, then ``history_end`` with the room's newest id."""
        return Replay(room.last_id, room.last_id, room=room.name, log=room, done=True)

    async def read_page(self, replay: Replay, limit: int) -> tuple[list[StoredMessage], Replay]:
        """Up to ``limit`` of the messages ``replay`` still owes, oldest first, and the
        replay of what remains (``done`` once there is nothing more to read): from the
        room's tail in memory when it holds them, else from the store (once the writer
        has committed them). A session writes page by page, so it never holds more."""
        if replay.done:
            return [], replay
        room = replay.log
        try:
            since = replay.since
            if since is None:  # the newest N: where they start, first
                start = room.newest_start(replay.last_id, replay.count) if room else None
                if start is None:
                    start = await self._start(replay.room, replay.last_id + 1, replay.count)
                replay = replace(replay, since=start)
                since = start
            page = room.page(since, replay.last_id, limit) if room is not None else None
            if page is None:
                page, pruned = await self._read(replay.room, since, replay.last_id + 1, limit)
            else:
                pruned = room.pruned if room is not None else 0
        except Exception as error:  # a broken disk costs this replay, not the session
            log.error("history: replay read failed: %s", error)
            return [], replace(replay, done=True, complete=False)
        # A join without ``since`` is never told it is incomplete (v1); one with it is,
        # when messages after its ``since`` were pruned or lost.
        complete = replay.complete and (
            replay.count > 0 or since >= max(pruned, self.pruned_through)
        )
        if len(page) < limit:
            return page, replace(replay, since=since, done=True, complete=complete)
        return page, replace(replay, since=page[-1].id, complete=complete)

    async def collect(self, replay: Replay) -> tuple[list[Shown], str]:
        """The replay's messages, oldest first (reading the store if it must), and its
        ``history_end`` line (tests and small callers: a session renders page by
        page)."""
        messages: list[Shown] = []
        while not replay.done:
            page, replay = await self.read_page(replay, PAGE)
            messages += page
        return [*messages, *replay.pending], history_end(replay)


def history_end(replay: Replay) -> str:
    """The ``history_end`` that closes ``replay``."""
    return protocol.history_end(replay.last_id, complete=replay.complete, room=replay.room)
