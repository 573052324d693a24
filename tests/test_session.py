"""Sessions over in-memory streams: deterministic slow-consumer and timeout behaviour."""

import json
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_client_stream, wrap_server_stream

from trio_chat.config import Config
from trio_chat.server.room import Room
from trio_chat.server.session import Session
from trio_chat.transports.admission import Admission
from trio_chat.transports.tcp import TcpTransport, handle_tcp
from trio_chat.transports.ws import WsTransport

CONFIG = Config(queue_size=16, send_timeout=5.0)


class MemoryTcpPeer:
    """The client's end of an in-memory TCP connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, obj: Any) -> None:
        await self.stream.send_all(json.dumps(obj).encode() + b"\n")

    async def recv(self) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line) if line else await self.recv()

    async def recv_all(self) -> list[dict[str, Any]]:
        out = []
        while (msg := await self.recv()) is not None:
            out.append(msg)
        return out


async def tcp_session(nursery: trio.Nursery, room: Room, config: Config = CONFIG,
                      pair=trio.testing.memory_stream_pair) -> MemoryTcpPeer:
    client, server = pair()
    nursery.start_soon(handle_tcp, Admission(room, config), server)
    return MemoryTcpPeer(client)


async def joined_tcp(nursery, room, name, **kw) -> MemoryTcpPeer:
    peer = await tcp_session(nursery, room, **kw)
    await peer.send({"type": "join", "user": name})
    assert (await peer.recv())["type"] == "welcome"
    assert (await peer.recv())["event"] == "join"
    return peer


async def test_tcp_slow_consumer_is_told_and_closed_others_see_it_leave(nursery):
    room = Room()
    watcher = await joined_tcp(nursery, room, "Watcher", config=Config(queue_size=10_000))
    slow = await joined_tcp(nursery, room, "Slow")
    speaker = next(m for m in room._members.values() if m.name == "Watcher")
    # A burst with no checkpoint in between: Slow's queue (16) overflows at once.
    for n in range(40):
        room.say(speaker, f"m{n}")
    got = await slow.recv_all()
    assert got[-1]["type"] == "error" and got[-1]["code"] == "slow_consumer"
    assert len([m for m in got if m["type"] == "chat"]) <= 16
    # Watcher: Slow's join notice, the 40 messages, and Slow's leave notice somewhere.
    messages = [await watcher.recv() for _ in range(42)]
    assert [m["text"] for m in messages if m["type"] == "chat"] == [f"m{n}" for n in range(40)]
    notices = [(m["event"], m["name"]) for m in messages if m["type"] == "system"]
    assert notices == [("join", "Slow"), ("leave", "Slow")]
    assert room.names == ["Watcher"]


async def test_a_peer_that_stops_reading_is_cut_off_after_the_send_timeout(
    nursery, autojump_clock
):
    room = Room()
    watcher = await joined_tcp(nursery, room, "Watcher")
    # A lockstep stream: every send_all waits for the reader, like a full kernel buffer.
    client, server = trio.testing.lockstep_stream_pair()
    nursery.start_soon(handle_tcp, Admission(room, CONFIG), server)
    await client.send_all(b'{"type":"join","user":"Stuck"}\n')
    # Stuck never reads; the server's write of its welcome can never finish.
    start = trio.current_time()
    msg = await watcher.recv()
    assert msg["event"] == "join" and msg["name"] == "Stuck"
    msg = await watcher.recv()
    assert msg["event"] == "leave" and msg["name"] == "Stuck"
    assert trio.current_time() - start == pytest.approx(CONFIG.send_timeout, abs=0.5)
    assert room.names == ["Watcher"]


async def test_eof_flushes_what_is_queued_before_closing(nursery):
    room = Room()
    peer = await tcp_session(nursery, room)
    await peer.stream.send_all(b'/nick Ann\n{"type":"chat","text":"one"}\ntwo\n/who\n')
    await peer.stream.send_eof()
    got = await peer.recv_all()
    assert [m["type"] for m in got] == ["welcome", "system", "chat", "chat", "users"]
    assert room.names == []


async def test_last_line_without_newline_counts_at_eof(nursery):
    room = Room()
    peer = await tcp_session(nursery, room)
    await peer.stream.send_all(b"/nick Ann\nbye")
    await peer.stream.send_eof()
    got = await peer.recv_all()
    assert got[-1]["type"] == "chat" and got[-1]["text"] == "bye"


async def test_leave_closes_after_flushing(nursery):
    room = Room()
    peer = await joined_tcp(nursery, room, "Ann")
    await peer.send({"type": "chat", "text": "last words"})
    await peer.send({"type": "leave"})
    await peer.send({"type": "chat", "text": "never sent"})
    got = await peer.recv_all()
    assert [m.get("text") for m in got] == ["last words"]


async def ws_pair(nursery: trio.Nursery, room: Room, config: Config = CONFIG):
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve_one() -> None:
        async with trio.open_nursery() as inner:
            request = await wrap_server_stream(inner, server_stream)
            ws = await request.accept()
            await Session(room, config, WsTransport(ws, config, "memory")).run()
            inner.cancel_scope.cancel()

    nursery.start_soon(serve_one)
    return await wrap_client_stream(nursery, client_stream, "localhost", "/")  # type: ignore[arg-type]


async def test_ws_slow_consumer_gets_close_code_4008(nursery):
    room = Room()
    watcher = await joined_tcp(nursery, room, "Watcher", config=Config(queue_size=10_000))
    ws = await ws_pair(nursery, room)
    await ws.send_message(json.dumps({"type": "join", "user": "Slow"}))
    assert json.loads(await ws.get_message())["type"] == "welcome"
    await watcher.recv()
    speaker = next(m for m in room._members.values() if m.name == "Watcher")
    for n in range(40):
        room.say(speaker, f"m{n}")
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.get_message()
    assert info.value.reason.code == 4008
    assert info.value.reason.reason == "slow consumer"
    assert room.names == ["Watcher"]


async def test_ws_batch_join_gets_several_objects_per_frame(nursery):
    room = Room()
    ws = await ws_pair(nursery, room)
    await ws.send_message(json.dumps({"type": "join", "user": "Ann", "batch": True}))
    # welcome and the join notice are queued together: one frame, two lines.
    frame = await ws.get_message()
    assert [json.loads(p)["type"] for p in frame.split("\n")] == ["welcome", "system"]


async def test_ws_without_batch_gets_one_object_per_frame(nursery):
    room = Room()
    ws = await ws_pair(nursery, room)
    await ws.send_message(json.dumps({"type": "join", "user": "Ann"}))
    assert json.loads(await ws.get_message())["type"] == "welcome"
    assert json.loads(await ws.get_message())["type"] == "system"


async def test_tcp_transport_writes_queued_lines_in_one_send(nursery):
    """Everything queued leaves in one write (the batching the room relies on)."""
    writes: list[bytes] = []
    client, server = trio.testing.memory_stream_pair()
    original = server.send_all

    async def counting_send_all(data: bytes) -> None:
        writes.append(bytes(data))
        await original(data)

    server.send_all = counting_send_all  # type: ignore[method-assign]
    room = Room()
    nursery.start_soon(handle_tcp, Admission(room, CONFIG), server)
    await client.send_all(b"/nick Ann\n")
    peer = MemoryTcpPeer(client)
    await peer.recv()
    writes.clear()
    ann = next(iter(room._members.values()))
    for n in range(10):
        room.say(ann, f"m{n}")
    for _ in range(10):
        await peer.recv()
    assert len(writes) == 1 and writes[0].count(b"\n") == 10


async def test_transport_receive_reports_errors_and_events_in_order():
    client, server = trio.testing.memory_stream_pair()
    transport = TcpTransport(server, CONFIG)
    await client.send_all(b'/who\n{"type":1}\n\n[]\n{"type":"ping"}\n')
    got = await transport.receive()
    # "[]" does not start with "{": on TCP it is the plain-text message "[]".
    assert [type(x).__name__ for x in got] == ["Who", "ProtocolError", "Blank", "Chat", "Ping"]


@pytest.mark.parametrize("tail", [b"x" * 300, b"x" * 300 + b"\n"])
async def test_lines_before_an_overlong_one_in_the_same_read_are_still_delivered(
    nursery, autojump_clock, tail
):
    """How the peer's bytes are split into reads must not decide whether the message
    sent before an overlong line reaches the room."""
    from tests.memory import tcp_client

    config = Config(max_line=256)
    room = Room()
    watcher = tcp_client(nursery, room, config)
    await watcher.join("Watcher")
    sender = tcp_client(nursery, room, config)
    await sender.join("Sender")
    await sender.send_raw(b'{"type":"chat","text":"before"}\n' + tail)
    assert (await watcher.recv_until(type="chat"))["text"] == "before"
    assert (await sender.recv_until(type="error"))["code"] == "too_long"
    assert await sender.eof()
