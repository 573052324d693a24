"""WebSocket framing (issue 13): every protocol violation gets a close frame (1002, or
1009 for size) and the log reason ``protocol_error: <what>``; a message is bounded in
frames and in bytes with their headers; pings and pongs count for flood control."""

from __future__ import annotations

import json
import logging
import os
import struct
from contextlib import suppress

import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection
from wsproto.frame_protocol import FrameProtocol

from tests.support.frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    UPGRADE_REQUEST,
    close_of,
    frame,
    server_frames,
    text,
)
from tests.support.memory import memory_tcp
from tests.support.processes import rss_mb, server_process
from tests.support.tcp import TcpClient
from tests.support.waits import VIRTUAL_WAIT
from trio_chat import Config, serve
from trio_chat.protocol import RATE_LIMITED
from trio_chat.protocol.wsinput import MAX_FRAMES, WIRE_ALLOWANCE, FrameChecker
from trio_chat.server.rooms import Rooms
from trio_chat.transports.admission import Admission
from trio_chat.transports.ws import handle_ws

CONFIG = Config(max_line=1024, rate_limit=0)  # pings are counted in their own test

def join(name: str) -> bytes:
    return text(json.dumps({"type": "join", "user": name}))


async def read_to_eof(stream: trio.abc.Stream, *, handshake: bool = True) -> bytes:
    """What the server sends until it closes (after the 101 response, if ``handshake``)."""
    data = bytearray()
    with trio.fail_after(VIRTUAL_WAIT):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    return bytes(data[data.index(b"\r\n\r\n") + 4 :] if handshake else data)


# ---------------------------------------------------------------- violations, live

VIOLATIONS = {
    "unmasked": ([frame(TEXT, b"{}", mask=None)], 1002, "client frame not masked"),
    "rsv1": ([text("{}", rsv=4)], 1002, "reserved bits set"),
    "rsv3": ([text("{}", rsv=1)], 1002, "reserved bits set"),
    "opcode 3": ([frame(0x3, b"x")], 1002, "reserved opcode 0x3"),
    "opcode 0xb": ([frame(0xB)], 1002, "reserved opcode 0xb"),
    "ping over 125": ([frame(PING, b"p" * 126)], 1002, "control frame over 125 bytes"),
    "fragmented ping": ([frame(PING, b"p", fin=False)], 1002, "fragmented control frame"),
    "close code 999": ([frame(CLOSE, struct.pack("!H", 999))], 1002, "invalid close code 999"),
    "close code 1005": ([frame(CLOSE, struct.pack("!H", 1005))], 1002, "invalid close code 1005"),
    "close code 2999": ([frame(CLOSE, struct.pack("!H", 2999))], 1002, "invalid close code 2999"),
    "close 1 byte": ([frame(CLOSE, b"\x03")], 1002, "close frame with a 1-byte payload"),
    "close reason utf-8": (
        [frame(CLOSE, struct.pack("!H", 1000) + b"\xc3")], 1002, "close reason is not valid UTF-8"
    ),
    "text utf-8": ([text(b'{"type":"who","x":"\xff"}')], 1002, "text message is not valid UTF-8"),
    "text utf-8 across fragments": (
        [text(b'{"type":"who","x":"\xc3', fin=False), frame(CONTINUATION, b'"}')],
        1002,
        "text message is not valid UTF-8",
    ),
    "lone continuation": ([frame(CONTINUATION, b"x")], 1002, "continuation frame outside"),
    "message inside a message": (
        [text("{", fin=False), text("}")], 1002, "new message before the last one ended"
    ),
    "2-byte length for 5": ([text("hello", wide=2)], 1002, "not minimally encoded"),
    "8-byte length for 5": ([text("hello", wide=8)], 1002, "not minimally encoded"),
    "top bit of the length": ([text(b"", length=1 << 63)], 1002, "top bit set"),
    "too many fragments": (
        [text("{", fin=False), *[frame(CONTINUATION, fin=False)] * MAX_FRAMES],
        1002,
        f"message in over {MAX_FRAMES} frames",
    ),
    "message too big": ([text("x" * 1025)], 1009, "message over 1024 bytes"),
    "message too big in fragments": (
        [text("x" * 600, fin=False), frame(CONTINUATION, b"x" * 600)], 1009, "message over 1024"
    ),
    "too many bytes with its frames": (
        [text("x" * 1000, fin=False), *[frame(PING, b"p" * 125)] * 126, frame(CONTINUATION)],
        1009,
        f"message over {1024 + WIRE_ALLOWANCE} bytes with its frames",
    ),
}


