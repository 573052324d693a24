"""A room member without a connection: the test holds its queue's receiving end."""

from __future__ import annotations

import json

import trio

from trio_chat.history.base import Replay
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
        send, self.inbox = trio.open_memory_channel[str | Replay](queue)
        self.evictions = 0
        self.member = Member(send, peer=name or peer, on_evict=self._on_evict)
        self.room = room
        if name is not None:
            room.join(self.member, name)

    def _on_evict(self) -> None:
        self.evictions += 1

    def take(self) -> list[Message]:
        """Everything queued for it so far, decoded (it never waits)."""
        out: list[Message] = []
        while True:
            try:
                item = self.inbox.receive_nowait()
            except trio.WouldBlock:
                return out
            assert isinstance(item, str), "a replay: this room has no history"
            out.append(json.loads(item))
