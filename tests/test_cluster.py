"""Cluster mode (``--redis``): several servers, one room, against a real redis-server.

In-process tests run two servers in this event loop (each with its own link to Redis);
the process tests run real ``trio-chat serve`` processes. Waits are bounds, never
sleeps: for a message, or for a link to come up.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import coredis
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.cluster import (
    chats,
    linked,
    node,
    relinking,
    resume,
    token_in_redis,
    unlinked,
    ws,
)
from tests.support.processes import server_process
from tests.support.redis import RedisServer, redis_server_or_skip
from tests.support.tcp import TcpClient, free_port
from tests.support.waits import WAIT, until
from trio_chat import Config
from trio_chat.cluster import PREFIX, Cluster, LinkState
from trio_chat.cluster import scripts as lua
from trio_chat.server.rooms import Rooms

TTL = 2.0  # --presence-ttl of the dead-server tests: its users leave within 1.25x
#: --presence-ttl of the in-process servers, which share one event loop: a loaded
#: machine that stalls this process past 1.25 x a short TTL would have one server give
#: the other up (its users "leave") in tests that are not about that.
LIVE_TTL = 60.0


@pytest.fixture
def config(redis_server: RedisServer) -> Config:
    return Config(tcp_port=0, ws_port=0, rate_limit=0, redis=redis_server.url,
                  presence_ttl=LIVE_TTL)


# ---------------------------------------------------------------- two servers, one room


async def test_tcp_on_one_server_and_websocket_on_another_share_the_room(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as bob,
    ):
        await alice.join("alice")
        await bob.join("bob")
        notice = await alice.recv_until(type="system", event="join", name="bob")
        assert notice["clients_count"] == 2
        await alice.send({"type": "chat", "text": "hello from TCP on A"})
        await bob.send({"type": "chat", "text": "hello from WS on B"})
        got_a = await chats(alice, 2)
        got_b = await chats(bob, 2)
        # One order and one id per message, whichever server delivers it.
        assert got_a == got_b
        assert {m["text"] for m in got_a} == {"hello from TCP on A", "hello from WS on B"}
        assert got_a[0]["id"] < got_a[1]["id"]
        await bob.send({"type": "who"})
        who = await bob.recv_until(type="users")
        assert sorted(who["users"]) == ["alice", "bob"] and who["clients_count"] == 2
        await alice.send({"type": "leave"})
        left = await bob.recv_until(type="system", event="leave")
        assert left["name"] == "alice" and left["clients_count"] == 1


async def test_names_are_unique_across_servers(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as alice,
    ):
        await alice.join("Alice")
        async with await TcpClient.connect(b.tcp_port) as other:
            await other.send({"type": "join", "user": "aLiCe"})
            error = await other.recv()
            assert error == {
                "type": "error", "code": "name_taken", "text": "name 'aLiCe' is taken"
            }
            # A seed-style first chat cannot choose another name: it joins as the first
            # free variant, claimed across servers too.
            async with await TcpClient.connect(b.tcp_port) as seed:
                await seed.send({"type": "chat", "user": "ALICE", "text": "hi"})
                told = await seed.recv_until(type="system", event="variant")
                assert (told["name"], told["wanted"]) == ("ALICE2", "ALICE")
                await seed.send({"type": "leave"})
                await seed.eof()
            await other.join("bob")
            # A rename is claimed across servers as well, and frees the old name.
            await other.send({"type": "join", "user": "alice"})
            assert (await other.recv_until(type="error"))["code"] == "name_taken"
            await other.send({"type": "join", "user": "carol"})
            await other.recv_until(type="welcome", user="carol")
            await alice.recv_until(type="system", event="rename", name="carol")
        await alice.send({"type": "join", "user": "bob"})  # bob is free again
        await alice.recv_until(type="welcome", user="bob")


async def test_look_alike_names_are_taken_across_servers(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as ann,
        await TcpClient.connect(b.tcp_port) as other,
    ):
        await ann.join("Ann")
        await other.send({"type": "join", "user": "\u13aann"})  # a Cherokee A
        error = await other.recv()
        assert error["code"] == "name_taken"
        await other.join("bob")
        await other.send({"type": "join", "user": "\uff21nn"})  # a fullwidth A
        assert (await other.recv())["code"] == "name_taken"


async def test_a_rename_welcome_lists_every_servers_users(config: Config) -> None:
    """Regression (issue 12): after a rename the welcome listed this server's users
    only, where a first join's lists the whole cluster."""
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as alice,
        await TcpClient.connect(b.tcp_port) as bob,
    ):
        await alice.join("alice")
        await bob.join("bob")
        await alice.recv_until(type="system", event="join", name="bob")
        await bob.send({"type": "join", "user": "robert"})
        welcome = await bob.recv_until(type="welcome", user="robert")
        assert sorted(welcome["users"]) == ["alice", "robert"]
        assert welcome["clients_count"] == 2
        assert welcome["max_text"] == config.max_text