@pytest.mark.parametrize("frames, code, what", VIOLATIONS.values(), ids=VIOLATIONS.keys())
async def test_each_violation_gets_a_close_frame_and_a_logged_reason(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    frames: list[bytes],
    code: int,
    what: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    room = Rooms()
    watcher = memory_tcp(nursery, room, CONFIG)
    await watcher.join("Watcher")
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, Admission(room, CONFIG), server)
    await client.send_all(UPGRADE_REQUEST + join("Bad") + b"".join(frames) + text('{"type":"who"}'))
    await watcher.recv_until(type="system", event="join", name="Bad")
    received = server_frames(await read_to_eof(client))
    got, reason = close_of(received)
    assert got == code and reason.startswith("protocol error: ") and what in reason
    # The close frame is the last frame; nothing after the violation was acted on.
    assert received[-1][0] == CLOSE
    assert not any(b'"type":"users"' in payload for _, payload in received)
    assert (await watcher.recv_until(type="system", event="leave"))["name"] == "Bad"
    disconnects = [r.getMessage() for r in caplog.records if "disconnect ws" in r.getMessage()]
    assert len(disconnects) == 1
    assert "(protocol_error: " in disconnects[0] and what in disconnects[0]
    # Everyone else is fine.
    await watcher.send({"type": "chat", "text": "still here"})
    assert (await watcher.recv_until(type="chat"))["text"] == "still here"


