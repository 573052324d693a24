"""Sessions over in-memory streams: deterministic slow-consumer and timeout behaviour."""

import json
import logging

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from tests.support.memory import CountingStream, WrappedStream, memory_tcp, memory_ws
from tests.support.seats import Seat
from tests.support.tcp import TcpClient
from tests.support.waits import VIRTUAL_WAIT, until
from tests.support.ws import close_reason, get_text
from trio_chat.config import Config
from trio_chat.server.rooms import Rooms
from trio_chat.transports.admission import Admission
from trio_chat.transports.tcp import TcpTransport, handle_tcp

CONFIG = Config(queue_size=16, send_timeout=5.0)


def tcp_session(nursery: trio.Nursery, room: Rooms, config: Config = CONFIG) -> TcpClient:
    return memory_tcp(nursery, room, config)


async def joined_tcp(
    nursery: trio.Nursery, room: Rooms, name: str, config: Config = CONFIG
) -> TcpClient:
    peer = tcp_session(nursery, room, config)
    await peer.send({"type": "join", "user": name})
    assert (await peer.recv())["type"] == "welcome"
    assert (await peer.recv())["event"] == "join"
    return peer


async def test_tcp_slow_consumer_is_told_and_closed_others_see_it_leave(
    nursery: trio.Nursery,
) -> None:
    room = Rooms()
    watcher = Seat(room, "Watcher")  # it speaks; its own queue (10,000) never overflows
    watcher.take()
    slow = await joined_tcp(nursery, room, "Slow")
    # A burst with no checkpoint in between: Slow's queue (16) overflows at once.
    for n in range(40):
        room.say(watcher.member, f"m{n}")
    got = await slow.recv_all()
    assert got[-1]["type"] == "error" and got[-1]["code"] == "slow_consumer"
    assert len([m for m in got if m["type"] == "chat"]) <= 16
    # Watcher: Slow's join notice, the 40 messages, and Slow's leave notice somewhere.
    messages = watcher.take()
    assert [m["text"] for m in messages if m["type"] == "chat"] == [f"m{n}" for n in range(40)]
    notices = [(m["event"], m["name"]) for m in messages if m["type"] == "system"]
    assert notices == [("join", "Slow"), ("leave", "Slow")]
    assert room.names == ["Watcher"]


async def test_a_peer_that_stops_reading_is_cut_off_after_the_send_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
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


async def test_eof_flushes_what_is_queued_before_closing(nursery: trio.Nursery) -> None:
    room = Rooms()
    peer = tcp_session(nursery, room)
    await peer.send_raw(b'/nick Ann\n{"type":"chat","text":"one"}\ntwo\n/who\n')
    await peer.send_eof()
    got = await peer.recv_all()
    assert [m["type"] for m in got] == ["welcome", "system", "chat", "chat", "users"]
    assert room.names == []


async def test_last_line_without_newline_counts_at_eof(nursery: trio.Nursery) -> None:
    room = Rooms()
    peer = tcp_session(nursery, room)
    await peer.send_raw(b"/nick Ann\nbye")
    await peer.send_eof()
    got = await peer.recv_all()
    assert got[-1]["type"] == "chat" and got[-1]["text"] == "bye"


async def test_leave_closes_after_flushing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The server then waits (goodbye_timeout, virtual here) for the peer's FIN."""
    room = Rooms()
    peer = await joined_tcp(nursery, room, "Ann")
    await peer.send({"type": "chat", "text": "last words"})
    await peer.send({"type": "leave"})
    await peer.send({"type": "chat", "text": "never sent"})
    got = await peer.recv_all()
    assert [m.get("text") for m in got] == ["last words"]


