"""How server messages read as text, shared by the line and the urwid front ends."""

from __future__ import annotations

import unicodedata
from contextlib import suppress
from datetime import datetime
from typing import Any


def clean(text: str, *, newlines: bool = False) -> str:
    """Make peer-supplied text safe for a terminal: control characters (an ESC
    could repaint someone's screen) become visible escapes like ``\\x1b``.
    ``newlines`` keeps line breaks (the message pane wraps them); otherwise they
    show as ``\\n`` so that one message stays one line."""
    out = []
    for ch in text:
        if ch == "\t" or (ch == "\n" and newlines):
            out.append(ch)
        elif unicodedata.category(ch) == "Cc":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def local_time(timestamp: object, now: datetime | None = None) -> str:
    """A server timestamp (ISO-8601 UTC) as local ``HH:MM:SS``, with the date in
    front when it is not today's (messages replayed from history)."""
    now = now or datetime.now().astimezone()
    when = now
    if isinstance(timestamp, str):
        with suppress(ValueError):
            when = datetime.fromisoformat(timestamp).astimezone(now.tzinfo)
    if when.date() != now.date():
        return when.strftime("%Y-%m-%d %H:%M:%S")
    return when.strftime("%H:%M:%S")


def user_list(message: dict[str, Any]) -> str:
    names = message.get("users")
    shown = ", ".join(clean(str(n)) for n in names) if isinstance(names, list) else "?"
    count = message.get("clients_count", len(names) if isinstance(names, list) else "?")
    return f"online ({count}): {shown}"


def format_line(message: dict[str, Any], now: datetime | None = None) -> str | None:
    """One plain line for a message, ``[HH:MM:SS] Bob: hi``; None for the ones not
    shown (unknown types, ``history_end``). Replayed history is marked ``(earlier)``."""
    kind = message.get("type")
    when = f"[{local_time(message.get('timestamp'), now)}]"
    if kind == "chat":
        user, text = clean(str(message.get("user", "?"))), clean(str(message.get("text", "")))
        line = f"{when} {user}: {text}"
        return f"(earlier) {line}" if message.get("history") is True else line
    if kind == "system":
        line = f"{when} * {clean(str(message.get('text', '')))}"
        return f"(earlier) {line}" if message.get("history") is True else line
    if kind == "welcome":
        return f"{when} * you are {clean(str(message.get('user', '?')))}; {user_list(message)}"
    if kind == "users":
        return f"{when} * {user_list(message)}"
    if kind == "error":
        return f"{when} ! {clean(str(message.get('text', message.get('code', 'error'))))}"
    return None
