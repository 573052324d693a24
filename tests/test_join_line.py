"""``trio-chat join`` in line mode, end to end: real processes against a real server."""

from __future__ import annotations

import json
import re

import pytest
import trio

from tests.support.processes import JoinProcess
from tests.support.tcp import TcpClient, free_port
from trio_chat import Bound, Config, serve

pytestmark = pytest.mark.slow

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (.*)$")


def body(line: str) -> str:
    """A line without its ``[HH:MM:SS] `` prefix (which must be there)."""
    match = LINE.match(line)
    assert match, f"not a timestamped line: {line!r}"
    return match.group(1)


async def test_two_processes_chat_and_eof_leaves_cleanly(
    server: Bound, nursery: trio.Nursery
) -> None:
    ann = await JoinProcess.start(nursery, "--name", "Ann", "--port", server.tcp_port)
    assert body(await ann.wait_for("* you are Ann")).startswith("#lobby * you are Ann; online (1)")

    bob = await JoinProcess.start(nursery, "--name", "Bob", "--port", server.tcp_port)
    await bob.wait_for("Bob joined the chat")
    await ann.wait_for("Bob joined the chat")
    await bob.send_line("hi ann")
    assert body(await ann.wait_for("hi ann")) == "#lobby Bob: hi ann"
    await ann.send_line("hi bob")
    assert body(await bob.wait_for("hi bob")) == "#lobby Ann: hi bob"

    # Two lines, then EOF: both go out before the leave, and the process exits 0.
    await bob.send_line("one more")
    await bob.send_line("and the last")
    await bob.close_stdin()
    assert await bob.exit_code() == 0
    rest = [body(line) for line in await bob.rest()]
    assert rest[-2:] == ["#lobby Bob: one more", "#lobby Bob: and the last"]
    assert body(await ann.wait_for("and the last")) == "#lobby Bob: and the last"
    assert body(await ann.wait_for("left")) == "#lobby * Bob left the chat"
    await ann.close_stdin()
    assert await ann.exit_code() == 0


async def test_replayed_history_comes_first_marked_earlier(
    server: Bound, nursery: trio.Nursery
) -> None:
    """As the README's example shows it: the replay, then who you are, then your join."""
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        await ann.send({"type": "chat", "text": "anyone here?"})
        await ann.recv_until(type="chat")
        bot = await JoinProcess.start(nursery, "--name", "bot", "--port", server.tcp_port)
        await bot.send_line("hello from a pipe")
        await bot.close_stdin()
        assert await bot.exit_code() == 0
        lines = await bot.rest()
        assert lines[0].startswith("(earlier) [")
        assert [body(line.removeprefix("(earlier) ")) for line in lines] == [
            "#lobby Ann: anyone here?", "#lobby * you are bot; online (2): Ann, bot",
            "#lobby * bot joined the chat",
            "#lobby bot: hello from a pipe",
        ]


async def test_piped_stdin_sends_every_line_then_leaves(
    server: Bound, nursery: trio.Nursery
) -> None:
    async with await TcpClient.connect(server.tcp_port) as watcher:
        await watcher.join("Watcher")
        bot = await JoinProcess.start(nursery, "--name", "bot", "--port", server.tcp_port)
        for text in ["first", "  spaces kept  ", ""]:
            await bot.send_line(text)
        assert bot.process.stdin is not None
        await bot.process.stdin.send_all(b"last line without newline")
        await bot.close_stdin()
        assert await bot.exit_code() == 0
        texts = []
        while True:
            msg = await watcher.recv()
            if msg["type"] == "chat":
                assert msg["user"] == "bot"
                texts.append(msg["text"])
            if msg["type"] == "system" and msg["event"] == "leave":
                break
        # The blank line is not sent; everything else arrives, in order, before the leave.
        assert texts == ["first", "  spaces kept  ", "last line without newline"]


async def test_json_output_is_the_servers_lines(server: Bound, nursery: trio.Nursery) -> None:
    bot = await JoinProcess.start(nursery, "--name", "bot", "--json", "--port", server.tcp_port)
    await bot.send_line("hello")
    await bot.close_stdin()
    assert await bot.exit_code() == 0
    messages = [json.loads(line) for line in await bot.rest()]
    assert messages[0]["type"] == "welcome" and messages[0]["user"] == "bot"
    chats = [m for m in messages if m["type"] == "chat"]
    assert [(m["user"], m["text"]) for m in chats] == [("bot", "hello")]


