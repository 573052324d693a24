"""Rooms and direct messages (issue 16), every row of the protocol's tables, over TCP
and WebSocket against a real server on loopback ports.

Each case runs over both transports (``kind``); a second client, when it needs one, is
on the other transport, so every case also crosses them.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import trio

from tests.support.clients import KINDS, OTHER, Client, chat_client, enter, named
from tests.support.config import TEST_CONFIG
from tests.support.tcp import Message, TcpClient
from trio_chat import Bound, Config, serve

pytestmark = pytest.mark.parametrize("kind", KINDS)


@pytest.fixture
def config() -> Config:
    # Rooms are created freely here; the per-address rate is tested on its own.
    return replace(TEST_CONFIG, room_create_rate=0)


async def error(client: Client, message: dict[str, object]) -> Message:
    await client.send(message)
    answer = await client.recv_until(type="error")
    return answer


async def test_join_a_room_when_named_creates_it(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob")
        welcome, chats, end = await enter(ann, "#dev")
        # Every welcome carries the connection's current resume token.
        assert isinstance(welcome.pop("resume"), str)
        assert welcome == {"type": "welcome", "room": "#dev", "user": "Ann", "users": ["Ann"],
                           "topic": "", "clients_count": 1, "max_text": 4096}
        assert chats == [] and end == {"type": "history_end", "room": "#dev", "last_id": 0}
        # Another member of #lobby sees nothing of it; a second joiner sees both.
        welcome, _, _ = await enter(bob, "#DEV")  # case-insensitive: the same room
        assert welcome["room"] == "#dev" and welcome["users"] == ["Ann", "Bob"]
        assert welcome["clients_count"] == 2
        notice = await ann.recv_until(type="system", event="join", room="#dev")
        assert notice["name"] == "Bob" and notice["text"] == "Bob joined #dev"
        assert notice["clients_count"] == 2  # the room's members, not the server's


async def test_join_with_a_name_and_a_room_enters_that_room_instead_of_the_lobby(
    server: Bound, kind: str
) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(bob, "Bob")
        welcome, _, end = await enter(ann, "#dev", user="Ann")
        assert welcome["room"] == "#dev" and welcome["user"] == "Ann"
        assert end["room"] == "#dev"
        await bob.send({"type": "who"})
        assert (await bob.recv_until(type="users"))["users"] == ["Bob"]  # not in #lobby
        await ann.send({"type": "chat", "text": "lobby?"})
        assert (await ann.recv_until(type="error"))["code"] == "not_in_room"


async def test_since_works_per_room(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann:
        await named(ann, "Ann")
        await enter(ann, "#dev")
        for room, text in [("#dev", "d1"), ("#lobby", "l1"), ("#dev", "d2"), ("#lobby", "l2")]:
            await ann.send({"type": "chat", "room": room, "text": text})
            await ann.recv_until(type="chat", text=text)
    async with chat_client(server, OTHER[kind]) as bob:
        await named(bob, "Bob")
        _, chats, end = await enter(bob, "#dev", since=0)
        assert [(c["room"], c["id"], c["text"]) for c in chats] == [("#dev", 1, "d1"),
                                                                     ("#dev", 3, "d2")]
        assert end["last_id"] == 3  # the newest id in that room
        await bob.send({"type": "part", "room": "#dev"})
        await bob.recv_until(type="system", event="leave", room="#dev")
        _, chats, _ = await enter(bob, "#dev", since=1)
        assert [c["text"] for c in chats] == ["d2"]


async def test_part_leaves_one_room_and_the_connection_stays(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob")
        await enter(ann, "#dev")
        await enter(bob, "#dev")
        await ann.recv_until(type="system", event="join", room="#dev", name="Bob")
        await bob.send({"type": "part", "room": "#dev"})
        seen = await ann.recv_until(type="system", event="leave")
        assert seen["room"] == "#dev" and seen["name"] == "Bob"
        assert seen["text"] == "Bob left #dev" and seen["clients_count"] == 1
        own = await bob.recv_until(type="system", event="leave")  # the part is done
        assert own["room"] == "#dev" and own["name"] == "Bob"
        await bob.send({"type": "chat", "text": "still here"})  # #lobby, as v1
        msg = await ann.recv_until(type="chat")
        assert (msg["room"], msg["user"], msg["text"]) == ("#lobby", "Bob", "still here")
        assert (await error(bob, {"type": "part", "room": "#dev"}))["code"] == "not_in_room"
        assert (await error(bob, {"type": "part", "room": "#nowhere"}))["code"] == "not_in_room"
        assert (await error(bob, {"type": "part"}))["code"] == "missing_field"


async def test_chat_in_a_room_goes_to_its_members_only(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob")
        await enter(ann, "#dev")
        await ann.send({"type": "chat", "room": "#dev", "text": "dev only"})
        mine = await ann.recv_until(type="chat")
        assert mine == {"type": "chat", "room": "#dev", "id": 1, "user": "Ann",
                        "text": "dev only", "timestamp": mine["timestamp"]}
        await ann.send({"type": "chat", "text": "everyone"})
        # Bob is not in #dev: the first chat he gets is the #lobby one.
        msg = await bob.recv_until(type="chat")
        assert (msg["room"], msg["id"], msg["text"]) == ("#lobby", 2, "everyone")
        answer = await error(bob, {"type": "chat", "room": "#dev", "text": "let me in"})
        assert answer["code"] == "not_in_room" and "#dev" in answer["text"]


async def test_direct_messages(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob Lee")
        await enter(bob, "#elsewhere")
        await bob.send({"type": "part", "room": "#lobby"})  # in no room Ann is in
        await bob.recv_until(type="system", event="leave", room="#lobby")
        await ann.send({"type": "chat", "text": "before"})
        before = (await ann.recv_until(type="chat"))["id"]
        await ann.send({"type": "msg", "to": "bob lee", "text": "hi"})  # any case
        got = await bob.recv_until(type="msg")
        assert got == {"type": "msg", "id": before + 1, "from": "Ann", "to": "Bob Lee",
                       "text": "hi", "timestamp": got["timestamp"]}
        assert await ann.recv_until(type="msg") == got  # the echo, the same message
        await ann.send({"type": "chat", "text": "after"})
        assert (await ann.recv_until(type="chat"))["id"] == before + 2  # one sequence
        # To oneself: once.
        await ann.send({"type": "msg", "to": "Ann", "text": "note to self"})
        await ann.send({"type": "ping"})
        assert (await ann.recv_until(type="msg"))["text"] == "note to self"
        assert await ann.recv() == {"type": "pong"}
        answer = await error(ann, {"type": "msg", "to": "Nobody", "text": "hello?"})
        assert answer["code"] == "no_such_user" and "Nobody" in answer["text"]
        answer = await error(ann, {"type": "msg", "to": "B0b Lee", "text": "look-alike"})
        assert answer["code"] == "no_such_user"  # a look-alike is not that user
        assert (await error(ann, {"type": "msg", "to": "Bob Lee"}))["code"] == "missing_field"
        assert (await error(ann, {"type": "msg", "text": "x"}))["code"] == "missing_field"
    async with chat_client(server, kind) as cy:
        # Not stored: a replay from the start has the chats, not the message.
        await named(cy, "Cy")
        _, chats, _ = await enter(cy, "#lobby", since=0, again=True)
        assert [c["text"] for c in chats] == ["before", "after"]
    async with chat_client(server, kind) as anon:  # before joining: no name to send from
        answer = await error(anon, {"type": "msg", "to": "Cy", "text": "hi"})
        assert answer["code"] == "not_joined"


async def test_rooms_lists_every_room_with_its_members_and_topic(
    server: Bound, kind: str
) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await ann.send({"type": "rooms"})  # works before joining
        assert await ann.recv_until(type="rooms") == {
            "type": "rooms", "rooms": [{"room": "#lobby", "users": 0, "topic": ""}], "total": 1
        }
        await named(ann, "Ann")
        await named(bob, "Bob")
        await enter(ann, "#Dev")
        await enter(bob, "#dev")
        await ann.send({"type": "topic", "room": "#dev", "topic": "release on Friday"})
        await ann.recv_until(type="system", event="topic")  # (a new list: a new topic)
        await bob.send({"type": "rooms"})
        assert (await bob.recv_until(type="rooms"))["rooms"] == [
            {"room": "#Dev", "users": 2, "topic": "release on Friday"},  # as first created
            {"room": "#lobby", "users": 2, "topic": ""},
        ]


async def test_who_in_a_room(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob")
        await enter(bob, "#dev")
        await ann.send({"type": "who", "room": "#dev"})  # not a member: rooms are public
        assert await ann.recv_until(type="users") == {
            "type": "users", "room": "#dev", "users": ["Bob"], "clients_count": 1
        }
        await ann.send({"type": "who"})
        assert await ann.recv_until(type="users") == {
            "type": "users", "room": "#lobby", "users": ["Ann", "Bob"], "clients_count": 2
        }
        await ann.send({"type": "who", "room": "#empty"})
        assert await ann.recv_until(type="users") == {
            "type": "users", "room": "#empty", "users": [], "clients_count": 0
        }


async def test_topic(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob")
        await enter(ann, "#dev")
        await enter(bob, "#dev")
        await bob.send({"type": "topic", "room": "#dev", "topic": "  release on Friday "})
        for client in (ann, bob):
            notice = await client.recv_until(type="system", event="topic")
            assert notice == {
                "type": "system", "room": "#dev", "event": "topic", "user": "System",
                "name": "Bob", "text": "Bob set the topic of #dev: release on Friday",
                "clients_count": 2, "timestamp": notice["timestamp"],
                "topic": "release on Friday",
            }
    async with chat_client(server, kind) as cy:
        await named(cy, "Cy")
        welcome, _, _ = await enter(cy, "#dev")
        assert welcome["topic"] == "release on Friday"
        assert (await error(cy, {"type": "topic", "room": "#other", "topic": "x"}))["code"] \
            == "not_in_room"
        answer = await error(cy, {"type": "topic", "room": "#dev", "topic": "x" * 257})
        assert answer["code"] == "too_long"
        await cy.send({"type": "topic", "room": "#dev", "topic": ""})
        notice = await cy.recv_until(type="system", event="topic")
        assert notice["topic"] == "" and notice["text"] == "Cy cleared the topic of #dev"
        # #lobby has a topic too, any member may set it.
        await cy.send({"type": "topic", "room": "#lobby", "topic": "welcome all"})
        assert (await cy.recv_until(type="system", event="topic"))["room"] == "#lobby"


async def test_ids_are_one_sequence_across_rooms(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann:
        await named(ann, "Ann")
        await enter(ann, "#a")
        await enter(ann, "#b")
        ids = []
        for n in range(9):
            room = ("#lobby", "#a", "#b")[n % 3]
            await ann.send({"type": "chat", "room": room, "text": f"m{n}"})
            msg = await ann.recv_until(type="chat", text=f"m{n}")
            assert msg["room"] == room
            ids.append(msg["id"])
        assert ids == list(range(1, 10))
        _, chats, end = await enter(ann, "#b", since=0, again=True)  # a resync
        assert [c["id"] for c in chats] == [3, 6, 9] and end["last_id"] == 9
        _, chats, end = await enter(ann, "#a", since=0, again=True)
        assert [c["id"] for c in chats] == [2, 5, 8] and end["last_id"] == 8


async def test_a_rename_is_announced_in_every_room_once(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob")
        for room in ("#a", "#b"):
            await enter(ann, room)
            await enter(bob, room)
        await bob.send({"type": "join", "user": "Rob"})
        welcomes = [await bob.recv_until(type="welcome") for _ in range(3)]
        assert [w["room"] for w in welcomes] == ["#lobby", "#a", "#b"]
        assert all(w["user"] == "Rob" and "Rob" in w["users"] for w in welcomes)
        renames = []
        await ann.send({"type": "ping"})
        while (msg := await ann.recv())["type"] != "pong":
            if msg.get("event") == "rename":
                renames.append((msg["room"], msg["old"], msg["name"]))
        assert renames == [("#lobby", "Bob", "Rob"), ("#a", "Bob", "Rob"), ("#b", "Bob", "Rob")]


async def test_room_names_are_checked(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann:
        await named(ann, "Ann")
        for bad in ["dev", "#", "#" + "x" * 33, "#dé", "#a b", "#a/b", "", 5, ["#dev"]]:
            answer = await error(ann, {"type": "join", "room": bad})
            assert answer["code"] == "room_invalid", bad
        for field in ("chat", "who", "part", "topic"):
            answer = await error(ann, {"type": field, "room": "no#", "text": "x", "topic": "x"})
            assert answer["code"] == "room_invalid", field
        welcome, _, _ = await enter(ann, "#" + "Az09_-." * 4 + "abcd")
        assert welcome["room"] == "#" + "Az09_-." * 4 + "abcd"


async def test_too_many_rooms_for_one_connection(nursery: trio.Nursery, kind: str) -> None:
    config = replace(TEST_CONFIG, room_create_rate=0, max_rooms_per_connection=3)
    bound = await nursery.start(partial(serve, config))
    async with chat_client(bound, kind) as ann:
        await named(ann, "Ann")  # #lobby is one
        await enter(ann, "#a")
        await enter(ann, "#b")
        answer = await error(ann, {"type": "join", "room": "#c"})
        assert answer["code"] == "too_many_rooms"
        await ann.send({"type": "rooms"})  # and #c was not created
        assert [r["room"] for r in (await ann.recv_until(type="rooms"))["rooms"]] == [
            "#a", "#b", "#lobby"
        ]
        await enter(ann, "#a", again=True)  # one it is in: fine
        await ann.send({"type": "part", "room": "#b"})
        await ann.recv_until(type="system", event="leave", room="#b")
        await enter(ann, "#c")


async def test_too_many_rooms_on_the_server(nursery: trio.Nursery, kind: str) -> None:
    config = replace(TEST_CONFIG, room_create_rate=0, max_rooms=3)
    bound = await nursery.start(partial(serve, config))
    async with chat_client(bound, kind) as ann, chat_client(bound, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await enter(ann, "#a")
        await enter(ann, "#b")
        answer = await error(ann, {"type": "join", "room": "#c"})
        assert answer["code"] == "too_many_rooms" and "rooms" in answer["text"]
        # One that exists is still open to everyone; a refused first join leaves the
        # connection as it was (no name taken).
        answer = await error(bob, {"type": "join", "user": "Bob", "room": "#c"})
        assert answer["code"] == "too_many_rooms"
        await bob.send({"type": "who"})
        assert (await bob.recv_until(type="users"))["users"] == ["Ann"]
        await enter(bob, "#b", user="Bob")


async def test_creating_rooms_is_limited_per_address(nursery: trio.Nursery, kind: str) -> None:
    config = replace(TEST_CONFIG, room_create_rate=1, room_create_burst=2)
    bound = await nursery.start(partial(serve, config))
    async with chat_client(bound, kind) as ann, chat_client(bound, OTHER[kind]) as bob:
        await named(ann, "Ann")
        await named(bob, "Bob")
        await enter(ann, "#a")
        await enter(bob, "#b")  # the same address (127.0.0.1): its second
        answer = await error(bob, {"type": "join", "room": "#c"})
        assert answer["code"] == "too_many_rooms" and "address" in answer["text"]
        await enter(bob, "#a")  # joining one that exists costs nothing


async def test_v1_sessions_see_the_lobby_as_the_one_room(server: Bound, kind: str) -> None:
    """A client that never sends ``room``: join enters #lobby, chat and who mean
    #lobby, ``clients_count`` counts #lobby, and other rooms' traffic never reaches it."""
    async with chat_client(server, kind) as old, chat_client(server, OTHER[kind]) as new:
        welcome = await named(old, "Old")
        assert welcome["room"] == "#lobby" and welcome["user"] == "Old"
        await enter(new, "#dev", user="New")
        await new.send({"type": "chat", "room": "#dev", "text": "not for old"})
        await new.send({"type": "join", "room": "#lobby"})
        await old.recv_until(type="system", event="join", name="New")
        await new.send({"type": "chat", "room": "#lobby", "text": "for everyone"})
        msg = await old.recv_until(type="chat")
        assert msg["text"] == "for everyone" and msg["room"] == "#lobby"
        await old.send({"type": "who"})
        assert (await old.recv_until(type="users"))["clients_count"] == 2
        # A name held by someone in another room only: the error says so.
        async with chat_client(server, kind) as third:
            await enter(third, "#hidden", user="Hidden")
            answer = await error(old, {"type": "join", "user": "hidden"})
            assert answer["code"] == "name_taken" and "another room" in answer["text"]


