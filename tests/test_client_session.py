"""The client's session logic over memory streams: join options, reconnect, keepalive.

A scripted server plays the other side, so these tests also cover protocol parts the
server does not have yet (``id``, ``since``, ``history``, batched frames).
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_chat import protocol
from trio_chat.client import ClientConfig, ConnectError, ConnectionLost, JoinRefused
from trio_chat.client.session import ChatSession, State, Status, backoff_delay
from trio_chat.client.transport import TcpConnection, parse_messages
from trio_chat.protocol import LineBuffer


class Peer:
    """The server's end of one memory-stream connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = LineBuffer()
        self._lines: list[bytes] = []

    async def recv(self) -> dict[str, Any]:
        while not self._lines:
            data = await self.stream.receive_some(65536)
            assert data, "client closed the connection"
            self._lines.extend(self._buffer.feed(data))
        obj: dict[str, Any] = json.loads(self._lines.pop(0))
        return obj

    async def send(self, *messages: dict[str, Any]) -> None:
        await self.stream.send_all(
            b"".join(protocol.encode(m).encode() + b"\n" for m in messages)
        )

    async def welcome(self, name: str) -> None:
        await self.send({"type": "welcome", "user": name, "users": [name], "clients_count": 1})

    async def close(self) -> None:
        await self.stream.aclose()


class ScriptedServer:
    """Hands the session memory streams instead of sockets (``connect=``), and the
    test the server ends; ``refuse`` makes the next attempts fail like a down server."""

    def __init__(self) -> None:
        self.peers_in, self.peers = trio.open_memory_channel[Peer](10)
        self.refuse = 0
        self.attempts: list[float] = []

    @asynccontextmanager
    async def connect(self, config: ClientConfig):  # type: ignore[no-untyped-def]
        self.attempts.append(trio.current_time())
        if self.refuse:
            self.refuse -= 1
            raise ConnectError("cannot connect to test: connection refused")
        client, server = trio.testing.memory_stream_pair()
        await self.peers_in.send(Peer(server))
        async with client:
            yield TcpConnection(client, config.max_line)

    async def accept(self) -> Peer:
        return await self.peers.receive()


class Recorder:
    """A front end that remembers everything."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.statuses: list[Status] = []
        self.names = names or []
        self.refusals: list[str | None] = []

    def message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def status(self, status: Status) -> None:
        self.statuses.append(status)

    async def choose_name(self, refused: str | None, reason: str | None) -> str:
        self.refusals.append(reason)
        if not self.names:
            raise JoinRefused(reason or "no name")
        return self.names.pop(0)

    async def ask_password(self, name: str, reason: str) -> str | None:
        raise JoinRefused(reason)


CONFIG = ClientConfig(name="Bob", backoff_initial=1.0, backoff_max=8.0)


def session_for(
    server: ScriptedServer, config: ClientConfig = CONFIG, frontend: Recorder | None = None
) -> tuple[ChatSession, Recorder]:
    frontend = frontend or Recorder()
    return ChatSession(config, frontend, connect=server.connect), frontend


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    assert [backoff_delay(n, 0.5, 30, rand=lambda: 1.0) for n in range(8)] == [
        0.5, 1, 2, 4, 8, 16, 30, 30,
    ]
    assert backoff_delay(3, 0.5, 30, rand=lambda: 0.0) == 2.0  # half of 4: never less
    assert backoff_delay(10_000, 0.5, 30, rand=lambda: 1.0) == 30  # no overflow


def test_batched_frames_split_into_messages_and_junk_is_skipped() -> None:
    frame = '{"type":"chat","user":"a","text":"1"}\n{"type":"history_end"}\nnot json\n[1]\n'
    assert parse_messages(frame.split("\n")) == [
        {"type": "chat", "user": "a", "text": "1"},
        {"type": "history_end"},
    ]


async def test_rejoin_asks_for_what_came_after_the_last_id(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    session, seen = session_for(server)
    nursery.start_soon(session.run)

    peer = await server.accept()
    assert await peer.recv() == {"type": "join", "user": "Bob", "batch": True}  # no since
    await peer.welcome("Bob")
    await peer.send(
        {"type": "chat", "id": 3, "user": "Ann", "text": "old", "history": True},
        {"type": "history_end", "something": "new"},
        {"type": "chat", "id": 7, "user": "Ann", "text": "live"},
        {"type": "brand_new_type"},
        {"type": "chat", "id": 5, "user": "Ann", "text": "out of order"},
    )
    await peer.close()  # the server goes away

    peer = await server.accept()
    join = await peer.recv()
    assert join == {"type": "join", "user": "Bob", "batch": True, "since": 7}
    await peer.welcome("Bob")
    await peer.send(
        # A server that replays regardless of since: what was shown is not shown twice.
        {"type": "chat", "id": 7, "user": "Ann", "text": "live", "history": True},
        {"type": "chat", "id": 8, "user": "Ann", "text": "again"},
    )
    await session.send({"type": "chat", "text": "back"})
    assert await peer.recv() == {"type": "chat", "text": "back"}
    assert session.last_id == 8
    texts = [m["text"] for m in seen.messages if m["type"] == "chat"]
    assert texts == ["old", "live", "out of order", "again"]
    # Unknown types reach the front end untouched (it decides to ignore them).
    assert [m["type"] for m in seen.messages].count("brand_new_type") == 1
    states = [s.state for s in seen.statuses]
    assert states[-1] is State.CONNECTED and State.RECONNECTING in states
    session.stop()


async def test_an_outage_message_is_shown_once_though_it_comes_again_with_an_id(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A cluster server cut off from Redis delivers chat without ids; once published,
    a resume from before it replays it with its id: the same message, not shown twice."""
    server = ScriptedServer()
    session, seen = session_for(server)
    nursery.start_soon(session.run)
    peer = await server.accept()
    await peer.recv()
    await peer.welcome("Bob")
    outage = {"type": "chat", "user": "Ann", "text": "during", "timestamp": "T1"}
    await peer.send(
        {"type": "chat", "id": 10, "user": "Ann", "text": "before", "timestamp": "T0"},
        outage,
        {**outage, "history": True},  # a rejoin's replay while still cut off: not again
    )
    await peer.close()
    peer = await server.accept()
    assert (await peer.recv())["since"] == 10
    await peer.welcome("Bob")
    await peer.send(
        {**outage, "id": 20, "history": True},
        {"type": "chat", "id": 21, "user": "Ann", "text": "during", "timestamp": "T2"},
    )
    await session.send({"type": "chat", "text": "sync"})
    await peer.recv()
    assert [(m["text"], m["timestamp"]) for m in seen.messages if m["type"] == "chat"] == [
        ("before", "T0"), ("during", "T1"), ("during", "T2"),  # the same text later: shown
    ]
    assert session.last_id == 21  # resumes after the copy with an id all the same
    session.stop()


