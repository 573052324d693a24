"""Rooms and direct messages across servers (``--redis``, issue 16), against a real
redis-server: rooms, their members, topics, parts and renames seen from every server,
direct messages from one server to another with their echo, and a server that reads
only the streams of the rooms its own members are in. Waits are bounds, never sleeps.
"""

from __future__ import annotations

import pytest

from tests.support.clients import enter, replay_after, said
from tests.support.cluster import node, token_in_redis, ws
from tests.support.redis import RedisServer
from tests.support.tcp import TcpClient
from tests.support.waits import until
from trio_chat import Config
from trio_chat.cluster import Cluster


@pytest.fixture
def config(redis_server: RedisServer) -> Config:
    return Config(tcp_port=0, ws_port=0, rate_limit=0, redis=redis_server.url,
                  presence_ttl=60.0, room_create_rate=0)  # a stall gives no server up


def members(cluster: Cluster, room: str) -> int:
    """How many members ``room`` has on every server, as ``cluster`` knows it."""
    found = cluster.rooms.room(room)
    return found.count if found is not None else 0


async def test_rooms_members_topics_parts_and_renames_span_servers(config: Config) -> None:
    async with (
        node(config) as (ca, a),
        node(config) as (cb, b),
        await TcpClient.connect(a.tcp_port) as alice,
        await TcpClient.connect(a.tcp_port) as carol,
        ws(b.ws_port) as bob,
    ):
        await alice.join("alice")
        await carol.join("carol")
        await bob.join("bob")
        await enter(alice, "#dev")
        await until(lambda: members(cb, "#dev") == 1)
        # B lists the room created on A, with its member there.
        await bob.send({"type": "rooms"})
        listed = {r["room"]: r["users"] for r in (await bob.recv_until(type="rooms"))["rooms"]}
        assert listed == {"#lobby": 3, "#dev": 1}
        welcome, _, _ = await enter(bob, "#DEV")
        assert welcome["room"] == "#dev" and sorted(welcome["users"]) == ["alice", "bob"]
        assert welcome["clients_count"] == 2
        notice = await alice.recv_until(type="system", event="join", room="#dev")
        assert (notice["name"], notice["text"], notice["clients_count"]) == (
            "bob", "bob joined #dev", 2)
        # Messages cross, with one sequence of ids; #lobby's members see none of it.
        one = await said(alice, "#dev", "from A")
        assert (await bob.recv_until(type="chat", text="from A"))["id"] == one["id"]
        two = await said(bob, "#dev", "from B")
        assert (await alice.recv_until(type="chat", text="from B"))["id"] == two["id"] > one["id"]
        await bob.send({"type": "who", "room": "#dev"})
        who = await bob.recv_until(type="users", room="#dev")
        assert sorted(who["users"]) == ["alice", "bob"] and who["clients_count"] == 2
        # A topic set on B reaches A's members, and A's rooms list.
        await bob.send({"type": "topic", "room": "#dev", "topic": "release on Friday"})
        topic = await alice.recv_until(type="system", event="topic")
        assert (topic["room"], topic["topic"], topic["name"]) == ("#dev", "release on Friday",
                                                                  "bob")
        await carol.send({"type": "rooms"})
        listed = {r["room"]: r["topic"] for r in (await carol.recv_until(type="rooms"))["rooms"]}
        assert listed["#dev"] == "release on Friday"
        # A rename on B is announced in each of its rooms, on A too.
        await bob.send({"type": "join", "user": "rob"})
        renamed = {(await alice.recv_until(type="system", event="rename"))["room"]
                   for _ in range(2)}
        assert renamed == {"#lobby", "#dev"}
        # A part on A: B's member of #dev sees it; carol (not in #dev) does not.
        await alice.send({"type": "part", "room": "#dev"})
        left = await bob.recv_until(type="system", event="leave", room="#dev")
        assert (left["name"], left["clients_count"]) == ("alice", 1)
        await carol.send({"type": "chat", "text": "lobby marker"})
        seen = []
        while (message := await carol.recv())["type"] != "chat":
            seen.append(message)
        assert all(m.get("room") != "#dev" for m in seen)
        # Leaving the server leaves every room on the others.
        await bob.send({"type": "leave"})
        await until(lambda: members(ca, "#dev") == 0)


async def test_a_direct_message_reaches_a_user_on_another_server(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as bob,
    ):
        await alice.join("alice")
        # At once, before A may have heard of bob: Redis knows where the name is.
        await bob.join("bob")
        await alice.send({"type": "msg", "to": "bob", "text": "across"})
        got = await bob.recv_until(type="msg")
        echo = await alice.recv_until(type="msg")
        assert got == echo
        assert (got["from"], got["to"], got["text"]) == ("alice", "bob", "across")
        assert isinstance(got["id"], int)
        # Ids are the rooms' sequence: a chat after it has a higher one.
        chat = await said(bob, "#lobby", "after")
        assert chat["id"] > got["id"]
        # Back the other way, and to a name nobody has.
        await bob.send({"type": "msg", "to": "ALICE", "text": "back"})
        assert (await alice.recv_until(type="msg"))["text"] == "back"
        assert (await bob.recv_until(type="msg"))["to"] == "alice"
        await alice.send({"type": "msg", "to": "nobody", "text": "?"})
        assert (await alice.recv_until(type="error"))["code"] == "no_such_user"
        # A look-alike is not that user (B0b is not bob).
        await alice.send({"type": "msg", "to": "B0b", "text": "?"})
        assert (await alice.recv_until(type="error"))["code"] == "no_such_user"


