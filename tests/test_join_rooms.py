"""``trio-chat join`` with rooms and direct messages, end to end against a real server:
line mode (each line says its room) and the full-screen client in tmux (the room list,
its unread counts, switching with the keys /help names, a direct conversation)."""

from __future__ import annotations

import pytest
import trio

from tests.support.clients import enter
from tests.support.processes import JoinProcess, join_command
from tests.support.tcp import TcpClient
from tests.support.tmux import Tmux, needs_tmux
from trio_chat import Bound, Config, serve

pytestmark = pytest.mark.slow


async def in_rooms(client: TcpClient, name: str, first: str, *others: str) -> TcpClient:
    """``client``, joined as ``name`` in ``first`` and then in ``others``."""
    await enter(client, first, name)
    for room in others:
        await enter(client, room)
    return client


async def test_line_mode_prints_each_room_line_with_its_room_and_dms_clearly(
    server: Bound, nursery: trio.Nursery
) -> None:
    bob = await JoinProcess.start(
        nursery, "--name", "Bob", "--port", server.tcp_port, "--room", "dev", "--room", "#lobby"
    )
    await bob.wait_for("#lobby * you are Bob")
    async with await TcpClient.connect(server.tcp_port) as ann:
        await in_rooms(ann, "Ann", "#dev", "#lobby")
        await ann.send({"type": "chat", "room": "#dev", "text": "build is green"})
        await ann.send({"type": "chat", "text": "lunch?"})  # no room: #lobby
        await ann.send({"type": "msg", "to": "bob", "text": "psst"})
        assert (await bob.wait_for("build is green")).endswith("] #dev Ann: build is green")
        assert (await bob.wait_for("lunch?")).endswith("] #lobby Ann: lunch?")
        assert (await bob.wait_for("psst")).endswith("] (direct) Ann -> Bob: psst")
        # A stdin line goes to the first --room.
        await bob.send_line("shipping it")
        said = await ann.recv_until(type="chat", user="Bob")
        assert said["room"] == "#dev" and said["text"] == "shipping it"
        await bob.close_stdin()
        assert await bob.process.wait() == 0


async def test_line_mode_rejoins_every_room_after_a_server_restart(nursery: trio.Nursery) -> None:
    async with trio.open_nursery() as servers:
        bound = await servers.start(serve, Config(tcp_port=0, ws_port=0))
        bot = await JoinProcess.start(nursery, "--name", "bot", "--port", bound.tcp_port,
                                      "--room", "#dev", "--room", "#ops")
        await bot.wait_for("#ops * you are bot")
        servers.cancel_scope.cancel()  # the server goes away under the running client

    async with trio.open_nursery() as servers:
        await servers.start(serve, Config(tcp_port=bound.tcp_port, ws_port=0))
        async with await TcpClient.connect(bound.tcp_port) as ann:
            await ann.send({"type": "join", "user": "Ann", "room": "#ops"})
            welcome = await ann.recv_until(type="welcome", room="#ops")
            if "bot" not in welcome["users"]:
                await ann.recv_until(type="system", room="#ops", event="join", name="bot")
            await ann.send({"type": "join", "room": "#dev"})
            await ann.recv_until(type="history_end", room="#dev")
            await ann.send({"type": "who", "room": "#dev"})
            assert "bot" in (await ann.recv_until(type="users", room="#dev"))["users"]
            await ann.send({"type": "chat", "room": "#ops", "text": "back?"})
            assert (await bot.wait_for("back?")).endswith("] #ops Ann: back?")
            await bot.send_line("yes, in #dev")  # still the first --room
            said = await ann.recv_until(type="chat", user="bot")
            assert said["room"] == "#dev"
            await bot.close_stdin()
            assert await bot.exit_code() == 0
        servers.cancel_scope.cancel()


@needs_tmux
async def test_tui_switches_rooms_counts_unread_and_keeps_a_dm_conversation(
    server: Bound, tmux: Tmux
) -> None:
    port = server.tcp_port
    await tmux.start(join_command("--name", "Bob", "--port", port, "--room", "#dev",
                                  "--room", "#lobby"))
    await tmux.wait_for("1 online in #dev")
    async with await TcpClient.connect(port) as ann:
        await in_rooms(ann, "Ann", "#lobby", "#dev")
        await ann.send({"type": "topic", "room": "#dev", "topic": "release on Friday"})
        screen = await tmux.wait_for("#dev  release on Friday")  # the title, with the topic
        await ann.send({"type": "chat", "text": "lunch anyone?"})
        await ann.send({"type": "chat", "text": "the canteen?"})
        screen = await tmux.wait_for("#lobby (2)")  # unread, while #dev is shown
        assert not any("lunch anyone?" in line for line in screen)
        assert any(line.startswith(">#dev") for line in screen)

        await tmux.keys("M-Right")  # the next conversation
        screen = await tmux.wait_for("Ann: lunch anyone?")
        assert any(line.startswith(">#lobby ") for line in screen)
        assert not any("#lobby (2)" in line for line in screen)
        await tmux.keys("yes", literal=True)
        await tmux.keys("Enter")
        said = await ann.recv_until(type="chat", user="Bob")
        assert said["text"] == "yes" and said.get("room", "#lobby") == "#lobby"

        await tmux.keys("C-p")  # the previous one, back to #dev
        await tmux.wait_until(lambda s: any(line.startswith(">#dev") for line in s), "in #dev")
        await tmux.keys("/msg ann are you coming?", literal=True)
        await tmux.keys("Enter")
        dm = await ann.recv_until(type="msg")
        assert (dm["from"], dm["to"], dm["text"]) == ("Bob", "Ann", "are you coming?")
        await tmux.wait_until(lambda s: any(line.startswith(">@Ann") for line in s), "@Ann")
        await ann.send({"type": "msg", "to": "Bob", "text": "on my way"})
        await tmux.wait_for("Ann: on my way")

        await tmux.keys("/join #lobby", literal=True)  # a room we are in: switch to it
        await tmux.keys("Enter")
        await tmux.wait_for("Bob: yes")
        await tmux.keys("/part", literal=True)
        await tmux.keys("Enter")
        await ann.recv_until(type="system", room="#lobby", event="leave", name="Bob")
        screen = await tmux.wait_until(
            lambda s: not any(line.startswith((">#lobby", " #lobby")) for line in s),
            "#lobby left the list",
        )
        assert any("you left #lobby" in line for line in screen)
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0