async def test_a_name_is_free_on_another_server_once_its_holder_left(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(b.tcp_port) as watcher,
    ):
        await watcher.join("watcher")
        async with await TcpClient.connect(a.tcp_port) as alice:
            await alice.join("alice")
        # The leave and the release are one script call: once B has heard of the
        # leave, the name is free there.
        await watcher.recv_until(type="system", event="leave", name="alice")
        async with await TcpClient.connect(b.tcp_port) as again:
            await again.join("alice")


async def test_a_seed_style_client_on_one_server_reaches_the_other(config: Config) -> None:
    """The lab report's client never joins: it names itself in each chat."""
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as seed,
    ):
        await alice.join("alice")
        await seed.send({"type": "chat", "user": "lab", "text": "hello"})
        echo = await seed.recv_until(type="chat")
        assert (echo["user"], echo["text"]) == ("lab", "hello") and echo["id"] > 0
        # The chat and the join notice travel on two streams: either may come first.
        seen = [await alice.recv() for _ in range(2)]
        assert echo in seen
        assert any(m.get("event") == "join" and m.get("name") == "lab" for m in seen), seen
        await alice.send({"type": "who"})
        assert sorted((await alice.recv_until(type="users"))["users"]) == ["alice", "lab"]


async def test_replay_and_since_resume_on_any_server(config: Config) -> None:
    config = replace(config, history_replay=3)
    async with node(config) as (_, a), node(config) as (_, b):
        async with await TcpClient.connect(a.tcp_port) as alice:
            await alice.join("alice")
            for n in range(5):
                await alice.send({"type": "chat", "text": f"m{n}"})
            sent = await chats(alice, 5)
        ids = [m["id"] for m in sent]
        assert ids == sorted(ids)
        # A plain join on the other server gets the last 3; a resume gets the rest.
        async with ws(b.ws_port) as bob:
            await bob.send({"type": "join", "user": "bob"})
            await bob.recv_until(type="welcome")
            replay = [await bob.recv() for _ in range(4)]
            assert [m.get("text") for m in replay[:3]] == ["m2", "m3", "m4"]
            assert all(m["history"] for m in replay[:3])
            assert replay[3] == {"type": "history_end", "room": "#lobby", "last_id": ids[-1]}
        replayed, end = await resume(b.tcp_port, "carol", since=ids[1])
        assert [m["id"] for m in replayed] == ids[2:]
        assert end == {"type": "history_end", "room": "#lobby", "last_id": ids[-1]}
        replayed, _ = await resume(a.tcp_port, "dave", since=ids[-1])
        assert replayed == []


async def test_a_seat_held_on_one_server_is_resumed_on_another(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as carol,
        ws(b.ws_port) as dave,
    ):
        await carol.join("carol")
        await dave.join("dave")
        # A join on another server reaches A through Redis, after A's own: no order
        # between the two is promised, so carol hears dave before ann comes.
        await carol.recv_until(type="system", event="join", name="dave")
        async with await TcpClient.connect(a.tcp_port) as ann:
            token = (await ann.join("ann"))["resume"]
            await carol.recv_until(type="system", event="join", name="ann")
            await dave.recv_until(type="system", event="join", name="ann")
            await ann.send({"type": "chat", "text": "one"})
            one = await ann.recv_until(type="chat", text="one")
        # Lost on A: held there, its token in Redis; a message she misses.
        await token_in_redis(config, token)
        await carol.send({"type": "chat", "text": "two"})
        await dave.recv_until(type="chat", text="two")
        # She comes back on B with the token: the seat moves there, silently.
        async with ws(b.ws_port) as again:
            await again.send({"type": "join", "user": "ann", "resume": token, "since": one["id"]})
            welcome = await again.recv()
            assert welcome["type"] == "welcome" and welcome["clients_count"] == 3
            assert sorted(welcome["users"]) == ["ann", "carol", "dave"]
            assert [(m["type"], m.get("text")) for m in [await again.recv() for _ in range(2)]
                    ] == [("chat", "two"), ("history_end", None)]
            await again.send({"type": "chat", "text": "three"})
            for watcher in (carol, dave):  # no notice anywhere: only chats since "two"
                seen = [await watcher.recv()]
                while seen[-1].get("text") != "three":
                    seen.append(await watcher.recv())
                notices = [m for m in seen if m["type"] != "chat"]
                assert not notices, json.dumps(notices)
                await watcher.send({"type": "who"})
                who = await watcher.recv_until(type="users")
                assert sorted(who["users"]) == ["ann", "carol", "dave"]  # once
            # The token was spent: A holds nothing now, and the name is B's.
            async with await TcpClient.connect(a.tcp_port) as thief:
                await thief.send({"type": "join", "user": "ann", "resume": token})
                assert (await thief.recv())["code"] == "name_taken"
        # She leaves B for good (no leave): held on B now, announced when its grace ends.


