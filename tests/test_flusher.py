"""The fast path's flusher (trio_chat/server/outbox.py) on its own: while readers go on
broadcasting it gathers their messages into fewer writes, within the pacer's share of
a queue; a lone message is written at once; order and content never change.

Trio runs every task woken in one scheduling batch in the next, in any order: a
speaker that says one message and then checkpoints speaks once in every round, so
between two turns of the flusher two rounds apart it has spoken at least once, and
between two consecutive ones at most twice. The bounds below rest on that alone.
"""

from __future__ import annotations

import json

import trio

from tests.support.seats import Seat
from trio_chat.config import Config
from trio_chat.server.outbox import GATHER_ROUNDS, Outbox
from trio_chat.server.pacing import PACE_SHARE
from trio_chat.server.room import Member
from trio_chat.server.rooms import Rooms


def clock() -> str:
    return "T"


class Listener:
    """A member whose outbox the flusher writes with a direct write that always
    takes everything: each write's lines are kept, in order."""

    def __init__(self, rooms: Rooms, name: str) -> None:
        self.outbox = Outbox(rooms.config.queue_size, rooms.flusher)
        self.member = Member(self.outbox, peer=name)
        rooms.join(self.member, name)
        self.outbox.items.clear()  # its welcome: not what these tests are about
        self.outbox.direct = self._write
        self.writes: list[list[str]] = []

    def _write(self, lines: list[str]) -> bool:
        self.writes.append([json.loads(line)["text"] for line in lines])
        return True

    @property
    def texts(self) -> list[str]:
        return [text for write in self.writes for text in write]


def rooms_with(queue_size: int = 1024) -> tuple[Rooms, Listener, Seat]:
    rooms = Rooms(config=Config(room_create_rate=0, queue_size=queue_size), clock=clock)
    speaker = Seat(rooms, "Speaker")
    return rooms, Listener(rooms, "Listener"), speaker


async def start_flusher(nursery: trio.Nursery, rooms: Rooms) -> None:
    """Start the flusher; return once it runs (before, nothing would write)."""
    nursery.start_soon(rooms.flusher.run)
    while not rooms.flusher.running:
        await trio.lowlevel.checkpoint()


async def speak(rooms: Rooms, speaker: Seat, texts: list[str]) -> None:
    """One message per scheduling round, as a WebSocket reader hands them on."""
    for text in texts:
        rooms.say(speaker.member, text)
        await trio.lowlevel.checkpoint()


async def test_messages_broadcast_round_after_round_share_a_write() -> None:
    rooms, listener, speaker = rooms_with()
    texts = [f"m{n}" for n in range(40)]
    async with trio.open_nursery() as nursery:
        await start_flusher(nursery, rooms)
        await speak(rooms, speaker, texts)
        while listener.texts != texts:
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    assert listener.texts == texts  # every one, in order
    # Each write waited GATHER_ROUNDS rounds of a busy speaker: the message that woke
    # the flusher and at least one for each round but the last (the last write: what
    # was left).
    assert all(len(write) >= GATHER_ROUNDS for write in listener.writes[:-1])
    assert len(listener.writes) <= len(texts) // GATHER_ROUNDS + 1


async def test_a_write_waits_for_no_more_than_the_pacers_share_of_a_queue() -> None:
    # A queue of 48: the readers' share between two turns of the writers is 3. Eight
    # speakers say 24 messages a round: the flusher stops gathering at once.
    rooms, listener, _ = rooms_with(queue_size=3 * PACE_SHARE)
    speakers = [Seat(rooms, f"S{n}") for n in range(8)]
    listener.outbox.items.clear()  # their join notices
    said: dict[str, list[str]] = {}
    async with trio.open_nursery() as nursery:
        await start_flusher(nursery, rooms)
        async with trio.open_nursery() as talking:
            for n, speaker in enumerate(speakers):
                said[f"S{n}"] = texts = [f"S{n}-{m}" for m in range(10)]
                talking.start_soon(speak, rooms, speaker, texts)
        while len(listener.texts) < 80 and listener.member.evicted is None:
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    # Gathering never fills a queue that the writes keep up with (48 here).
    assert listener.member.evicted is None
    for name, texts in said.items():  # each speaker's in its order
        assert [text for text in listener.texts if text.startswith(name + "-")] == texts
    # A turn of the flusher sees the share spent at its first or second look (the
    # first may come before any speaker ran again): the message that woke it and at
    # most three rounds of eight. Without the share it waits GATHER_ROUNDS rounds.
    assert max(len(write) for write in listener.writes) <= 1 + 3 * 8 < 1 + (GATHER_ROUNDS - 1) * 8


async def test_a_lone_message_is_written_after_a_quiet_round() -> None:
    rooms, listener, speaker = rooms_with()
    async with trio.open_nursery() as nursery:
        await start_flusher(nursery, rooms)
        rooms.say(speaker.member, "alone")
        rounds = 0
        while not listener.writes:
            await trio.lowlevel.checkpoint()
            rounds += 1
        nursery.cancel_scope.cancel()
    assert listener.writes == [["alone"]]
    # Woken in the next round, and it writes in the one after, which has seen a whole
    # round without a broadcast; this task may run before it in that round.
    assert rounds <= 3
