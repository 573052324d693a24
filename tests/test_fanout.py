"""Fan-out under a burst: writers keep up, and one-frame-per-message WebSocket clients
get their frames in order."""

from __future__ import annotations

import json
from typing import Any

import trio

from tests.support.memory import memory_tcp, memory_ws
from trio_chat.config import Config
from trio_chat.server.rooms import Rooms


def lines(n: int) -> bytes:
    chat = '{"type":"chat","text":"m%d"}\n'
    return "".join(chat % i for i in range(n)).encode()


async def test_a_big_read_does_not_overflow_queues_of_clients_that_keep_up(
    nursery: trio.Nursery
) -> None:
    """One TCP read can hold a thousand lines; the reader must let writers run between
    broadcasts, or a reader that keeps up is evicted for the sender's burst."""
    config = Config(rate_limit=0, queue_size=8)
    room = Rooms()
    reader = memory_tcp(nursery, room, config)
    sender = memory_tcp(nursery, room, config)
    await reader.join("Reader")
    await sender.join("Sender")

    async def drain_sender() -> None:
        while await sender.line() is not None:
            pass

    nursery.start_soon(drain_sender)
    await sender.send_raw(lines(500))
    for i in range(500):
        assert (await reader.recv_until(type="chat"))["text"] == f"m{i}"


async def test_bursts_from_many_readers_at_once_do_not_overflow_queues(
    nursery: trio.Nursery
) -> None:
    """Readers handle several messages between checkpoints (a room-wide budget of
    queue_size / 16 per round), yet twenty readers bursting at once still leave room
    in the queue of a client that keeps up. A per-reader allowance of the same size
    (4 x 20 per round, twice, against a queue of 64) would evict it."""
    config = Config(rate_limit=0, queue_size=64)
    room = Rooms()
    reader = memory_tcp(nursery, room, config)
    reader.wait = 10  # real seconds: an evicted reader fails here, not at the suite's timeout
    await reader.join("Reader")
    senders = []
    for n in range(20):
        sender = memory_tcp(nursery, room, config)
        await sender.join(f"S{n}")
        senders.append(sender)
    await reader.recv_until(type="system", name="S19")
    async with trio.open_nursery() as sends:  # every sender's burst lands at once
        for sender in senders:
            sends.start_soon(sender.send_raw, lines(50))
    got: dict[str, list[str]] = {f"S{n}": [] for n in range(20)}
    for _ in range(20 * 50):
        chat = await reader.recv_until(type="chat")
        got[chat["user"]].append(chat["text"])
    assert all(texts == [f"m{i}" for i in range(50)] for texts in got.values())
    assert "Reader" in room.names


async def test_websocket_without_batch_gets_one_frame_per_message_in_order(
    nursery: trio.Nursery
) -> None:
    config = Config(rate_limit=0)
    room = Rooms()
    sender = memory_tcp(nursery, room, config)
    await sender.join("Sender")
    ws = await memory_ws(nursery, room, config)
    await ws.send_message(json.dumps({"type": "join", "user": "Web"}))
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1].get("type") != "system":
        frames.append(json.loads(await ws.get_message()))
    await sender.send_raw(lines(300))
    for i in range(300):
        frame = await ws.get_message()
        assert "\n" not in frame  # one message per frame
        assert json.loads(frame)["text"] == f"m{i}"
    await ws.aclose()
