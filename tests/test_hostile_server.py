"""``trio-chat join`` against a hostile server: it checks every field it uses.

A fake server on loopback (a Trio TCP listener, and a WebSocket one) answers the join,
then sends wrong types for each field, huge values, non-objects, invalid UTF-8, NaN,
deep nesting and lines over the limit, each followed by a good message. The real client
(a subprocess, line mode and ``--json``) keeps running, shows every good message, never
prints a traceback, and reports each kind of problem at most once.
"""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from tests.support.processes import JoinProcess
from trio_chat.client.incoming import MAX_SHOWN, Incoming
from trio_chat.protocol import MAX_ID, LineBuffer

TS = "2026-11-26T18:00:00.000Z"
CLIENT_MAX_LINE = 1 << 20  # ClientConfig.max_line


def line(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def chat(text: Any = "hi", **fields: Any) -> bytes:
    return line(**{"type": "chat", "user": "Ann", "text": text, "timestamp": TS, **fields})


WELCOME = line(type="welcome", user="Bob", users=["Ann", "Bob"], clients_count=2)

#: Values of ``type`` no client knows.
UNKNOWN_TYPES: list[Any] = [[], {}, 5, None, "\u202e", "x" * 10_000]

#: Each is sent on its own line, followed by a good chat. Texts starting "shown" are
#: messages that fit once a bad field is dropped: they are shown too.
HOSTILE: list[bytes] = [
    # chat: text and user are required strings
    *(chat(text) for text in (["a"], {"a": 1}, 5, None, True)),
    *(line(type="chat", user=user, text="no user", timestamp=TS)
      for user in (["Ann"], 5, "", "x" * 33, None, {"u": 1})),
    line(type="chat", text="no user at all"),
    # chat: a bad id, timestamp or history flag is dropped, the message shown
    *(chat(f"shown id {n}", id=value) for n, value in
      enumerate(["7", -1, 0, 1.5, True, 10**30, MAX_ID + 1, [1], None])),
    *(chat(f"shown ts {n}", timestamp=value) for n, value in
      enumerate([5, ["T"], "x" * 10_000, "9999-12-31T23:59:59-23:59", None])),
    chat("shown history", history="yes"),
    chat("shown huge " + "y" * 100_000),  # cut at MAX_SHOWN characters
    # system: text is required; the rest is checked
    *(line(type="system", event="join", text=text, timestamp=TS) for text in ([1], None, 2)),
    line(type="system", event=["join"], name={"n": 1}, old=5, text="shown system",
         clients_count="3", joined=-1, left=1.5, timestamp=TS),
    *(line(type="system", event="join", name="Cat", text=f"shown count {n}", clients_count=c)
      for n, c in enumerate([-1, 10**100, 1.5, True, "2"])),
    # welcome, users, history_end, error
    *(line(type="welcome", user=user, users=users, clients_count=count)
      for user, users, count in [
          (["Bob"], "x", "two"), ("", [1, None, ["Ann"], "Ann"], -3),
          ("System", {"a": 1}, 10**50), ("Bob\x1b[2J", [True], 1.5), (None, None, None),
      ]),
    *(line(type="users", users=users, clients_count=count)
      for users, count in [({}, True), ([[]], "1"), ("Ann", None), ([5, "Ann"], 2)]),
    *(line(type="history_end", last_id=last, complete=complete)
      for last, complete in [("x", "no"), (10**100, 1), (-5, None), (1.5, [])]),
    *(line(type="error", code=code, text=text)
      for code, text in [([], {}), ("x" * 1000, 5), (None, None), ("name_taken", ["no"])]),
    # not a message at all
    *(json.dumps(value).encode() for value in ([], "x", 42, None, True, [1, 2], 1.5)),
    *(line(type=kind, text="unknown") for kind in UNKNOWN_TYPES),
    b'{"type":"chat","user":"Ann","text":"\xff\xfe not UTF-8"}',
    b'\xef\xbb\xbf{"type":"chat","user":"Ann","text":"a BOM"}',
    b'{"type":"chat","user":"Ann","text":"NaN id","id":NaN}',
    b'{"type":"system","text":"Infinity count","clients_count":Infinity}',
    b'{"type":"chat","user":"Ann","text":"shown lone \\ud800 surrogate"}',
    b'{"type":"chat","user":"Ann","text":"big","id":' + b"9" * 5000 + b"}",
    b"[" * 100_000,
    *(b'{"type":"%s","user":"Ann","text":"deep","x":' % kind + b"[" * depth + b"]" * depth
      + b"}" for kind in (b"chat", b"unknown") for depth in (33, 500, 990)),
    b'{"type":"chat","user":"Ann","text":"' + b"x" * (CLIENT_MAX_LINE + 10) + b'"}',
    b"not json at all \x00\x1b[2J",
    b"",
    b"   ",
]


def script(hostile: list[bytes]) -> list[bytes]:
    """The lines the fake server sends after the welcome: each hostile line, then a
    good chat ``good N``."""
    lines = []
    for n, bad in enumerate(hostile):
        lines += [bad, chat(f"good {n}", id=n + 1)]
    return lines


async def fake_tcp_server(
    lines: list[bytes], *, task_status: trio.TaskStatus[int]
) -> None:
    """Answers one client's join with a welcome and ``lines``, then waits for its leave."""

    async def handler(stream: trio.SocketStream) -> None:
        buffer = LineBuffer(1 << 16)
        async with stream:
            await stream.receive_some()  # the join
            await stream.send_all(WELCOME + b"\n")
            for data in lines:
                await stream.send_all(data + b"\n")
            while not any(b'"leave"' in got for got in buffer.feed(await stream.receive_some())):
                pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


async def fake_ws_server(
    frames: list[str | bytes], *, task_status: trio.TaskStatus[int]
) -> None:
    """The same over WebSocket: each item one frame (text, or binary)."""

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()  # the join
        await ws.send_message(WELCOME.decode())
        for frame in frames:
            await ws.send_message(frame)
        while '"leave"' not in await ws.get_message():
            pass
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
        task_status.started(server.port)


def check_stderr(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    reports = stderr.splitlines()
    assert len(reports) == len(set(reports)), "a problem was reported twice"
    assert all(r.startswith("ignoring ") for r in reports), reports
    return reports


@pytest.mark.slow
async def test_line_mode_survives_a_hostile_tcp_server(nursery: trio.Nursery) -> None:
    lines = script(HOSTILE)
    port = await nursery.start(partial(fake_tcp_server, lines))
    bob = await JoinProcess.start(nursery, "--name", "Bob", "--port", port, "--no-reconnect")
    await bob.wait_for(f"good {len(HOSTILE) - 1}")
    await bob.close_stdin()
    assert await bob.exit_code() == 0
    await bob.rest()
    reports = check_stderr(await bob.stderr())
    shown = bob.seen
    for row in shown:  # one line per message, and nothing raw in it
        assert re.match(r"^\[[\d: -]+\] ", row), row
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", row), row
    goods = [row.split("] ", 1)[1] for row in shown if "good " in row]
    assert goods == [f"Ann: good {n}" for n in range(len(HOSTILE))]
    chats = [row.split("] ", 1)[1] for row in shown if "] Ann: " in row and "good " not in row]
    assert [c for c in chats if not c.startswith("Ann: shown")] == []
    assert "Ann: shown lone \\ud800 surrogate" in chats
    (huge,) = [c for c in chats if c.startswith("Ann: shown huge")]
    assert len(huge) == len("Ann: shown huge ") + MAX_SHOWN - len("shown huge ") + len(" [...]")
    expected_chats = (
        [f"shown id {n}" for n in range(9)] + [f"shown ts {n}" for n in range(5)]
        + ["shown history", "shown lone \\ud800 surrogate"]
    )
    assert all(f"Ann: {text}" in chats for text in expected_chats)
    notices = [row.split("] ", 1)[1] for row in shown if "] * " in row]
    assert "* shown system" in notices
    assert all(f"* shown count {n}" in notices for n in range(5))
    # A hostile welcome never renames us: every "you are" still says Bob.
    assert all(n.startswith("* you are Bob;") for n in notices if "you are" in n)
    assert "ignoring lines over 1048576 bytes from the server" in reports
    assert "ignoring a line that is not JSON from the server" in reports
    assert "ignoring a message nested deeper than 32 levels from the server" in reports


@pytest.mark.slow
async def test_json_mode_prints_only_well_formed_safe_json(nursery: trio.Nursery) -> None:
    lines = script(HOSTILE)
    port = await nursery.start(partial(fake_tcp_server, lines))
    bob = await JoinProcess.start(nursery, "--name", "Bob", "--port", port, "--json")
    await bob.wait_for(f'"good {len(HOSTILE) - 1}"')
    await bob.close_stdin()
    assert await bob.exit_code() == 0
    await bob.rest()
    check_stderr(await bob.stderr())
    printed = [json.loads(row) for row in bob.seen]
    for row in bob.seen:
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", row)
    assert printed[0] == {"type": "welcome", "user": "Bob", "users": ["Ann", "Bob"],
                          "clients_count": 2}
    for message in printed:
        if message.get("type") == "chat":
            assert isinstance(message["user"], str) and isinstance(message["text"], str)
            assert "id" not in message or 1 <= message["id"] <= MAX_ID
        if message.get("type") == "welcome":
            assert message["user"] == "Bob"
            assert all(isinstance(name, str) for name in message.get("users", []))
    goods = [m["text"] for m in printed if str(m.get("text", "")).startswith("good ")]
    assert goods == [f"good {n}" for n in range(len(HOSTILE))]


@pytest.mark.slow
async def test_line_mode_survives_a_hostile_websocket_server(nursery: trio.Nursery) -> None:
    texts = [bad.decode("utf-8", "replace") for bad in HOSTILE if len(bad) < CLIENT_MAX_LINE]
    frames: list[str | bytes] = []
    for n, bad in enumerate(texts):
        frames += [bad, chat(f"good {n}", id=n + 1).decode()]
    frames += [
        b"\x00binary",
        "\n".join([chat("shown batched").decode(), "junk", "[]", "", line(type="chat").decode(),
                   chat(f"good {len(texts)}", id=10**6).decode()]),
    ]
    port = await nursery.start(partial(fake_ws_server, frames))
    bob = await JoinProcess.start(nursery, "--name", "Bob", "--url", f"ws://127.0.0.1:{port}/",
                                  "--no-reconnect")
    await bob.wait_for(f"good {len(texts)}")
    await bob.close_stdin()
    assert await bob.exit_code() == 0
    await bob.rest()
    reports = check_stderr(await bob.stderr())
    goods = [row.split("] ", 1)[1] for row in bob.seen if "good " in row]
    assert goods == [f"Ann: good {n}" for n in range(len(texts) + 1)]
    assert any(row.endswith("Ann: shown batched") for row in bob.seen)
    assert "ignoring a binary frame from the server" in reports


# ---------------------------------------------------------------- field by field


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"type": "chat", "user": "Ann", "text": ["x"]}, None),
        ({"type": "chat", "user": 7, "text": "x"}, None),
        ({"type": "chat", "user": "Ann", "text": "x", "id": "7", "timestamp": 5,
          "history": "yes", "clients_count": -1},
         {"type": "chat", "user": "Ann", "text": "x"}),
        ({"type": "chat", "user": "Ann", "text": "x", "id": MAX_ID, "extra": [1]},
         {"type": "chat", "user": "Ann", "text": "x", "id": MAX_ID, "extra": [1]}),
        ({"type": "system", "text": None}, None),
        ({"type": "system", "text": "t", "name": 5, "joined": "1", "left": 2},
         {"type": "system", "text": "t", "left": 2}),
        ({"type": "welcome", "user": "System", "users": ["Ann", 5], "clients_count": "2"},
         {"type": "welcome", "users": ["Ann"]}),
        ({"type": "welcome", "user": " Bob ", "users": "Ann"}, {"type": "welcome"}),
        ({"type": "users", "users": None, "clients_count": 10**20}, {"type": "users"}),
        ({"type": "history_end", "last_id": True, "complete": "no"}, {"type": "history_end"}),
        ({"type": "history_end", "last_id": 0, "complete": False},
         {"type": "history_end", "last_id": 0, "complete": False}),
        ({"type": "error", "code": 5, "text": 5}, {"type": "error"}),
        ({"type": "pong", "anything": {"goes": 1}}, {"type": "pong", "anything": {"goes": 1}}),
        ({"type": ["chat"], "text": 1}, {"type": ["chat"], "text": 1}),  # unknown: ignored
        (["type", "chat"], None),
        ("chat", None),
    ],
)
def test_each_field_is_checked(message: Any, expected: Any) -> None:
    assert Incoming().check(message) == expected


def test_each_kind_of_problem_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_chat")
    incoming = Incoming()
    for n in range(100):
        assert incoming.check({"type": "chat", "user": "Ann", "text": n}) is None
        assert incoming.check([n]) is None
    reports = [r.getMessage() for r in caplog.records]
    assert reports == [
        "ignoring 'chat' without a string 'text' from the server",
        "ignoring a message that is not a JSON object from the server",
    ]
