"""How the client shows messages: one plain line each, local time, safe text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from trio_chat.client.display import clean, format_line, local_time

# Two hours east of UTC, so the conversion from the server's UTC shows.
NOW = datetime(2026, 11, 26, 20, 30, tzinfo=timezone(timedelta(hours=2)))


def test_timestamps_are_local_with_the_date_only_when_not_today() -> None:
    assert local_time("2026-11-26T18:00:01.500Z", NOW) == "20:00:01"
    assert local_time("2026-11-25T18:00:01.500Z", NOW) == "2026-11-25 20:00:01"
    assert local_time(None, NOW) == "20:30:00"  # no timestamp: now
    assert local_time("garbage", NOW) == "20:30:00"


def test_one_plain_line_per_message() -> None:
    chat = {"type": "chat", "user": "Bob", "text": "hi", "timestamp": "2026-11-26T18:00:00.000Z"}
    assert format_line(chat, NOW) == "[20:00:00] Bob: hi"
    assert format_line({**chat, "history": True}, NOW) == "(earlier) [20:00:00] Bob: hi"
    system = {"type": "system", "event": "join", "name": "Ann", "text": "Ann joined the chat",
              "timestamp": "2026-11-26T18:00:00.000Z"}
    assert format_line(system, NOW) == "[20:00:00] * Ann joined the chat"
    users = {"type": "users", "users": ["Ann", "Bob"], "clients_count": 2}
    assert format_line(users, NOW) == "[20:30:00] * online (2): Ann, Bob"
    error = {"type": "error", "code": "too_long", "text": "message is too long"}
    assert format_line(error, NOW) == "[20:30:00] ! message is too long"
    assert format_line({"type": "history_end"}, NOW) is None
    assert format_line({"type": "from_the_future", "x": 1}, NOW) is None
    assert format_line({"type": "pong"}, NOW) is None


def test_peer_text_cannot_drive_the_terminal() -> None:
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("two\nlines") == "two\\nlines"
    assert clean("two\nlines", newlines=True) == "two\nlines"
    assert clean("tab\tand émoji ✓") == "tab\tand émoji ✓"
    line = format_line({"type": "chat", "user": "x\x07", "text": "a\r\nb"}, NOW)
    assert line == "[20:30:00] x\\x07: a\\r\\nb"
