"""Accounts on servers sharing a real Redis (``--redis``): the accounts, invites and
the direct messages between accounts live in Redis, so servers on different machines
(here: different ``--db`` files) register, log in, check tokens and replay direct
messages for any account; without ``--secret`` they sign tokens with one key kept in
Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from tests.support.cluster import name_released
from tests.support.config import TEST_CONFIG
from tests.support.redis import RedisServer
from tests.support.tcp import TcpClient, free_port
from tests.support.waits import WAIT
from trio_chat import Bound, Config, serve
from trio_chat.cli import main
from trio_chat.cluster import Cluster
from trio_chat.server.app import open_rooms

PASSWORD = "correct horse battery"


@pytest.fixture
def configs(redis_server: RedisServer, tmp_path: Path) -> tuple[Config, Config]:
    """Two servers of one cluster, each with its own database (two machines)."""
    base = replace(TEST_CONFIG, redis=redis_server.url)
    return replace(base, db=str(tmp_path / "a.db")), replace(base, db=str(tmp_path / "b.db"))


@asynccontextmanager
async def node(config: Config) -> AsyncIterator[tuple[Cluster, Bound]]:
    """One server of the cluster as ``serve`` opens it (accounts and moderation too)."""
    async with open_rooms(config) as rooms, trio.open_nursery() as nursery:
        bound: Bound = await nursery.start(partial(serve, config, rooms=rooms))
        assert isinstance(rooms.delivery, Cluster)
        yield rooms.delivery, bound
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def servers(*configs: Config) -> AsyncIterator[list[tuple[Cluster, Bound]]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(node(config)) for config in configs]


async def until_token(client: TcpClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages before the ``token`` a login ends with, and the token message."""
    before = []
    while (message := await client.recv())["type"] != "token":
        assert message["type"] != "error", message
        before.append(message)
    return before, message


async def register(port: int, name: str, *clusters: Cluster) -> str:
    """Register ``name`` on the server at ``port`` and leave, the name released on
    each of ``clusters``; its token."""
    async with await TcpClient.connect(port) as client:
        await client.send({"type": "register", "user": name, "password": PASSWORD})
        token = await client.recv_until(type="token")
        await client.send({"type": "leave"})  # not held for a resume: the name is free
        await client.eof()
    await name_released(name, *clusters)
    return str(token["token"])


async def test_a_token_from_one_server_logs_in_on_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config = replace(TEST_CONFIG, redis=redis_server.url, db=str(tmp_path / "chat.db"))
    async with trio.open_nursery() as nursery:
        first: Bound = await nursery.start(serve, config)
        second: Bound = await nursery.start(serve, config)
        async with await TcpClient.connect(first.tcp_port) as ann:
            await ann.send({"type": "register", "user": "Ann", "password": PASSWORD})
            token = await ann.recv_until(type="token")
            await ann.send({"type": "leave"})  # not held for a resume: the name is free
            await ann.eof()
        await name_released("Ann", url=redis_server.url)  # once the first server says so
        async with await TcpClient.connect(second.tcp_port) as again:
            await again.send({"type": "login", "token": token["token"]})
            assert (await again.recv_until(type="welcome"))["account"] == "Ann"
            # Logged in there, the account is known there: its name is refused to guests.
            async with await TcpClient.connect(second.tcp_port) as guest:
                await guest.send({"type": "join", "user": "ann"})
                assert (await guest.recv_until(type="error"))["code"] == "name_registered"
        nursery.cancel_scope.cancel()


async def test_an_account_registered_on_one_server_logs_in_on_another(
    configs: tuple[Config, Config],
) -> None:
    async with servers(*configs) as ((_, a), (b_cluster, b)):
        token = await register(a.tcp_port, "Ann", b_cluster)
        async with await TcpClient.connect(b.tcp_port) as ann:
            await ann.send({"type": "login", "user": "ann", "password": PASSWORD})
            assert (await ann.recv_until(type="welcome"))["account"] == "Ann"
            await ann.recv_until(type="token")
        async with await TcpClient.connect(b.tcp_port) as ann:
            await ann.send({"type": "login", "token": token})
            assert (await ann.recv_until(type="welcome"))["account"] == "Ann"
        async with await TcpClient.connect(b.tcp_port) as wrong:
            await wrong.send({"type": "login", "user": "Ann", "password": "not the password"})
            assert (await wrong.recv_until(type="error"))["code"] == "login_failed"


