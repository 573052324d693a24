"""Write batching and encode-once: several queued messages leave in one write.

The server side runs over memory streams wrapped in a stream that records every
``send_all``, so the assertions are about writes and frames, never about time.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection
from wsproto.frame_protocol import FrameProtocol, Opcode

from tests.support.memory import CountingStream, memory_ws
from tests.support.tcp import TcpClient
from tests.support.ws import WsClient, get_text
from trio_chat import protocol
from trio_chat.config import Config
from trio_chat.server.rooms import Rooms
from trio_chat.server.session import Session
from trio_chat.transports.tcp import TcpTransport

CONFIG = Config(tcp_port=0, ws_port=0)
TS = "2026-11-26T18:00:00.000Z"
TEXTS = ["one", "two", "three"]


class StuckStream(CountingStream):
    """Once ``stuck``, writes never finish (a peer whose window stays shut)."""

    stuck = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stuck:
            await trio.sleep_forever()
        await super().send_all(data)


def broadcast_three(room: Rooms) -> None:
    """Queue three messages for everyone with no checkpoint between them."""
    for text in TEXTS:
        room.lobby.broadcast(protocol.chat("Zed", text, TS))


async def test_tcp_queued_messages_leave_in_one_write(nursery: trio.Nursery) -> None:
    room = Rooms()
    client_end, server_end = trio.testing.memory_stream_pair()
    counting = CountingStream(server_end)
    nursery.start_soon(Session(room, CONFIG, TcpTransport(counting, CONFIG)).run)
    async with TcpClient(client_end) as ann:
        await ann.join("Ann")
        before = len(counting.writes)
        broadcast_three(room)
        assert [(await ann.recv())["text"] for _ in TEXTS] == TEXTS
        assert len(counting.writes) == before + 1
        assert counting.writes[-1].count(b"\n") == 3


async def counted_ws(
    nursery: trio.Nursery, room: Rooms
) -> tuple[WebSocketConnection, CountingStream]:
    """A WebSocket session over memory whose server-side writes are recorded."""
    client_end, server_end = trio.testing.memory_stream_pair()
    counting = CountingStream(server_end)
    conn = await memory_ws(nursery, room, CONFIG, ends=(client_end, counting))
    return conn, counting


@pytest.mark.parametrize("batch", [False, True])
async def test_ws_queued_messages_leave_in_one_write(nursery: trio.Nursery, batch: bool) -> None:
    room = Rooms()
    conn, counting = await counted_ws(nursery, room)
    client = WsClient(conn)
    await client.join("Ann", batch=batch)
    before = len(counting.writes)
    broadcast_three(room)
    if batch:
        # One frame carrying the three objects, newline-separated.
        message = await get_text(conn)
        assert [json.loads(part)["text"] for part in message.split("\n")] == TEXTS
    else:
        # Three frames, one object each, all in the same write.
        assert [json.loads(await conn.get_message())["text"] for _ in TEXTS] == TEXTS
    assert len(counting.writes) == before + 1
    await conn.aclose()


async def test_ws_single_message_is_a_plain_frame_in_batch_mode(nursery: trio.Nursery) -> None:
    room = Rooms()
    conn, _ = await counted_ws(nursery, room)
    await WsClient(conn).join("Ann", batch=True)
    room.lobby.broadcast(protocol.chat("Zed", "alone", TS))
    assert json.loads(await conn.get_message())["text"] == "alone"
    await conn.aclose()


def test_encoded_once_for_every_transport() -> None:
    message = protocol.chat("Ann", "héllo\nworld", TS)
    assert isinstance(message, protocol.Encoded) and isinstance(message, str)
    assert json.loads(message)["text"] == "héllo\nworld"
    assert message.data == message.encode() + b"\n"
    assert message.data is message.data  # built once, then shared
    assert message.frame is message.frame
    assert protocol.wire_line(message) is message.data
    assert protocol.wire_line("plain") == b"plain\n"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_parse_as_websocket_text(size: int) -> None:
    """Our hand-built server frames, read by wsproto's own frame parser."""
    text = "x" * size
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(protocol.wire_frame(text) + protocol.wire_frame(protocol.encode({})))
    frames = list(parser.received_frames())
    assert [(f.opcode, f.payload, f.message_finished) for f in frames] == [
        (Opcode.TEXT, text, True),
        (Opcode.TEXT, "{}", True),
    ]


