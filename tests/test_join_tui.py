"""``trio-chat join`` in interactive mode, in a real terminal: tmux."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.processes import join_command
from tests.support.tcp import TcpClient
from tests.support.tmux import Tmux, needs_tmux
from trio_chat import Bound, Config, serve
from trio_chat.protocol import LineBuffer

pytestmark = [
    pytest.mark.slow,
    needs_tmux,
]


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
        assert "2 new below (PgDn)" in screen[-2]  # Ann's message and Cat's join

        for _ in range(6):
            await tmux.keys("NPage")
        await tmux.wait_for("Ann: while you read")
        await tmux.wait_until(lambda s: "new below" not in s[-2], "back at the bottom")
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0


# ---------------------------------------------------------------- the input area (issue 15)

#: 10,000 characters of short words, then a marker that only the end of it holds.
PASTE = ("lorem ipsum dolor sit amet " * 400)[: 10_000 - len(" THE-END")] + " THE-END"


def status_row(screen: list[str]) -> int:
    """Where the status line (`` 127.0.0.1:PORT  |  ...``) is."""
    return max(i for i, line in enumerate(screen) if line.startswith(" 127.0.0.1:"))


def input_rows(screen: list[str]) -> list[str]:
    """The rows under the status line: the input area."""
    rows = screen[status_row(screen) + 1 :]
    while rows and not rows[-1].strip():
        rows.pop()
    return rows


async def test_a_long_paste_stays_in_a_bounded_input_and_is_not_sent_over_the_limit(
    server: Bound, tmux: Tmux
) -> None:
    """send-keys -l types 10,000 characters as a terminal hands over a paste: they all
    land in the input, which takes at most 6 rows under a status line that stays; over
    the server's max_text (4096) Enter sends nothing and keeps the text."""
    await tmux.start(join_command("--name", "Bob", "--port", server.tcp_port))
    await tmux.wait_for("connected as Bob")
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        await tmux.wait_for("2 online")
        await tmux.keys(PASTE, literal=True)
        screen = await tmux.wait_for("THE-END")
        assert "10,000/4,096: too long to send" in screen[status_row(screen)]
        assert 1 < len(input_rows(screen)) <= 6
        assert "trio-chat: connecting" in screen[0]  # the pane keeps its rows

        await tmux.keys("Enter")
        screen = await tmux.wait_for("not sent: 10,000 characters")
        assert "THE-END" in input_rows(screen)[-1]  # still there, cursor at its end
        assert any("10,000/4,096" in line for line in screen)

        # The text was kept whole: Ctrl-A goes to its start, Ctrl-K cuts all of it, and
        # Ctrl-Y puts it back.
        await tmux.keys("C-a")
        screen = await tmux.wait_for("> lorem ipsum dolor")
        await tmux.keys("C-k")
        await tmux.wait_until(lambda s: not any("10,000/" in line for line in s), "cleared")
        await tmux.keys("C-y")
        await tmux.wait_for("10,000/4,096")

        # Ctrl-U clears it; the next message is the first Ann gets from Bob.
        await tmux.keys("C-u")
        await tmux.wait_until(lambda s: input_rows(s) == [">"], "cleared")
        await tmux.keys("short one", literal=True)
        await tmux.keys("Enter")
        assert (await ann.recv_until(type="chat"))["text"] == "short one"
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0


async def test_a_bracketed_multiline_paste_is_one_message(server: Bound, tmux: Tmux) -> None:
    await tmux.start(join_command("--name", "Bob", "--port", server.tcp_port))
    await tmux.wait_for("connected as Bob")
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        await tmux.paste("first line\nsecond line")
        screen = await tmux.wait_for("second line")
        assert input_rows(screen) == ["> first line", "second line"]
        await tmux.keys("Enter")
        said = await ann.recv_until(type="chat")
        assert said["text"] == "first line\nsecond line"
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0


async def test_readline_keys_edit_the_input(server: Bound, tmux: Tmux) -> None:
    await tmux.start(join_command("--name", "Bob", "--port", server.tcp_port))
    await tmux.wait_for("connected as Bob")

    async def input_is(text: str) -> None:
        await tmux.wait_until(lambda s: input_rows(s) == [text.rstrip()], f"input {text!r}")

    await tmux.keys("hello brave new world", literal=True)
    await input_is("> hello brave new world")
    await tmux.keys("C-w")  # the word before the cursor
    await input_is("> hello brave new ")
    await tmux.keys("C-a")  # start of the line
    await tmux.keys("well, ", literal=True)
    await input_is("> well, hello brave new ")
    await tmux.keys("C-e")  # end of the line
    await tmux.keys("day", literal=True)
    await input_is("> well, hello brave new day")
    await tmux.keys("C-u")  # everything before the cursor
    await input_is(">")
    await tmux.keys("kept", literal=True)
    await tmux.keys("C-a")
    await tmux.keys("C-d")  # deletes the character under the cursor; it does not quit
    await input_is("> ept")
    await tmux.keys("C-e", "C-u", "C-d")  # on an empty line it quits, as in a shell
    assert await tmux.exit_status() == 0


