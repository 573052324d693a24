"""The seed's own client, unchanged (tests/data/seed_client.py), against trio-chat.

It asks for a name, connects, and then only listens until its user types: it sends
no ``join``, and names itself in every ``chat``. It must see the room from the moment
it connects (a WebSocket quiet for a second becomes a listener), and a name that is
taken must not leave it unable to chat (it joins as the first free variant, and
prints the ``system`` line saying so). It prints ``text`` and ``clients_count`` of
every ``system`` message, so each carries one, the shutdown notice included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.support.config import FIRST_CONTACT
from tests.support.tcp import TcpClient
from tests.support.waits import WAIT, until
from trio_chat import Bound, serve
from trio_chat.server.rooms import Rooms

pytest.importorskip("websockets", reason="the seed's client needs websockets (dev extras)")

SEED_CLIENT = Path(__file__).with_name("data") / "seed_client.py"
#: Runs the client as it is, except that ``websockets.connect`` gets the test server's
#: URL instead of the ``ws://localhost:8765`` the client hard-codes.
LAUNCHER = """
import runpy, sys, websockets
path, url = sys.argv[1:3]
connect = websockets.connect
websockets.connect = lambda uri, *args, **kwargs: connect(url, *args, **kwargs)
sys.argv = [path]
runpy.run_path(path, run_name="__main__")
"""
#: What the client prints (Russian, as in the lab report).
ONLINE = "Пользователей онлайн"


class SeedClient:
    """The seed's client in a subprocess: its stdin piped, its stdout read as it comes
    (it prints prompts without newlines)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = ""
        self._read = 0

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def shows(self, text: str) -> str:
        """Wait until the client has printed ``text`` (after what this returned last);
        the line it is on."""
        assert self.process.stdout is not None
        with trio.fail_after(WAIT):
            while (at := self.output.find(text, self._read)) < 0:
                data = await self.process.stdout.receive_some(65536)
                assert data, f"the client exited before printing {text!r}: {self.output}"
                self.output += data.decode()
        start = self.output.rfind("\n", 0, at) + 1
        end = self.output.find("\n", at)
        self._read = at + len(text)
        return self.output[start : end if end >= 0 else None]


@asynccontextmanager
async def seed_client(bound: Bound, name: str) -> AsyncIterator[SeedClient]:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(
            trio.run_process,
            [sys.executable, "-c", LAUNCHER, str(SEED_CLIENT), f"ws://127.0.0.1:{bound.ws_port}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ))
        client = SeedClient(process)
        await client.type(name)  # "Введите ваше имя: "
        await client.shows("Подключение к чату установлено")
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()  # the client never exits by itself


async def test_the_seed_client_sees_the_room_before_it_speaks(nursery: trio.Nursery) -> None:
    room = Rooms()
    bound: Bound = await nursery.start(partial(serve, FIRST_CONTACT, rooms=room))
    async with await TcpClient.connect(bound.tcp_port) as bob, seed_client(bound, "Ann") as ann:
        await bob.join("Bob")
        await until(lambda: room.listeners == 1)  # a second after its handshake
        # Others talk, join and leave: it shows all of it, having typed nothing.
        await bob.send({"type": "chat", "text": "anyone here?"})
        assert (await ann.shows("Bob: anyone here?")).startswith("[20")  # [timestamp]
        async with await TcpClient.connect(bound.tcp_port) as cat:
            await cat.join("Cat")
            assert f"Cat joined the chat ({ONLINE}: 2)" in await ann.shows("Cat joined")
            await cat.send({"type": "leave"})
        assert f"Cat left the chat ({ONLINE}: 1)" in await ann.shows("Cat left")
        # A listener is nobody: not in who, not counted, no notice of its own.
        await bob.send({"type": "who"})
        assert await bob.recv_until(type="users") == {
            "type": "users", "room": "#lobby", "users": ["Bob"], "clients_count": 1
        }
        # Its first message joins it, seed style: everyone sees it arrive, then speak.
        await ann.type("hi Bob")
        notice = await bob.recv_until(type="system", event="join")
        assert (notice["name"], notice["clients_count"]) == ("Ann", 2)
        said = await bob.recv_until(type="chat")
        assert (said["user"], said["text"]) == ("Ann", "hi Bob")
        assert f"Ann joined the chat ({ONLINE}: 2)" in await ann.shows("Ann joined")
        await ann.shows("Ann: hi Bob")
        assert "Ошибка" not in ann.output  # no error on the way
        assert room.listeners == 0 and room.names == ["Bob", "Ann"]


async def test_a_seed_client_whose_name_is_taken_chats_under_a_variant(
    nursery: trio.Nursery,
) -> None:
    stop = trio.Event()
    bound: Bound = await nursery.start(partial(serve, FIRST_CONTACT, stop=stop))
    async with await TcpClient.connect(bound.tcp_port) as bob, seed_client(bound, "bob") as seed:
        await bob.join("Bob")
        await seed.type("is this thing on?")
        # It cannot choose another name: it is told which one it got, in a line it prints.
        told = await seed.shows("is taken")
        assert told.endswith(f"the name bob is taken: you are bob2 ({ONLINE}: 2)")
        said = await bob.recv_until(type="chat")
        assert (said["user"], said["text"]) == ("bob2", "is this thing on?")
        await seed.shows("bob2: is this thing on?")
        # Its next messages go out under that name, whatever name it puts in them.
        await seed.type("second")
        assert (await bob.recv_until(type="chat"))["user"] == "bob2"
        # The shutdown notice says how many were online, as every system line does.
        stop.set()
        assert f"server shutting down ({ONLINE}: 2)" in await seed.shows("shutting down")
        assert "Ошибка" not in seed.output
