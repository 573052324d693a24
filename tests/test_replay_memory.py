"""Bounded replay memory (issue 13): a replay is rendered and written in chunks bounded
in bytes, all replays of a server share a budget of chunks in flight, and live writes
are bounded in bytes too; so clients that join with ``since: 0`` and never read cost
the server little, however large the history's messages."""

from __future__ import annotations

import fcntl
import json
import socket
import termios
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.support.memory import WrappedStream, memory_tcp
from tests.support.processes import rss_mb, server_process
from tests.support.tcp import TcpClient, join_with_replay
from trio_chat import Config
from trio_chat.history.sqlite import SqliteHistory, open_history
from trio_chat.server.delivery import LocalDelivery
from trio_chat.server.replays import CHUNK_BYTES, WRITE_BYTES, ReplayBudget
from trio_chat.server.rooms import Rooms

#: The largest chat text: 4,096 characters that JSON escapes to six bytes each.
MAXIMAL = "\x01" * 4096
#: Its replay line, about 24.6 KB.
LINE_BYTES = len(json.dumps({"type": "chat", "id": 10**6, "user": "Filler", "text": MAXIMAL,
                             "timestamp": "2026-11-26T18:00:00.000Z", "history": True},
                            separators=(",", ":"))) + 1
CONFIG = Config(rate_limit=0)


class Recording(WrappedStream):
    """Records the size of every write; once ``limit`` bytes went through, the peer
    stops reading for ever (each further write blocks)."""

    def __init__(self, inner: trio.abc.Stream, limit: float = float("inf")) -> None:
        super().__init__(inner)
        self.writes: list[int] = []
        self.limit = limit
        #: While set and not fired, writes wait (a peer that pauses reading).
        self.paused: trio.Event | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        size = len(memoryview(data))
        if sum(self.writes) + size > self.limit:
            await trio.sleep_forever()
        if self.paused is not None:
            await self.paused.wait()
        self.writes.append(size)
        await self.inner.send_all(data)


def connect(
    nursery: trio.Nursery, room: Rooms, config: Config, limit: float = float("inf")
) -> tuple[TcpClient, Recording]:
    """A TCP session on a memory stream whose server end records its writes."""
    client, server = trio.testing.memory_stream_pair()
    recording = Recording(server, limit)
    return memory_tcp(nursery, room, config, ends=(client, recording)), recording


async def fill(history: SqliteHistory, count: int) -> None:
    for _ in range(count):
        await history.store.wait_writable()
        history.record("Filler", MAXIMAL, "2026-11-26T18:00:00.000Z")


@pytest.mark.parametrize("count", [300, 2300], ids=["from the ring", "from the store"])
async def test_a_replay_of_maximal_messages_is_written_a_bounded_chunk_at_a_time(
    tmp_path: Path, count: int
) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"))
    async with open_history(config) as history:
        await fill(history, count)
        await history.store.flush()
        room = Rooms(LocalDelivery(history))
        async with trio.open_nursery() as nursery:
            ann, stream = connect(nursery, room, config)
            chats, end = await join_with_replay(ann, "Ann", since=0)
            nursery.cancel_scope.cancel()
    assert [c["id"] for c in chats] == list(range(1, count + 1))
    assert all(c["text"] == MAXIMAL for c in chats)
    assert end == {"type": "history_end", "room": "#lobby", "last_id": count}
    # Every write is at most a chunk and one message (before: 512 messages, 12.6 MB).
    assert max(stream.writes) <= CHUNK_BYTES + LINE_BYTES + 100


async def test_live_writes_are_bounded_in_bytes_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms()
    reader, stream = connect(nursery, room, CONFIG)
    await reader.join("Reader")
    sender = memory_tcp(nursery, room, CONFIG)
    await sender.join("Sender")
    line = json.dumps({"type": "chat", "text": MAXIMAL}).encode() + b"\n"
    stream.writes.clear()
    stream.paused = trio.Event()  # the reader pauses: 200 messages queue up for it
    await sender.send_raw(line * 200)
    for _ in range(200):
        await sender.recv_until(type="chat", user="Sender")
    stream.paused.set()
    for _ in range(200):
        assert (await reader.recv_until(type="chat"))["text"] == MAXIMAL
    assert max(stream.writes) <= WRITE_BYTES + LINE_BYTES


