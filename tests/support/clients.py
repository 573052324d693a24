"""One chat client over either transport, for tests that run each case over both, and
the steps of the rooms protocol they share (entering a room, reading its replay)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from trio_chat import Bound

from .tcp import Message, TcpClient
from .ws import WsClient, ws_client

#: A client on TCP or WebSocket: the same ``send``, ``recv`` and ``recv_until``.
Client = TcpClient | WsClient
#: The transports a case runs over (``pytest.mark.parametrize("kind", KINDS)``).
KINDS: Final = ("tcp", "ws")
#: The other transport, for the second client of a case.
OTHER: Final = {"tcp": "ws", "ws": "tcp"}


@asynccontextmanager
async def chat_client(bound: Bound, kind: str) -> AsyncIterator[Client]:
    """A client of the server at ``bound`` over ``kind`` (``tcp`` or ``ws``)."""
    if kind == "tcp":
        async with await TcpClient.connect(bound.tcp_port) as tcp:
            yield tcp
    else:
        async with ws_client(bound.ws_port) as conn:
            yield WsClient(conn)


async def named(client: Client, name: str) -> Message:
    """Join (v1: into #lobby) and skip to the client's own join notice; the welcome."""
    await client.send({"type": "join", "user": name})
    welcome = await client.recv_until(type="welcome")
    await client.recv_until(type="system", event="join", name=name)
    return welcome


async def said(client: Client, room: str, text: str) -> Message:
    """Say ``text`` in ``room``; its echo (the chat as everyone gets it)."""
    await client.send({"type": "chat", "room": room, "text": text})
    return await client.recv_until(type="chat", text=text)


async def replay_after(
    client: Client, welcome: Message
) -> tuple[Message, list[Message], Message]:
    """After a ``welcome``: the replayed chats and the ``history_end`` of its room."""
    room = welcome["room"]
    chats = []
    while (msg := await client.recv())["type"] != "history_end":
        assert msg["type"] == "chat" and msg["history"] is True and msg["room"] == room, msg
        chats.append(msg)
    assert msg["room"] == room, msg
    return welcome, chats, msg


async def enter(
    client: Client, room: str, user: str | None = None, *, again: bool = False, **extra: Any
) -> tuple[Message, list[Message], Message]:
    """Join ``room`` (as ``user`` if given): its welcome, replay and ``history_end``,
    then its own join notice (skipped past; none comes ``again``, for a room the
    client is in already)."""
    join: dict[str, Any] = {"type": "join", "room": room, **extra}
    if user is not None:
        join["user"] = user
    await client.send(join)
    welcome = await client.recv_until(type="welcome")
    assert welcome["room"].lower() == room.lower(), welcome
    result = await replay_after(client, welcome)
    if not again:
        await client.recv_until(type="system", event="join", room=welcome["room"],
                                name=welcome["user"])
    return result
