"""Flood control: fakelag over the limit, rate_limited past the ceiling, others unhurt."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.support.memory import memory_tcp, memory_ws
from tests.support.ws import close_reason
from trio_chat.config import Config
from trio_chat.protocol import RATE_LIMITED
from trio_chat.server.rooms import Rooms

FLOOD = Config(rate_limit=5, rate_burst=10, rate_ceiling=50)


def lines(texts: list[str]) -> bytes:
    return b"".join(json.dumps({"type": "chat", "text": t}).encode() + b"\n" for t in texts)


async def test_over_the_limit_messages_are_delayed_not_dropped_and_others_see_no_delay(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
    reader = memory_tcp(nursery, room, FLOOD)
    normal = memory_tcp(nursery, room, FLOOD)
    flooder = memory_tcp(nursery, room, FLOOD)
    await reader.join("Reader")
    await normal.join("Normal")
    await flooder.join("Flooder")  # one token of the burst; 9 left
    start = trio.current_time()
    await flooder.send_raw(lines([f"f{i}" for i in range(30)]))
    await normal.send({"type": "chat", "text": "unhurried"})

    arrivals: dict[str, float] = {}
    while len(arrivals) < 31:
        msg = await reader.recv_until(type="chat")
        arrivals[msg["text"]] = trio.current_time() - start
    # The other client's message is not held up behind the flood.
    assert arrivals["unhurried"] == pytest.approx(0, abs=1e-6)
    # The flood arrives complete and in order, paced at 5/s after the burst.
    flood = [text for text in arrivals if text.startswith("f")]
    assert flood == [f"f{i}" for i in range(30)]
    assert arrivals["f8"] == pytest.approx(0, abs=1e-6)
    assert arrivals["f9"] == pytest.approx(0.2)
    assert arrivals["f29"] == pytest.approx(21 * 0.2)
    # The flooder is still connected and gets no error.
    await flooder.send({"type": "ping"})
    msg = await flooder.recv_until(type="pong")
    assert all(m.get("type") != "error" for m in [msg])


async def test_past_the_ceiling_the_flooder_is_told_and_cut_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
    reader = memory_tcp(nursery, room, FLOOD)
    flooder = memory_tcp(nursery, room, FLOOD)
    await reader.join("Reader")
    await flooder.join("Flooder")
    await flooder.send_raw(lines([f"f{i}" for i in range(200)]))

    echoed, error = [], None
    while (line := await flooder.line()) is not None:
        msg = json.loads(line)
        if msg["type"] == "chat":
            echoed.append(msg["text"])
        elif msg["type"] == "error":
            error = msg
    assert error is not None and error["code"] == RATE_LIMITED
    # 9 tokens left after the join, then 50 delayed messages; the next one is refused.
    assert echoed == [f"f{i}" for i in range(9 + 50)]
    # Everyone else got exactly the messages the flooder saw accepted: none dropped.
    seen = []
    while True:
        msg = await reader.recv()
        if msg["type"] == "system" and msg["event"] == "leave":
            assert msg["name"] == "Flooder"
            break
        if msg["type"] == "chat":
            seen.append(msg["text"])
    assert seen == echoed


async def test_websocket_flooder_is_closed_with_4029(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(rate_limit=5, rate_burst=2, rate_ceiling=3)
    room = Rooms()
    ws = await memory_ws(nursery, room, config)
    await ws.send_message(json.dumps({"type": "join", "user": "Flooder"}))
    for i in range(20):
        await ws.send_message(json.dumps({"type": "chat", "text": f"f{i}"}))
    received = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            received.append(json.loads(await ws.get_message()))
    assert close_reason(closed.value).code == 4029
    assert received[-1]["type"] == "error" and received[-1]["code"] == RATE_LIMITED
    chats = [m["text"] for m in received if m["type"] == "chat"]
    assert chats == [f"f{i}" for i in range(1 + 3)]  # 1 token after the join, 3 delayed


async def test_rate_limit_zero_turns_flood_control_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(rate_limit=0)
    room = Rooms()
    reader = memory_tcp(nursery, room, config)
    sender = memory_tcp(nursery, room, config)
    await reader.join("Reader")
    await sender.join("Sender")
    start = trio.current_time()
    await sender.send_raw(lines([f"m{i}" for i in range(500)]))
    for i in range(500):
        msg = await reader.recv_until(type="chat")
        assert msg["text"] == f"m{i}"
    assert trio.current_time() == start
