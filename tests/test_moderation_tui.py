"""``trio-chat join`` (full-screen, in tmux) reads the moderation commands and sends
their JSON: the server's answer shows it got a ``kick``, not a chat line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import join_command
from tests.support.tcp import TcpClient
from tests.support.tmux import Tmux, needs_tmux
from trio_chat import Bound

pytestmark = [
    pytest.mark.slow,
    needs_tmux,
]


async def test_a_guest_types_kick_and_is_told_it_is_not_permitted(
    server: Bound, tmp_path: Path
) -> None:
    tmux = Tmux(tmp_path)
    try:
        async with await TcpClient.connect(server.tcp_port) as bob:
            await bob.join("Bob")
            await tmux.start(join_command("--name", "Gus", "--port", server.tcp_port))
            await tmux.wait_for("connected as Gus")
            await tmux.keys("/kick Bob rude", literal=True)
            await tmux.keys("Enter")
            await tmux.wait_for("only the ops of #lobby")
            await tmux.keys("/ban", literal=True)
            await tmux.keys("Enter")
            await tmux.wait_for("usage: /ban")
            # Bob saw no chat line "/kick Bob rude": it was a command.
            await bob.send({"type": "ping"})
            while (message := await bob.recv())["type"] != "pong":
                assert message["type"] != "chat", message
    finally:
        await tmux.kill()
