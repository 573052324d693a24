"""Safe text: no terminal control or bidi control reaches a screen raw.

The server's JSON carries C1 controls, DEL, bidi controls and marks and U+2028/U+2029
only as ``\\uXXXX`` escapes (the same JSON string: a decoder sees the same text), for
every kind of message and every path (live, replay, errors that echo input). The
terminal client shows such characters as visible escapes, and a newline inside a
message as a continuation line that cannot look like a notice. Logs escape them too.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.support.processes import JoinProcess, join_command
from tests.support.tcp import TcpClient
from tests.support.tmux import Tmux, needs_tmux
from tests.support.ws import WsClient, ws_client
from trio_chat import Bound, Config, protocol, serve
from trio_chat.client import ClientConfig
from trio_chat.client.display import clean, format_line
from trio_chat.client.tui import ChatApp
from trio_chat.history.sqlite import open_history
from trio_chat.logs import JsonFormatter, TextFormatter
from trio_chat.protocol import ProtocolError

CONFIG = Config(tcp_port=0, ws_port=0, rate_limit=0)
TS = "2026-11-26T18:00:00.000Z"

#: Every character the server's JSON must never carry raw (C0 is json's own job).
UNSAFE = [0x7F, *range(0x80, 0xA0), 0x61C, 0x200E, 0x200F, *range(0x2028, 0x202F),
          *range(0x2066, 0x206A)]
NASTY = "".join(map(chr, UNSAFE)) + "\x00\x1b[2J\n\r\t"
#: Text that must stay as it is on the wire: UTF-8, not escapes.
FRIENDLY = "café 🙂 שלום مرحبا 日本語 \u2018quotes\u2019 \u2014 zwj 👩\u200d💻"
RAW = re.compile("[\x00-\x1f" + "".join(map(chr, UNSAFE)) + "]")


def strings(value: object) -> list[str]:
    """Every string in a decoded JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


async def raw_line(client: TcpClient, needle: bytes) -> bytes:
    """The next line (as the bytes came) that contains ``needle``."""
    while True:
        line = await client.line()
        assert line is not None, "connection closed"
        if needle in line:
            return line


def assert_safe(wire: bytes, expected: object = None) -> Any:
    """``wire`` is one JSON line or frame payload with nothing unsafe raw in it."""
    text = wire.decode("utf-8").removesuffix("\n")
    assert RAW.search(text) is None, f"raw unsafe character in {text!r}"
    value = json.loads(text)
    if expected is not None:
        assert value == expected
    return value


def test_every_message_kind_escapes_what_it_carries() -> None:
    text = f"{FRIENDLY} {NASTY}"
    users = protocol.json_array(["Ann", text])
    lines = {
        "chat": protocol.chat(text, text, text, 7, history=True),
        "system": protocol.system("rename", text, text, 2, TS, old=text),
        "welcome": protocol.welcome(text, users, 2, 4096),
        "welcome appended": protocol.welcome(
            "Ann", protocol.json_array_append(users, text), 3, 4096
        ),
        "users": protocol.users(users, 2),
        "error": ProtocolError(protocol.UNKNOWN_TYPE, text).to_message(),
        # Rooms (issue 16): a topic in a notice, a welcome and the list; a direct message.
        "topic": protocol.system("topic", "Ann", text, 2, TS, room="#dev", topic=text),
        "welcome with a topic": protocol.welcome("Ann", users, 2, 4096, room="#dev",
                                                 topic=text),
        "rooms": protocol.rooms_list([protocol.room_entry("#dev", 2, text)], 1),
        "msg": protocol.direct(text, text, text, TS, 9),
        "users of a room": protocol.users(users, 2, room="#dev"),
    }
    for kind, line in lines.items():
        value = assert_safe(protocol.wire_line(line))
        assert text in strings(value), kind
        assert FRIENDLY in line, f"{kind}: ordinary text must stay UTF-8, not escapes"
        frame = protocol.wire_frame(line)
        assert frame.endswith(protocol.wire_line(line)[:-1])
    assert json.loads(lines["chat"])["text"] == text
    assert "\\u202e" in lines["chat"] and "\\u009b" in lines["chat"] and "\\u007f" in lines["chat"]


