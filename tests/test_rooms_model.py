"""The rooms on their own (no sockets): fan-out per room, one queue per connection
across its rooms, notices coalesced per room, expiry, and the bounded answers."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.testing

from tests.support.memory import memory_tcp
from tests.support.seats import Seat
from trio_chat import protocol
from trio_chat.config import Config
from trio_chat.protocol import ProtocolError
from trio_chat.server.rooms import ROOMS_LISTED, Rooms

FREE = Config(room_create_rate=0)


def clock() -> str:
    return "T"


def rooms_of(*names: str) -> tuple[Rooms, dict[str, Seat]]:
    rooms = Rooms(config=FREE, clock=clock)
    return rooms, {name: Seat(rooms, name) for name in names}


def events(seat: Seat) -> list[tuple[str, str, Any]]:
    return [(m["type"], m.get("room", ""), m.get("event") or m.get("text"))
            for m in seat.take()]


async def test_a_broadcast_costs_its_room_not_the_server() -> None:
    rooms, seats = rooms_of(*(f"u{i}" for i in range(50)))
    for name in ("u0", "u1", "u2"):
        rooms.enter(seats[name].member, "#small")
    for seat in seats.values():
        seat.take()
    before = rooms.metrics.deliveries
    rooms.say(seats["u0"].member, "hi", "#small")
    assert rooms.metrics.deliveries - before == 3
    assert [len(s.take()) for s in seats.values()] == [1, 1, 1] + [0] * 47


async def test_a_slow_connection_leaves_every_room_it_was_in() -> None:
    """One bounded queue per connection, whatever its rooms: a full one evicts it from
    all of them, and each room's members are told once."""
    rooms = Rooms(config=FREE, clock=clock)
    ann = Seat(rooms, "Ann")
    slow = Seat(rooms, "Slow", queue=12)
    for room in ("#a", "#b"):
        rooms.enter(ann.member, room)
        rooms.enter(slow.member, room)
    ann.take()
    for n in range(20):  # spread over rooms: the one queue fills all the same
        rooms.say(ann.member, f"m{n}", ("#lobby", "#a", "#b")[n % 3])
    assert slow.member.evicted == "slow_consumer" and slow.evictions == 1
    assert slow.member.rooms == {} and not rooms.holds("Slow")
    leaves = [(r, text) for kind, r, text in events(ann) if text == "leave"]
    assert leaves == [("#lobby", "leave"), ("#a", "leave"), ("#b", "leave")]
    assert [r.names for r in rooms.all] == [["Ann"], ["Ann"], ["Ann"]]


async def test_a_rename_in_no_room_still_says_the_new_name() -> None:
    rooms, seats = rooms_of("Ann")
    rooms.part(seats["Ann"].member, "#lobby")
    seats["Ann"].take()
    rooms.join(seats["Ann"].member, "Anne")
    [welcome] = seats["Ann"].take()
    assert isinstance(welcome.pop("resume"), str)  # a rename is a fresh token
    assert welcome == {"type": "welcome", "user": "Anne", "users": [], "clients_count": 0,
                       "max_text": 4096}


async def test_a_refused_join_changes_nothing() -> None:
    rooms, _ = rooms_of("Ann", "Bob")
    fresh = Seat(rooms)
    with pytest.raises(ProtocolError) as taken:
        rooms.join(fresh.member, "bob", room="#dev")
    assert taken.value.code == "name_taken"
    assert rooms.room("#dev") is None and fresh.member.name is None
    with pytest.raises(ProtocolError) as invalid:
        rooms.join(fresh.member)  # neither a name nor one held
    assert invalid.value.code == "not_joined"
    tight = Rooms(config=replace(FREE, max_rooms_per_connection=1))
    one = Seat(tight, "One")
    with pytest.raises(ProtocolError) as full:
        tight.join(one.member, "Uno", room="#dev")
    assert full.value.code == "too_many_rooms" and one.member.name == "One"  # not renamed


async def test_who_and_rooms_answers_are_shared_copies(
    autojump_clock: trio.testing.MockClock
) -> None:
    rooms, seats = rooms_of("Ann")
    rooms.enter(seats["Ann"].member, "#dev")
    first = rooms.who("#dev")
    assert rooms.who("#DEV") is first  # one copy per membership
    listing = rooms.list_rooms()
    assert rooms.list_rooms() is listing  # one copy a second, however many ask
    await trio.sleep(1)
    assert rooms.list_rooms() is not listing