async def test_a_held_seat_nobody_resumes_leaves_on_every_server(config: Config) -> None:
    config = replace(config, resume_grace=0.5)
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        ws(b.ws_port) as dave,
    ):
        await dave.join("dave")
        async with await TcpClient.connect(a.tcp_port) as ann:
            await ann.join("ann")
            await dave.recv_until(type="system", event="join", name="ann")
        left = await dave.recv_until(type="system", event="leave")
        assert (left["name"], left["clients_count"]) == ("ann", 1)
        async with await TcpClient.connect(b.tcp_port) as again:
            await again.join("ann")  # free again, on any server


async def test_a_burst_from_two_servers_keeps_one_order_and_every_message(
    config: Config,
) -> None:
    """More messages at once than one publish script takes (the publish loop sends
    several scripts before their replies): every server delivers all of them, each
    sender's in the order sent, in one order with increasing ids everywhere."""
    count = 300
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as alice,
        await TcpClient.connect(b.tcp_port) as bob,
        ws(a.ws_port) as carol,
    ):
        await alice.join("alice")
        await bob.join("bob")
        await carol.join("carol")
        await bob.recv_until(type="system", event="join", name="carol")
        await alice.recv_until(type="system", event="join", name="carol")
        burst = b"".join(
            json.dumps({"type": "chat", "text": f"a {i}"}).encode() + b"\n" for i in range(count)
        )
        await alice.send_raw(burst)
        await bob.send_raw(burst.replace(b'"a ', b'"b '))
        got = [await chats(client, 2 * count) for client in (alice, bob, carol)]
        assert got[0] == got[1] == got[2]
        ids = [m["id"] for m in got[0]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for who in ("a", "b"):
            texts = [m["text"] for m in got[0] if m["text"].startswith(who + " ")]
            assert texts == [f"{who} {i}" for i in range(count)]


async def test_a_listener_hears_every_server(config: Config) -> None:
    async with (
        node(config) as (ca, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as nc,
        ws(b.ws_port) as bob,
    ):
        await nc.send_raw(b"/listen\n")
        await until(lambda: ca.rooms.listeners == 1)
        await bob.join("bob")
        assert (await nc.recv())["name"] == "bob"
        await bob.send({"type": "chat", "text": "from B"})
        heard = await nc.recv()
        assert heard["text"] == "from B"
        await nc.send_raw(b"/nick ann\n")  # joins without a replay: it heard it all
        assert (await nc.recv())["type"] == "welcome"
        assert await nc.recv() == {"type": "history_end", "room": "#lobby", "last_id": heard["id"]}


async def test_a_new_server_loads_the_history_from_redis(config: Config) -> None:
    async with node(config) as (_, a):
        async with await TcpClient.connect(a.tcp_port) as alice:
            await alice.join("alice")
            await alice.send({"type": "chat", "text": "before B existed"})
            sent = (await chats(alice, 1))[0]
        async with node(config) as (_, b):
            replayed, end = await resume(b.tcp_port, "bob", since=0)
    assert [m["text"] for m in replayed] == ["before B existed"]
    assert end["last_id"] == sent["id"]


# ---------------------------------------------------------------- Redis lost and back


async def test_redis_restarted_mid_conversation_loses_nothing_for_since(
    config: Config, redis_server: RedisServer
) -> None:
    async with node(config) as (ca, a), node(config) as (cb, b):
        async with await TcpClient.connect(a.tcp_port) as alice, ws(b.ws_port) as bob:
            await alice.join("alice")
            await bob.join("bob")
            await alice.recv_until(type="system", event="join", name="bob")
            await alice.send({"type": "chat", "text": "one"})
            await bob.recv_until(type="chat", text="one")
            await bob.send({"type": "chat", "text": "two"})  # surely after "one"
            before = [*await chats(alice, 2)]
            assert [m["text"] for m in before] == ["one", "two"]
            assert (await bob.recv_until(type="chat")) == before[1]

            # Redis stops: both stay connected; alice's message is delivered on A at
            # once, without an id (no id can be given without Redis).
            await trio.to_thread.run_sync(redis_server.stop)
            await unlinked(ca, cb)
            await alice.send({"type": "chat", "text": "during the outage"})
            local = await alice.recv_until(type="chat")
            assert local["text"] == "during the outage" and "id" not in local

            # It comes back empty (no persistence): the servers merge their history
            # back and A publishes its outage message; B delivers it, late, with an id.
            await trio.to_thread.run_sync(redis_server.start)
            await linked(ca, cb)
            late = await bob.recv_until(type="chat")
            assert late["text"] == "during the outage" and late["id"] > before[-1]["id"]
            await bob.send({"type": "chat", "text": "three"})
            after = await bob.recv_until(type="chat")
            # A does not deliver its outage message twice: next is "three".
            assert await alice.recv_until(type="chat") == after
            assert after["id"] > late["id"]

        # Resuming from before the restart, on either server, misses nothing and
        # repeats nothing.
        for port in (a.tcp_port, b.tcp_port):
            # A name per server: a leave frees the name in Redis a moment after it
            # is answered, and a join on the other server may come first.
            replayed, end = await resume(port, f"carol{port}", since=before[0]["id"])
            assert [m["text"] for m in replayed] == ["two", "during the outage", "three"]
            assert [m["id"] for m in replayed] == [before[1]["id"], late["id"], after["id"]]
            assert end["last_id"] == after["id"]


async def test_history_written_while_one_server_was_away_is_restored_by_another(
    config: Config, redis_server: RedisServer
) -> None:
    """Redis loses its data; the server that knows the history restores it even though
    the other one reconnects (and publishes) first."""
    async with node(config) as (ca, a):
        async with await TcpClient.connect(a.tcp_port) as alice:
            await alice.join("alice")
            await alice.send({"type": "chat", "text": "old"})
            old = (await chats(alice, 1))[0]
        await trio.to_thread.run_sync(redis_server.kill)  # it comes back empty
        await unlinked(ca)
        await trio.to_thread.run_sync(redis_server.start)
        await linked(ca)
        async with node(config) as (_, b):
            replayed, _ = await resume(b.tcp_port, "bob", since=0)
    assert [(m["id"], m["text"]) for m in replayed] == [(old["id"], "old")]


async def test_dropped_redis_connections_reconnect_without_loss_or_repeats(
    config: Config, redis_server: RedisServer
) -> None:
    """Redis keeps its data but drops every connection (a network cut, a failover):
    the links come back, and what was in flight is delivered once."""
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as bob,
    ):
        await alice.join("alice")
        await bob.join("bob")
        for n in range(20):
            await alice.send({"type": "chat", "text": f"m{n}"})
        # Whether a server notices depends on what its connections were doing: a
        # message caught in the cut may be delivered on A before Redis has it (without
        # an id), but exactly once, in order, and B gets all of them from Redis.
        await trio.to_thread.run_sync(redis_server.command, "CLIENT", "KILL", "TYPE", "normal")
        texts = [f"m{n}" for n in range(20)]
        assert [m["text"] for m in await chats(alice, 20)] == texts
        got_b = await chats(bob, 20)
        assert [m["text"] for m in got_b] == texts and all("id" in m for m in got_b)
        await bob.send({"type": "chat", "text": "still one room"})
        assert (await alice.recv_until(type="chat"))["text"] == "still one room"


class Gate:
    """A TCP relay between one server and Redis, to cut that server off at will:
    ``hold()`` keeps back what Redis sends on the connections that read streams (so
    the server publishes but reads nothing back), ``cut()`` drops its connections and
    refuses new ones, ``open()`` lets all through."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.is_open = True
        self.flowing = trio.Event()
        self.flowing.set()
        self._conns: set[trio.CancelScope] = set()

    async def serve(
        self,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._relay, listeners, task_status=task_status)

    def hold(self) -> None:
        self.flowing = trio.Event()

    def cut(self) -> None:
        self.is_open = False
        for scope in self._conns:
            scope.cancel()

    def open(self) -> None:
        self.is_open = True
        self.flowing.set()

    async def _relay(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.is_open:
                return
            with trio.CancelScope() as scope:
                self._conns.add(scope)
                try:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target)
                except OSError:
                    return
                reads = [False]  # this connection has sent an XREAD
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pipe, client, upstream, reads, False, scope)
                    nursery.start_soon(self._pipe, upstream, client, reads, True, scope)
            self._conns.discard(scope)

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream,
                    reads: list[bool], from_redis: bool, scope: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(65536):
                if from_redis and reads[0]:
                    await self.flowing.wait()
                elif b"XREAD" in data.upper():
                    reads[0] = True
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side is gone: so is the other


async def test_a_message_in_flight_when_redis_loses_its_data_keeps_one_id(
    config: Config, redis_server: RedisServer
) -> None:
    """Regression (found by tests/test_cluster_soak.py): A publishes a message, B reads
    it (id X), and Redis crashes empty before A reads it back. A comes back first: it
    must not publish the message again (a second id, and B's clients would get it
    twice) before B has restored X; nor may anyone publish past X before it is
    restored (a server that had read past it would never get it)."""
    gate_a, gate_b = Gate(redis_server.port), Gate(redis_server.port)
    async with trio.open_nursery() as relays:
        await relays.start(gate_a.serve)
        await relays.start(gate_b.serve)
        via_a = replace(config, redis=f"redis://127.0.0.1:{gate_a.port}/0")
        via_b = replace(config, redis=f"redis://127.0.0.1:{gate_b.port}/0")
        async with node(via_a) as (ca, a), node(via_b) as (cb, b):
            async with await TcpClient.connect(a.tcp_port) as alice, ws(b.ws_port) as bob:
                await alice.join("alice")
                await bob.join("bob")
                await alice.recv_until(type="system", event="join", name="bob")
                gate_a.hold()
                await alice.send({"type": "chat", "text": "in flight"})
                sent = await bob.recv_until(type="chat")
                assert sent["text"] == "in flight" and "id" in sent
                gate_a.cut()
                gate_b.cut()
                local = await alice.recv_until(type="chat")  # A gave up on Redis
                assert local["text"] == "in flight" and "id" not in local
                await unlinked(ca, cb)
                await trio.to_thread.run_sync(redis_server.restart)
                gate_a.open()
                with trio.fail_after(WAIT):  # A is back first: it waits for B
                    while ca.state is LinkState.DOWN:
                        await ca.state_changed.wait()
                gate_b.open()
                await linked(ca, cb)
                await bob.send({"type": "chat", "text": "after"})
                after = await bob.recv_until(type="chat")
                assert after["text"] == "after"  # not "in flight" a second time
                assert await alice.recv_until(type="chat") == after
            histories = [(await resume(port, f"carol{port}", since=0))[0]
                         for port in (a.tcp_port, b.tcp_port)]
        relays.cancel_scope.cancel()
    for replayed in histories:
        assert [(m["id"], m["text"]) for m in replayed] == [
            (sent["id"], "in flight"), (after["id"], "after")
        ]


async def test_a_member_seated_during_an_outage_gets_what_was_said_here_before_it(
    config: Config, redis_server: RedisServer
) -> None:
    """Regression (found by tests/test_cluster_soak.py): messages delivered here during
    an outage are not delivered here again when Redis gives them ids, so a member
    that joins during the outage is replayed them (without ids), in order, once."""
    async with (
        node(config) as (ca, a),
        node(config) as (cb, b),
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as bob,
    ):
        await alice.join("alice")
        await bob.join("bob")
        await alice.recv_until(type="system", event="join", name="bob")
        await alice.send({"type": "chat", "text": "before the outage"})
        before = await alice.recv_until(type="chat")
        await trio.to_thread.run_sync(redis_server.kill)
        await unlinked(ca, cb)
        await alice.send({"type": "chat", "text": "during the outage"})
        local = await alice.recv_until(type="chat")
        assert "id" not in local
        async with await TcpClient.connect(a.tcp_port) as carol:
            await carol.send({"type": "join", "user": "carol", "since": 0})
            await carol.recv_until(type="welcome")
            replay = []
            while (msg := await carol.recv())["type"] != "history_end":
                replay.append(msg)
            assert replay == [
                {**before, "history": True}, {**local, "history": True}
            ]
            await trio.to_thread.run_sync(redis_server.start)
            await linked(ca)
            late = await bob.recv_until(type="chat", text="during the outage")
            await bob.send({"type": "chat", "text": "after"})
            after = await bob.recv_until(type="chat")
            assert after["text"] == "after" and after["id"] > late["id"]
            # Not a second time now that it has an id: next is "after".
            assert await carol.recv_until(type="chat") == after
            assert await alice.recv_until(type="chat") == after


async def test_redis_losing_its_data_while_connected_is_noticed_and_restored(
    config: Config, redis_server: RedisServer
) -> None:
    """Regression (issue 13): FLUSHALL (or a failover to an empty replica) on a
    connection that never drops went unnoticed: a new server replayed almost nothing
    for since:0, and a look-alike of a member's name was free on the other server."""
    config = replace(config, presence_ttl=TTL)  # a heartbeat (every TTL / 4) notices
    async with (
        node(config) as (ca, a),
        node(config) as (cb, b),
        await TcpClient.connect(a.tcp_port) as ann,
        await TcpClient.connect(b.tcp_port) as bob,
    ):
        await ann.join("Ann")
        await bob.join("bob")
        for n in range(20):
            await ann.send({"type": "chat", "text": f"m{n}"})
        sent = await chats(bob, 20)
        async with relinking(ca, cb):
            await trio.to_thread.run_sync(redis_server.command, "FLUSHALL")
        await bob.send({"type": "join", "user": "ann"})
        assert (await bob.recv_until(type="error"))["code"] == "name_taken"
        await bob.send({"type": "chat", "text": "after"})
        after = await ann.recv_until(type="chat", text="after")
        async with node(config) as (_, c):
            replayed, end = await resume(c.tcp_port, "carol", since=0)
    assert [m["text"] for m in replayed] == [m["text"] for m in sent] + ["after"]
    assert [m["id"] for m in replayed] == [m["id"] for m in sent] + [after["id"]]
    assert end.get("complete", True)


async def test_a_redis_stall_shorter_than_the_command_timeout_leaves_no_duplicate_name(
    config: Config, redis_server: RedisServer
) -> None:
    """Regression (issue 13): with Redis stopped for less than the command timeout,
    two look-alike names joined on two servers (each claim gave up and joined
    locally) and both stayed. A claim that fails now puts the server in outage mode,
    and when Redis answers again the later claimer is renamed."""
    async with (
        node(config) as (ca, a),
        node(config) as (cb, b),
        await TcpClient.connect(a.tcp_port) as zed,
        await TcpClient.connect(b.tcp_port) as zed2,
    ):
        async with relinking(ca, cb):
            os.kill(redis_server.pid, signal.SIGSTOP)
            try:
                await zed.send({"type": "join", "user": "Zed"})
                await zed2.send({"type": "join", "user": "zed"})
                first = [
                    await zed.recv_until(type="welcome"), await zed2.recv_until(type="welcome")
                ]
                assert [w["user"] for w in first] == ["Zed", "zed"]  # joined locally
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)
        # Exactly one of them was renamed: a new welcome, and a rename notice.
        seen: dict[TcpClient, list[dict[str, Any]]] = {zed: [], zed2: []}

        async def who(client: TcpClient) -> list[str]:
            await client.send({"type": "who"})
            while (msg := await client.recv())["type"] != "users":
                seen[client].append(msg)
            return list(msg["users"])

        with trio.fail_after(WAIT):
            while len(names := await who(zed)) != 2 or len(await who(zed2)) != 2:
                pass
        assert set(names) in ({"Zed", "zed2"}, {"zed", "Zed2"})
        assert set(await who(zed2)) == set(names)
        renamed, kept = (zed2, zed) if "zed2" in names else (zed, zed2)
        new = "zed2" if renamed is zed2 else "Zed2"
        welcomes = [m for m in seen[renamed] if m["type"] == "welcome"]
        assert [w["user"] for w in welcomes] == [new]
        assert sorted(welcomes[0]["users"]) == sorted(names)
        notices = [m for m in seen[kept] if m.get("event") == "rename"]
        assert [(m["old"], m["name"]) for m in notices] == [(new[:-1], new)]


