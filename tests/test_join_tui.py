"""``trio-chat join`` in interactive mode, in a real terminal: tmux."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.support.processes import join_command
from tests.support.tcp import TcpClient
from tests.support.tmux import Tmux
from trio_chat import Bound, Config, serve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("tmux") is None and not os.environ.get("CI"),
        reason="tmux is not installed (apt-get install tmux; .ci/run does); CI never skips",
    ),
]


@pytest.fixture
async def tmux(tmp_path: Path) -> AsyncIterator[Tmux]:
    terminal = Tmux(tmp_path)
    try:
        yield terminal
    finally:
        await terminal.kill()


async def test_incoming_message_keeps_the_half_typed_input(server: Bound, tmux: Tmux) -> None:
    await tmux.start(join_command("--name", "Bob", "--port", server.tcp_port))
    await tmux.wait_for("connected as Bob")
    await tmux.keys("half typed mess", literal=True)
    await tmux.wait_for("> half typed mess")

    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        await ann.send({"type": "chat", "text": "hello from ann"})
        screen = await tmux.wait_for("Ann: hello from ann")
        # The message landed in the pane; the input line (the last) is untouched.
        assert screen[-1].rstrip() == "> half typed mess"
        assert "connected as Bob" in screen[-2] and "2 online" in screen[-2]

        await tmux.keys("age", literal=True)
        await tmux.keys("Enter")
        msg = await ann.recv_until(type="chat", user="Bob")
        assert msg["text"] == "half typed message"
        screen = await tmux.wait_for("> Bob: half typed message")
        assert screen[-1].rstrip() == ">"

        await tmux.keys("/quit", literal=True)
        await tmux.keys("Enter")
        assert await tmux.exit_status() == 0
        await ann.recv_until(type="system", event="leave", name="Bob")


async def test_asks_for_a_name_again_while_taken_and_ctrl_c_quits(
    server: Bound, tmux: Tmux
) -> None:
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Bob")
        await tmux.start(join_command("--port", server.tcp_port))
        await tmux.wait_for("what name do you want to chat under?")
        await tmux.keys("System", literal=True)
        await tmux.keys("Enter")
        await tmux.wait_for("name 'System' is reserved")  # checked before asking the server
        await tmux.keys("bob", literal=True)
        await tmux.keys("Enter")
        await tmux.wait_for("name 'bob' is taken; choose another name")
        await tmux.wait_for("name:")
        await tmux.keys("Rob", literal=True)
        await tmux.keys("Enter")
        await tmux.wait_for("connected as Rob")
        await ann.recv_until(type="system", event="join", name="Rob")
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0
        await ann.recv_until(type="system", event="leave", name="Rob")


async def test_reconnects_by_itself_keeping_the_draft(tmux: Tmux) -> None:
    async with trio.open_nursery() as servers:
        bound = await servers.start(serve, Config(tcp_port=0, ws_port=0))
        await tmux.start(join_command("--name", "Bob", "--port", bound.tcp_port))
        await tmux.wait_for("connected as Bob")
        await tmux.keys("a draft", literal=True)
        servers.cancel_scope.cancel()
    await tmux.wait_for("server closed the connection; reconnecting")

    async with trio.open_nursery() as servers:
        await servers.start(serve, Config(tcp_port=bound.tcp_port, ws_port=0))
        screen = await tmux.wait_for("reconnected to")
        assert screen[-1].rstrip() == "> a draft"
        async with await TcpClient.connect(bound.tcp_port) as ann:
            await ann.join("Ann")
            await tmux.keys("Enter")
            assert (await ann.recv_until(type="chat", user="Bob"))["text"] == "a draft"
            await tmux.keys("C-d")
            assert await tmux.exit_status() == 0
        servers.cancel_scope.cancel()


async def test_page_up_scrolls_back_and_new_messages_do_not_yank_the_view(
    server: Bound, tmux: Tmux
) -> None:
    await tmux.start(join_command("--name", "Bob", "--port", server.tcp_port))
    await tmux.wait_for("connected as Bob")
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        for n in range(60):
            await ann.send({"type": "chat", "text": f"line {n:02d}"})
        screen = await tmux.wait_for("Ann: line 59")
        assert not any("line 00" in line for line in screen)

        await tmux.keys("PPage")
        await tmux.keys("PPage")
        await tmux.keys("PPage")
        screen = await tmux.wait_for("Ann: line 10")
        assert not any("line 59" in line for line in screen)
        await ann.send({"type": "chat", "text": "while you read"})
        async with await TcpClient.connect(server.tcp_port) as cat:
            # Cat's join reaches Bob after Ann's message: once the status line counts
            # three, Bob has handled (and not shown) "while you read".
            await cat.join("Cat")
            screen = await tmux.wait_for("3 online")
        assert any("Ann: line 10" in line for line in screen)  # still where the reader was
        assert not any("while you read" in line for line in screen)

        for _ in range(6):
            await tmux.keys("NPage")
        await tmux.wait_for("Ann: while you read")
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0