async def test_nc_commands(server: Bound, kind: str) -> None:
    """The plain-text dialect's room commands (TCP only; ``kind`` crosses to the
    other client)."""
    async with await TcpClient.connect(server.tcp_port) as nc, \
            chat_client(server, kind) as bob:
        await named(bob, "Ann Lee")
        await nc.send_raw(b"/nick Bob\n")
        await nc.recv_until(type="system", event="join", name="Bob")
        await nc.send_raw(b"/join #dev\n")
        welcome = await nc.recv_until(type="welcome")
        assert welcome["room"] == "#dev"
        await nc.recv_until(type="system", event="join", room="#dev")
        await nc.send_raw(b"a plain line goes to the current room\n")
        msg = await nc.recv_until(type="chat")
        assert msg["room"] == "#dev"
        await nc.send_raw(b'/msg "Ann Lee" hi there\n')
        got = await bob.recv_until(type="msg")
        assert (got["from"], got["to"], got["text"]) == ("Bob", "Ann Lee", "hi there")
        await nc.send_raw(b"/topic release on Friday\n")
        assert (await nc.recv_until(type="system", event="topic"))["room"] == "#dev"
        await nc.send_raw(b"/who\n")
        assert (await nc.recv_until(type="users"))["room"] == "#dev"
        await nc.send_raw(b"/who #lobby\n")
        assert (await nc.recv_until(type="users"))["users"] == ["Ann Lee", "Bob"]
        await nc.send_raw(b"/rooms\n")
        assert (await nc.recv_until(type="rooms"))["total"] == 2
        await nc.send_raw(b"/join lobby\n")  # switch back (the # may be left out)
        assert (await nc.recv_until(type="welcome"))["room"] == "#lobby"
        await nc.send_raw(b"now in the lobby\n")
        assert (await bob.recv_until(type="chat"))["text"] == "now in the lobby"
        await nc.send_raw(b"/part #dev\n")
        assert (await nc.recv_until(type="system", event="leave"))["room"] == "#dev"
        await nc.send_raw(b"/part\n")  # the current room: #lobby
        assert (await nc.recv_until(type="system", event="leave"))["room"] == "#lobby"
        await nc.send_raw(b"into the void\n")
        answer = await nc.recv_until(type="error")
        assert answer["code"] == "not_in_room" and "/join" in answer["text"]
        for line, code in [(b"/join\n", "missing_field"), (b"/msg Bob\n", "missing_field"),
                           (b'/msg "Bob hi\n', "missing_field"), (b"/join #a b\n", "room_invalid"),
                           (b"/msg Nobody hi\n", "no_such_user")]:
            await nc.send_raw(line)
            assert (await nc.recv_until(type="error"))["code"] == code, line
