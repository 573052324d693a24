"""Moderation (issue 17) against a real server on loopback ports and a real SQLite file:
every message and error, over TCP and WebSocket, for a guest, an op and an admin.

Each case runs over both transports (``kind``); the second client of a case is on the
other one. ``Root`` is a server admin (``--admin Root``); ``Olga`` logs in and creates
``#dev``, so she is its op; ``Bob`` and ``Gus`` stay guests (see
tests/support/moderation.py: they register for real).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from trio_websocket import ConnectionClosed

from tests.support.clients import KINDS, OTHER, Client, chat_client, enter, named
from tests.support.moderation import (
    EPOCH,
    OTHER_ADDRESS,
    Moderated,
    client_from,
    moderated_config,
    moderated_server,
)
from tests.support.tcp import Message, TcpClient
from tests.support.ws import WsClient, close_reason
from trio_chat.cli import main as cli_main

pytestmark = pytest.mark.parametrize("kind", KINDS)


@pytest.fixture
async def mod(tmp_path: Path) -> AsyncIterator[Moderated]:
    async with moderated_server(moderated_config(tmp_path)) as server:
        yield server


async def answer(client: Client, message: dict[str, Any], **match: Any) -> Message:
    """Send ``message``; the next message matching ``match`` (an error by default)."""
    await client.send(message)
    return await client.recv_until(**(match or {"type": "error"}))


@asynccontextmanager
async def cast(mod: Moderated, kind: str, *names: str) -> AsyncIterator[list[Client]]:
    """Clients named ``names`` (alternating transports, the first over ``kind``);
    ``Olga`` and ``Root`` log in; ``Olga`` creates ``#dev`` and everyone enters it."""
    async with AsyncExitStack() as stack:
        clients: list[Client] = []
        for i, name in enumerate(names):
            client = await stack.enter_async_context(
                chat_client(mod.bound, kind if i % 2 == 0 else OTHER[kind])
            )
            await named(client, name)
            if name in ("Olga", "Root"):
                await mod.login(client, name)
            clients.append(client)
        if "Olga" in names:
            await enter(clients[names.index("Olga")], "#dev")
        for name, client in zip(names, clients, strict=True):
            if name != "Olga" and "Olga" in names:
                await enter(client, "#dev")
        yield clients


async def closed_with_banned(client: Client) -> Message:
    """The fatal ``banned`` error, then the end of the connection (WebSocket: 4003)."""
    error = await client.recv_until(type="error", code="banned")
    if isinstance(client, TcpClient):
        assert await client.eof()
    else:
        assert isinstance(client, WsClient)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv()
        assert close_reason(closed.value).code == 4003
    return error


async def test_a_guest_may_do_none_of_it(mod: Moderated, kind: str) -> None:
    messages: list[dict[str, Any]] = [
        {"type": "kick", "room": "#dev", "user": "Olga"},
        {"type": "ban", "room": "#dev", "user": "Olga"},
        {"type": "ban", "room": "#dev", "address": "203.0.113.7"},
        {"type": "ban", "user": "Olga"},
        {"type": "unban", "room": "#dev", "user": "Olga"},
        {"type": "mute", "room": "#dev", "user": "Gus"},
        {"type": "unmute", "room": "#dev", "user": "Gus"},
        {"type": "op", "room": "#dev", "user": "Gus"},
        {"type": "deop", "room": "#dev", "user": "Olga"},
        {"type": "voice", "room": "#dev", "user": "Gus"},
        {"type": "devoice", "room": "#dev", "user": "Gus"},
        {"type": "mode", "room": "#dev", "moderated": True},
        {"type": "bans", "room": "#dev"},
        {"type": "bans"},
        {"type": "topic", "room": "#dev", "topic": "mine now"},
    ]
    async with cast(mod, kind, "Olga", "Bob") as (olga, bob):
        for message in messages:
            error = await answer(bob, message)
            assert error["code"] == "not_permitted", (message, error)
        # Anyone may ask for the modes.
        modes = await answer(bob, {"type": "mode", "room": "#dev"}, type="mode")
        assert modes == {"type": "mode", "room": "#dev", "registered_only": False,
                         "moderated": False}
        # Before a name, moderation is not_joined (asking for modes is fine).
        async with chat_client(mod.bound, kind) as nobody:
            error = await answer(nobody, {"type": "kick", "room": "#dev", "user": "Bob"})
            assert error["code"] == "not_joined"
        # Bob is still in #dev and can speak: nothing changed.
        await bob.send({"type": "chat", "room": "#dev", "text": "still here"})
        await olga.recv_until(type="chat", text="still here")