async def test_websocket_url(server: Bound, nursery: trio.Nursery) -> None:
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        bot = await JoinProcess.start(nursery, "--name", "wsbot", "--url", server.ws_url)
        await bot.wait_for("wsbot joined the chat")
        await ann.send({"type": "chat", "text": "over tcp"})
        assert body(await bot.wait_for("over tcp")) == "#lobby Ann: over tcp"
        await bot.send_line("over websocket")
        msg = await ann.recv_until(type="chat", user="wsbot")
        assert msg["text"] == "over websocket"
        await bot.close_stdin()
        assert await bot.exit_code() == 0


async def test_connection_refused_is_one_line_and_exit_1(nursery: trio.Nursery) -> None:
    port = free_port()
    bot = await JoinProcess.start(nursery, "--name", "bot", "--port", port)
    assert await bot.exit_code() == 1
    assert await bot.stderr() == f"cannot connect to 127.0.0.1:{port}: connection refused\n"
    assert await bot.rest() == []


async def test_name_taken_says_so_and_exits_1(server: Bound, nursery: trio.Nursery) -> None:
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        bot = await JoinProcess.start(nursery, "--name", "ANN", "--port", server.tcp_port)
        assert await bot.exit_code() == 1
        assert await bot.stderr() == "name 'ANN' is taken\n"


async def test_settings_from_the_environment(server: Bound, nursery: trio.Nursery) -> None:
    env = {"TRIO_CHAT_NAME": "envbot", "TRIO_CHAT_PORT": str(server.tcp_port)}
    bot = await JoinProcess.start(nursery, "--json", env=env)
    welcome = json.loads(await bot.wait_for("welcome"))
    assert welcome["user"] == "envbot"
    await bot.close_stdin()
    assert await bot.exit_code() == 0


async def test_line_mode_needs_a_name(nursery: trio.Nursery) -> None:
    bot = await JoinProcess.start(nursery, "--port", free_port())
    assert await bot.exit_code() == 2
    assert "--name is required when stdin is not a terminal" in await bot.stderr()


async def test_invalid_name_is_a_usage_error(nursery: trio.Nursery) -> None:
    bot = await JoinProcess.start(nursery, "--name", "System", "--port", free_port())
    assert await bot.exit_code() == 2
    assert "name 'System' is reserved" in await bot.stderr()


async def test_reconnects_and_rejoins_after_server_restart(nursery: trio.Nursery) -> None:
    async with trio.open_nursery() as servers:
        bound = await servers.start(serve, Config(tcp_port=0, ws_port=0))
        bot = await JoinProcess.start(nursery, "--name", "bot", "--port", bound.tcp_port)
        await bot.wait_for("* you are bot")
        servers.cancel_scope.cancel()  # the server goes away under the running client

    async with trio.open_nursery() as servers:
        await servers.start(serve, Config(tcp_port=bound.tcp_port, ws_port=0))
        async with await TcpClient.connect(bound.tcp_port) as ann:
            welcome = await ann.join("Ann")
            if "bot" not in welcome["users"]:
                await ann.recv_until(type="system", event="join", name="bot")
            await bot.wait_for("* you are bot")  # rejoined by itself, under the same name
            await bot.send_line("still here")
            msg = await ann.recv_until(type="chat", user="bot")
            assert msg["text"] == "still here"
            await bot.close_stdin()
            assert await bot.exit_code() == 0
            assert "reconnecting in" in await bot.stderr()
        servers.cancel_scope.cancel()


async def test_no_reconnect_exits_1_when_the_server_goes_away(nursery: trio.Nursery) -> None:
    async with trio.open_nursery() as servers:
        bound = await servers.start(serve, Config(tcp_port=0, ws_port=0))
        bot = await JoinProcess.start(
            nursery, "--name", "bot", "--no-reconnect", "--port", bound.tcp_port
        )
        await bot.wait_for("* you are bot")
        servers.cancel_scope.cancel()
    assert await bot.exit_code() == 1
    assert await bot.stderr() == "server closed the connection\n"