async def test_a_message_typed_offline_is_pending_until_the_server_echoes_it(
    tmux: Tmux,
) -> None:
    async with trio.open_nursery() as servers:
        bound = await servers.start(serve, Config(tcp_port=0, ws_port=0))
        await tmux.start(join_command("--name", "Bob", "--port", bound.tcp_port))
        await tmux.wait_for("connected as Bob")
        servers.cancel_scope.cancel()
    await tmux.wait_for("reconnecting")
    await tmux.keys("typed while away", literal=True)
    await tmux.keys("Enter")
    screen = await tmux.wait_for("> Bob: typed while away")
    line = next(line for line in screen if "typed while away" in line)
    assert line.startswith("pending  > Bob: typed while away")
    assert input_rows(screen) == [">"]

    async with trio.open_nursery() as servers:
        await servers.start(serve, Config(tcp_port=bound.tcp_port, ws_port=0))
        async with await TcpClient.connect(bound.tcp_port) as ann:
            await ann.join("Ann")
            said = await ann.recv_until(type="chat", user="Bob")
            assert said["text"] == "typed while away"
            # Echoed: the line gets its time, and nothing is pending any more.
            screen = await tmux.wait_until(
                lambda s: not any("pending" in line for line in s), "confirmed"
            )
            lines = [line for line in screen if "typed while away" in line]
            assert len(lines) == 1 and lines[0][:8].count(":") == 2, lines
            await tmux.keys("C-c")
            assert await tmux.exit_status() == 0
        servers.cancel_scope.cancel()


async def test_a_server_that_refuses_a_long_text_gives_it_back_to_the_input(tmux: Tmux) -> None:
    """An older server (no ``max_text`` in its welcome) with a lower limit: its
    ``too_long`` brings the pending text back into the input instead of losing it."""
    sent: list[str] = []

    async def old_server(stream: trio.SocketStream) -> None:
        buffer = LineBuffer(1 << 20)
        async with stream:
            async for data in stream:
                for line in buffer.feed(data):
                    message = json.loads(line)
                    if message["type"] == "join":
                        reply: dict[str, Any] = {
                            "type": "welcome", "user": message["user"],
                            "users": [message["user"]], "clients_count": 1,
                        }
                    elif message["type"] == "chat" and len(message["text"]) > 10:
                        reply = {"type": "error", "code": "too_long", "text": "too long"}
                    elif message["type"] == "chat":
                        sent.append(message["text"])
                        reply = {"type": "chat", "id": len(sent), "user": "Bob",
                                 "text": message["text"], "timestamp": "2026-11-26T18:00:00Z"}
                    else:
                        continue
                    await stream.send_all(json.dumps(reply).encode() + b"\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, old_server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        await tmux.start(join_command("--name", "Bob", "--port", port))
        await tmux.wait_for("connected as Bob")
        await tmux.keys("twenty characters!!!", literal=True)
        await tmux.keys("Enter")
        screen = await tmux.wait_for("not sent: too long for the server")
        await tmux.wait_until(
            lambda s: input_rows(s) == ["> twenty characters!!!"], "the text back in the input"
        )
        assert not any(line.startswith("pending") for line in screen)
        await tmux.keys("C-u")
        await tmux.keys("short", literal=True)
        await tmux.keys("Enter")
        await tmux.wait_for("> Bob: short")
        assert sent == ["short"]
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0
        nursery.cancel_scope.cancel()


async def test_you_are_comes_after_the_replayed_history(server: Bound, tmux: Tmux) -> None:
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        for text in ("earlier one", "earlier two"):
            await ann.send({"type": "chat", "text": text})
            await ann.recv_until(type="chat", text=text)
        await tmux.start(join_command("--name", "Bob", "--port", server.tcp_port))
        screen = await tmux.wait_for("Bob joined the chat")
        rows = [row for row in screen if "earlier" in row or "-- " in row]
        assert [row.split(maxsplit=1)[1] for row in rows] == [
            "Ann: earlier one", "Ann: earlier two", "-- you are Bob; online (2): Ann, Bob",
            "-- Bob joined the chat",
        ]


async def test_a_registered_name_asks_for_its_password_masked(
    server: Bound, tmux: Tmux, tmp_path: Path
) -> None:
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.send({"type": "register", "user": "Ann", "password": "correct horse"})
        await ann.recv_until(type="token")
        await ann.send({"type": "logout"})
        await ann.recv_until(type="system", event="logout")
    token_file = tmp_path / "ann.token"
    await tmux.start(join_command("--name", "Ann", "--port", server.tcp_port,
                                  "--token-file", token_file))
    await tmux.wait_for("type the password of Ann")
    await tmux.keys("correct horse", literal=True)
    screen = await tmux.wait_for("password: *************")
    assert not any("correct horse" in line for line in screen)
    await tmux.keys("Enter")
    await tmux.wait_for("connected as Ann")
    await tmux.keys("/quit", literal=True)
    await tmux.keys("Enter")
    assert await tmux.exit_status() == 0
    assert token_file.read_text().strip()
