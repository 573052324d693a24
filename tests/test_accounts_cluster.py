"""Accounts on servers sharing a real Redis (``--redis``): without ``--secret`` they
sign tokens with one key kept in Redis, so one server's token logs in on another;
servers sharing the database file learn each other's registrations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio

from tests.support.cluster import name_released
from tests.support.config import TEST_CONFIG
from tests.support.redis import RedisServer
from tests.support.tcp import TcpClient
from trio_chat import Bound, serve

PASSWORD = "correct horse battery"


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
        await name_released(redis_server.url, "Ann")  # once the first server says so
        async with await TcpClient.connect(second.tcp_port) as again:
            await again.send({"type": "login", "token": token["token"]})
            assert (await again.recv_until(type="welcome"))["account"] == "Ann"
            # Logged in there, the account is known there: its name is refused to guests.
            async with await TcpClient.connect(second.tcp_port) as guest:
                await guest.send({"type": "join", "user": "ann"})
                assert (await guest.recv_until(type="error"))["code"] == "name_registered"
        nursery.cancel_scope.cancel()