async def test_a_quiet_room_resumes_from_history_end(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """No chat carried an id: history_end's last_id is still where to resume from."""
    server = ScriptedServer()
    session, _ = session_for(server)
    nursery.start_soon(session.run)
    peer = await server.accept()
    await peer.recv()
    await peer.welcome("Bob")
    await peer.send({"type": "history_end", "last_id": 41})
    await peer.close()
    peer = await server.accept()
    assert (await peer.recv())["since"] == 41
    session.stop()


async def test_rejoin_brings_back_the_last_resume_token(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Each welcome's ``resume`` token goes with the next rejoin (with ``since``), so
    the server takes our seat back without a leave and a join; a server that sends
    none gets none."""
    server = ScriptedServer()
    session, _ = session_for(server)
    nursery.start_soon(session.run)
    peer = await server.accept()
    assert await peer.recv() == {"type": "join", "user": "Bob", "batch": True}
    await peer.send({"type": "welcome", "user": "Bob", "users": ["Bob"], "resume": "T1"},
                    {"type": "chat", "id": 4, "user": "Ann", "text": "x"})
    await peer.close()
    peer = await server.accept()
    assert await peer.recv() == {
        "type": "join", "user": "Bob", "batch": True, "resume": "T1", "since": 4
    }
    await peer.send({"type": "welcome", "user": "Bob", "users": ["Bob"], "resume": "T2"})
    await peer.close()
    peer = await server.accept()
    assert (await peer.recv())["resume"] == "T2"
    await peer.send({"type": "welcome", "user": "Bob", "users": ["Bob"], "resume": ["no"]})
    await peer.close()
    peer = await server.accept()
    assert "resume" not in await peer.recv()  # that welcome's was no token
    session.stop()


async def test_reconnect_backs_off_exponentially_and_keeps_the_name(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    session, seen = session_for(server)
    nursery.start_soon(session.run)
    peer = await server.accept()
    await peer.recv()
    await peer.send({"type": "welcome", "user": "Robert", "users": ["Robert"]})  # renamed
    server.refuse = 4
    await peer.close()
    await session.send({"type": "chat", "text": "typed while away"})

    peer = await server.accept()
    assert (await peer.recv())["user"] == "Robert"
    await peer.welcome("Robert")
    assert await peer.recv() == {"type": "chat", "text": "typed while away"}
    gaps = [b - a for a, b in zip(server.attempts[1:], server.attempts[2:], strict=False)]
    assert len(gaps) == 4
    for attempt, gap in enumerate(gaps, start=1):
        base = min(8.0, 2.0**attempt)
        assert base / 2 <= gap <= base
    retry = [s for s in seen.statuses if s.retry_in is not None]
    assert retry and retry[-1].reason == "cannot connect to test: connection refused"
    session.stop()


async def test_rejoin_retries_while_the_old_connection_holds_the_name(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    session, seen = session_for(server)
    nursery.start_soon(session.run)
    peer = await server.accept()
    await peer.recv()
    await peer.welcome("Bob")
    await peer.close()

    peer = await server.accept()
    await peer.recv()
    await peer.send({"type": "error", "code": "name_taken", "text": "name 'Bob' is taken"})
    peer = await server.accept()  # it tried again later, under the same name
    assert (await peer.recv())["user"] == "Bob"
    assert seen.refusals == []  # never asked the user: the name is ours
    session.stop()


async def test_name_taken_on_first_join_asks_the_front_end(
    autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    session, seen = session_for(server, frontend=Recorder(names=["Rob"]))
    errors: list[Exception] = []

    async def run() -> None:
        try:
            await session.run()
        except JoinRefused as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        peer = await server.accept()
        await peer.recv()
        await peer.send({"type": "error", "code": "name_taken", "text": "name 'Bob' is taken"})
        # It asked with the connection closed, then came back at once (no backoff).
        asked_at = trio.current_time()
        peer = await server.accept()
        assert trio.current_time() == asked_at
        assert (await peer.recv())["user"] == "Rob"
        await peer.send({"type": "error", "code": "name_invalid", "text": "bad name"})
    # No more names: run() gives up with the server's reason.
    assert seen.refusals == ["name 'Bob' is taken", "bad name"]
    assert [str(e) for e in errors] == ["bad name"]


async def test_first_connection_failure_is_raised_not_retried(
    autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    server.refuse = 1
    session, _ = session_for(server)
    with pytest.raises(ConnectError, match="connection refused"):
        await session.run()
    assert len(server.attempts) == 1


async def test_silent_server_is_noticed_by_ping(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    config = ClientConfig(name="Bob", reconnect=False)
    session = ChatSession(config, Recorder(), connect=server.connect, ping_interval=20)
    done = trio.Event()
    errors: list[Exception] = []

    async def run() -> None:
        try:
            await session.run()
        except ConnectionLost as exc:
            errors.append(exc)
        done.set()

    nursery.start_soon(run)
    peer = await server.accept()
    await peer.recv()
    await peer.welcome("Bob")
    start = trio.current_time()
    assert await peer.recv() == {"type": "ping"}
    assert trio.current_time() - start == pytest.approx(20)
    await peer.send({"type": "pong"})  # answered: the connection lives on
    assert await peer.recv() == {"type": "ping"}
    await done.wait()  # this one is never answered
    assert trio.current_time() - start == pytest.approx(60)
    assert str(errors[0]) == "no answer from the server for 20 s"


async def test_leave_sends_queued_messages_first_and_waits_boundedly(
    autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    session, _ = session_for(server, ClientConfig(name="Bob", leave_timeout=5))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await session.send({"type": "chat", "text": "1"})
        await session.send({"type": "chat", "text": "2"})
        await session.leave()
        peer = await server.accept()
        await peer.recv()
        await peer.welcome("Bob")
        assert [await peer.recv() for _ in range(3)] == [
            {"type": "chat", "text": "1"},
            {"type": "chat", "text": "2"},
            {"type": "leave"},
        ]
        start = trio.current_time()
        # This server never closes; the client gives up waiting after leave_timeout.
    assert trio.current_time() - start == pytest.approx(5)
    assert session.state is State.CLOSED


async def test_an_overlong_line_from_the_server_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Skipped without being held whole (the bytes go as they come), and the lines
    before and after it in the same reads are kept: the connection stays."""
    server = ScriptedServer()
    session, seen = session_for(server, ClientConfig(name="Bob", reconnect=False, max_line=1024))
    async with trio.open_nursery() as nursery:

        async def play() -> None:
            peer = await server.accept()
            await peer.recv()
            await peer.welcome("Bob")
            before = protocol.encode({"type": "chat", "user": "Ann", "text": "before"})
            await peer.stream.send_all(before.encode() + b"\n{" + b" " * 2000)
            await peer.stream.send_all(b" " * 2000 + b"}\n" + b"{" + b" " * 2000 + b"}\n")
            await peer.send({"type": "chat", "user": "Ann", "text": "after"})
            assert await peer.recv() == {"type": "leave"}
            await peer.close()

        nursery.start_soon(play)
        nursery.start_soon(session.run)
        await trio.testing.wait_all_tasks_blocked()
        assert [m.get("text") for m in seen.messages if m["type"] == "chat"] == ["before", "after"]
        assert session.state is State.CONNECTED
        await session.leave()