async def test_ws_slow_consumer_gets_close_code_4008(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The close handshake's wait for the peer is virtual here."""
    room = Rooms()
    watcher = Seat(room, "Watcher")
    ws = await memory_ws(nursery, room, CONFIG)
    await ws.send_message(json.dumps({"type": "join", "user": "Slow"}))
    assert json.loads(await ws.get_message())["type"] == "welcome"
    for n in range(40):
        room.say(watcher.member, f"m{n}")
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.get_message()
    assert close_reason(info.value).code == 4008
    assert close_reason(info.value).reason == "slow consumer"
    assert room.names == ["Watcher"]


async def test_ws_batch_join_gets_several_objects_per_frame(nursery: trio.Nursery) -> None:
    room = Rooms()
    ws = await memory_ws(nursery, room, CONFIG)
    await ws.send_message(json.dumps({"type": "join", "user": "Ann", "batch": True}))
    # welcome and the join notice are queued together: one frame, two lines.
    frame = await get_text(ws)
    assert [json.loads(p)["type"] for p in frame.split("\n")] == ["welcome", "system"]


async def test_ws_without_batch_gets_one_object_per_frame(nursery: trio.Nursery) -> None:
    room = Rooms()
    ws = await memory_ws(nursery, room, CONFIG)
    await ws.send_message(json.dumps({"type": "join", "user": "Ann"}))
    assert json.loads(await ws.get_message())["type"] == "welcome"
    assert json.loads(await ws.get_message())["type"] == "system"


async def test_tcp_transport_writes_queued_lines_in_one_send(nursery: trio.Nursery) -> None:
    """Everything queued leaves in one write (the batching the room relies on)."""
    room = Rooms()
    speaker = Seat(room, "Speaker")  # seated first: Ann hears of nobody joining after her
    client, server = trio.testing.memory_stream_pair()
    counting = CountingStream(server)
    peer = memory_tcp(nursery, room, CONFIG, ends=(client, counting))
    await peer.send_raw(b"/nick Ann\n")
    await peer.recv()
    counting.writes.clear()
    for n in range(10):
        room.say(speaker.member, f"m{n}")
    for _ in range(10):
        await peer.recv()
    assert len(counting.writes) == 1 and counting.writes[0].count(b"\n") == 10


async def test_transport_receive_reports_errors_and_events_in_order() -> None:
    client, server = trio.testing.memory_stream_pair()
    transport = TcpTransport(server, CONFIG)
    await client.send_all(b'/who\n{"type":1}\n\n[]\n{"type":"ping"}\n')
    got = await transport.receive()
    assert got is not None
    # "[]" does not start with "{": on TCP it is the plain-text message "[]".
    assert [type(x).__name__ for x in got] == ["Who", "ProtocolError", "Blank", "Chat", "Ping"]


@pytest.mark.parametrize("tail", [b"x" * 300, b"x" * 300 + b"\n"])
async def test_lines_before_an_overlong_one_in_the_same_read_are_still_delivered(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tail: bytes
) -> None:
    """How the peer's bytes are split into reads must not decide whether the message
    sent before an overlong line reaches the room."""
    config = Config(max_line=256)
    room = Rooms()
    watcher = memory_tcp(nursery, room, config)
    await watcher.join("Watcher")
    sender = memory_tcp(nursery, room, config)
    await sender.join("Sender")
    await sender.send_raw(b'{"type":"chat","text":"before"}\n' + tail)
    assert (await watcher.recv_until(type="chat"))["text"] == "before"
    assert (await sender.recv_until(type="error"))["code"] == "too_long"
    assert await sender.eof()


class FailsOnWrite(WrappedStream):
    """The server's end of a connection whose writes fail the way no peer can make
    them fail (a bug's exception), once ``armed``."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.armed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.armed:
            raise RuntimeError("a write failed unexpectedly")
        await self.inner.send_all(data)


async def test_a_writer_failing_in_the_servers_nursery_ends_its_session_only(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Writers run in the server's writers nursery (memory per idle connection): an
    error in one must end its session, as it ended the session's own nursery, and
    never escape into the nursery every other session's writer runs in."""
    room = Rooms()
    room.writers = nursery
    watcher = await joined_tcp(nursery, room, "Watcher")
    client, server = trio.testing.memory_stream_pair()
    failing = FailsOnWrite(server)
    nursery.start_soon(handle_tcp, Admission(room, CONFIG), failing)
    broken = TcpClient(client, wait=VIRTUAL_WAIT)
    await broken.send({"type": "join", "user": "Broken"})
    assert (await broken.recv())["type"] == "welcome"
    failing.armed = True
    await watcher.send({"type": "chat", "text": "to everyone"})
    leave = await watcher.recv_until(type="system", event="leave")
    assert leave["name"] == "Broken"
    assert any("writing to" in r.getMessage() and "failed" in r.getMessage()
               for r in caplog.records)
    # Everyone else is fine, writers included.
    await watcher.send({"type": "chat", "text": "still here"})
    assert (await watcher.recv_until(type="chat", text="still here"))["user"] == "Watcher"
    assert room.names == ["Watcher"]


async def test_eviction_cancels_a_writer_running_in_the_servers_nursery(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A writer stuck in a write (a peer that never reads) is cancelled when its
    member is evicted for its full queue: the session ends long before the send
    timeout would have ended the write."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    room = Rooms()
    room.writers = nursery
    watcher = Seat(room, "Watcher")
    client, server = trio.testing.lockstep_stream_pair()
    nursery.start_soon(handle_tcp, Admission(room, CONFIG), server)
    await client.send_all(b'{"type":"join","user":"Stuck"}\n')
    await until(lambda: "Stuck" in room.names, VIRTUAL_WAIT)
    start = trio.current_time()
    for n in range(40):  # Stuck's queue (16) overflows while its writer waits
        room.say(watcher.member, f"m{n}")
    assert room.names == ["Watcher"]

    def ended() -> bool:
        return any("disconnect tcp" in r.getMessage() for r in caplog.records)

    await until(ended, VIRTUAL_WAIT)
    assert trio.current_time() - start < CONFIG.send_timeout / 2
    ends = [r.getMessage() for r in caplog.records if "disconnect tcp" in r.getMessage()]
    assert ends and "(slow_consumer)" in ends[0]
