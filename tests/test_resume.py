"""Reload without churn: a member whose connection was lost keeps its seat for
``--resume-grace``, and a join that brings back its secret token (``welcome.resume``)
takes it back with no leave or join notice for anyone. Unknown, spent, expired or
forged tokens are ordinary joins. The same on TCP, WebSocket and gRPC ``Session``
streams, and from one to another: a token is the server's, not a transport's. (Cluster
mode: tests/test_cluster.py; the page: tests/test_browser.py.)"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import grpc
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from tests.support.config import TEST_CONFIG
from tests.support.grpcclient import JsonSession, grpc_client
from tests.support.memory import WrappedStream, memory_tcp
from tests.support.processes import JoinProcess
from tests.support.seats import Seat
from tests.support.tcp import Message, TcpClient
from tests.support.waits import VIRTUAL_WAIT, WAIT, until
from tests.support.ws import WsClient, close_reason, ws_over
from trio_chat import Bound, Config, serve
from trio_chat.server.rooms import Rooms

Client = TcpClient | WsClient | JsonSession
#: Opens a client of one transport on the server; yields it.
Opener = Callable[[Bound], "AsyncIterator[Client]"]


@asynccontextmanager
async def tcp(bound: Bound) -> AsyncIterator[Client]:
    async with await TcpClient.connect(bound.tcp_port) as client:
        yield client


@asynccontextmanager
async def ws(bound: Bound) -> AsyncIterator[Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", bound.ws_port)
    async with ws_over(stream, "127.0.0.1", "/") as conn:
        yield WsClient(conn)


@asynccontextmanager
async def grpc_session(bound: Bound) -> AsyncIterator[Client]:
    """A ``Session`` stream on a connection of its own; leaving the block cancels the
    call (the server sees the client go, without ``leave``)."""
    assert bound.grpc_target is not None
    async with grpc_client(bound.grpc_target) as client:
        yield await JsonSession.open(client)


TRANSPORTS = {"tcp": tcp, "ws": ws, "grpc": grpc_session}


@pytest.fixture
def config() -> Config:
    return replace(TEST_CONFIG, grpc_port=0)


async def said(client: Client, speaker: Client, text: str) -> Message:
    """``speaker`` says ``text``; ``client`` gets it (and what came before: returned
    last is the chat)."""
    await speaker.send({"type": "chat", "text": text})
    return await client.recv_until(type="chat", text=text)


async def quiet_until(client: Client, text: str) -> list[Message]:
    """Everything ``client`` gets up to the chat ``text`` (included)."""
    got: list[Message] = []
    while not got or got[-1].get("text") != text:
        got.append(await client.recv())
    return got


@pytest.mark.parametrize(
    ("kind", "again_kind"),
    [("tcp", "tcp"), ("ws", "ws"), ("grpc", "grpc"), ("grpc", "tcp"), ("ws", "grpc")],
)
async def test_a_lost_connection_resumes_with_its_token_and_since(
    server: Bound, kind: str, again_kind: str
) -> None:
    connect, reconnect = TRANSPORTS[kind], TRANSPORTS[again_kind]
    async with tcp(server) as bob:
        await bob.join("Bob")
        async with connect(server) as ann:
            welcome = await ann.join("Ann")
            token = welcome["resume"]
            await bob.recv_until(type="system", event="join", name="Ann")
            one = await said(ann, bob, "one")
        # Ann's connection is gone without a leave: her seat is held, nobody is told.
        await bob.send({"type": "who"})
        users = await bob.recv_until(type="users")
        assert (users["users"], users["clients_count"]) == (["Bob", "Ann"], 2)
        await said(bob, bob, "two")  # Ann misses it
        async with reconnect(server) as again:
            await again.send({"type": "join", "user": "Ann", "resume": token, "since": one["id"]})
            back = await again.recv()
            assert back["type"] == "welcome" and back["users"] == ["Bob", "Ann"]
            assert back["clients_count"] == 2
            assert back["resume"] != token  # a new token with every welcome
            replayed = [await again.recv() for _ in range(2)]
            assert [(m["type"], m.get("text")) for m in replayed] == [("chat", "two"),
                                                                       ("history_end", None)]
            # No join notice, not even her own: she never left.
            await bob.send({"type": "chat", "text": "three"})
            assert [m["type"] for m in await quiet_until(again, "three")] == ["chat"]
            # Bob saw nothing of it either: only chats since "two".
            seen = await quiet_until(bob, "three")
            assert [m["type"] for m in seen] == ["chat"]
            # The spent token is no token: an ordinary join, and the name is taken.
            async with reconnect(server) as thief:
                await thief.send({"type": "join", "user": "Ann", "resume": token})
                assert (await thief.recv())["code"] == "name_taken"


@pytest.mark.parametrize("kind", ["tcp", "ws", "grpc"])
async def test_a_token_takes_over_a_connection_not_yet_noticed_lost(
    server: Bound, kind: str
) -> None:
    connect = TRANSPORTS[kind]
    async with tcp(server) as bob, connect(server) as old:
        await bob.join("Bob")
        token = (await old.join("Ann"))["resume"]
        await bob.recv_until(type="system", event="join", name="Ann")
        async with connect(server) as new:
            await new.send({"type": "join", "user": "Ann", "resume": token})
            assert (await new.recv())["type"] == "welcome"
            # The old connection is closed (WebSocket: 4009 "resumed elsewhere").
            if isinstance(old, WsClient):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await old.recv()
                assert close_reason(closed.value).code == 4009
            elif isinstance(old, JsonSession):  # its call ends ABORTED, saying why
                code, details = await old.ended()
                assert code == grpc.StatusCode.ABORTED
                assert details.startswith("resumed: ")
            else:
                assert await old.eof()
            await said(new, new, "still me")
            assert [m["type"] for m in await quiet_until(bob, "still me")] == ["chat"]


async def test_expired_forged_and_mismatched_tokens_are_ordinary_joins(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room = Rooms(resume_grace=5)
    await nursery.start(room.run_seats)
    config = Config()

    async def joined(name: str, **extra: Any) -> tuple[TcpClient, Message]:
        client = memory_tcp(nursery, room, config)
        await client.send({"type": "join", "user": name, **extra})
        return client, await client.recv_until(type="welcome")

    bob, _ = await joined("Bob")
    ann, welcome = await joined("Ann")
    await bob.recv_until(type="system", event="join", name="Ann")
    await ann.aclose()
    lost = trio.current_time()
    # A forged token, or the right one with another name, resumes nothing; while the
    # seat is held the name is taken.
    forger = memory_tcp(nursery, room, config)
    await forger.send({"type": "join", "user": "Ann", "resume": "x" * 24})
    assert (await forger.recv())["code"] == "name_taken"
    await forger.send({"type": "join", "user": "Eve", "resume": welcome["resume"]})
    assert (await forger.recv())["type"] == "welcome"  # Eve, an ordinary join
    assert (await bob.recv_until(type="system"))["name"] == "Eve"
    # The grace runs out: Ann leaves then, announced as usual.
    left = await bob.recv_until(type="system", event="leave")
    assert left["name"] == "Ann" and trio.current_time() - lost == pytest.approx(5, abs=0.1)
    _, welcome2 = await joined("Ann", resume=welcome["resume"])
    assert welcome2["users"] == ["Bob", "Eve", "Ann"]  # a new seat, at the end
    assert (await bob.recv_until(type="system", event="join"))["name"] == "Ann"


class Breaks(WrappedStream):
    """The server's end of a connection whose writes fail once ``broken`` is set (a
    reset noticed by a write, while the read waits on): the session ends ``gone``."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.broken = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.broken:
            raise trio.BrokenResourceError("reset")
        await self.inner.send_all(data)


