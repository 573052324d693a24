"""Moderation across a cluster (``--redis``) on a real redis-server: a ban, an op or a
mode set on one server holds on another (each looks at the shared version every
second; every wait here is bounded, none slept)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.support.clients import Client
from tests.support.cluster import ws
from tests.support.moderation import PASSWORD
from tests.support.redis import RedisServer
from tests.support.tcp import TcpClient
from tests.support.waits import until
from trio_chat import Bound, Config, serve
from trio_chat.server.app import open_rooms
from trio_chat.server.rooms import Rooms


@pytest.fixture
def config(redis_server: RedisServer, tmp_path: Path) -> Config:
    # One accounts database for both servers: an account is the same on each.
    return Config(tcp_port=0, ws_port=0, rate_limit=0, connect_rate=0, resume_grace=0,
                  redis=redis_server.url, db=str(tmp_path / "accounts.db"),
                  admins=("Root",))


@asynccontextmanager
async def node(config: Config) -> AsyncIterator[tuple[Rooms, Bound]]:
    """One server of the cluster as ``serve`` opens it (accounts and moderation too)."""
    async with open_rooms(config) as rooms, trio.open_nursery() as nursery:
        bound: Bound = await nursery.start(partial(serve, config, rooms=rooms))
        yield rooms, bound
        nursery.cancel_scope.cancel()


async def login(client: Client, name: str, *, new: bool = False) -> None:
    """``client``, joined as ``name``, registers (``new``) or logs in to that account."""
    kind = "register" if new else "login"
    await client.send({"type": kind, "user": name, "password": PASSWORD})
    await client.recv_until(type="token")


async def test_a_ban_on_one_server_closes_the_connection_on_another(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as root,
        ws(b.ws_port) as bob,
    ):
        await root.join("Root")
        await login(root, "Root", new=True)
        await bob.join("Bob")
        await root.recv_until(type="system", event="join", name="Bob")
        await root.send({"type": "ban", "user": "Bob", "duration": 3600, "reason": "spam"})
        notice = await root.recv_until(type="system", event="ban")
        assert notice["name"] == "Bob" and notice["reason"] == "spam"
        error = await bob.recv_until(type="error")
        assert error["code"] == "banned" and error["reason"] == "spam"
        assert error["until"] == notice["until"]
        await root.recv_until(type="system", event="leave", name="Bob")
        # Refused at join on the other server too, and listed there.
        async with await TcpClient.connect(b.tcp_port) as again:
            await again.send({"type": "join", "user": "bob"})
            error = await again.recv_until(type="error")
            assert error["code"] == "banned"
            assert await again.eof()
        async with await TcpClient.connect(b.tcp_port) as other_root:
            await other_root.join("Root2")
            await other_root.send({"type": "bans"})
            error = await other_root.recv_until(type="error")
            assert error["code"] == "not_permitted"  # not an admin


async def test_ops_modes_and_voice_are_shared(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (rooms_b, b),
        await TcpClient.connect(a.tcp_port) as root,
        await TcpClient.connect(b.tcp_port) as bob,
    ):
        await root.join("Root")
        await login(root, "Root", new=True)
        await bob.join("Bob")
        b_state = rooms_b.moderation
        # Root (on a) makes Olga (on a, logged in) an op of #lobby, the shared room.
        async with await TcpClient.connect(a.tcp_port) as olga:
            await olga.join("Olga")
            await login(olga, "Olga", new=True)
            await root.send({"type": "op", "user": "Olga"})
            await olga.recv_until(type="system", event="op", name="Olga")
        # Olga comes back on b: she is an op there (once b has looked at Redis).
        await until(lambda: bool(b_state.state.ops.get("#lobby")))
        async with await TcpClient.connect(b.tcp_port) as olga:
            await olga.send({"type": "login", "user": "Olga", "password": PASSWORD})
            await olga.recv_until(type="welcome")
            await olga.recv_until(type="token")
            await olga.send({"type": "mode", "moderated": True})
            await olga.recv_until(type="system", event="mode", moderated=True)
            await bob.send({"type": "chat", "text": "hello?"})
            error = await bob.recv_until(type="error")
            assert error["code"] == "muted" and error["reason"] == "moderated"
            # Root voices Bob on a; b applies it.
            await root.send({"type": "voice", "user": "Bob"})
            await root.recv_until(type="system", event="voice")
            await until(lambda: bool(b_state.state.voiced.get("#lobby")))
            await bob.send({"type": "chat", "text": "voiced"})
            await root.recv_until(type="chat", text="voiced")


async def test_a_kick_on_one_server_reaches_a_user_on_another(config: Config) -> None:
    async with (
        node(config) as (_, a),
        node(config) as (_, b),
        await TcpClient.connect(a.tcp_port) as root,
        await TcpClient.connect(b.tcp_port) as bob,
        await TcpClient.connect(b.tcp_port) as cid,
    ):
        await root.join("Root")
        await login(root, "Root", new=True)
        await bob.join("Bob")
        await cid.join("Cid")
        await root.recv_until(type="system", event="join", name="Bob")
        await root.recv_until(type="system", event="join", name="Cid")
        await root.send({"type": "kick", "user": "bob", "reason": "off topic"})
        # The same notice on both servers: to Root and to Bob and Cid (on b).
        for client in (root, bob, cid):
            notice = await client.recv_until(type="system", event="kick")
            assert (notice["name"], notice["by"], notice["reason"], notice["room"]) == (
                "Bob", "Root", "off topic", "#lobby")
            assert notice["text"] == "Bob was kicked from #lobby by Root: off topic"
        # Out of the room (the connection stays): Bob's chat is refused there.
        await bob.send({"type": "chat", "text": "still here?"})
        assert (await bob.recv_until(type="error"))["code"] == "not_in_room"
        # a hears that Bob is out of #lobby (b's presence change), as from any part.
        await root.recv_until(type="system", event="leave", name="Bob")
        await root.send({"type": "who"})
        assert "Bob" not in (await root.recv_until(type="users"))["users"]
        # Nobody by that name in the room anywhere (any more): no_such_user.
        await root.send({"type": "kick", "user": "Bob"})
        assert (await root.recv_until(type="error"))["code"] == "no_such_user"
