"""Every input counts (issue 13): blank lines and frames, whitespace-only lines, pings,
``who`` and invalid lines all spend from the token bucket, so a connection that sends
nothing useful is still slowed and, past the ceiling, cut off with ``rate_limited``;
and a read full of newlines is handled a slice at a time."""

from __future__ import annotations

import json
from contextlib import suppress

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from tests.support.memory import memory_tcp, memory_ws
from tests.support.tcp import Message, TcpClient
from tests.support.ws import close_reason
from trio_chat import Config, serve
from trio_chat.protocol import IDLE_TIMEOUT, RATE_LIMITED
from trio_chat.server.rooms import Rooms
from trio_chat.transports.tcp import MAX_INPUT_BYTES, MAX_INPUTS, TcpTransport

FLOOD = Config(rate_limit=5, rate_burst=10, rate_ceiling=50)
NEWLINES = b"\n" * (64 * 1024)


async def flooded_out(client: TcpClient) -> list[Message]:
    """Everything the server sent until it closed: it must end with ``rate_limited``."""
    received = []
    while (line := await client.line()) is not None:
        received.append(json.loads(line))
    assert received and received[-1]["type"] == "error", received[-3:]
    assert received[-1]["code"] == RATE_LIMITED
    return received


async def test_a_read_of_newlines_counts_every_line_and_ends_in_rate_limited(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
    watcher = memory_tcp(nursery, room, FLOOD)
    await watcher.join("Watcher")
    flooder = memory_tcp(nursery, room, FLOOD)
    await flooder.join("Flooder")  # one token of the burst
    start = trio.current_time()
    await flooder.send_raw(NEWLINES)
    await flooded_out(flooder)
    # 9 tokens left after the join, then 50 newlines delayed 0.2 s each; the 51st is
    # refused: each line was a message, none was free.
    assert trio.current_time() - start == pytest.approx(50 * 0.2)
    assert (await watcher.recv_until(type="system", event="leave"))["name"] == "Flooder"


@pytest.mark.parametrize(
    "line",
    [b"", b"   \t", b"\r", b'{"type":"ping"}', b"/ping", b'{"type":"who"}', b"/who",
     b"{not json", b'{"type":"nope"}', b"/bogus", b'{"type":"chat"}', b"\xff\xfe"],
    ids=["empty", "whitespace", "cr", "ping", "/ping", "who", "/who", "bad_json",
         "unknown_type", "unknown_command", "missing_field", "bad_utf8"],
)
async def test_a_joined_connection_sending_nothing_useful_hits_the_ceiling(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, line: bytes
) -> None:
    config = Config(rate_limit=5, rate_burst=2, rate_ceiling=5)
    room = Rooms()
    client = memory_tcp(nursery, room, config)
    await client.join("Idle")
    await client.send_raw((line + b"\n") * 100)
    received = await flooded_out(client)
    # The join took one token: 1 more on time, 5 delayed, the 7th refused.
    answers = [m for m in received[:-1] if m["type"] != "system"]
    if line.strip():  # an answer per line (pong, users, an error), blank ones none
        assert len(answers) == 1 + 5
    else:
        assert answers == []


async def test_blank_lines_do_not_keep_an_unjoined_connection_alive(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(idle_timeout=30, rate_limit=5, rate_burst=10, rate_ceiling=50)
    room = Rooms()
    lurker = memory_tcp(nursery, room, config)
    start = trio.current_time()

    async def trickle() -> None:
        # Under the rate limit, so only the idle timeout can end it.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await lurker.send_raw(b"\n \r\n")
                await trio.sleep(1)

    nursery.start_soon(trickle)
    error = await lurker.recv()
    assert error == {"type": "error", "code": IDLE_TIMEOUT, "text": error["text"]}
    assert await lurker.eof()
    assert trio.current_time() - start == pytest.approx(30)


async def test_blank_websocket_frames_count_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(rate_limit=5, rate_burst=2, rate_ceiling=5)
    room = Rooms()
    ws = await memory_ws(nursery, room, config)
    await ws.send_message(json.dumps({"type": "join", "user": "Blank"}))
    for _ in range(20):
        await ws.send_message(" \n ")
    received = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            received.append(json.loads(await ws.get_message()))
    assert close_reason(closed.value).code == 4029
    assert received[-1]["type"] == "error" and received[-1]["code"] == RATE_LIMITED


async def test_one_receive_decodes_a_bounded_slice_of_a_read() -> None:
    """A 64 KiB read of newlines is 65,536 messages: the transport hands them over a
    slice at a time (checkpointing between slices), every one of them counted."""
    client, server = trio.testing.memory_stream_pair()
    transport = TcpTransport(server, Config())
    await client.send_all(NEWLINES)
    sizes: list[int] = []
    with trio.fail_after(5):
        while sum(sizes) < len(NEWLINES):
            got = await transport.receive()
            assert got is not None
            sizes.append(len(got))
    assert sum(sizes) == len(NEWLINES) and max(sizes) <= MAX_INPUTS
    line = b'{"type":"chat","text":"' + b"x" * 4000 + b'"}\n'
    await client.send_all(line * 20)
    got = await transport.receive()
    assert got is not None and 1 <= len(got) <= MAX_INPUT_BYTES // 4000 + 1


async def test_ten_newline_flooders_are_cut_off_and_pings_are_answered(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Ten joined connections flood newlines (much more than the server will read):
    each is told ``rate_limited`` and closed, and another client's pings are answered
    as they come (in virtual time: at once)."""
    room = Rooms()
    pinger = memory_tcp(nursery, room, FLOOD)
    await pinger.join("Pinger")
    flooders = []
    for i in range(10):
        flooder = memory_tcp(nursery, room, FLOOD)
        await flooder.join(f"Flooder{i}")
        flooders.append(flooder)
    cut_off: list[int] = []

    async def flood(i: int, flooder: TcpClient) -> None:
        for _ in range(4):
            await flooder.send_raw(NEWLINES)
        await flooded_out(flooder)
        cut_off.append(i)

    async with trio.open_nursery() as floods:
        for i, flooder in enumerate(flooders):
            floods.start_soon(flood, i, flooder)
        rtts = []
        for _ in range(100):
            sent = trio.current_time()
            await pinger.send_raw(b"/ping\n")
            await pinger.recv_until(type="pong")
            rtts.append(trio.current_time() - sent)
            await trio.sleep(0.25)  # the pinger stays under the rate limit
    assert sorted(cut_off) == list(range(10))
    assert max(rtts) == 0


async def test_real_sockets_newline_flooders_get_rate_limited_and_others_are_served(
    nursery: trio.Nursery,
) -> None:
    """The same over loopback against a real server (small ceiling, so it is quick).
    The round trips are printed, not asserted; ``python -m trio_chat.bench.flood``
    measures them against a peer run without flooders."""
    config = Config(tcp_port=0, ws_port=0, rate_limit=50, rate_burst=10, rate_ceiling=10)
    bound = await nursery.start(serve, config)
    pinger = await TcpClient.connect(bound.tcp_port)
    await pinger.join("Pinger")
    flooders = [await TcpClient.connect(bound.tcp_port) for _ in range(10)]
    for i, flooder in enumerate(flooders):
        await flooder.join(f"Flooder{i}")
    cut_off: list[int] = []

    async def flood(i: int, flooder: TcpClient) -> None:
        async with trio.open_nursery() as inner:

            async def send() -> None:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while True:
                        await flooder.send_raw(NEWLINES)

            inner.start_soon(send)
            await flooded_out(flooder)
            cut_off.append(i)
            inner.cancel_scope.cancel()
        await flooder.aclose()

    rtts = []
    async with trio.open_nursery() as floods:
        for i, flooder in enumerate(flooders):
            floods.start_soon(flood, i, flooder)
        while len(cut_off) < 10:
            sent = trio.current_time()
            await pinger.send_raw(b"/ping\n")
            await pinger.recv_until(type="pong")
            rtts.append(trio.current_time() - sent)
            await trio.sleep(0.01)
    assert sorted(cut_off) == list(range(10))
    rtts.sort()
    print(f"ping round trip with 10 newline flooders: {len(rtts)} pings, "
          f"p50 {rtts[len(rtts) // 2] * 1000:.1f} ms, max {rtts[-1] * 1000:.1f} ms")
    await pinger.aclose()