@pytest.mark.parametrize("how", ["gone", "slow_consumer"])
async def test_a_seat_lost_by_a_write_is_held_through_what_is_said_meanwhile(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, how: str
) -> None:
    """Lost, not closed: a write that fails (``gone``) or a queue that overflows
    (``slow_consumer``). The seat is held while the room goes on talking (every
    broadcast reaches the held seat too), and taken back with no notice."""
    room = Rooms(resume_grace=5)
    await nursery.start(room.run_seats)
    config = Config(queue_size=8)
    bob = Seat(room, "Bob")
    client_end, server_end = trio.testing.memory_stream_pair()
    stream = Breaks(server_end)
    ann = memory_tcp(nursery, room, config, ends=(client_end, stream))
    await ann.send({"type": "join", "user": "Ann"})
    token = (await ann.recv_until(type="welcome"))["resume"]
    await ann.recv_until(type="system", event="join")
    bob.take()
    if how == "gone":
        stream.broken = True
        room.say(bob.member, "0")
    else:
        for n in range(3 * config.queue_size):  # at once: her queue overflows
            room.say(bob.member, f"{n}")
    await until(lambda: len(room.seats.held()) == 1, VIRTUAL_WAIT)
    for n in range(3 * config.queue_size, 4 * config.queue_size):
        room.say(bob.member, f"{n}")
    assert {m["type"] for m in bob.take()} == {"chat"}  # no leave
    assert json.loads(room.who())["users"] == ["Bob", "Ann"]
    again = memory_tcp(nursery, room, config)
    await again.send({"type": "join", "user": "Ann", "resume": token})
    assert (await again.recv())["type"] == "welcome"
    room.say(bob.member, "back")
    assert [m["type"] for m in bob.take()] == ["chat"]  # no join either
    assert "history" not in await again.recv_until(type="chat", text="back")  # live