async def test_a_server_reads_only_the_rooms_its_members_are_in(config: Config) -> None:
    async with (
        node(config) as (ca, a),
        node(config) as (cb, b),
        await TcpClient.connect(a.tcp_port) as ann,
        ws(b.ws_port) as bob,
    ):
        await ann.join("ann")
        await bob.join("bob")
        await enter(ann, "#ops")
        await enter(ann, "#dev")
        await enter(bob, "#dev")
        await until(lambda: members(ca, "#dev") == 2)
        reads_before = cb.rooms.metrics.cluster_reads["rooms"]
        for n in range(5):
            await said(ann, "#ops", f"ops {n}")
        await said(ann, "#dev", "dev only")
        await bob.recv_until(type="chat", text="dev only")
        # B read #dev's one message and none of #ops's; A read all six.
        assert cb.rooms.metrics.cluster_reads["rooms"] - reads_before == 1
        assert ca.rooms.metrics.cluster_reads["rooms"] >= 6
        assert (ca.rooms.metrics.cluster_streams, cb.rooms.metrics.cluster_streams) == (3, 2)
        # Its last member there parts: B reads #dev no more.
        await bob.send({"type": "part", "room": "#dev"})
        await bob.recv_until(type="system", event="leave", room="#dev")
        assert cb.rooms.metrics.cluster_streams == 1
        await said(ann, "#dev", "unheard on B")
        await said(ann, "#lobby", "heard on B")
        await bob.recv_until(type="chat", text="heard on B")
        assert cb.rooms.metrics.cluster_reads["rooms"] - reads_before == 1
        # A replay of a room this server does not read comes from Redis.
        welcome, replayed, end = await enter(bob, "#ops")
        assert [m["text"] for m in replayed] == [f"ops {n}" for n in range(5)]
        assert welcome["users"] == ["bob", "ann"] or sorted(welcome["users"]) == ["ann", "bob"]
        await said(ann, "#ops", "live on B")
        assert (await bob.recv_until(type="chat", text="live on B"))["room"] == "#ops"
        assert end["last_id"] >= replayed[-1]["id"]


async def test_a_seat_resumed_on_another_server_gets_back_its_rooms(config: Config) -> None:
    async with (
        node(config) as (ca, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as carol,
    ):
        await carol.join("carol")
        await enter(carol, "#dev")
        async with await TcpClient.connect(a.tcp_port) as ann:
            await ann.join("ann")
            token = (await enter(ann, "#dev"))[0]["resume"]
            await carol.recv_until(type="system", event="join", room="#dev", name="ann")
            seen = await said(ann, "#dev", "one")
        await token_in_redis(config, token)
        missed = await said(carol, "#dev", "two")
        # Back on B: the seat moves there with both rooms, and nobody is told.
        async with ws(b.ws_port) as again:
            await again.send({"type": "join", "user": "ann", "resume": token,
                              "since": seen["id"]})
            got = {}
            for _ in range(2):
                welcome = await again.recv_until(type="welcome")
                _, chats, _ = await replay_after(again, welcome)
                got[welcome["room"]] = [m["text"] for m in chats]
            # What she missed comes in #dev's replay (B reads #dev from where its
            # stream ended when the resume was prepared), and nothing else.
            assert got == {"#lobby": [], "#dev": ["two"]}
            assert missed["room"] == "#dev"
            await said(again, "#dev", "three")
            quiet = []
            while (message := await carol.recv())["type"] != "chat":
                quiet.append(message)
            assert message["text"] == "three" and quiet == []
            await until(lambda: members(ca, "#dev") == 2)


async def test_names_are_unique_across_servers_and_rooms(config: Config) -> None:
    async with (
        node(config) as (ca, a),
        node(config) as (_, b),
        ws(b.ws_port) as bob,
    ):
        await bob.join("Bob")
        await enter(bob, "#dev")
        await bob.send({"type": "part", "room": "#lobby"})
        await bob.recv_until(type="system", event="leave", room="#lobby")
        await until(lambda: members(ca, "#dev") == 1 and members(ca, "#lobby") == 0)
        async with await TcpClient.connect(a.tcp_port) as other:
            await other.send({"type": "join", "user": "bob", "room": "#ops"})
            error = await other.recv()
            assert error["code"] == "name_taken" and "another room" in error["text"]
            assert (await other.join("Rob"))["user"] == "Rob"