async def test_a_server_that_stops_is_forgotten_at_once(config: Config) -> None:
    # not by expiry: by its goodbye (LIVE_TTL)
    async with node(config) as (_, b), ws(b.ws_port) as bob:
        await bob.join("bob")
        async with node(config) as (_, a), await TcpClient.connect(a.tcp_port) as alice:
            await alice.join("alice")
            await bob.recv_until(type="system", event="join", name="alice")
        left = await bob.recv_until(type="system", event="leave", name="alice")
        assert left["clients_count"] == 1
        await bob.send({"type": "who"})
        assert (await bob.recv_until(type="users"))["users"] == ["bob"]


async def test_redis_unreachable_at_start_is_one_line_and_exit_code_2() -> None:
    port = free_port()
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
             "--redis", f"redis://127.0.0.1:{port}/0"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"cannot use Redis at redis://127.0.0.1:{port}/0" in errors[0]
    assert "Traceback" not in stderr


# ---------------------------------------------------------------- real processes


async def test_three_processes_one_room_and_a_killed_one_leaves_who(
    redis_server: RedisServer,
) -> None:
    args = ("--redis", redis_server.url, "--presence-ttl", str(TTL), "--rate-limit", "0")
    async with (
        server_process(*args) as a,
        server_process(*args) as b,
        server_process(*args) as c,
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as bob,
        await TcpClient.connect(c.tcp_port) as carol,
    ):
        await alice.join("alice")
        await bob.join("bob")
        await carol.join("carol")
        await alice.send({"type": "chat", "text": "from A over TCP"})
        await bob.send({"type": "chat", "text": "from B over WebSocket"})
        seen = [await chats(client, 2) for client in (alice, bob, carol)]
        assert seen[0] == seen[1] == seen[2]
        await carol.send({"type": "who"})
        who = await carol.recv_until(type="users")
        assert sorted(who["users"]) == ["alice", "bob", "carol"]

        a.signal(signal.SIGKILL)
        killed = time.monotonic()
        for client in (bob, carol):  # each server hears of it on its own
            left = await client.recv_until(type="system", event="leave", name="alice")
            elapsed = time.monotonic() - killed
            # Stated in docs/protocol.md: within 1.25 x --presence-ttl (plus a
            # heartbeat's own latency on a busy machine).
            assert elapsed <= 1.25 * TTL + 1.0, elapsed
            assert left["clients_count"] == 2
            await client.send({"type": "who"})
            who = await client.recv_until(type="users")
            assert sorted(who["users"]) == ["bob", "carol"]
        # Its name is free again.
        async with await TcpClient.connect(b.tcp_port) as again:
            await again.join("alice")


