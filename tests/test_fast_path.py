"""The write-through fast path (trio_chat/server/outbox.py) at its edges, on real
loopback sockets: a socket that fills mid-batch (the direct write would block, or
takes part of a batch), a WebSocket pong while the rest of a partial write waits, a
replay in progress, and a slow consumer, which is still evicted.

A client socket with a tiny receive buffer that does not read fills the server's
socket within a few hundred kilobytes, so the server's direct writes to it would
block or are partial; each test then checks what the client finally reads.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import replace
from typing import Any

import trio

from tests.support.config import TEST_CONFIG
from tests.support.frames import PING, PONG, TEXT, frame, text, upgrade
from tests.support.tcp import TcpClient
from tests.support.waits import WAIT
from trio_chat import Bound, serve

#: Chats the talker sends; with TEXT_SIZE, far more than the buffers of a socket pair
#: on loopback whose receiver does not read.
COUNT = 300
TEXT_SIZE = 3000


async def small_buffer_stream(port: int) -> trio.SocketStream:
    """A loopback connection whose receive buffer is as small as the kernel allows:
    unread, it stops the server's writes after a few kilobytes."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


def texts(count: int = COUNT, tag: str = "") -> list[str]:
    return [f"{tag}{n:04d}" + "x" * TEXT_SIZE for n in range(count)]


async def talk(server: Bound, lines: list[str], name: str = "Talker") -> TcpClient:
    """Join as ``name`` and send ``lines``; returns once the talker has read its own
    echo of every one, so each was broadcast (written or queued for everyone)."""
    talker = await TcpClient.connect(server.tcp_port)
    await talker.join(name)
    async with trio.open_nursery() as nursery:
        async def send() -> None:
            for line in lines:
                await talker.send({"type": "chat", "text": line})

        nursery.start_soon(send)
        echoed = [(await talker.recv_until(type="chat"))["text"] for _ in lines]
    assert echoed == lines
    return talker


async def chats(client: TcpClient, count: int) -> list[str]:
    return [(await client.recv_until(type="chat"))["text"] for _ in range(count)]


async def test_a_socket_that_fills_mid_batch_gets_every_line_whole_and_in_order(
    server: Bound,
) -> None:
    slow = TcpClient(await small_buffer_stream(server.tcp_port))
    await slow.join("Slow")
    sent = texts()
    talker = await talk(server, sent)  # Slow reads nothing meanwhile
    assert await chats(slow, COUNT) == sent  # every line whole: nothing lost or torn
    # It is still served, now from an empty queue again.
    await talker.send({"type": "chat", "text": "after"})
    assert (await slow.recv_until(type="chat"))["text"] == "after"
    await talker.aclose()
    await slow.aclose()


class RawWs:
    """A WebSocket client reading raw frames, so it sees each frame's bytes exactly."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def frame(self) -> tuple[int, bytes]:
        """The next complete (opcode, payload); fails on anything malformed."""
        with trio.fail_after(WAIT):
            while True:
                parsed = self._parse()
                if parsed is not None:
                    return parsed
                data = await self.stream.receive_some(65536)
                assert data, "closed"
                self.buffer += data

    def _parse(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        assert data[0] & 0x80, "the server sends whole messages, one frame each"
        opcode, size, i = data[0] & 0x0F, data[1] & 0x7F, 2
        assert not data[1] & 0x80, "server frames are not masked"
        if size == 126:
            if len(data) < 4:
                return None
            (size,) = struct.unpack_from("!H", data, 2)
            i = 4
        elif size == 127:
            if len(data) < 10:
                return None
            (size,) = struct.unpack_from("!Q", data, 2)
            i = 10
        if len(data) < i + size:
            return None
        self.buffer = data[i + size :]
        return opcode, data[i : i + size]

    async def message(self, **match: Any) -> dict[str, Any]:
        """The next text frame's object with every key/value in ``match``."""
        while True:
            opcode, payload = await self.frame()
            if opcode != TEXT:
                continue
            message: dict[str, Any] = json.loads(payload)
            if all(message.get(k) == v for k, v in match.items()):
                return message


async def test_a_pong_waits_for_the_rest_of_a_partial_websocket_write(server: Bound) -> None:
    """trio-websocket answers a ping with a pong of its own; written while the rest of
    a partial direct write waits, it must come after that frame, not inside it."""
    stream = await small_buffer_stream(server.ws_port)
    await upgrade(stream)
    slow = RawWs(stream)
    await stream.send_all(text(json.dumps({"type": "join", "user": "Slow"})))
    await slow.message(type="system", event="join", name="Slow")
    sent = texts()
    half = COUNT // 2
    talker = await talk(server, sent[:half])
    await stream.send_all(frame(PING, b"are you there"))  # the server's socket is full
    await talk_more(talker, sent[half:])
    got: list[str] = []
    pongs: list[bytes] = []
    while len(got) < COUNT or not pongs:
        opcode, payload = await slow.frame()
        if opcode == PONG:
            pongs.append(payload)
        elif opcode == TEXT:
            message = json.loads(payload)  # every frame whole
            if message["type"] == "chat":
                got.append(message["text"])
    assert got == sent
    assert pongs == [b"are you there"]
    await talker.aclose()
    await stream.aclose()


async def talk_more(talker: TcpClient, lines: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        async def send() -> None:
            for line in lines:
                await talker.send({"type": "chat", "text": line})

        nursery.start_soon(send)
        assert await chats(talker, len(lines)) == lines


async def test_live_messages_wait_for_a_replay_in_progress(server: Bound) -> None:
    """A joiner that reads slowly gets its replay in chunks from its writer; what the
    room says meanwhile comes after ``history_end``, never inside the replay."""
    old = texts(COUNT, "old")
    talker = await talk(server, old)
    slow = TcpClient(await small_buffer_stream(server.tcp_port))
    await slow.send({"type": "join", "user": "Slow", "since": 0})
    await talker.recv_until(type="system", event="join", name="Slow")
    live = texts(50, "live")
    await talk_more(talker, live)  # Slow still reads nothing
    await slow.recv_until(type="welcome")
    replayed: list[str] = []
    while (message := await slow.recv())["type"] != "history_end":
        if message["type"] == "chat":
            assert message["history"] is True
            replayed.append(message["text"])
    assert replayed == old
    assert await chats(slow, len(live)) == live
    await talker.aclose()
    await slow.aclose()


async def test_a_slow_consumer_is_still_evicted(nursery: trio.Nursery) -> None:
    """The fast path never blocks: a member that stops reading fills its socket, then
    its queue, and is evicted as before; the others see it leave."""
    config = replace(TEST_CONFIG, queue_size=64, resume_grace=0)
    server: Bound = await nursery.start(serve, config)
    slow = TcpClient(await small_buffer_stream(server.tcp_port))
    await slow.join("Slow")
    talker = await TcpClient.connect(server.tcp_port)
    await talker.join("Talker")

    async def send() -> None:
        for line in texts(2000):
            await talker.send({"type": "chat", "text": line})

    async with trio.open_nursery() as sending:
        sending.start_soon(send)
        left = await talker.recv_until(type="system", event="leave", name="Slow")
        sending.cancel_scope.cancel()
    assert left["clients_count"] == 1
    await talker.aclose()
    await slow.aclose()
