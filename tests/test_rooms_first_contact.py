"""Rooms (issue 16) with first contact and resumes (issues 14 and 15): a resumed seat
gets back every room it was in, a held seat leaves every room when its grace ends,
listeners hear ``#lobby`` only, and a seed-style variant or ``name_taken`` counts
names in every room. Over TCP and WebSocket against a real server, and on memory
streams with a virtual clock where the grace must run out."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio
import trio.testing

from tests.support.clients import (
    KINDS,
    OTHER,
    Client,
    chat_client,
    enter,
    named,
    replay_after,
    said,
)
from tests.support.config import TEST_CONFIG
from tests.support.memory import memory_tcp
from tests.support.seats import Seat
from tests.support.tcp import Message
from tests.support.waits import VIRTUAL_WAIT, until
from trio_chat import Bound, Config
from trio_chat.server.rooms import Rooms


@pytest.fixture
def config() -> Config:
    return replace(TEST_CONFIG, room_create_rate=0)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_resumed_seat_gets_back_every_room_it_was_in(server: Bound, kind: str) -> None:
    async with chat_client(server, OTHER[kind]) as bob:
        await named(bob, "Bob")
        await enter(bob, "#dev")
        async with chat_client(server, kind) as ann:
            await named(ann, "Ann")
            _, _, _ = await enter(ann, "#dev")
            await bob.recv_until(type="system", event="join", room="#dev", name="Ann")
            seen = await said(ann, "#dev", "before")
            await bob.recv_until(type="chat", text="before")
            token = (await enter(ann, "#ops"))[0]["resume"]
        # Lost without a leave: held in #lobby, #dev and #ops; Bob is told nothing.
        await bob.send({"type": "who", "room": "#dev"})
        assert (await bob.recv_until(type="users"))["users"] == ["Bob", "Ann"]
        missed = await said(bob, "#dev", "while away")
        async with chat_client(server, kind) as again:
            await again.send({"type": "join", "user": "Ann", "resume": token,
                              "since": seen["id"]})
            rooms = []
            for _ in range(3):  # every room, in the order she entered them
                welcome = await again.recv()
                assert welcome["type"] == "welcome" and welcome["user"] == "Ann", welcome
                _, chats, end = await replay_after(again, welcome)
                rooms.append((welcome["room"], [m["text"] for m in chats], end["last_id"]))
                assert welcome["resume"] != token
            assert rooms == [("#lobby", [], 0), ("#dev", ["while away"], missed["id"]),
                             ("#ops", [], 0)]
            # She is in #dev without joining it again; nobody saw a notice.
            await said(again, "#dev", "back")
            assert [m["type"] for m in await _until(bob, "back")] == ["chat"]


async def _until(client: Client, text: str) -> list[Message]:
    """What ``client`` receives up to the chat ``text`` (included)."""
    got: list[Message] = []
    while not got or got[-1].get("text") != text:
        got.append(await client.recv())
    return got


async def test_a_held_seat_leaves_every_room_when_its_grace_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rooms = Rooms(config=Config(room_create_rate=0), resume_grace=5)
    await nursery.start(rooms.run_seats)
    bob = Seat(rooms, "Bob")
    rooms.join(bob.member, room="#dev")
    ann = memory_tcp(nursery, rooms, Config())
    await ann.send({"type": "join", "user": "Ann", "room": "#dev"})
    await ann.recv_until(type="system", event="join")
    await ann.send({"type": "join", "room": "#lobby"})
    await ann.recv_until(type="system", event="join", room="#lobby")
    bob.take()
    await ann.aclose()
    lost = trio.current_time()
    await trio.sleep(4)
    assert bob.take() == []  # held: nothing yet
    assert len(rooms.seats.held()) == 1
    await trio.sleep(2)
    leaves = [(m["room"], m["name"]) for m in bob.take() if m.get("event") == "leave"]
    assert sorted(leaves) == [("#dev", "Ann"), ("#lobby", "Ann")]
    assert trio.current_time() - lost >= 5
    assert rooms.user("Ann") is None


async def test_a_listener_hears_the_lobby_only_and_joins_any_room(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rooms = Rooms(config=Config(room_create_rate=0))
    bob = Seat(rooms, "Bob")
    rooms.join(bob.member, room="#dev")
    nc = memory_tcp(nursery, rooms, Config())
    await nc.send_raw(b"/listen\n")
    await until(lambda: rooms.listeners == 1, VIRTUAL_WAIT)
    rooms.say(bob.member, "in the lobby")
    rooms.say(bob.member, "in dev", "#dev")
    heard = await nc.recv()
    assert (heard["room"], heard["text"]) == ("#lobby", "in the lobby")
    # A listener is nobody: not counted in #lobby, nor in #dev.
    assert rooms.lobby.count == 1 and rooms.listeners == 1
    # It joins a room other than #lobby: it stops listening, and hears #lobby no more.
    await nc.send({"type": "join", "user": "Ann", "room": "#dev"})
    welcome = await nc.recv_until(type="welcome")
    assert welcome["room"] == "#dev" and welcome["users"] == ["Bob", "Ann"]
    assert rooms.listeners == 0
    rooms.say(bob.member, "lobby again")
    rooms.say(bob.member, "dev again", "#dev")
    got = await nc.recv_until(type="chat")
    assert (got["room"], got["text"]) == ("#dev", "dev again")


async def test_a_seed_style_variant_and_name_taken_count_every_room(
    nursery: trio.Nursery,
) -> None:
    rooms = Rooms(config=Config(room_create_rate=0))
    ann = Seat(rooms, "Ann")
    rooms.part(ann.member, "#lobby")
    rooms.join(ann.member, room="#dev")  # Ann is in #dev only
    # A v1 join of her name: name_taken, saying it is held in another room.
    v1 = memory_tcp(nursery, rooms, Config())
    await v1.send({"type": "join", "user": "ann"})
    taken = await v1.recv()
    assert taken["code"] == "name_taken" and "another room" in taken["text"]
    # A seed-style client cannot choose: it joins #lobby as a variant, told so first.
    seed = memory_tcp(nursery, rooms, Config())
    await seed.send({"type": "chat", "user": "Ann", "text": "hello"})
    told = await seed.recv()
    assert (told["event"], told["name"], told["room"]) == ("variant", "Ann2", "#lobby")
    assert (await seed.recv())["event"] == "join"
    assert (await seed.recv_until(type="chat"))["user"] == "Ann2"