# ---------------------------------------------------------------- the parts


async def test_publish_script_is_idempotent_and_ids_increase(redis_server: RedisServer) -> None:
    async with coredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        script = client.register_script(lua.PUBLISH)
        day = 86_400_000  # --room-expiry, in ms: a room's stream expires without messages
        args: list[str | int] = [PREFIX, 100, "n1", day, 1, "u", "a", "T", "", 2, "u", "b", "T", ""]
        first = int(await script(keys=[], args=args))
        # The same batch again (a reply lost with the connection) adds nothing.
        assert int(await script(keys=[], args=args)) == first
        await script(keys=[], args=[PREFIX, 100, "n1", day, 2, "u", "b", "T", "",
                                    3, "u", "c", "T", "#dev", 4, "u", "d", "T", ""])
        entries = await client.xrange(PREFIX + "history", "-", "+")
        assert [e.field_values["x"] for e in entries] == ["a", "b", "d"]
        dev = await client.xrange(PREFIX + "history:#dev", "-", "+")
        assert [e.field_values["x"] for e in dev] == ["c"]
        assert 0 < await client.pttl(PREFIX + "history:#dev") <= day
        assert await client.pttl(PREFIX + "history") == -1  # #lobby's never expires
        ids = [int(str(e.identifier).split("-")[0]) for e in [*entries, *dev]]
        assert sorted(ids) == sorted(set(ids)) and max(ids) < 2**53
        assert int(str(dev[0].identifier).split("-")[0]) == sorted(ids)[2]  # one sequence


