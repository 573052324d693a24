"""Join/leave notices: one by one in a quiet room, coalesced when a crowd arrives."""

from __future__ import annotations

from typing import Any

import trio

from tests.support.seats import Seat
from trio_chat.server.rooms import Rooms


def notices(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [
        (m["event"], m.get("name") or (m["joined"], m["left"]))
        for m in messages
        if m["type"] == "system"
    ]


async def test_quiet_room_announces_each_join(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
    await nursery.start(room.run_notices)
    ann, bob = Seat(room, "Ann"), Seat(room, "Bob")
    assert [m["type"] for m in ann.take()] == ["welcome", "system", "system"]
    bob_sees = bob.take()
    assert bob_sees[0]["type"] == "welcome"
    assert notices(bob_sees) == [("join", "Bob")]
    assert notices(ann.take()) == []


async def test_crowd_is_summarized_once_per_interval(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms(notice_rate=100, notice_interval=0.1)
    await nursery.start(room.run_notices)
    seats = [Seat(room, f"u{i}") for i in range(40)]
    # A budget of 10 deliveries per interval: notices to 1+2+3+4 members; the fifth
    # join is coalesced.
    first = seats[0].take()
    assert notices(first) == [("join", f"u{i}") for i in range(4)]
    for i, seat in enumerate(seats[4:], start=4):
        # A coalesced joiner still sees its welcome and its own join at once.
        own = seat.take()
        assert [m["type"] for m in own] == ["welcome", "system"]
        assert own[1]["event"] == "join" and own[1]["name"] == f"u{i}"
        assert own[1]["clients_count"] == i + 1
    await trio.sleep(0.15)  # past the interval end, when the summary goes out
    summary = seats[0].take()
    assert notices(summary) == [("summary", (36, 0))]
    assert summary[0]["clients_count"] == 40 and summary[0]["text"] == "36 joined"
    assert notices(seats[-1].take()) == [("summary", (36, 0))]

    # Still busy: leaves in the next interval are coalesced too. That interval is
    # 40 members / 100 deliveries per second = 0.4 s long (one summary per 0.4 s
    # keeps notices within the rate however big the room).
    for seat in seats[30:]:
        room.leave(seat.member)
    assert notices(seats[0].take()) == []
    await trio.sleep(0.3)
    assert notices(seats[0].take()) == []
    await trio.sleep(0.1)
    assert notices(seats[0].take()) == [("summary", (0, 10))]

    # After a quiet interval, notices go out one by one again.
    await trio.sleep(0.5)
    room.leave(seats[29].member)
    assert notices(seats[0].take()) == [("leave", "u29")]


async def test_without_the_notice_task_nothing_is_held_back() -> None:
    room = Rooms(notice_rate=1)
    seats = [Seat(room, f"u{i}") for i in range(5)]
    assert notices(seats[0].take()) == [("join", f"u{i}") for i in range(5)]


def test_welcome_lists_members_in_join_order_through_renames_and_leaves() -> None:
    """The room keeps the encoded user list; it must match a fresh encoding."""
    from trio_chat import protocol

    room = Rooms()
    seats = {name: Seat(room, name) for name in ["Ann", "Bø \"b\"", "Cy"]}
    room.leave(seats["Ann"].member)
    room.join(seats["Cy"].member, "Cyd")  # a rename moves Cyd to the end
    dee = Seat(room, "Dee")
    welcome = dee.take()[0]
    assert welcome["users"] == ['Bø "b"', "Cyd", "Dee"] == room.names
    assert welcome["clients_count"] == 3
    assert protocol.welcome("Dee", protocol.json_array(room.names), 3, 99) == protocol.encode(
        {"type": "welcome", "user": "Dee", "users": room.names, "clients_count": 3, "max_text": 99}
    )