async def test_a_look_alike_registration_is_refused_on_another_server(
    configs: tuple[Config, Config],
) -> None:
    async with servers(*configs) as ((_, a), (b_cluster, b)):
        await register(a.tcp_port, "Ann", b_cluster)
        async with await TcpClient.connect(b.tcp_port) as other:
            # Cyrillic A: a look-alike of Ann, taken on another server a moment ago
            # (whether or not B has followed A's registrations yet: Redis decides).
            await other.send({"type": "register", "user": "\u0410nn", "password": PASSWORD})
            error = await other.recv_until(type="error")
            assert error["code"] == "name_registered"
            assert "Ann" in error["text"]
            await other.send({"type": "register", "user": "ANN", "password": PASSWORD})
            assert (await other.recv_until(type="error"))["code"] == "name_registered"


async def test_two_servers_registering_look_alikes_at_once_make_one_account(
    configs: tuple[Config, Config],
) -> None:
    async with servers(*configs) as ((_, a), (_, b)):
        codes: list[str] = []

        async def attempt(port: int, name: str) -> None:
            async with await TcpClient.connect(port) as client:
                await client.send({"type": "register", "user": name, "password": PASSWORD})
                while (reply := await client.recv())["type"] not in ("token", "error"):
                    pass
                codes.append(reply.get("code", "registered"))

        async with trio.open_nursery() as racing:
            racing.start_soon(attempt, a.tcp_port, "Zoe")
            racing.start_soon(attempt, b.tcp_port, "Z\u043ee")  # Cyrillic o
        assert sorted(codes) == ["name_registered", "registered"]


async def test_logout_on_one_server_revokes_the_token_on_another(
    configs: tuple[Config, Config],
) -> None:
    async with servers(*configs) as ((_, a), (_, b)):
        async with await TcpClient.connect(a.tcp_port) as ann:
            await ann.send({"type": "register", "user": "Ann", "password": PASSWORD})
            token = (await ann.recv_until(type="token"))["token"]
            await ann.send({"type": "logout"})
            await ann.recv_until(type="system", event="logout")
        async with await TcpClient.connect(b.tcp_port) as again:
            await again.send({"type": "login", "token": token})
            assert (await again.recv_until(type="error"))["code"] == "login_failed"


async def test_dms_between_accounts_on_two_servers_are_replayed_on_either(
    configs: tuple[Config, Config],
) -> None:
    async with servers(*configs) as ((a_cluster, a), (b_cluster, b)):
        async with (
            await TcpClient.connect(a.tcp_port) as ann,
            await TcpClient.connect(b.tcp_port) as bob,
            await TcpClient.connect(b.tcp_port) as cid,
        ):
            await ann.send({"type": "register", "user": "Ann", "password": PASSWORD})
            await ann.recv_until(type="token")
            await bob.send({"type": "register", "user": "Bob", "password": PASSWORD})
            await bob.recv_until(type="token")
            await cid.join("Cid")  # a guest
            await ann.recv_until(type="system", event="join", name="Cid")
            await ann.send({"type": "msg", "to": "Bob", "text": "first"})
            first = await bob.recv_until(type="msg")
            await ann.send({"type": "msg", "to": "Cid", "text": "to a guest"})
            await cid.recv_until(type="msg")
            await bob.send({"type": "msg", "to": "Ann", "text": "second"})
            second = await ann.recv_until(type="msg", text="second")
            assert first["id"] < second["id"]
            for client in (ann, bob, cid):  # not held for a resume: the names are free
                await client.send({"type": "leave"})
                await client.eof()
            for name in ("Ann", "Bob"):
                await name_released(name, a_cluster, b_cluster)
        # Each login, on the server the other account was not on, replays both (each
        # DM was kept by its recipient's server, in Redis).
        for port, name in ((a.tcp_port, "Bob"), (b.tcp_port, "Ann")):
            async with await TcpClient.connect(port) as again:
                await again.send({"type": "login", "user": name, "password": PASSWORD})
                before, _ = await until_token(again)
                replayed = [m for m in before if m["type"] == "msg"]
                assert [(m["from"], m["to"], m["text"], m["history"]) for m in replayed] == [
                    ("Ann", "Bob", "first", True), ("Bob", "Ann", "second", True),
                ]
                assert [m["id"] for m in replayed] == [first["id"], second["id"]]
                await again.send({"type": "leave"})
                await again.eof()
            await name_released(name, a_cluster, b_cluster)
        async with await TcpClient.connect(a.tcp_port) as ann:
            await ann.send({"type": "login", "user": "Ann", "password": PASSWORD,
                            "since": first["id"]})
            before, _ = await until_token(ann)
            assert [m["text"] for m in before if m["type"] == "msg"] == ["second"]