@pytest.mark.parametrize(
    ("how", "config"),
    [
        ("leave", TEST_CONFIG),  # said goodbye: gone at once
        ("nick", TEST_CONFIG),  # a person at nc: no token, gone at once
        ("close", replace(TEST_CONFIG, resume_grace=0)),  # resuming off
    ],
)
async def test_what_is_not_held(nursery: trio.Nursery, how: str, config: Config) -> None:
    server: Bound = await nursery.start(serve, config)
    async with await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        async with await TcpClient.connect(server.tcp_port) as ann:
            if how == "nick":
                await ann.send_raw(b"/nick Ann\n")
            else:
                await ann.send({"type": "join", "user": "Ann"})
            welcome = await ann.recv_until(type="welcome")
            assert ("resume" in welcome) == (how == "leave")
            if how == "leave":
                await ann.send({"type": "leave"})
                assert await ann.eof()
        left = await bob.recv_until(type="system", event="leave")
        assert (left["name"], left["clients_count"]) == ("Ann", 1)


async def test_a_held_name_goes_to_a_seed_client_as_a_variant(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
    async with await TcpClient.connect(server.tcp_port) as seed:
        await seed.send({"type": "chat", "user": "Ann", "text": "me again"})
        told = await seed.recv_until(type="system", event="variant")
        assert (told["name"], told["wanted"], told["clients_count"]) == ("Ann2", "Ann", 2)


# ---------------------------------------------------------------- trio-chat join


class Proxy:
    """A TCP relay in front of the server, whose connections the test can cut (a
    network blip, as the client sees it; the server sees a reset)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.cuts: list[trio.CancelScope] = []
        self.connected = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        async def relay(client: trio.SocketStream) -> None:
            async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as server:
                with trio.CancelScope() as cut:
                    self.cuts.append(cut)
                    self.connected.set()
                    async with trio.open_nursery() as pumps:
                        pumps.start_soon(pump, client, server, pumps.cancel_scope)
                        pumps.start_soon(pump, server, client, pumps.cancel_scope)
                for stream in (client, server):  # a reset, both ways
                    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    await trio.aclose_forcefully(stream)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
            task_status.started(listeners[0].socket.getsockname()[1])

    def cut(self) -> None:
        self.connected = trio.Event()
        self.cuts.pop().cancel()


async def pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tcp", "grpc"])
async def test_join_resumes_after_a_network_blip_without_notices(
    server: Bound, nursery: trio.Nursery, kind: str
) -> None:
    """``trio-chat join`` on TCP, or ``--grpc`` (its Session stream on a connection the
    proxy cuts as well), takes its seat back."""
    assert server.grpc_port is not None
    proxy = Proxy(server.tcp_port if kind == "tcp" else server.grpc_port)
    port = await nursery.start(proxy.serve)
    where = ["--port", port] if kind == "tcp" else ["--grpc", f"127.0.0.1:{port}"]
    async with await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        ann = await JoinProcess.start(nursery, "--name", "Ann", *where, "--max-backoff", "0.2")
        await bob.recv_until(type="system", event="join", name="Ann")
        await ann.send_line("before")
        await bob.recv_until(type="chat", text="before")
        proxy.cut()
        await bob.send({"type": "chat", "text": "while you were away"})
        await bob.recv_until(type="chat", text="while you were away")
        with trio.fail_after(WAIT):
            await proxy.connected.wait()  # it reconnected
        await ann.wait_for("Bob: while you were away")  # replayed: since
        await ann.send_line("after")
        seen = await quiet_until(bob, "after")
        assert [m["type"] for m in seen] == ["chat"]  # no leave, no join
        await ann.close_stdin()
        assert await ann.exit_code() == 0