async def test_a_backlog_cut_into_byte_bounded_writes_counts_in_the_queue_high_water(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The queue's high-water mark is read when a writer takes a batch; a batch cut
    short by its bytes (three maximal messages) leaves the rest of the queue behind,
    which counts too."""
    room = Rooms()
    reader, stream = connect(nursery, room, CONFIG)
    await reader.join("Reader")
    sender = memory_tcp(nursery, room, CONFIG)
    await sender.join("Sender")

    async def backlog(text: str, count: int) -> None:
        """``count`` chats queue up for the reader while it does not read."""
        stream.paused = trio.Event()
        await sender.send_raw((json.dumps({"type": "chat", "text": text}) + "\n").encode() * count)
        for _ in range(count):
            await sender.recv_until(type="chat", user="Sender")
        stream.paused.set()
        for _ in range(count):
            await reader.recv_until(type="chat", text=text)

    await backlog("small", 20)  # taken in a batch or two: a mark of about 20
    assert 10 <= room.metrics.queue_high_water <= 21
    await backlog(MAXIMAL, 100)  # a batch of three, 97 left behind
    assert room.metrics.queue_high_water >= 99


async def test_replays_wait_for_the_servers_budget_within_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two clients that stop reading hold the whole budget (two chunks); a third
    joiner's replay waits for a chunk's room, gets it when they are cut off as slow
    consumers, and arrives complete."""
    config = replace(CONFIG, send_timeout=10)
    async with open_history(config) as history:
        await fill(history, 40)  # ~1 MB: many chunks
        room = Rooms(LocalDelivery(history), replays=ReplayBudget(2))
        async with trio.open_nursery() as nursery:
            watcher = memory_tcp(nursery, room, config)
            await watcher.join("Watcher")
            stuck = []
            for name in ("Stuck1", "Stuck2"):
                # Takes the welcome and 100 KB of replay, then never reads again.
                client, _ = connect(nursery, room, config, limit=100_000)
                await client.send({"type": "join", "user": name, "since": 0})
                await watcher.recv_until(type="system", event="join", name=name)
                stuck.append(client)
            start = trio.current_time()
            await trio.sleep(1)
            reader = memory_tcp(nursery, room, config)
            await reader.send({"type": "join", "user": "Reader", "since": 0})
            await reader.recv_until(type="welcome")
            first = await reader.recv()
            waited = trio.current_time() - start
            assert first["type"] == "chat" and first["id"] == 1
            chats = [first]
            while (msg := await reader.recv())["type"] != "history_end":
                chats.append(msg)
            assert [c["id"] for c in chats] == list(range(1, 41))
            left = {(await watcher.recv_until(type="system", event="leave"))["name"]
                    for _ in stuck}
            assert left == {"Stuck1", "Stuck2"}
            nursery.cancel_scope.cancel()
    # The reader's replay began only when the stuck ones' chunks were given back.
    assert waited == pytest.approx(10)
    assert room.replays.in_use == 0


# ---------------------------------------------------------------- a real server


async def non_reader(port: int) -> trio.SocketStream:
    """A TCP connection with a small receive buffer (so the server's writes block
    soon) that will never read."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1000)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


def unread(stream: trio.SocketStream) -> int:
    """Bytes waiting in the socket's receive buffer."""
    buffer = bytearray(4)
    fcntl.ioctl(stream.socket.fileno(), termios.FIONREAD, buffer)
    return int.from_bytes(buffer, "little")


@pytest.mark.slow
async def test_100_non_reading_joiners_of_a_full_history_cost_at_most_64_mb() -> None:
    """The issue's attack: ~1,100 maximal messages in the history, then 100 clients
    join with ``since: 0`` and never read. Before, each held a 512-message chunk
    (strings, their bytes, the joined write: ~38 MB) for the whole --send-timeout."""
    count, joiners = 1100, 100
    async with server_process("--rate-limit", "0", "--max-per-ip", "0", "--connect-rate", "0",
                              "--send-timeout", "120") as server:
        async with await TcpClient.connect(server.tcp_port) as filler:
            await filler.join("Filler")
            line = json.dumps({"type": "chat", "text": MAXIMAL}).encode() + b"\n"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(filler.send_raw, line * count)
                for _ in range(count):
                    await filler.recv_until(type="chat", user="Filler")
        baseline = peak = rss_mb(server.pid)
        streams = []
        try:
            for i in range(joiners):
                stream = await non_reader(server.tcp_port)
                streams.append(stream)
                join = {"type": "join", "user": f"j{i}", "since": 0}
                await stream.send_all(json.dumps(join).encode() + b"\n")
                # Its replay is under way once its buffer holds more than the welcome
                # (SO_RCVLOWAT: readable from 1,000 bytes on).
                with trio.fail_after(30):
                    await trio.lowlevel.wait_readable(stream.socket)
                assert unread(stream) >= 1000
                peak = max(peak, rss_mb(server.pid))
                assert peak - baseline <= 64, f"+{peak - baseline:.0f} MB after {i + 1} joiners"
            for _ in range(20):  # then watch the server for a while
                peak = max(peak, rss_mb(server.pid))
                await trio.sleep(0.05)
            async with await TcpClient.connect(server.tcp_port) as other:
                await other.send({"type": "ping"})
                assert await other.recv() == {"type": "pong"}
        finally:
            for stream in streams:
                await stream.aclose()
    print(f"replay memory: {joiners} non-reading joiners of {count} maximal messages: "
          f"server RSS {baseline:.0f} MB -> peak {peak:.0f} MB (+{peak - baseline:.1f} MB)")
    assert peak - baseline <= 64