async def test_restore_script_merges_in_id_order(redis_server: RedisServer) -> None:
    async with coredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        for n in (10, 30):
            await client.xadd(PREFIX + "history", {"u": "u", "x": f"m{n}", "ts": "T",
                                                   "node": "n2", "seq": str(n)},
                              identifier=f"{n}-0")
        restore = client.register_script(lua.RESTORE)
        ours: list[str | int] = []
        for n in (20, 30, 40):
            ours += [n, "u", f"m{n}", "T", "n1", n // 10]
        assert await restore(keys=[], args=[PREFIX, 100, *ours]) == 2
        entries = await client.xrange(PREFIX + "history", "-", "+")
        assert [e.field_values["x"] for e in entries] == ["m10", "m20", "m30", "m40"]
        assert await client.get(PREFIX + "last-id") == "40"
        # n1's messages up to seq 4 are in: publishing them again adds nothing.
        assert await client.get(PREFIX + "pub:n1") == "4"
        assert await restore(keys=[], args=[PREFIX, 100, *ours]) == 0


@pytest.fixture(scope="module")
def plain_redis() -> Iterator[RedisServer]:
    with redis_server_or_skip() as redis:
        yield redis


ids = st.sets(st.integers(1, 2**52), max_size=12)


@settings(max_examples=60, deadline=None)
@given(have=ids, ours=ids, keep=st.integers(1, 30))
def test_restore_is_the_sorted_union_and_keeps_what_redis_has(
    plain_redis: RedisServer, have: set[int], ours: set[int], keep: int
) -> None:
    """Whatever Redis still holds and whatever a server brings back: one stream in id
    order, no id twice (Redis's copy wins), the newest ``keep``, ids continue past all."""
    redis = plain_redis
    redis.command("FLUSHALL")
    for n in sorted(have):
        redis.command("XADD", PREFIX + "history", f"{n}-0", "u", "u", "x", f"redis{n}",
                      "ts", "T", "node", "b", "seq", "1")
    args: list[str | int] = []
    for n in sorted(ours):
        args += [n, "u", f"ours{n}", "T", "a", n]
    added = redis.command("EVAL", lua.RESTORE, 0, PREFIX, keep, *args)
    union = sorted(have | ours)
    assert added == (len(ours - have) if ours - have else 0)
    entries = redis.command("XRANGE", PREFIX + "history", "-", "+")
    got = [(int(entry[0].split(b"-")[0]), entry[1][3].decode()) for entry in entries]
    if added:
        expected = union[-keep:]
        assert [n for n, _ in got] == expected
        assert all(text == (f"redis{n}" if n in have else f"ours{n}") for n, text in got)
        assert int(redis.command("GET", PREFIX + "last-id")) == max(union)
    else:  # nothing new: the stream is left alone
        assert [n for n, _ in got] == sorted(have)


def test_outbox_while_redis_is_unreachable() -> None:
    cluster = Cluster(Config(redis="redis://unused", history_replay=10, history_keep=100),
                      node="me")
    cluster.outbox.max_pending = 2
    room = Rooms(cluster)
    seen: list[str] = []
    room.lobby.broadcast = seen.append  # type: ignore[method-assign, assignment]
    outbox = cluster.outbox
    outbox.came_back()
    cluster.publish(room.lobby, "bob", "a", "T")  # broadcast once read back
    cluster.publish(room.lobby, "bob", "b", "T")
    assert seen == []
    assert outbox.full  # backpressure while linked
    batch = outbox.unpublished(10)
    assert [o.text for o in batch] == ["a", "b"]
    outbox.mark_published(batch)
    assert outbox.full and len(outbox) == 2  # until read back
    # The link drops: everything Redis has not shown back is delivered here now, in
    # order (Redis may have a and b; they will not be delivered here twice).
    cluster._down()
    assert [json.loads(line)["text"] for line in seen] == ["a", "b"]
    cluster.publish(room.lobby, "bob", "c", "T")
    assert seen[-1] == '{"type":"chat","room":"#lobby","user":"bob","text":"c","timestamp":"T"}'
    assert not outbox.full  # never blocks a sender during an outage
    outbox.came_back()
    assert [(o.text, o.local) for o in outbox.unpublished(10)] == [
        ("a", True), ("b", True), ("c", True)
    ]
    assert len(outbox) == 3
    # Read back from Redis: remembered for replays, not delivered again here; another
    # server's message is.
    assert cluster._entry_line(entry(10, "bob", "a", node="me", seq=1)) is None
    assert cluster._entry_line(entry(11, "ann", "x", node="other", seq=1)) == (
        '{"type":"chat","room":"#lobby","id":11,"user":"ann","text":"x","timestamp":"T"}'
    )
    assert cluster._entry_line(entry(12, "bob", "c", node="me", seq=3)) is None
    assert len(outbox) == 0 and cluster.history.last_id == 12 and not outbox.full
    replayed, _ = trio.run(cluster.history.collect, cluster.history.replay(since=10))
    assert [m.text for m in replayed] == ["x", "c"]


def entry(message_id: int, user: str, text: str, *, node: str, seq: int) -> Any:
    return SimpleNamespace(identifier=f"{message_id}-0", field_values={
        "u": user, "x": text, "ts": "T", "node": node, "seq": str(seq),
    })