def test_batch_frame_joins_with_newlines() -> None:
    lines = [protocol.encode({"n": 1}), "plain", protocol.encode({"n": 2})]
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(protocol.wire_batch_frame(lines))
    (frame,) = parser.received_frames()
    assert frame.payload == '{"n":1}\nplain\n{"n":2}'


def test_a_batch_frame_built_again_is_the_same_for_the_same_lines() -> None:
    """The frame of the last batch is kept for the next member that gets the same
    lines; what its lines are is read at each call, also from a list changed since."""
    lines: list[str] = [protocol.encode({"n": 1}), protocol.encode({"n": 2})]
    first = protocol.wire_batch_frame(lines)
    assert protocol.wire_batch_frame(list(lines)) == first
    lines[1] = "plain"  # the same list, changed in place
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(protocol.wire_batch_frame(lines))
    (frame,) = parser.received_frames()
    assert frame.payload == '{"n":1}\nplain'


async def test_write_timeout_still_evicts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The writer's one cancel scope: a write that outlasts send_timeout evicts."""
    room = Rooms()
    client_end, server_end = trio.testing.memory_stream_pair()
    stuck = StuckStream(server_end)
    session = Session(room, CONFIG, TcpTransport(stuck, CONFIG))
    nursery.start_soon(session.run)
    async with TcpClient(client_end) as ann:
        await ann.join("Ann")
        stuck.stuck = True
        room.lobby.broadcast(protocol.chat("Zed", "never read", TS))
        await trio.sleep(CONFIG.send_timeout + 1)
        assert session.member.evicted == protocol.SLOW_CONSUMER
        assert room.names == []


async def test_ws_batch_frames_stay_within_the_reference_clients_message_limit(
    nursery: trio.Nursery
) -> None:
    """A backlog of long messages must not become one frame bigger than a client's
    trio-websocket accepts (``trio-chat join`` allows 1 MiB): it would close with
    1009, reconnect with ``since`` and get the same frame again, for ever."""
    from trio_chat.client.config import ClientConfig

    room = Rooms()
    conn = await memory_ws(nursery, room, CONFIG, max_message_size=ClientConfig().max_line)
    await WsClient(conn).join("Ann", batch=True)
    texts = [f"{n:03} " + "x" * 4000 for n in range(300)]  # 1.2 MB queued at once
    for text in texts:
        room.lobby.broadcast(protocol.chat("Zed", text, TS))
    got: list[str] = []
    while len(got) < len(texts):
        got += [json.loads(part)["text"] for part in (await get_text(conn)).split("\n")]
    assert got == texts
    await conn.aclose()


def test_batch_frames_are_split_at_the_frame_budget() -> None:
    lines: list[str] = [protocol.encode({"n": n, "pad": "x" * 40_000}) for n in range(5)]
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(protocol.wire_batch_frame(lines))
    payloads = [f.payload for f in parser.received_frames()]
    assert all(isinstance(p, str) for p in payloads)
    texts = [p for p in payloads if isinstance(p, str)]
    assert all(len(p.encode()) <= protocol.MAX_BATCH_FRAME for p in texts)
    assert [json.loads(line)["n"] for p in texts for line in p.split("\n")] == [0, 1, 2, 3, 4]
    # One message longer than the budget is still one frame of its own.
    big = protocol.encode({"pad": "y" * 100_000})
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(protocol.wire_batch_frame([big, big]))
    assert [f.payload for f in parser.received_frames()] == [big, big]