async def test_the_rooms_answer_lists_the_busiest_rooms_only() -> None:
    rooms = Rooms(config=replace(FREE, max_rooms=ROOMS_LISTED + 50), clock=clock)
    seats = [Seat(rooms, f"u{i}") for i in range(3)]
    for i in range(ROOMS_LISTED + 40):
        rooms.enter(seats[0].member, f"#r{i:04d}")
        rooms.part(seats[0].member, f"#r{i:04d}")
    for seat in seats:
        rooms.enter(seat.member, "#r1039")  # the newest: first for its members
    answer = json.loads(rooms.list_rooms())
    assert answer["total"] == ROOMS_LISTED + 41
    assert len(answer["rooms"]) == ROOMS_LISTED
    assert answer["rooms"][:2] == [{"room": "#lobby", "users": 3, "topic": ""},
                                   {"room": "#r1039", "users": 3, "topic": ""}]
    assert len(rooms.list_rooms()) < 50 * ROOMS_LISTED


async def test_notices_are_coalesced_per_room(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Each room has its own budget: a crowd in one room is summarized there, while a
    quiet room's joins still go out one by one."""
    rooms = Rooms(config=FREE, notice_rate=100, notice_interval=0.1)
    await nursery.start(rooms.run_notices)
    quiet = [Seat(rooms, name) for name in ("Q1", "Q2")]
    crowd = [Seat(rooms, f"c{i}") for i in range(20)]
    for seat in quiet:
        rooms.enter(seat.member, "#quiet")
    for seat in [*quiet, *crowd]:
        seat.take()
    for seat in crowd:
        rooms.enter(seat.member, "#busy")
    q2 = Seat(rooms, "Q3")
    rooms.enter(q2.member, "#quiet")
    notes = [(r, e) for _, r, e in events(quiet[0]) if r == "#quiet"]
    assert notes == [("#quiet", "join")]  # Q3's join, at once
    await trio.sleep(0.5)
    busy = [(m["event"], m.get("joined")) for m in crowd[0].take()
            if m["type"] == "system" and m["room"] == "#busy"]
    assert busy[-1] == ("summary", len(crowd) - sum(1 for e in busy if e[0] == "join"))
    assert len(busy) < len(crowd)


async def test_an_empty_room_expires_and_the_lobby_never_does(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = replace(FREE, room_expiry=3600)
    rooms = Rooms(config=config)
    await nursery.start(rooms.run_expiry)
    ann = Seat(rooms, "Ann")
    for name in ("#kept", "#gone", "#later"):
        rooms.enter(ann.member, name)
    rooms.part(ann.member, "#gone")
    rooms.part(ann.member, "#lobby")  # empty, but never removed
    await trio.sleep(1800)
    rooms.part(ann.member, "#later")
    await trio.sleep(1800 + 3600 / 8)
    assert [r.name for r in rooms.all] == ["#lobby", "#kept", "#later"]
    await trio.sleep(1800)
    assert [r.name for r in rooms.all] == ["#lobby", "#kept"]  # Ann is still in #kept
    await trio.sleep(10 * 3600)
    assert [r.name for r in rooms.all] == ["#lobby", "#kept"]
    # A room that expired can be created again, anew.
    rooms.enter(ann.member, "#GONE")
    assert rooms.room("#gone") is not None and rooms.room("#gone").name == "#GONE"  # type: ignore[union-attr]


async def test_every_new_input_counts_toward_flood_control(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """rooms, who, part, topic and msg are messages to flood control like chat: a
    client that asks for the room list without pause is cut off."""
    config = Config(rate_limit=5, rate_burst=10, rate_ceiling=20, room_create_rate=0)
    rooms = Rooms(config=config)
    client = memory_tcp(nursery, rooms, config)
    await client.join("Ann")
    await client.send_raw(b'{"type":"rooms"}\n' * 200)
    answers = []
    while (line := await client.line()) is not None:
        answers.append(json.loads(line))
    # 9 tokens left after the join, then 20 delayed answers; the next one is refused.
    assert sum(m["type"] == "rooms" for m in answers) == 9 + 20
    assert answers[-1]["code"] == protocol.RATE_LIMITED