async def test_a_violation_in_the_first_bytes_after_the_handshake(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames sent with the request head (before the session exists) are checked too."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, Admission(Rooms(), CONFIG), server)
    await client.send_all(UPGRADE_REQUEST + frame(TEXT, b"{}", mask=None))
    assert close_of(server_frames(await read_to_eof(client)))[0] == 1002
    assert any("(protocol_error: client frame not masked" in r.getMessage() for r in caplog.records)


async def test_sound_fragmented_messages_and_pings_between_fragments_are_fine(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, Admission(room, Config(rate_limit=0)), server)
    parts = [b'{"type":"chat",', b'"text":"h\xc3', b'\xa9llo"}']
    fragmented = [
        text(parts[0], fin=False),
        frame(PING, b"1"),
        frame(CONTINUATION, parts[1], fin=False),
        *[frame(CONTINUATION, fin=False)] * (MAX_FRAMES - 5),
        frame(PONG, b"unsolicited"),
        frame(CONTINUATION, parts[2]),
    ]
    await client.send_all(UPGRADE_REQUEST + join("Frag") + b"".join(fragmented))
    data = bytearray()
    while b'"type":"chat"' not in data:
        data += await client.receive_some(65536)
    await client.send_all(frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
    data += await read_to_eof(client, handshake=False)
    received = server_frames(bytes(data[data.index(b"\r\n\r\n") + 4 :]))
    chats = [json.loads(p) for op, p in received if op == TEXT and b'"chat"' in p]
    assert [c["text"] for c in chats] == ["héllo"]
    assert (PONG, b"1") in received
    assert close_of(received)[0] == 1000


async def test_pings_count_for_flood_control(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(rate_limit=5, rate_burst=2, rate_ceiling=5)
    room = Rooms()
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, Admission(room, config), server)
    await client.send_all(UPGRADE_REQUEST + join("Pinger"))
    data = bytearray()
    while b'"event":"join"' not in data:
        data += await client.receive_some(65536)
    start = trio.current_time()
    await client.send_all(frame(PING, b"x") * 100)
    data += await read_to_eof(client, handshake=False)
    received = server_frames(bytes(data[data.index(b"\r\n\r\n") + 4 :]))
    assert trio.current_time() - start >= 5 * 0.2  # the held-back pings waited
    pongs = [f for f in received if f[0] == PONG]
    errors = [json.loads(p) for op, p in received if op == TEXT and b'"error"' in p]
    # The join took a token: 1 ping on time, 5 held back, the 7th refused.
    assert len(pongs) == 1 + 5
    assert [e["code"] for e in errors] == [RATE_LIMITED]
    assert close_of(received)[0] == 4029


# ---------------------------------------------------------------- over loopback


async def test_real_server_closes_violations_with_1002(nursery: trio.Nursery) -> None:
    bound = await nursery.start(serve, Config(tcp_port=0, ws_port=0))
    for bad in (frame(TEXT, b"{}", mask=None), text("{}", rsv=2), frame(0x7)):
        stream = await trio.open_tcp_stream("127.0.0.1", bound.ws_port)
        await stream.send_all(UPGRADE_REQUEST + join("Sock") + bad)
        received = server_frames(await read_to_eof(stream))
        assert close_of(received)[0] == 1002


async def test_five_million_empty_continuation_frames_are_cut_off_at_once() -> None:
    """Before, trio-websocket kept an entry per empty fragment (5 M frames: +38 MB) and
    never closed. Now the message is cut off at its 129th frame, and the server's
    memory does not grow, however many more the client sends."""
    count = 5_000_000
    empty = frame(CONTINUATION, fin=False)
    async with server_process() as server:
        # A first join loads what every join uses (the names' confusables table):
        # not growth.
        async with await TcpClient.connect(server.tcp_port) as first:
            await first.join("First")
        before = rss_mb(server.pid)
        stream = await trio.open_tcp_stream("127.0.0.1", server.ws_port)
        sent = 0

        async def send() -> None:
            nonlocal sent
            batch = empty * 10_000
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.send_all(UPGRADE_REQUEST + join("Frag") + text("{", fin=False))
                while sent < count:
                    await stream.send_all(batch)
                    sent += 10_000

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            data = bytearray()
            with trio.fail_after(30):
                with suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some(65536):
                        data += chunk
            nursery.cancel_scope.cancel()
        await stream.aclose()
        received = server_frames(bytes(data[data.index(b"\r\n\r\n") + 4 :]))
        assert close_of(received) == (1002, f"protocol error: message in over {MAX_FRAMES} frames")
        growth = rss_mb(server.pid) - before
        await server.wait_log(f"(protocol_error: message in over {MAX_FRAMES} frames)")
    print(f"5 M empty continuation frames: closed after {sent:,} had been sent; "
          f"server RSS {growth:+.1f} MB")
    assert sent < count
    assert growth < 8


# ---------------------------------------------------------------- the checker, sans I/O


@st.composite
def client_frames(draw: st.DrawFn) -> bytes:
    """Frame sequences a client could send: mostly sound, sometimes each kind of wrong."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["text", "binary", "fragments", "ping", "pong", "close",
                                      "garbage"]))
        if kind == "text":
            out.append(text(draw(st.text(max_size=40)).encode()))
        elif kind == "binary":
            out.append(frame(BINARY, draw(st.binary(max_size=40))))
        elif kind == "fragments":
            data = draw(st.text(max_size=40)).encode()
            cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            for i, piece in enumerate(pieces):
                out.append(frame(TEXT if i == 0 else CONTINUATION, piece,
                                 fin=i == len(pieces) - 1))
                if draw(st.booleans()):
                    out.append(frame(PING, b"p"))
        elif kind in ("ping", "pong"):
            out.append(frame(PING if kind == "ping" else PONG, draw(st.binary(max_size=125))))
        elif kind == "close":
            code = draw(st.sampled_from([1000, 1001, 1004, 1005, 1014, 2999, 3000, 4999, 5000]))
            reason = draw(st.binary(max_size=10))
            out.append(frame(CLOSE, struct.pack("!H", code) + reason))
        else:
            out.append(frame(draw(st.integers(0, 15)), draw(st.binary(max_size=130)),
                             fin=draw(st.booleans()), rsv=draw(st.integers(0, 7)),
                             mask=draw(st.sampled_from([None, b"abcd"])),
                             wide=draw(st.sampled_from([0, 2, 8]))))
    return b"".join(out)


def wsproto_fails(data: bytes) -> bool:
    """Whether wsproto, as a server, meets a violation in ``data`` (it reports one as a
    CloseConnection while its state stays OPEN; a peer's close moves it on)."""
    conn = Connection(ConnectionType.SERVER)
    conn.receive_data(data)
    for event in conn.events():
        if isinstance(event, CloseConnection):
            return conn.state is ConnectionState.OPEN
    return False


@settings(max_examples=400, deadline=None)
@given(client_frames(), st.lists(st.integers(1, 50), min_size=1, max_size=10))
@example(data=b"\x01\xfe\x00\x00abcd", cuts=[1])  # a 2-byte length handed on byte by byte
def test_the_checker_is_a_superset_of_wsproto(data: bytes, cuts: list[int]) -> None:
    """Wherever wsproto would fail the connection, the checker stops first (so wsproto
    never meets a violation it would answer without a close frame), however the bytes
    arrive; and what the checker passes, wsproto takes."""
    checker = FrameChecker(max_message=1 << 20)
    passed, i, violation = bytearray(), 0, None
    for size in cuts * (len(data) // sum(cuts) + 1):
        if i >= len(data):
            break
        checked = checker.feed(data[i : i + size])
        passed += data[i : i + checked.sound]
        i += size
        if checked.violation is not None:
            violation = checked.violation
            break
    assert not wsproto_fails(bytes(passed))
    if violation is None:
        assert passed == data
    else:
        assert wsproto_fails(data) or violation.code == 1009 or "frames" in violation.what


def test_the_checker_passes_what_a_real_client_library_sends() -> None:
    proto = FrameProtocol(client=True, extensions=[])
    data = (proto.send_data("héllo " * 3000, fin=False) + proto.ping(b"x")
            + proto.send_data(os.urandom(10).hex(), fin=True) + proto.send_data(b"\x00\xff")
            + proto.pong(b"") + proto.close(4000, "bye"))
    for size in (1, 2, 3, 5, 13, 4096, len(data)):
        checker = FrameChecker(max_message=64 * 1024)
        for i in range(0, len(data), size):
            checked = checker.feed(data[i : i + size])
            assert checked.violation is None and checked.sound == len(data[i : i + size])
        assert checker.closed
