"""The cluster's history as this server knows it: a mirror of the Redis stream.

Each server keeps ``#lobby``'s newest messages in memory (the ring, as large as the
retention), filled as it reads the stream: its replays and ``since`` resumes are
answered from it, whichever server a client reconnects to, and never read Redis.

Every other room has a stream of its own, which a server reads only while it has
members in the room (:meth:`ClusterHistory.start_reading`): its memory holds that
room's newest messages read since then (at most ``--history-replay``), and a replay
reads Redis for the rest, a page at a time (``XRANGE``), as the SQLite history reads
its file.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from ..history.base import History, Replay, RoomLog, StoredMessage, Unconfirmed
from ..protocol import LOBBY, LOBBY_KEY, room_key
from .outbox import Outbox

#: Where a stream entry came from: the server that published it, and its sequence
#: number there (see :class:`.outbox.Outbox`); ("", 0) if unknown.
Origin = tuple[str, int]


def parse_entry(entry: Any) -> tuple[StoredMessage, Origin]:
    """A history stream entry as a message and its origin (raises KeyError or
    ValueError for a malformed one)."""
    fields = entry.field_values
    message_id = int(str(entry.identifier).partition("-")[0])
    message = StoredMessage(message_id, fields["u"], fields["x"], fields["ts"])
    return message, (fields.get("node", ""), int(fields.get("seq", 0)))


class ClusterHistory(History):
    """The ring mirrors the history stream as this server reads it; a replay ends with
    what this server delivered during an outage and Redis has not shown back yet.

    Other rooms' logs hold what was read of their streams since this server began
    reading them (see the module doc)."""

    def __init__(self, outbox: Outbox, *, replay: int, keep: int) -> None:
        super().__init__(last_id=0, replay=replay)
        self.keep = keep
        self._outbox = outbox
        #: The other rooms' logs, by key.
        self.logs: dict[str, RoomLog] = {}
        #: Reads a room's stream in Redis: (room key, after, before, limit) -> entries
        #: oldest first; (room key, before, count) -> the newest ``count`` before
        #: ``before``, newest first. Set by the link.
        self.read_range: Callable[[str, int, int, int], Awaitable[list[Any]]] | None = None
        self.read_newest: Callable[[str, int, int], Awaitable[list[Any]]] | None = None
        #: The lobby's log: its messages are the ring (never trimmed by bytes: the
        #: stream's retention bounds it), and its ``pruned`` what fell off the ring.
        self.lobby = RoomLog(LOBBY, cap=keep)
        self._ring = self.lobby.messages
        self._origins: deque[Origin] = deque(maxlen=keep)  # beside the ring

    @property
    def pruned_through(self) -> int:
        return self.lobby.pruned

    def log(self, name: str) -> RoomLog:
        key = room_key(name)
        if key == LOBBY_KEY:
            return self.lobby
        log = self.logs.get(key)
        if log is None:
            # Nothing in memory yet: every message is in Redis (floor above 0).
            log = self.logs[key] = RoomLog(name, cap=max(1, self.replay_count),
                                           last_id=self.last_id, floor=max(1, self.last_id))
        return log

    def start_reading(self, log: RoomLog, end: int | None = None) -> int:
        """This server begins reading ``log``'s stream: from ``end``, where the stream
        ended when the join was prepared, or else from the newest id this server has
        read of any stream (every message of the room up to it is in Redis already:
        ids are given out in order as messages are added). That is the room's newest id
        from now on; returns it. Its memory starts empty."""
        start = end if end is not None else self.last_id
        log.messages.clear()
        log.last_id = start
        log.floor = max(1, start)
        return start

    def stop_reading(self, log: RoomLog) -> None:
        """No member here is in the room any more: its memory goes."""
        log.messages.clear()
        log.floor = max(1, log.last_id)

    def forget(self, log: RoomLog) -> None:
        """The room expired here."""
        self.logs.pop(log.key, None)

    async def _read(
        self, room: str, after: int, before: int, limit: int
    ) -> tuple[list[StoredMessage], int]:
        key = room_key(room)
        if key == LOBBY_KEY:
            # The ring holds everything the stream retains: replays never read Redis.
            raise AssertionError("a #lobby replay is answered from the ring")
        if self.read_range is None:
            raise ConnectionError("Redis is unreachable")
        entries = await self.read_range(key, after, before, limit)
        return [parse_entry(entry)[0]._replace(room=room) for entry in entries], 0

    async def _start(self, room: str, before: int, count: int) -> int:
        if self.read_newest is None:
            raise ConnectionError("Redis is unreachable")
        entries = await self.read_newest(room_key(room), before, count)
        if len(entries) < count or not entries:
            return 0
        return parse_entry(entries[-1])[0].id - 1

    def replay(self, since: int | None, room: RoomLog | None = None) -> Replay:
        """The ring's replay, then the messages delivered here during an outage that
        Redis has not shown back yet (without ids: they have none). A member seated
        now would otherwise never see them: they are not delivered here again when
        they come back with their ids."""
        # The newest id is the cluster's (Redis's last id), whatever the ring holds.
        log = room if room is not None else self.lobby
        name = log.name
        pending = [Unconfirmed(o.user, o.text, o.timestamp, room=name)
                   for o in self._outbox.delivered_here() if room_key(o.room) == log.key]
        count = self.replay_count
        if since is None and pending:  # the newest N, pending ones included
            pending = pending[-count:] if count else []
            count -= len(pending)
        replay = log.plan(since, count)
        if log is not self.lobby:
            return replace(replay, pending=pending)
        return replace(replay, last_id=self.last_id, pending=pending,
                       done=replay.done or (since is not None and since >= self.last_id))

    def take_room(self, log: RoomLog, entry: Any) -> StoredMessage | None:
        """One entry read from another room's stream, remembered (at most the replay
        count in memory); None if it is not new here."""
        message, _ = parse_entry(entry)
        message = message._replace(room=log.name)
        if message.id <= log.last_id:
            return None
        messages = log.messages
        messages.append(message)
        if len(messages) > log.cap:
            log.floor = messages.popleft().id
        log.last_id = message.id
        self.last_id = max(self.last_id, message.id)
        return message

    def _remember(self, message: StoredMessage, origin: Origin = ("", 0)) -> None:
        ring = self._ring
        if len(ring) == self.keep:
            self.lobby.pruned = ring.popleft().id
        ring.append(message)
        self._origins.append(origin)
        self.lobby.last_id = message.id

    def load(self, entries: Sequence[Any], pruned: int) -> None:
        """Fill the ring from the stream's newest entries (oldest first) at start."""
        for entry in entries:
            message, origin = parse_entry(entry)
            self._remember(message, origin)
            self.last_id = message.id
        self.lobby.pruned = max(self.lobby.pruned, pruned)

    def take(self, entry: Any) -> tuple[StoredMessage, Origin] | None:
        """One entry read from the stream, remembered; None if it is not new here
        (restored behind what this server has read: already seen, or never its to
        deliver). Raises KeyError or ValueError for a malformed entry."""
        message, origin = parse_entry(entry)
        if self._ring and message.id <= self._ring[-1].id:
            return None
        self._remember(message, origin)
        self.last_id = message.id
        return message, origin

    def restore_args(self) -> list[str | int]:
        """The ring, flattened for the RESTORE script (id, user, text, ts, node, seq)."""
        args: list[str | int] = []
        for message, (node, seq) in zip(self._ring, self._origins, strict=True):
            args += [message.id, message.user, message.text, message.timestamp, node, seq]
        return args
