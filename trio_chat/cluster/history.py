"""The cluster's history as this server knows it: a mirror of the Redis stream.

Each server keeps the newest messages in memory (the ring of
:class:`~trio_chat.history.base.History`, as large as the retention), filled as it
reads the stream: replays and ``since`` resumes are answered from it, whichever
server a client reconnects to, and never read Redis.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..history.base import History, Replay, RoomLog, StoredMessage, Unconfirmed
from ..protocol import LOBBY, LOBBY_KEY, ROOM_INVALID, ProtocolError, room_key
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

    One room for now: ``#lobby`` (rooms across servers are the cluster's next step)."""

    def __init__(self, outbox: Outbox, *, replay: int, keep: int) -> None:
        super().__init__(last_id=0, replay=replay)
        self.keep = keep
        self._outbox = outbox
        #: The lobby's log: its messages are the ring (never trimmed by bytes: the
        #: stream's retention bounds it), and its ``pruned`` what fell off the ring.
        self.lobby = RoomLog(LOBBY, cap=keep)
        self._ring = self.lobby.messages
        self._origins: deque[Origin] = deque(maxlen=keep)  # beside the ring

    @property
    def pruned_through(self) -> int:
        return self.lobby.pruned

    def log(self, name: str) -> RoomLog:
        if room_key(name) != LOBBY_KEY:
            raise ProtocolError(ROOM_INVALID, "with --redis, this server has #lobby only")
        return self.lobby

    async def _read(
        self, room: str, after: int, before: int, limit: int
    ) -> tuple[list[StoredMessage], int]:
        # The ring holds everything the stream retains: replays never read Redis.
        raise AssertionError("a cluster replay is answered from the ring")

    def replay(self, since: int | None, room: RoomLog | None = None) -> Replay:
        """The ring's replay, then the messages delivered here during an outage that
        Redis has not shown back yet (without ids: they have none). A member seated
        now would otherwise never see them: they are not delivered here again when
        they come back with their ids."""
        # The newest id is the cluster's (Redis's last id), whatever the ring holds.
        pending = [Unconfirmed(o.user, o.text, o.timestamp) for o in self._outbox.delivered_here()]
        count = self.replay_count
        if since is None and pending:  # the newest N, pending ones included
            pending = pending[-count:] if count else []
            count -= len(pending)
        replay = self.lobby.plan(since, count)
        return replace(replay, last_id=self.last_id, pending=pending,
                       done=replay.done or (since is not None and since >= self.last_id))

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
