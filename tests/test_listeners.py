"""Listeners: connections that get the room's traffic without joining (seed semantics).

A WebSocket quiet for a second after its handshake becomes one (the seed's client,
tests/test_seed_client.py, runs it for real); on TCP ``/listen`` or
``{"type":"listen"}`` makes one. A listener is not a member (not in ``who``, not in
``clients_count``, no notices of its own), has a member's bounded queue and
slow-consumer policy, counts toward the connection caps, and when it joins without
``since`` is replayed exactly what it was not sent as a listener.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial

import pytest
import trio
import trio.testing

from tests.support.admin import scrape
from tests.support.config import FIRST_CONTACT
from tests.support.memory import memory_tcp, memory_ws
from tests.support.seats import Seat
from tests.support.tcp import Message, TcpClient
from tests.support.waits import VIRTUAL_WAIT, until
from tests.support.ws import ws_client
from trio_chat import Bound, Config, serve
from trio_chat.history.sqlite import open_history
from trio_chat.server.delivery import LocalDelivery
from trio_chat.server.rooms import Rooms

CONFIG = Config(queue_size=16, send_timeout=5.0, rate_limit=0)


@asynccontextmanager
async def history_room(config: Config = CONFIG) -> AsyncIterator[Rooms]:
    async with open_history(config) as history:
        yield Rooms(LocalDelivery(history))


async def listening_tcp(nursery: trio.Nursery, room: Rooms, line: bytes) -> TcpClient:
    client = memory_tcp(nursery, room, CONFIG)
    before = room.listeners
    await client.send_raw(line)
    await until(lambda: room.listeners == before + 1, VIRTUAL_WAIT)
    return client


async def test_a_quiet_websocket_becomes_a_listener_and_is_nobody(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
    ann = Seat(room, "Ann")
    ws = await memory_ws(nursery, room, CONFIG)
    start = trio.current_time()
    await until(lambda: room.listeners == 1, VIRTUAL_WAIT)
    assert trio.current_time() - start == pytest.approx(1.0, abs=0.05)  # one second of quiet
    # Nobody was told: Ann got her own join notice, nothing since.
    assert [(m["type"], m.get("name")) for m in ann.take()] == [("welcome", None),
                                                                ("system", "Ann")]
    room.say(ann.member, "hello")
    said = json.loads(await ws.get_message())
    assert (said["type"], said["user"], said["text"]) == ("chat", "Ann", "hello")
    bob = Seat(room, "Bob")
    notice = json.loads(await ws.get_message())
    assert (notice["event"], notice["name"], notice["clients_count"]) == ("join", "Bob", 2)
    assert json.loads(room.who()) == {"type": "users", "room": "#lobby", "users": ["Ann", "Bob"],
                                      "clients_count": 2}
    ann.take()
    # It leaves as it came: silently.
    await ws.aclose()
    await until(lambda: room.listeners == 0, VIRTUAL_WAIT)
    room.say(bob.member, "still here")
    assert [m["type"] for m in ann.take()] == ["chat"]  # no leave notice before it


async def test_a_websocket_that_speaks_at_once_never_listens(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The page and ``trio-chat join`` join at once: their welcome comes first, with
    nothing live before it, however long they then stay quiet."""
    room = Rooms()
    ann = Seat(room, "Ann")
    ws = await memory_ws(nursery, room, CONFIG)
    await ws.send_message(json.dumps({"type": "who"}))
    assert json.loads(await ws.get_message())["type"] == "users"
    await trio.sleep(5)  # virtual: well past the second
    assert room.listeners == 0
    room.say(ann.member, "not for a connection that has not joined")
    await ws.send_message(json.dumps({"type": "join", "user": "Bob"}))
    assert json.loads(await ws.get_message())["type"] == "welcome"


@pytest.mark.parametrize("line", [b"/listen\n", b'{"type":"listen"}\n'])
async def test_tcp_listen_and_no_join_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, line: bytes
) -> None:
    room = Rooms()
    ann = Seat(room, "Ann")
    nc = await listening_tcp(nursery, room, line)
    await trio.sleep(CONFIG.idle_timeout * 2)  # a listener is not kicked for not joining
    room.say(ann.member, "hi")
    said = await nc.recv()
    assert (said["type"], said["text"]) == ("chat", "hi")
    await nc.send_raw(b"/who\n")
    assert (await nc.recv())["users"] == ["Ann"]
    await nc.send_raw(b"chatting needs a name\n")
    error = await nc.recv()
    assert error["code"] == "not_joined" and "/nick NAME" in error["text"]
    # /listen again, or once joined, changes nothing.
    await nc.send_raw(b"/listen\n/nick Bob\n/listen\n/who\n")
    assert (await nc.recv_until(type="users"))["users"] == ["Ann", "Bob"]
    assert room.listeners == 0