async def test_the_creator_of_a_room_is_its_op_and_kicks(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Bob", "Gus") as (olga, bob, gus):
        await olga.send({"type": "kick", "room": "#dev", "user": "bob", "reason": "spam"})
        for client in (olga, bob, gus):
            notice = await client.recv_until(type="system", event="kick")
            assert notice["room"] == "#dev" and notice["name"] == "Bob"
            assert notice["by"] == "Olga" and notice["reason"] == "spam"
            assert notice["text"] == "Bob was kicked from #dev by Olga: spam"
            assert notice["clients_count"] == 2
        who = await answer(gus, {"type": "who", "room": "#dev"}, type="users")
        assert who["users"] == ["Olga", "Gus"]
        error = await answer(bob, {"type": "chat", "room": "#dev", "text": "hey"})
        assert error["code"] == "not_in_room"
        await enter(bob, "#dev")  # a kick is not a ban
        # Nobody by that name in the room.
        error = await answer(olga, {"type": "kick", "room": "#dev", "user": "Nobody"})
        assert error["code"] == "no_such_user"
        # Ops act only in their rooms: #lobby is not Olga's.
        error = await answer(olga, {"type": "kick", "user": "Bob"})
        assert error["code"] == "not_permitted"


async def test_a_room_ban_takes_effect_at_once_and_ends(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Bob", "Gus") as (olga, bob, gus):
        await olga.send({"type": "ban", "room": "#dev", "user": "BOB", "duration": 600,
                         "reason": "flooding"})
        for client in (olga, bob, gus):
            notice = await client.recv_until(type="system", event="ban")
            assert notice["name"] == "Bob" and notice["by"] == "Olga"
            assert notice["reason"] == "flooding" and notice["until"] == EPOCH + 600
        error = await answer(bob, {"type": "join", "room": "#dev"})
        assert error == {"type": "error", "code": "banned", "room": "#dev",
                         "until": EPOCH + 600, "reason": "flooding",
                         "text": "you are banned from #dev: flooding"}
        bans = await answer(olga, {"type": "bans", "room": "#dev"}, type="bans")
        assert bans["room"] == "#dev" and bans["mutes"] == []
        assert [(b["user"], b["by"], b["reason"], b["until"]) for b in bans["bans"]] == [
            ("Bob", "Olga", "flooding", EPOCH + 600)]
        # Bob is not banned elsewhere.
        await bob.send({"type": "chat", "text": "in the lobby"})
        await gus.recv_until(type="chat", text="in the lobby")
        mod.clock.now += 600  # the ban ends
        await enter(bob, "#dev")


async def test_unban_lifts_a_ban(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Bob") as (olga, bob):
        await olga.send({"type": "ban", "room": "#dev", "user": "Bob"})
        notice = await bob.recv_until(type="system", event="ban")
        assert notice["until"] is None  # until lifted
        await olga.send({"type": "unban", "room": "#dev", "user": "bob"})
        notice = await olga.recv_until(type="system", event="unban")
        assert notice["name"] == "Bob" and notice["text"] == "Olga lifted the ban on Bob in #dev"
        await enter(bob, "#dev")
        error = await answer(olga, {"type": "unban", "room": "#dev", "user": "Bob"})
        assert error["code"] == "no_such_user"


async def test_mute_and_unmute(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Bob", "Gus") as (olga, bob, gus):
        await olga.send({"type": "mute", "room": "#dev", "user": "Bob", "duration": 60,
                         "reason": "calm down"})
        notice = await bob.recv_until(type="system", event="mute")
        assert notice["until"] == EPOCH + 60 and notice["by"] == "Olga"
        error = await answer(bob, {"type": "chat", "room": "#dev", "text": "but"})
        assert error["code"] == "muted" and error["until"] == EPOCH + 60
        assert error["reason"] == "calm down"
        # He still reads, and speaks elsewhere.
        await gus.send({"type": "chat", "room": "#dev", "text": "quiet now"})
        await bob.recv_until(type="chat", text="quiet now")
        await bob.send({"type": "chat", "text": "lobby is fine"})
        await gus.recv_until(type="chat", text="lobby is fine")
        await olga.send({"type": "unmute", "room": "#dev", "user": "Bob"})
        await bob.recv_until(type="system", event="unmute")
        await bob.send({"type": "chat", "room": "#dev", "text": "thanks"})
        await gus.recv_until(type="chat", text="thanks")
        # A timed mute ends by itself.
        await olga.send({"type": "mute", "room": "#dev", "user": "Bob", "duration": 5})
        await bob.recv_until(type="system", event="mute")
        mod.clock.now += 5
        await bob.send({"type": "chat", "room": "#dev", "text": "again"})
        await gus.recv_until(type="chat", text="again")


async def test_modes(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Bob", "Gus") as (olga, bob, gus):
        await olga.send({"type": "mode", "room": "#dev", "moderated": True})
        notice = await gus.recv_until(type="system", event="mode")
        assert notice["registered_only"] is False and notice["moderated"] is True
        error = await answer(bob, {"type": "chat", "room": "#dev", "text": "hi"})
        assert error["code"] == "muted" and error["reason"] == "moderated"
        await olga.send({"type": "voice", "room": "#dev", "user": "Bob"})
        await bob.recv_until(type="system", event="voice")
        await bob.send({"type": "chat", "room": "#dev", "text": "voiced"})
        await gus.recv_until(type="chat", text="voiced")
        await olga.send({"type": "devoice", "room": "#dev", "user": "Bob"})
        await bob.recv_until(type="system", event="devoice")
        error = await answer(bob, {"type": "chat", "room": "#dev", "text": "hi"})
        assert error["code"] == "muted"
        await olga.send({"type": "chat", "room": "#dev", "text": "ops speak"})
        await gus.recv_until(type="chat", text="ops speak")
        # registered_only: guests in it stay and read, cannot speak; none may join.
        await olga.send({"type": "mode", "room": "#dev", "registered_only": True,
                         "moderated": False})
        await gus.recv_until(type="system", event="mode", registered_only=True)
        modes = await answer(gus, {"type": "mode", "room": "#dev"}, type="mode")
        assert modes["registered_only"] is True and modes["moderated"] is False
        error = await answer(gus, {"type": "chat", "room": "#dev", "text": "hi"})
        assert error["code"] == "not_permitted"
        await gus.send({"type": "part", "room": "#dev"})
        error = await answer(gus, {"type": "join", "room": "#dev"})
        assert error["code"] == "not_permitted"
        await olga.send({"type": "chat", "room": "#dev", "text": "members only"})
        await bob.recv_until(type="chat", text="members only")


async def test_once_a_room_has_ops_only_they_set_its_topic(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Bob", "Gus") as (bob, gus):
        await enter(bob, "#free")  # created by a guest: no ops, anyone sets the topic
        await enter(gus, "#free")
        await gus.send({"type": "topic", "room": "#free", "topic": "anyone"})
        await bob.recv_until(type="system", event="topic", topic="anyone")
    async with cast(mod, kind, "Olga", "Ann") as (olga, ann):
        error = await answer(ann, {"type": "topic", "room": "#dev", "topic": "x"})
        assert error["code"] == "not_permitted"
        await olga.send({"type": "topic", "room": "#dev", "topic": "ops only"})
        await ann.recv_until(type="system", event="topic", topic="ops only")


async def test_op_and_deop(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Ann", "Bob") as (olga, ann, bob):
        await mod.login(ann, "Ann")
        for guest in ("Bob", "Nobody"):  # a guest here, a name nobody has
            error = await answer(olga, {"type": "op", "room": "#dev", "user": guest})
            assert error["code"] == "not_permitted" and "account" in error["text"]
        await olga.send({"type": "op", "room": "#dev", "user": "Ann"})
        notice = await ann.recv_until(type="system", event="op")
        assert notice["name"] == "Ann" and notice["text"] == "Olga made Ann an op of #dev"
        # Ann may act now, on guests, but not on another op.
        await ann.send({"type": "voice", "room": "#dev", "user": "Bob"})
        await bob.recv_until(type="system", event="voice")
        error = await answer(ann, {"type": "kick", "room": "#dev", "user": "Olga"})
        assert error["code"] == "not_permitted"
        error = await answer(ann, {"type": "deop", "room": "#dev", "user": "Olga"})
        assert error["code"] == "not_permitted"
        # An op may deop themselves.
        await ann.send({"type": "deop", "room": "#dev", "user": "Ann"})
        await olga.recv_until(type="system", event="deop", name="Ann")
        error = await answer(ann, {"type": "kick", "room": "#dev", "user": "Bob"})
        assert error["code"] == "not_permitted"
        # An account that is not connected can be made op (its name is registered).
        async with chat_client(mod.bound, kind) as zed:
            await named(zed, "Zed")
            await mod.login(zed, "Zed")
            await zed.send({"type": "leave"})
            await olga.recv_until(type="system", event="leave", name="Zed")
        await olga.send({"type": "op", "room": "#dev", "user": "zed"})
        notice = await olga.recv_until(type="system", event="op")
        assert notice["name"] == "zed"


async def test_an_admin_acts_in_every_room_and_on_ops(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Root", "Bob") as (olga, root, bob):
        await root.send({"type": "deop", "room": "#dev", "user": "Olga"})
        await olga.recv_until(type="system", event="deop", name="Olga", by="Root")
        await root.send({"type": "op", "room": "#lobby", "user": "Olga"})
        await olga.recv_until(type="system", event="op", room="#lobby")
        # Olga is op of #lobby now, not of #dev; and cannot touch the admin.
        error = await answer(olga, {"type": "kick", "room": "#dev", "user": "Bob"})
        assert error["code"] == "not_permitted"
        error = await answer(olga, {"type": "kick", "user": "Root"})
        assert error["code"] == "not_permitted"
        await olga.send({"type": "kick", "user": "Bob", "reason": "off topic"})
        await bob.recv_until(type="system", event="kick", room="#lobby")
        # A room ban does not hold an admin.
        await root.send({"type": "ban", "room": "#dev", "user": "Olga"})
        await olga.recv_until(type="system", event="ban", room="#dev")
        await root.send({"type": "part", "room": "#dev"})
        await root.recv_until(type="system", event="leave", name="Root")
        await enter(root, "#dev")
        bans = await answer(root, {"type": "bans"}, type="bans")
        assert bans == {"type": "bans", "bans": [], "bans_total": 0, "mutes": [],
                        "mutes_total": 0}
        # Nobody kicks or bans themselves.
        error = await answer(root, {"type": "kick", "room": "#dev", "user": "Root"})
        assert error["code"] == "not_permitted" and "yourself" in error["text"]
        # A server-wide mute: no chat anywhere, no direct messages either.
        await root.send({"type": "mute", "user": "Bob", "reason": "cool off"})
        notice = await bob.recv_until(type="system", event="mute")
        assert "room" not in notice and notice["reason"] == "cool off"
        for message in ({"type": "chat", "room": "#dev", "text": "x"},
                        {"type": "msg", "to": "Root", "text": "x"}):
            error = await answer(bob, message)
            assert error["code"] == "muted" and error["reason"] == "cool off"
        await root.send({"type": "unmute", "user": "Bob"})
        await root.recv_until(type="system", event="unmute")
        await bob.send({"type": "msg", "to": "Root", "text": "thanks"})
        await root.recv_until(type="msg", text="thanks")


async def refused(client: Client) -> None:
    """Refused at accept: TCP gets ``banned`` instead of anything else, WebSocket a
    4003 close."""
    if isinstance(client, TcpClient):
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "banned", error
        assert await client.eof()
    else:
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert close_reason(closed.value).code == 4003


async def test_a_server_wide_ban_closes_connections_and_refuses_the_name(
    mod: Moderated, kind: str
) -> None:
    async with (
        cast(mod, kind, "Root") as (root,),
        chat_client(mod.bound, OTHER[kind]) as bob,
        chat_client(mod.bound, kind) as again,
    ):
        await named(bob, "Bob")
        await enter(bob, "#dev")
        await root.send({"type": "ban", "user": "Bob", "reason": "troll"})
        notice = await root.recv_until(type="system", event="ban")
        assert "room" not in notice and notice["name"] == "Bob" and notice["until"] is None
        error = await closed_with_banned(bob)
        assert error["reason"] == "troll" and error["until"] is None and "room" not in error
        await root.recv_until(type="system", event="leave", name="Bob")
        await again.send({"type": "join", "user": "bob"})  # any case
        await closed_with_banned(again)
        bans = await answer(root, {"type": "bans"}, type="bans")
        assert [b["user"] for b in bans["bans"]] == ["Bob"]
        await root.send({"type": "unban", "user": "Bob"})
        await root.recv_until(type="system", event="unban")
    async with chat_client(mod.bound, kind) as bob:
        await named(bob, "Bob")


async def test_an_address_ban_closes_and_refuses_connections_from_there(
    mod: Moderated, kind: str
) -> None:
    async with (
        cast(mod, kind, "Root") as (root,),
        client_from(mod.bound, OTHER[kind], OTHER_ADDRESS) as gus,
    ):
        await named(gus, "Gus")
        await root.send({"type": "ban", "address": "127.0.0.2/31", "reason": "abuse"})
        notice = await root.recv_until(type="system", event="ban")
        assert notice["name"] == "127.0.0.2/31"
        await closed_with_banned(gus)
        for transport in KINDS:
            async with client_from(mod.bound, transport, OTHER_ADDRESS) as refused_client:
                await refused(refused_client)
        # Ranges are checked, not strings; and the admin's own 127.0.0.1 is outside.
        await root.send({"type": "unban", "address": "127.0.0.3/31"})
        await root.recv_until(type="system", event="unban")
        async with client_from(mod.bound, kind, OTHER_ADDRESS) as back:
            await named(back, "Gus")


async def test_room_bans_and_modes_hold_for_listeners(mod: Moderated, kind: str) -> None:
    async with (
        cast(mod, kind, "Root") as (root,),
        client_from(mod.bound, kind, OTHER_ADDRESS) as listener,
        chat_client(mod.bound, kind) as guest_listener,
    ):
        for client in (listener, guest_listener):
            await client.send({"type": "listen"})
            await client.send({"type": "ping"})  # answered once the listen is done
            assert await client.recv() == {"type": "pong"}
        await root.send({"type": "chat", "text": "hello listeners"})
        for client in (listener, guest_listener):
            await client.recv_until(type="chat", text="hello listeners")
        await root.send({"type": "ban", "room": "#lobby", "address": OTHER_ADDRESS})
        error = await listener.recv_until(type="error")
        assert error["code"] == "banned" and error["room"] == "#lobby"
        error = await answer(listener, {"type": "listen"})
        assert error["code"] == "banned"
        # registered_only takes the guests off #lobby's traffic, listeners too.
        await root.send({"type": "mode", "room": "#lobby", "registered_only": True})
        error = await guest_listener.recv_until(type="error")
        assert error["code"] == "not_permitted"
        await root.send({"type": "chat", "text": "members only"})
        await root.recv_until(type="chat", text="members only")
        await guest_listener.send({"type": "ping"})
        assert await guest_listener.recv() == {"type": "pong"}  # nothing came before it


async def test_admin_commands_on_the_running_servers_database(mod: Moderated, kind: str) -> None:
    async with cast(mod, kind, "Olga", "Bob") as (olga, bob):
        await olga.send({"type": "kick", "room": "#dev", "user": "Bob", "reason": "test"})
        await bob.recv_until(type="system", event="kick")

        def admin(*args: str) -> tuple[int, str]:
            result = CliRunner().invoke(cli_main, ["admin", *args, "--db", mod.db])
            return result.exit_code, result.output

        code, out = await trio.to_thread.run_sync(
            admin, "ban", "Bob", "--reason", "from the shell"
        )
        assert code == 0, out
        # The server notices, and closes Bob's connection.
        error = await closed_with_banned(bob)
        assert error["reason"] == "from the shell"
        code, out = await trio.to_thread.run_sync(admin, "log")
        lines = out.splitlines()
        assert "Olga  op  #dev  Olga  created the room" in lines[0]
        assert "Olga  kick  #dev  Bob  (test)" in lines[1]
        assert "console  ban  Bob  until lifted  (from the shell)" in lines[2]