def admin(*args: str) -> tuple[int, str, str]:
    """``trio-chat admin ARGS``: its exit code, stdout and stderr."""
    result = CliRunner().invoke(main, ["admin", *args])
    return result.exit_code, result.stdout, result.stderr


async def admin_answer(client: TcpClient) -> str:
    """What a running server answers a server-wide ``bans`` (an admin's): ``bans``,
    or the error's code."""
    await client.send({"type": "bans"})
    while (message := await client.recv())["type"] not in ("bans", "error"):
        pass
    return str(message.get("code", message["type"]))


async def test_invites_and_admin_grants_through_redis_reach_every_server(
    configs: tuple[Config, Config],
) -> None:
    url = configs[0].redis
    assert url is not None
    code, out, _ = await trio.to_thread.run_sync(admin, "invite", "--redis", url)
    assert code == 0
    invite = out.strip()
    configs = (replace(configs[0], registration="invite"),
               replace(configs[1], registration="invite"))
    async with servers(*configs) as ((a_cluster, a), (b_cluster, b)):
        async with await TcpClient.connect(a.tcp_port) as root:
            await root.send({"type": "register", "user": "Root", "password": PASSWORD,
                             "invite": invite})
            await root.recv_until(type="token")
            await root.send({"type": "leave"})
            await root.eof()
        await name_released("Root", a_cluster, b_cluster)
        async with await TcpClient.connect(b.tcp_port) as other:
            # The code was spent on A: one registration, on any server.
            await other.send({"type": "register", "user": "Zed", "password": PASSWORD,
                              "invite": invite})
            assert (await other.recv_until(type="error"))["code"] == "invite_invalid"
        code, _, err = await trio.to_thread.run_sync(admin, "grant", "Nobody", "--redis", url)
        assert code == 1 and "no account 'Nobody'" in err
        async with await TcpClient.connect(b.tcp_port) as root:
            await root.send({"type": "login", "user": "Root", "password": PASSWORD})
            await root.recv_until(type="token")
            assert await admin_answer(root) == "not_permitted"
            code, out, _ = await trio.to_thread.run_sync(admin, "grant", "root", "--redis", url)
            assert (code, out.strip()) == (0, "Root is a server admin")
            # B sees it within a second (each look is one round trip; bounded).
            with trio.fail_after(WAIT):
                while await admin_answer(root) != "bans":
                    pass
            code, out, _ = await trio.to_thread.run_sync(admin, "revoke", "Root", "--redis", url)
            assert (code, out.strip()) == (0, "Root is no longer a server admin")
            with trio.fail_after(WAIT):
                while await admin_answer(root) != "not_permitted":
                    pass


def test_admin_with_an_unreachable_redis_says_so() -> None:
    code, _, err = admin("grant", "Ann", "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert code == 1 and "cannot use Redis at redis://127.0.0.1:" in err
