"""Moderation messages as the server reads them: the JSON shapes and the nc commands
(sans I/O), bad input answered with a documented code, and the nc commands against a
real server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tests.support.grpcclient import Failed, grpc_client
from tests.support.moderation import history_db, moderated_config, moderated_server
from tests.support.tcp import TcpClient
from tests.support.waits import WAIT
from trio_chat.cli import main
from trio_chat.client import ClientConfig, ConnectionLost, JoinRefused
from trio_chat.client.session import ChatSession, Status
from trio_chat.moderation.model import MAX_SANCTIONS_PER_ROOM
from trio_chat.protocol import ProtocolError, decode_json, decode_line
from trio_chat.protocol.events import HELP_TEXT
from trio_chat.protocol.moderation import (
    CURRENT,
    USAGE,
    ListBans,
    Mode,
    Moderate,
    moderation_message,
    parse_duration,
)


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"/kick Bob spamming the room",
         Moderate("kick", CURRENT, "Bob", reason="spamming the room")),
        (b"/kick #dev Bob", Moderate("kick", "#dev", "Bob")),
        (b"/ban Bob 10m flood", Moderate("ban", CURRENT, "Bob", duration=600, reason="flood")),
        (b"/ban * Bob 1d", Moderate("ban", None, "Bob", duration=86400)),
        (b'/ban "Ann Lee" 90 rude',
         Moderate("ban", CURRENT, "Ann Lee", duration=90, reason="rude")),
        (b"/ban #dev 203.0.113.0/24", Moderate("ban", "#dev", address="203.0.113.0/24")),
        (b"/ban 203.0.113.7", Moderate("ban", CURRENT, address="203.0.113.7/32")),
        (b"/ban Bob forever and ever", Moderate("ban", CURRENT, "Bob", reason="forever and ever")),
        (b"/unban * ::ffff:203.0.113.7", Moderate("unban", None, address="203.0.113.7/32")),
        (b"/unban Bob", Moderate("unban", CURRENT, "Bob")),
        (b"/bans", ListBans(CURRENT)),
        (b"/bans *", ListBans(None)),
        (b"/bans #dev", ListBans("#dev")),
        (b"/mute Bob 5m", Moderate("mute", CURRENT, "Bob", duration=300)),
        (b"/unmute * Bob", Moderate("unmute", None, "Bob")),
        (b"/op Ann", Moderate("op", CURRENT, "Ann")),
        (b"/deop #dev Ann", Moderate("deop", "#dev", "Ann")),
        (b"/voice Bob", Moderate("voice", CURRENT, "Bob")),
        (b"/devoice Bob", Moderate("devoice", CURRENT, "Bob")),
        (b"/mode", Mode(CURRENT)),
        (b"/mode +r -m", Mode(CURRENT, registered_only=True, moderated=False)),
        (b"/mode #dev +moderated", Mode("#dev", moderated=True)),
    ],
)
def test_nc_commands(line: bytes, event: object) -> None:
    assert decode_line(line) == event


@pytest.mark.parametrize(
    "line",
    [b"/kick", b"/ban", b"/ban *", b"/op * Ann", b"/voice Bob extra", b"/mode +x",
     b"/bans Bob", b"/ban System", b'/ban "Ann', b"/unban", b"/ban Bob 99999999999d"],
)
def test_nc_commands_without_what_they_need(line: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_line(line)
    assert info.value.code in ("missing_field", "name_invalid")


def test_every_command_is_in_help() -> None:
    for command in USAGE:
        assert command in HELP_TEXT


@pytest.mark.parametrize(
    ("message", "event"),
    [
        ({"type": "kick", "room": "#dev", "user": "Bob", "reason": " rude "},
         Moderate("kick", "#dev", "Bob", reason="rude")),
        ({"type": "kick", "user": "Bob"}, Moderate("kick", "#lobby", "Bob")),
        ({"type": "ban", "user": "Bob"}, Moderate("ban", None, "Bob")),
        ({"type": "ban", "room": "#dev", "address": "2001:db8::1/48", "duration": 60},
         Moderate("ban", "#dev", address="2001:db8::/48", duration=60)),
        ({"type": "mute", "room": "#dev", "user": "Bob", "duration": 0},
         Moderate("mute", "#dev", "Bob")),
        ({"type": "op", "user": "Ann"}, Moderate("op", "#lobby", "Ann")),
        ({"type": "bans"}, ListBans(None)),
        ({"type": "mode", "room": "#dev", "registered_only": False},
         Mode("#dev", registered_only=False)),
        ({"type": "mode"}, Mode("#lobby")),
    ],
)
def test_json_shapes(message: dict[str, Any], event: object) -> None:
    assert decode_json(json.dumps(message)) == event


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "kick", "room": "#dev"}, "missing_field"),
        ({"type": "kick", "room": "#dev", "user": 3}, "missing_field"),
        ({"type": "kick", "room": "dev", "user": "Bob"}, "room_invalid"),
        ({"type": "op", "room": "#dev", "address": "1.2.3.4"}, "missing_field"),
        ({"type": "ban", "user": "Bob", "address": "1.2.3.4"}, "missing_field"),
        ({"type": "ban", "address": "1.2.3.400"}, "missing_field"),
        ({"type": "ban", "address": ["1.2.3.4"]}, "missing_field"),
        ({"type": "ban", "user": "Bob", "duration": -1}, "missing_field"),
        ({"type": "ban", "user": "Bob", "duration": 1.5}, "missing_field"),
        ({"type": "ban", "user": "Bob", "duration": True}, "missing_field"),
        ({"type": "ban", "user": "Bob", "reason": "x" * 257}, "missing_field"),
        ({"type": "ban", "user": "Bob", "reason": 7}, "missing_field"),
        ({"type": "ban", "user": "\u200bBob"}, "name_invalid"),
        ({"type": "mode", "room": "#dev", "moderated": "yes"}, "missing_field"),
        ({"type": "bans", "room": 5}, "room_invalid"),
    ],
)
def test_bad_messages_get_a_documented_code(message: dict[str, Any], code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_json(json.dumps(message))
    assert info.value.code == code


@given(st.text(max_size=20))
def test_any_duration_word_is_seconds_or_none(word: str) -> None:
    try:
        seconds = parse_duration(word)
    except ProtocolError:
        return  # past ten years
    assert seconds is None or seconds >= 0


async def test_moderation_from_nc(tmp_path: Path) -> None:
    async with (
        moderated_server(moderated_config(tmp_path)) as mod,
        await TcpClient.connect(mod.bound.tcp_port) as olga,
        await TcpClient.connect(mod.bound.tcp_port) as bob,
    ):
        await olga.send_raw(b"/nick Olga\n")
        await olga.recv_until(type="system", event="join", name="Olga")
        await mod.login(olga, "Olga")
        await olga.send_raw(b"/join #dev\n")
        await olga.recv_until(type="system", event="join", room="#dev")
        await bob.send_raw(b"/nick Bob\n/join #dev\n")
        await olga.recv_until(type="system", event="join", room="#dev", name="Bob")
        await olga.send_raw(b"/mute Bob 10m shouting\n")
        notice = await bob.recv_until(type="system", event="mute")
        assert notice["reason"] == "shouting" and notice["room"] == "#dev"
        await bob.send_raw(b"HELLO\n")
        error = await bob.recv_until(type="error")
        assert error["code"] == "muted"
        await olga.send_raw(b"/unmute Bob\n/mode +m\n/voice Bob\n")
        await bob.recv_until(type="system", event="voice")
        await bob.send_raw(b"hello\n")
        await olga.recv_until(type="chat", text="hello", room="#dev")
        await olga.send_raw(b"/mode\n")
        modes = await olga.recv_until(type="mode")
        assert modes == {"type": "mode", "room": "#dev", "registered_only": False,
                         "moderated": True}
        await olga.send_raw(b"/ban Bob 1h enough\n/bans\n")
        await bob.recv_until(type="system", event="ban", reason="enough")
        bans = await olga.recv_until(type="bans")
        assert [b["user"] for b in bans["bans"]] == ["Bob"]
        await bob.send_raw(b"/join #dev\n")
        error = await bob.recv_until(type="error")
        assert error["code"] == "banned" and error["reason"] == "enough"
        await olga.send_raw(b"/unban Bob\n")
        await olga.recv_until(type="system", event="unban")
        await bob.send_raw(b"/join #dev\n")
        await olga.recv_until(type="system", event="join", room="#dev", name="Bob")
        await olga.send_raw(b"/kick Bob bye\n")
        await bob.recv_until(type="system", event="kick", reason="bye")
        # A guest at nc: not permitted, and told what it takes.
        await bob.send_raw(b"/op Bob\n")
        error = await bob.recv_until(type="error")
        assert error["code"] == "not_permitted" and "ops" in error["text"]


async def test_a_room_holds_at_most_1000_bans_and_mutes(tmp_path: Path) -> None:
    async with (
        moderated_server(moderated_config(tmp_path)) as mod,
        await TcpClient.connect(mod.bound.tcp_port) as olga,
    ):
        await olga.join("Olga")
        await mod.login(olga, "Olga")
        await olga.send({"type": "join", "room": "#dev"})
        await olga.recv_until(type="system", event="join", room="#dev")
        lines = b"".join(
            json.dumps({"type": "ban" if n % 2 else "mute", "room": "#dev",
                        "user": f"U{n}"}).encode() + b"\n"
            for n in range(MAX_SANCTIONS_PER_ROOM + 1)
        )
        await olga.send_raw(lines)
        error = await olga.recv_until(type="error")
        assert error["code"] == "not_permitted" and "1000 bans and mutes" in error["text"]
        await olga.send({"type": "bans", "room": "#dev"})
        bans = await olga.recv_until(type="bans")
        assert bans["bans_total"] + bans["mutes_total"] == MAX_SANCTIONS_PER_ROOM
        # Another room, and the server-wide list, are not full.
        await olga.send({"type": "join", "room": "#other"})
        await olga.recv_until(type="system", event="join", room="#other")
        await olga.send({"type": "ban", "room": "#other", "user": "U1"})
        await olga.recv_until(type="system", event="ban", room="#other")


def test_the_admin_log_shows_no_terminal_escapes(tmp_path: Path) -> None:
    db = history_db(tmp_path / "chat.db")
    runner = CliRunner()
    result = runner.invoke(main, ["admin", "ban", "--db", db, "Bob", "--reason",
                                  "\x1b]0;owned\x07 spam"])
    assert result.exit_code == 0 and "\x1b" not in result.output
    result = runner.invoke(main, ["admin", "log", "--db", db])
    assert "\x1b" not in result.output and "\\x1b]0;owned\\x07 spam" in result.output


async def test_a_banned_address_is_refused_on_every_port_and_the_ban_reaches_a_running_server(
    tmp_path: Path,
) -> None:
    """``trio-chat admin ban --address`` on the running server's database: its
    connections from there are closed (``banned``), a new one refused (gRPC too:
    PERMISSION_DENIED)."""
    async with (
        moderated_server(moderated_config(tmp_path, grpc_port=0)) as mod,
        await TcpClient.connect(mod.bound.tcp_port) as bob,
    ):
        await bob.join("Bob")
        result = await trio.to_thread.run_sync(lambda: CliRunner().invoke(
            main, ["admin", "ban", "--db", mod.db, "--address", "127.0.0.0/8",
                   "--reason", "lockdown"]))
        assert result.exit_code == 0, result.output
        error = await bob.recv_until(type="error")
        assert error["code"] == "banned" and error["reason"] == "lockdown"
        assert await bob.eof()
        async with await TcpClient.connect(mod.bound.tcp_port) as again:
            assert (await again.recv())["code"] == "banned"
        assert mod.bound.grpc_target is not None
        async with grpc_client(mod.bound.grpc_target) as client:
            with pytest.raises(Failed) as failed:
                await client.who()
            assert failed.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert failed.value.details.startswith("banned: ")


class _Shown:
    """A front end of ``trio-chat join`` that keeps what it was given to show."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def status(self, status: Status) -> None:
        pass

    async def choose_name(self, refused: str | None, reason: str | None) -> str:
        raise JoinRefused(reason or "no name")

    async def ask_password(self, name: str, reason: str) -> str | None:
        raise JoinRefused(reason)


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_trio_chat_join_stops_when_banned_from_the_server(
    tmp_path: Path, kind: str
) -> None:
    """A server-wide ban ends ``trio-chat join`` (with the server's words) instead of
    reconnecting to be refused again and again."""
    async with (
        moderated_server(moderated_config(tmp_path)) as mod,
        await TcpClient.connect(mod.bound.tcp_port) as root,
    ):
        await root.join("Root")
        await mod.login(root, "Root")
        url = f"ws://127.0.0.1:{mod.bound.ws_port}/" if kind == "ws" else None
        config = ClientConfig(name="Bob", port=mod.bound.tcp_port, url=url,
                              backoff_initial=0.01, backoff_max=0.01)
        shown = _Shown()
        session = ChatSession(config, shown)
        ended: list[str] = []

        async def run() -> None:
            with pytest.raises(ConnectionLost) as lost:
                await session.run()
            ended.append(str(lost.value))

        with trio.fail_after(WAIT):  # not reconnecting forever
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await root.recv_until(type="system", event="join", name="Bob")
                await root.send({"type": "ban", "user": "Bob", "reason": "troll"})
        assert ended == ["you are banned from this server: troll"]
        assert shown.messages[-1]["code"] == "banned"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"/ban Bob 10m spam", {"type": "ban", "room": "#lobby", "user": "Bob",
                                "duration": 600, "reason": "spam"}),
        (b"/ban * 203.0.113.7", {"type": "ban", "address": "203.0.113.7/32", "duration": 0}),
        (b"/kick #dev Bob", {"type": "kick", "room": "#dev", "user": "Bob"}),
        (b"/bans *", {"type": "bans"}),
        (b"/mode +m", {"type": "mode", "room": "#lobby", "moderated": True}),
        (b"/mode", {"type": "mode", "room": "#lobby"}),
    ],
)
def test_a_command_as_the_message_a_client_sends(line: bytes, message: dict[str, Any]) -> None:
    """``trio-chat join`` reads these commands itself and sends their JSON: the same
    event again on the server."""
    event = decode_line(line)
    assert isinstance(event, Moderate | ListBans | Mode)
    assert moderation_message(event) == message
    assert decode_json(json.dumps(message)) == replace_current(event)


def replace_current(event: Moderate | ListBans | Mode) -> object:
    return dataclasses.replace(event, room="#lobby") if event.room == CURRENT else event
