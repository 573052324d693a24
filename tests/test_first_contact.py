"""First contact: what someone meets at ``nc``, at the wrong port, or with
``trio-chat join`` pointed at the wrong one (nc-shaped raw sockets, and the real
``nc`` where its own behaviour is the point)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from importlib import metadata
from typing import Generic, TypeVar

import pytest
import trio
import trio.testing

from tests.support.config import FIRST_CONTACT
from tests.support.memory import memory_tcp
from tests.support.processes import JoinProcess
from tests.support.waits import WAIT
from trio_chat import Bound, Config, serve
from trio_chat.protocol import HELP_TEXT, LineBuffer
from trio_chat.server.rooms import Rooms

HELLO = {
    "type": "hello", "server": "trio-chat", "version": metadata.version("trio-chat"),
    "text": "type /nick NAME to join, /help for commands",
}


S = TypeVar("S", bound=trio.abc.ReceiveStream)


class RawLines(Generic[S]):
    """A connection the way ``nc`` has it: bytes in, raw lines out (nothing skipped);
    ``stream`` is the connection (or ``nc``'s stdout)."""

    def __init__(self, stream: S) -> None:
        self.stream = stream
        self._buffer = LineBuffer(1 << 20)
        self._lines: list[bytes] = []

    @staticmethod
    async def connect(port: int) -> RawLines[trio.SocketStream]:
        return RawLines(await trio.open_tcp_stream("127.0.0.1", port))

    async def line(self) -> bytes | None:
        with trio.fail_after(WAIT):
            while not self._lines:
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self._lines.extend(self._buffer.feed(data))
        return self._lines.pop(0)

    async def message(self) -> dict[str, object]:
        line = await self.line()
        assert line is not None, "closed"
        message: dict[str, object] = json.loads(line)
        return message

    async def everything(self) -> bytes:
        """All the bytes up to the server's close."""
        data = b"".join(line + b"\n" for line in self._lines)
        self._lines.clear()
        with trio.fail_after(WAIT):
            while chunk := await self.stream.receive_some(65536):
                data += chunk
        return data


@pytest.fixture
def config() -> Config:
    """The ``server`` fixture's: greeting as served."""
    return FIRST_CONTACT


# ---------------------------------------------------------------- nc's greeting


async def test_nc_is_greeted_then_told_what_to_type(server: Bound) -> None:
    nc = await RawLines.connect(server.tcp_port)
    async with nc.stream:
        # Nothing sent for a moment: a person. The greeting, exactly.
        assert json.loads(await nc.line() or b"") == HELLO
        await nc.stream.send_all(b"/help\n")
        assert await nc.message() == {"type": "help", "text": HELP_TEXT}
        await nc.stream.send_all(b"hello?\n")
        error = await nc.message()
        assert error == {"type": "error", "code": "not_joined",
                         "text": "join first: type /nick NAME, then your message again"}
        await nc.stream.send_all(b"/shout\n")
        error = await nc.message()
        assert error["code"] == "unknown_type" and "/help" in str(error["text"])
        await nc.stream.send_all(b"/nick System\n")
        error = await nc.message()
        assert error["code"] == "name_invalid" and "type /nick with another name" in str(
            error["text"])
        await nc.stream.send_all(b"/nick Bob\n")
        welcome = await nc.message()
        assert welcome["type"] == "welcome" and "resume" not in welcome  # nc does not resume
        # Only one greeting, ever.
        await nc.stream.send_all(b"/quit\n")
        assert b'"hello"' not in await nc.everything()


async def test_a_client_that_speaks_at_once_is_not_greeted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = memory_tcp(nursery, Rooms(), Config())
    await client.send_raw(b'{"type":"ping"}\n')
    line = await client.stream.receive_some()
    assert line == b'{"type":"pong"}\n'
    await trio.sleep(1)  # virtual: long past the moment of quiet
    await client.send_raw(b'{"type":"ping"}\n')
    assert await client.stream.receive_some() == b'{"type":"pong"}\n'  # and nothing else


async def test_an_http_request_on_the_tcp_port_gets_a_400_saying_where_to_go(
    server: Bound,
) -> None:
    browser = await RawLines.connect(server.tcp_port)
    async with browser.stream:
        await browser.stream.send_all(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl\r\n\r\n")
        answer = await browser.everything()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")  # nothing before it
    assert b"content-length: %d" % len(body) in head.lower()
    text = body.decode()
    assert "this is trio-chat's TCP port" in text
    assert f"http://127.0.0.1:{server.ws_port}/" in text  # the page
    assert f"ws://127.0.0.1:{server.ws_port}/" in text  # the WebSocket


@pytest.mark.parametrize("line", [b'{"type":"join","user":"Bob"}\n', b"/nick Bob\n", b"  {\n"])
async def test_a_line_client_on_the_websocket_port_is_told_at_once(
    nursery: trio.Nursery, line: bytes
) -> None:
    # A handshake timeout far longer than the wait: the answer does not wait for it.
    config = replace(FIRST_CONTACT, handshake_timeout=600)
    server: Bound = await nursery.start(serve, config)
    nc = await RawLines.connect(server.ws_port)
    async with nc.stream:
        await nc.stream.send_all(line)
        answer = await nc.everything()
    (error,) = [json.loads(row) for row in answer.splitlines()]
    assert error["type"] == "error" and error["code"] == "wrong_port"
    assert f"port {server.tcp_port}" in error["text"]
    assert f"http://127.0.0.1:{server.ws_port}/" in error["text"]


# ---------------------------------------------------------------- trio-chat join


async def test_join_at_the_websocket_port_says_use_url(
    server: Bound, nursery: trio.Nursery
) -> None:
    bob = await JoinProcess.start(nursery, "--name", "Bob", "--port", server.ws_port)
    assert await bob.exit_code() == 1
    assert (await bob.stderr()).splitlines() == [
        f"127.0.0.1:{server.ws_port} is trio-chat's WebSocket port: use "
        f"--url ws://127.0.0.1:{server.ws_port}/, or --port {server.tcp_port} for its TCP port"
    ]


async def test_join_with_a_url_at_the_tcp_port_says_use_port(
    server: Bound, nursery: trio.Nursery
) -> None:
    url = f"ws://127.0.0.1:{server.tcp_port}/"
    bob = await JoinProcess.start(nursery, "--name", "Bob", "--url", url)
    assert await bob.exit_code() == 1
    assert (await bob.stderr()).splitlines() == [
        f"{url} is trio-chat's TCP port: use --host 127.0.0.1 --port {server.tcp_port} "
        f"instead of --url, or --url ws://127.0.0.1:{server.ws_port}/"
    ]


async def greeting_server(*, task_status: trio.TaskStatus[int]) -> None:
    """A server whose greeting comes before the join's answer (a slow connection's)."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(json.dumps(HELLO).encode() + b"\n")
            await stream.receive_some()  # the join
            welcome = {"type": "welcome", "user": "Bob", "users": ["Bob"], "clients_count": 1}
            notice = {"type": "system", "event": "join", "name": "Bob",
                      "text": "Bob joined the chat", "clients_count": 1}
            await stream.send_all(b"".join(json.dumps(m).encode() + b"\n"
                                           for m in (HELLO, welcome, notice)))
            while await stream.receive_some():
                pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


@pytest.mark.parametrize("mode", [[], ["--json"]])
async def test_join_ignores_the_greeting(nursery: trio.Nursery, mode: list[str]) -> None:
    port = await nursery.start(greeting_server)
    bob = await JoinProcess.start(nursery, "--name", "Bob", "--port", port, *mode)
    await bob.wait_for("Bob joined the chat")
    await bob.close_stdin()
    assert await bob.exit_code() == 0
    assert not [line for line in [*bob.seen, *await bob.rest()] if "hello" in line]
    assert await bob.stderr() == ""


# ---------------------------------------------------------------- the real nc

NC = shutil.which("nc")


@asynccontextmanager
async def real_nc(
    port: int,
) -> AsyncIterator[tuple[trio.Process, RawLines[trio.abc.ReceiveStream]]]:
    """``nc 127.0.0.1 PORT`` whose stdin stays open, as a person's terminal does."""
    if NC is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but nc is missing (Debian package netcat-openbsd)")
        pytest.skip("nc is missing (Debian package netcat-openbsd; .ci/run installs it)")
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(
            trio.run_process, [NC, "127.0.0.1", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False,
        ))
        assert process.stdout is not None
        try:
            yield process, RawLines(process.stdout)
        finally:
            nursery.cancel_scope.cancel()


async def typed(process: trio.Process, line: bytes) -> None:
    assert process.stdin is not None
    await process.stdin.send_all(line)


@pytest.mark.slow
async def test_nc_exits_by_itself_after_quit_and_after_the_idle_kick(nursery: trio.Nursery) -> None:
    config = replace(FIRST_CONTACT, idle_timeout=1)
    server: Bound = await nursery.start(serve, config)
    async with real_nc(server.tcp_port) as (nc, out):
        assert json.loads(await out.line() or b"") == HELLO
        await typed(nc, b"/nick Ann\n/quit\n")
        assert (await out.message())["type"] == "welcome"
        # Its stdin still open: nc exits once the server has closed, all by itself.
        rest = await out.everything()
        assert b'"event":"join"' in rest
        with trio.fail_after(WAIT):
            assert await nc.wait() == 0
    async with real_nc(server.tcp_port) as (nc, out):
        assert json.loads(await out.line() or b"") == HELLO
        kicked = await out.message()  # nothing typed for --idle-timeout
        assert kicked["code"] == "idle_timeout"
        assert await out.everything() == b""  # the error was the last line ...
        with trio.fail_after(WAIT):
            assert await nc.wait() == 0  # ... and nc is gone without a keypress


@pytest.mark.slow
async def test_nc_prints_the_shutdown_notice_and_exits(nursery: trio.Nursery) -> None:
    stop = trio.Event()
    server: Bound = await nursery.start(partial(serve, FIRST_CONTACT, stop=stop))
    async with real_nc(server.tcp_port) as (nc, out):
        await typed(nc, b"/nick Ann\n")
        while (await out.message()).get("event") != "join":
            pass
        stop.set()
        notice = await out.message()
        assert (notice["event"], notice["clients_count"]) == ("shutdown", 1)
        assert await out.everything() == b""
        with trio.fail_after(WAIT):
            assert await nc.wait() == 0
