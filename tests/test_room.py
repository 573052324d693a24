"""The room on its own: fan-out, ordering, names, slow-consumer eviction."""

import json

import pytest

from tests.support.seats import Seat
from trio_chat import protocol
from trio_chat.protocol import ProtocolError
from trio_chat.server.rooms import Rooms


def clock() -> str:
    return "T"


@pytest.fixture
def room() -> Rooms:
    return Rooms(clock=clock)


def test_join_sends_welcome_then_notice(room: Rooms) -> None:
    ann = Seat(room)
    room.join(ann.member, "Ann")
    assert ann.take() == [
        {"type": "welcome", "room": "#lobby", "user": "Ann", "users": ["Ann"], "topic": "",
         "clients_count": 1, "max_text": 4096},
        {"type": "system", "room": "#lobby", "event": "join", "user": "System", "name": "Ann",
         "text": "Ann joined the chat", "clients_count": 1, "timestamp": "T"},
    ]
    bob = Seat(room)
    room.join(bob.member, "Bob")
    assert bob.take()[0]["users"] == ["Ann", "Bob"]
    assert [m["name"] for m in ann.take()] == ["Bob"]
    assert room.names == ["Ann", "Bob"] and len(room) == 2


def test_names_are_unique_case_insensitively(room: Rooms) -> None:
    ann = Seat(room)
    room.join(ann.member, "Ann")
    other = Seat(room)
    with pytest.raises(ProtocolError) as info:
        room.join(other.member, "aNN")
    assert info.value.code == "name_taken"
    assert not other.member.joined and other.take() == []
    assert room.names == ["Ann"]


def test_rename(room: Rooms) -> None:
    ann, bob = Seat(room), Seat(room)
    room.join(ann.member, "Ann")
    room.join(bob.member, "Bob")
    ann.take()
    bob.take()
    room.join(bob.member, "Rob")
    assert bob.take()[0] == {"type": "welcome", "room": "#lobby", "user": "Rob",
                             "users": ["Ann", "Rob"], "topic": "", "clients_count": 2,
                             "max_text": 4096}
    notice = ann.take()[0]
    assert notice["event"] == "rename" and notice["old"] == "Bob" and notice["name"] == "Rob"
    # The old name is free again; a change of case only is allowed for the holder.
    room.join(Seat(room).member, "Bob")
    room.join(ann.member, "ANN")
    assert "ANN" in room.names


def test_chat_fans_out_to_everyone_in_order(room: Rooms) -> None:
    seats = [Seat(room) for _ in range(5)]
    for i, seat in enumerate(seats):
        room.join(seat.member, f"u{i}")
    for seat in seats:
        seat.take()
    for n in range(20):
        room.say(seats[n % 2].member, f"m{n}")
    for seat in seats:
        got = seat.take()
        assert [(m["user"], m["text"]) for m in got] == [
            (f"u{n % 2}", f"m{n}") for n in range(20)
        ]


def test_unjoined_members_get_nothing(room: Rooms) -> None:
    ann, lurker = Seat(room), Seat(room)
    room.join(ann.member, "Ann")
    room.say(ann.member, "hi")
    assert lurker.take() == []


def test_leave_is_announced_to_the_others(room: Rooms) -> None:
    ann, bob = Seat(room), Seat(room)
    room.join(ann.member, "Ann")
    room.join(bob.member, "Bob")
    ann.take()
    room.leave(bob.member)
    assert ann.take() == [{"type": "system", "room": "#lobby", "event": "leave",
                           "user": "System", "name": "Bob",
                           "text": "Bob left the chat", "clients_count": 1, "timestamp": "T"}]
    room.leave(bob.member)  # twice is harmless
    assert ann.take() == []


def test_broadcast_never_blocks_and_evicts_a_full_queue(room: Rooms) -> None:
    ann, slow = Seat(room), Seat(room, queue=4)
    room.join(ann.member, "Ann")
    room.join(slow.member, "Slow")
    for n in range(10):  # synchronous: this cannot await anybody
        room.say(ann.member, f"m{n}")
    assert slow.evictions == 1
    assert slow.member.evicted == "slow_consumer"
    assert room.names == ["Ann"]
    got = ann.take()
    leave = [m for m in got if m["type"] == "system" and m["event"] == "leave"]
    assert [m["name"] for m in leave] == ["Slow"]
    assert [m["text"] for m in got if m["type"] == "chat"] == [f"m{n}" for n in range(10)]


def test_mass_eviction_is_not_recursive(room: Rooms) -> None:
    speaker = Seat(room, queue=100_000)
    room.join(speaker.member, "Speaker")
    n = 1200  # deeper than the recursion limit allows, were eviction recursive
    # Seat i receives its welcome and the join notices of seats i..n-1: exactly full.
    slow = [Seat(room, queue=2 + (n - 1 - i)) for i in range(n)]
    for i, seat in enumerate(slow):
        room.join(seat.member, f"s{i}")
    assert len(room) == n + 1
    room.say(speaker.member, "boom")  # every slow queue overflows at once
    assert room.names == ["Speaker"]
    assert all(seat.member.evicted == "slow_consumer" for seat in slow)


def test_who_is_encoded_once_per_change_of_membership(room: Rooms) -> None:
    ann, bob = Seat(room), Seat(room)
    room.join(ann.member, "Ann")
    first = room.who()
    lobby = {"type": "users", "room": "#lobby"}
    assert json.loads(first) == {**lobby, "users": ["Ann"], "clients_count": 1}
    assert first == protocol.encode({**lobby, "users": ["Ann"], "clients_count": 1})
    assert room.who() is first  # asked again: the same object, no new copy queued
    room.join(bob.member, "Bob")
    assert json.loads(room.who())["users"] == ["Ann", "Bob"]
    room.join(ann.member, "Anna")  # a rename moves the name to the end
    assert json.loads(room.who()) == {**lobby, "users": ["Bob", "Anna"], "clients_count": 2}
    room.leave(bob.member)
    assert json.loads(room.who()) == {**lobby, "users": ["Anna"], "clients_count": 1}