@given(st.text())
def test_any_text_round_trips_and_nothing_unsafe_is_raw(text: str) -> None:
    line = protocol.chat("Ann", text, TS, 1)
    assert_safe(protocol.wire_line(line), {"type": "chat", "id": 1, "user": "Ann", "text": text,
                                           "timestamp": TS})
    array = protocol.json_array_append(protocol.json_array(["Ann"]), text)
    assert array == protocol.json_array(["Ann", text])


async def test_live_replayed_and_echoed_text_reaches_nc_and_websocket_escaped(
    tmp_path: Path,
) -> None:
    db = tmp_path / "chat.db"
    async with open_history(replace(CONFIG, db=str(db))) as history:
        await history.store.wait_writable()
        history.record("Old", "from the store", TS)
    with closing(sqlite3.connect(db)) as database, database:  # a name no join would allow
        database.execute("UPDATE messages SET user = ?", ("Ev\u202eil\x9b",))
    text = f"{FRIENDLY} {NASTY.replace(chr(10), '')} end"  # one nc line
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, replace(CONFIG, db=str(db)))
        async with (
            await TcpClient.connect(bound.tcp_port) as nc,
            ws_client(bound.ws_port) as conn,
        ):
            await nc.send_raw(b"/nick Nc\n")
            replayed = assert_safe(await raw_line(nc, b'"history":true'))
            assert replayed["user"] == "Ev\u202eil\x9b"
            ws = WsClient(conn)
            await ws.join("Web")
            await nc.send_raw(text.encode() + b"\n")  # nc's plain text
            await nc.send_raw(json.dumps({"type": "chat", "text": text + "!"}).encode() + b"\n")
            await nc.send_raw(b"/\xc2\x9b\xe2\x80\xae31m\n")  # an unknown command, echoed
            for want in (text, text + "!"):
                line = await raw_line(nc, b'"chat"')
                assert assert_safe(line)["text"] == want
                while '"chat"' not in (frame := await conn.get_message()):
                    pass
                assert isinstance(frame, str)
                assert assert_safe(frame.encode())["text"] == want
            error = assert_safe(await raw_line(nc, b'"error"'))
            assert error["code"] == "unknown_type" and "\x9b\u202e" in error["text"]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the terminal client

SPOOF = "x\n  -- Ann is now known as Admin"
NOTICE = {"type": "system", "event": "rename", "name": "Admin", "old": "Ann",
          "text": "Ann is now known as Admin", "timestamp": TS}


def test_line_mode_shows_controls_as_escapes_and_a_message_as_one_line() -> None:
    chat = {"type": "chat", "user": "Ann", "text": f"a\u202eb\x9bc\x7fd\u2028e\u2066f{SPOOF}"}
    line = format_line(chat)
    assert line is not None and "\n" not in line and RAW.search(line) is None
    assert line.endswith(
        "Ann: a\\u202eb\\x9bc\\x7fd\\u2028e\\u2066fx\\n  -- Ann is now known as Admin"
    )
    assert clean("tab\tnew\nline", newlines=True) == "tab\tnew\nline"


def rows(app: ChatApp, width: int) -> list[list[str]]:
    """The pane's entries as the screen shows them: each a list of rows."""
    return [
        [row.decode().rstrip() for row in entry.render((width,)).text] for entry in app.walker
    ]


