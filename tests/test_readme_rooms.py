"""The README's two-room session at ``nc``, as a real server answers it: Bob's typed
lines are sent as typed, and every line the README shows him getting must come, in
that order and shape (timestamps, the version and the ids' values aside: ids must map
one to one, in the same order), while Ann (WebSocket) and Cy (TCP, JSON) do what the
README says they did."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.clients import enter
from tests.support.config import FIRST_CONTACT
from tests.support.tcp import Message, TcpClient
from tests.support.waits import WAIT
from tests.support.ws import WsClient, ws_client
from trio_chat import Bound, Config
from trio_chat.protocol import LineBuffer

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def config() -> Config:
    return replace(FIRST_CONTACT, room_create_rate=0)


def two_room_session() -> list[str]:
    """The lines of the README's console block that uses ``/join #dev``."""
    blocks = re.findall(r"```console\n(.*?)```", README.read_text(), flags=re.S)
    [block] = [b for b in blocks if "/join #dev" in b]
    lines: list[str] = block.splitlines()
    assert lines[0] == "$ nc localhost 8764"
    return lines[1:]


class Nc:
    """What ``nc`` prints: every line, the greeting included (the test client skips
    it)."""

    def __init__(self, client: TcpClient) -> None:
        self.stream = client.stream
        self._buffer = LineBuffer(1 << 20)
        self._lines: list[bytes] = []

    async def recv(self) -> Message:
        with trio.fail_after(WAIT):
            while not self._lines:
                data = await self.stream.receive_some(65536)
                assert data, "closed"
                self._lines.extend(self._buffer.feed(data))
        message: Message = json.loads(self._lines.pop(0))
        return message


class Ids:
    """The README's ids mapped to the server's, one to one and in the same order."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def same(self, shown: int, got: int) -> None:
        if shown in self.seen:
            assert self.seen[shown] == got, (shown, got)
            return
        assert got not in self.seen.values(), got
        assert all((s < shown) == (g < got) for s, g in self.seen.items() if s), (shown, got)
        self.seen[shown] = got


def same_shape(shown: dict[str, Any], got: Message, ids: Ids) -> None:
    shown, got = dict(shown), dict(got)
    for volatile in ("timestamp", "version"):
        assert (volatile in shown) == (volatile in got), (shown, got)
        shown.pop(volatile, None)
        got.pop(volatile, None)
    for field in ("id", "last_id"):
        if field in shown:
            assert field in got, (shown, got)
            if shown[field] == 0:
                assert got[field] == 0
            else:
                ids.same(shown.pop(field), got.pop(field))
            shown.pop(field, None)
            got.pop(field, None)
    assert shown == got


async def test_the_readme_two_room_session(server: Bound) -> None:
    async with ws_client(server.ws_port) as conn, await TcpClient.connect(server.tcp_port) as cy:
        ann = WsClient(conn)
        await ann.join("Ann")
        await cy.join("Cy")
        await enter(ann, "#dev")
        await ann.send({"type": "topic", "room": "#dev", "topic": "release on Friday"})
        await ann.recv_until(type="system", event="topic")
        await ann.send({"type": "chat", "room": "#dev", "text": "build is green"})
        await ann.recv_until(type="chat", text="build is green")
        ids = Ids()
        async with await TcpClient.connect(server.tcp_port) as bob:
            nc = Nc(bob)
            for line in two_room_session():
                if not line.startswith("{"):
                    await bob.send_raw(line.encode() + b"\n")
                    continue
                shown = json.loads(line)
                if shown["type"] == "chat" and shown["user"] == "Cy" and "history" not in shown:
                    await cy.send({"type": "chat", "text": shown["text"]})  # Cy speaks now
                same_shape(shown, await nc.recv(), ids)
            assert await bob.eof()  # after /quit
        assert (await ann.recv_until(type="msg"))["text"] == "can you review?"