async def test_a_listener_that_joins_gets_each_message_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Joining without ``since``: its replay is what came after the last id it was sent
    as a listener, which is nothing: none twice, none missed, whatever is in flight."""
    async with history_room() as room:
        ann = Seat(room, "Ann")
        for n in range(60):  # history it never saw: not replayed when it joins
            room.say(ann.member, f"old{n}")
        nc = await listening_tcp(nursery, room, b"/listen\n")

        async def talk() -> None:
            for n in range(40):
                room.say(ann.member, f"m{n}")
                await trio.sleep(0.01)

        got: list[Message] = []
        async with trio.open_nursery() as talking:
            talking.start_soon(talk)
            while len([m for m in got if m["type"] == "chat"]) < 10:
                got.append(await nc.recv())
            await nc.send_raw(b"/nick Bob\n")  # while Ann goes on
            while not (got and got[-1]["type"] == "chat" and got[-1]["text"] == "m39"):
                got.append(await nc.recv())
        texts = [m["text"] for m in got if m["type"] == "chat"]
        assert texts == [f"m{n}" for n in range(40)]
        welcome = next(i for i, m in enumerate(got) if m["type"] == "welcome")
        end = got[welcome + 1]
        assert end["type"] == "history_end"
        # The newest id when it joined is the last one it had been sent as a listener.
        before = [m for m in got[:welcome] if m["type"] == "chat"]
        assert end["last_id"] == before[-1]["id"]
        assert not [m for m in got if m.get("history")]


async def test_a_listener_that_joins_with_since_is_replayed_as_anyone(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with history_room() as room:
        ann = Seat(room, "Ann")
        for n in range(5):
            room.say(ann.member, f"m{n}")
        nc = await listening_tcp(nursery, room, b"/listen\n")
        await nc.send({"type": "join", "user": "Bob", "since": 2})
        assert (await nc.recv())["type"] == "welcome"
        replayed = [await nc.recv() for _ in range(3)]
        assert [(m["text"], m["history"]) for m in replayed] == [("m2", True), ("m3", True),
                                                                  ("m4", True)]
        assert (await nc.recv()) == {"type": "history_end", "room": "#lobby", "last_id": 5}


async def test_a_listener_that_stops_reading_is_a_slow_consumer_nobody_notices(
    nursery: trio.Nursery,
) -> None:
    room = Rooms()
    ann = Seat(room, "Ann")
    ann.take()
    nc = await listening_tcp(nursery, room, b"/listen\n")
    for n in range(40):  # its queue (16) overflows at once
        room.say(ann.member, f"m{n}")
    got = await nc.recv_all()
    assert got[-1]["code"] == "slow_consumer"
    assert len([m for m in got if m["type"] == "chat"]) <= 16
    assert room.listeners == 0
    assert [m["type"] for m in ann.take()] == ["chat"] * 40  # no notice of any kind


async def test_listeners_count_toward_the_caps_and_in_the_metrics(nursery: trio.Nursery) -> None:
    config = replace(FIRST_CONTACT, max_per_ip=3, admin_port=0)
    bound: Bound = await nursery.start(partial(serve, config))
    assert bound.admin_port is not None
    async with (
        await TcpClient.connect(bound.tcp_port) as nc,
        ws_client(bound.ws_port) as quiet,
        await TcpClient.connect(bound.tcp_port) as waiting,
    ):
        await nc.send_raw(b"/listen\n")
        await waiting.send_raw(b"/who\n")
        await waiting.recv_until(type="users")
        # The quiet WebSocket listens after its second: both listeners are counted so.
        with trio.fail_after(10):
            while True:
                metrics = await scrape(bound.admin_port)
                if metrics.value("trio_chat_connections", transport="ws", state="listening"):
                    break
        assert metrics.value("trio_chat_connections", transport="tcp", state="listening") == 1
        assert metrics.value("trio_chat_connections", transport="tcp", state="waiting") == 1
        assert metrics.value("trio_chat_members") == 0
        # A fourth connection from this address is over --max-per-ip.
        async with await TcpClient.connect(bound.tcp_port) as fourth:
            assert (await fourth.recv())["code"] == "server_full"
        # Both listeners hear the one who joins and speaks.
        await waiting.send_raw(b"/nick Ann\nhello listeners\n")
        assert (await nc.recv_until(type="chat"))["text"] == "hello listeners"
        frames = [json.loads(await quiet.get_message()) for _ in range(2)]
        assert [(m["type"], m.get("name"), m.get("text")) for m in frames] == [
            ("system", "Ann", "Ann joined the chat"), ("chat", None, "hello listeners")
        ]