@pytest.mark.parametrize("width", [100, 40])
def test_tui_indents_a_message_s_further_lines_under_its_text(width: int) -> None:
    app = ChatApp(ClientConfig(name="Bob"))
    app.message({"type": "chat", "user": "Ann", "text": SPOOF, "timestamp": TS})
    app.message(NOTICE)
    app.message({"type": "chat", "user": "A", "text": "y" * 30 + " -- wrapped" * 8,
                 "timestamp": TS})
    app.message({"type": "chat", "user": "Eve", "text": "\u202eevil\x1b[2J", "timestamp": TS})
    spoof, notice, wrapped, evil = rows(app, width)
    dashes = notice[0].index("--")
    assert spoof[0].endswith("Ann: x")
    assert " ".join(row.strip() for row in spoof[1:]) == "-- Ann is now known as Admin"
    for row in spoof[1:] + wrapped[1:]:  # blank where an entry's time and "--" are
        assert row[: dashes + 2].strip() == "", row
    assert "Eve: \\u202eevil\\x1b[2J" in "".join(row.strip() for row in evil)


@pytest.mark.slow
async def test_line_mode_client_shows_one_line_per_message(
    server: Bound, nursery: trio.Nursery,
) -> None:
    bob = await JoinProcess.start(nursery, "--name", "Bob", "--port", server.tcp_port)
    await bob.wait_for("you are Bob")
    async with await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        await ann.send({"type": "chat", "text": SPOOF + "\x1b[2J\u202e"})
        await ann.send({"type": "chat", "text": "after"})
        spoof = await bob.wait_for("Ann: x")
        assert spoof.endswith("Ann: x\\n  -- Ann is now known as Admin\\x1b[2J\\u202e")
        assert (await bob.line() or "").endswith("Ann: after")
    await bob.close_stdin()
    assert await bob.exit_code() == 0
    assert not any("Ann is now known as Admin" in line and "Ann: x" not in line
                   for line in bob.seen)


@pytest.mark.slow
@needs_tmux
async def test_tui_in_a_terminal_cannot_be_made_to_draw_a_notice(
    server: Bound, tmp_path: Path,
) -> None:
    tmux = Tmux(tmp_path)
    try:
        await tmux.start(join_command("--name", "Bob", "--port", server.tcp_port))
        await tmux.wait_for("connected as Bob")
        async with await TcpClient.connect(server.tcp_port) as ann:
            await ann.join("Ann")
            await ann.send({"type": "chat", "text": SPOOF})
            await ann.send({"type": "chat", "text": "\u202eevil \x1b[2J\x9b31m"})
            screen = await tmux.wait_for("\\u202eevil")
            await ann.send({"type": "join", "user": "Admin"})  # a real notice to compare
            async with await TcpClient.connect(server.tcp_port) as cat:
                await cat.join("Cat")  # after the rename, in the room's one order
                screen = await tmux.wait_for("Cat joined the chat")
        notices = [row for row in screen if re.match(r"^\d\d:\d\d:\d\d\s+-- ", row)]
        real = next(row for row in notices if "Ann is now known as Admin" in row)
        fake = next(row for row in screen if "Ann is now known as Admin" in row and row != real)
        assert fake.index("--") > real.index("--")
        assert fake[: real.index("--") + 2].strip() == ""
        assert any("Ann: \\u202eevil \\x1b[2J\\x9b31m" in row for row in screen)
        await tmux.keys("C-c")
        assert await tmux.exit_status() == 0
    finally:
        await tmux.kill()


# ---------------------------------------------------------------- logs


def test_logs_escape_what_peers_wrote() -> None:
    record = logging.LogRecord(
        "trio_chat.server.room", logging.DEBUG, "x", 1, "chat %s: %s",
        ("Ann", "hi\n2026-11-26 INFO trio_chat: forged\x1b[2J\u202e\x9b"), None,
    )
    line = TextFormatter().format(record)
    assert "\n" not in line and RAW.search(line) is None
    assert line.endswith("chat Ann: hi\\x0a2026-11-26 INFO trio_chat: forged\\x1b[2J\\u202e\\x9b")
    entry = JsonFormatter().format(record)
    assert RAW.search(entry) is None
    assert json.loads(entry)["message"] == record.getMessage()
