"""The original lab client's shape, on the WebSocket port.

That client never sends ``join``: it puts ``user`` (and its own ``timestamp``) in every
chat, reads one JSON object per frame, prints ``text`` and ``clients_count`` of system
notices (``data['text']``: a missing key would crash it) and ``user``, ``text``,
``timestamp`` of the rest.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from tests.support.tcp import matches
from tests.support.waits import WAIT
from tests.support.ws import ws_client
from trio_chat import Bound


def seed_chat(user: str, text: str) -> str:
    message = {"type": "chat", "user": user, "text": text, "timestamp": "19:20:01"}
    return json.dumps(message)


async def seed_recv(conn: WebSocketConnection) -> dict[str, Any]:
    """One frame as the seed client reads it: exactly one JSON object."""
    with trio.fail_after(WAIT):
        frame = await conn.get_message()
    assert isinstance(frame, str)
    message = json.loads(frame)  # a batched frame ("a\nb") would fail here
    assert isinstance(message, dict)
    if message.get("type") in ("system", "error"):
        assert isinstance(message["text"], str)
    return message


async def seed_recv_until(conn: WebSocketConnection, **match: Any) -> dict[str, Any]:
    while True:
        message = await seed_recv(conn)
        if matches(message, match):
            return message


def is_iso_utc(value: object) -> bool:
    return isinstance(value, str) and value.endswith("Z") and bool(
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    )


async def test_seed_client_chats_without_joining(server: Bound) -> None:
    async with ws_client(server.ws_port) as x, ws_client(server.ws_port) as y:
        await x.send_message(seed_chat("X", "hello from the seed"))
        # The very first frame is the join notice: no welcome for a client that never
        # asked to join (client.py would print it as "[] X: ").
        notice = await seed_recv(x)
        assert (notice["type"], notice["event"], notice["name"]) == ("system", "join", "X")
        assert notice["text"] == "X joined the chat"
        assert notice["clients_count"] == 1
        said = await seed_recv_until(x, type="chat")
        assert said["user"] == "X" and said["text"] == "hello from the seed"
        assert is_iso_utc(said["timestamp"])  # the server's clock, not the client's

        await y.send_message(seed_chat("Y", "me too"))
        notice = await seed_recv_until(x, type="system", event="join", name="Y")
        assert notice["clients_count"] == 2
        said = await seed_recv_until(x, type="chat")
        assert (said["user"], said["text"]) == ("Y", "me too")
        assert is_iso_utc(said["timestamp"])

        await y.aclose()
        notice = await seed_recv_until(x, type="system", event="leave", name="Y")
        assert notice["text"] == "Y left the chat"
        assert notice["clients_count"] == 1


async def test_seed_client_sees_errors_with_text(server: Bound) -> None:
    async with ws_client(server.ws_port) as x:
        await x.send_message("not json")
        error = await seed_recv_until(x, type="error")
        assert error["code"] == "bad_json" and error["text"]
