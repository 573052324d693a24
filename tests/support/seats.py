"""A room member without a connection: the test holds its queue's receiving end."""

from __future__ import annotations

import json

from trio_chat.server.outbox import Outbox
from trio_chat.server.room import Member
from trio_chat.server.rooms import Rooms

from .tcp import Message


class Seat:
    """A :class:`~trio_chat.server.room.Member` with its outgoing queue readable by the
    test, as a session would hold it; seated at once under ``name`` if given. It keeps
    its own member, so a test can speak for it (``room.say(seat.member, ...)``)."""

    def __init__(
        self, room: Rooms, name: str | None = None, *, queue: int = 10_000, peer: str = "test"
    ) -> None:
        self.inbox = Outbox(queue)
        self.evictions = 0
        self.member = Member(self.inbox, peer=name or peer, on_evict=self._on_evict)
        self.room = room
        if name is not None:
            room.join(self.member, name)

    def _on_evict(self) -> None:
        self.evictions += 1

    def drop(self) -> None:
        """Forget everything queued for it so far, replays included (a reader that
        reads and ignores)."""
        self.inbox.items.clear()

    def take(self) -> list[Message]:
        """Everything queued for it so far, decoded (it never waits)."""
        out: list[Message] = []
        items, self.inbox.items = self.inbox.items, []
        for item in items:
            assert isinstance(item, str), "a replay: this room has no history"
            out.append(json.loads(item))
        return out
