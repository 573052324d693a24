"""How server messages read as text, shared by the line and the urwid front ends."""

from __future__ import annotations

import re
from contextlib import suppress
from datetime import datetime
from typing import Any, Final

#: Shown as escapes, never written to the terminal as they are: the C0 controls but tab
#: (an ESC could repaint someone's screen), DEL and the C1 controls (U+009B is a CSI on
#: many terminals), the bidi controls and marks (U+202E would show the rest of a line
#: backwards), the line and paragraph separators, and lone surrogates (not encodable).
#: The same set as the server's JSON escapes (trio_chat/protocol/safetext.py), plus C0.
VISIBLE: Final = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


_NAMED: Final = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, *, newlines: bool = False) -> str:
    """Make peer-supplied text safe for a terminal: control and bidi characters
    become visible escapes like ``\\x1b`` or ``\\u202e``. ``newlines`` keeps line
    breaks (the message pane shows them as continuation lines); otherwise they show
    as ``\\n`` so that one message stays one line."""
    if newlines:
        return "\n".join(VISIBLE.sub(_escape, part) for part in text.split("\n"))
    return VISIBLE.sub(_escape, text)


def local_time(timestamp: object, now: datetime | None = None) -> str:
    """A server timestamp (ISO-8601 UTC) as local ``HH:MM:SS``, with the date in
    front when it is not today's (messages replayed from history)."""
    now = now or datetime.now().astimezone()
    when = now
    if isinstance(timestamp, str):
        with suppress(ValueError, OverflowError):  # year 9999 in a zone west of UTC
            when = datetime.fromisoformat(timestamp).astimezone(now.tzinfo)
    if when.date() != now.date():
        return when.strftime("%Y-%m-%d %H:%M:%S")
    return when.strftime("%H:%M:%S")


def user_list(message: dict[str, Any]) -> str:
    names = message.get("users")
    shown = ", ".join(clean(str(n)) for n in names) if isinstance(names, list) else "?"
    count = message.get("clients_count", len(names) if isinstance(names, list) else "?")
    return f"online ({count}): {shown}"


#: Rooms named in one ``rooms`` line at most (the server sends up to 1,000).
ROOMS_SHOWN: Final = 100


def room_list(message: dict[str, Any]) -> str:
    """A ``rooms`` answer as one line: ``rooms (2): #lobby 3, #dev 2 (release)``."""
    rooms = message.get("rooms")
    rooms = rooms if isinstance(rooms, list) else []
    shown = []
    for entry in rooms[:ROOMS_SHOWN]:
        topic = entry.get("topic")
        about = f" ({clean(topic)})" if isinstance(topic, str) and topic else ""
        shown.append(f"{clean(str(entry.get('room')))} {entry.get('users', '?')}{about}")
    total = message.get("total", len(rooms))
    more = f", and {len(rooms) - ROOMS_SHOWN:,} more" if len(rooms) > ROOMS_SHOWN else ""
    return f"rooms ({total}): {', '.join(shown)}{more}"


def format_line(message: dict[str, Any], now: datetime | None = None) -> str | None:
    """One plain line for a message, ``[HH:MM:SS] #dev Bob: hi`` (the room when the
    server names one), a direct message as ``[HH:MM:SS] (direct) Ann -> Bob: hi``;
    None for the ones not shown (unknown types, ``history_end``). Replayed history is
    marked ``(earlier)``."""
    kind = message.get("type")
    when = f"[{local_time(message.get('timestamp'), now)}]"
    room = message.get("room")
    if isinstance(room, str):
        when = f"{when} {clean(room)}"
    if kind == "chat":
        user, text = clean(str(message.get("user", "?"))), clean(str(message.get("text", "")))
        line = f"{when} {user}: {text}"
        return f"(earlier) {line}" if message.get("history") is True else line
    if kind == "msg":
        sender, to = clean(str(message.get("from", "?"))), clean(str(message.get("to", "?")))
        return f"{when} (direct) {sender} -> {to}: {clean(str(message.get('text', '')))}"
    if kind == "system":
        line = f"{when} * {clean(str(message.get('text', '')))}"
        return f"(earlier) {line}" if message.get("history") is True else line
    if kind == "welcome":
        topic = message.get("topic")
        about = f"; topic: {clean(topic)}" if isinstance(topic, str) and topic else ""
        you = clean(str(message.get("user", "?")))
        return f"{when} * you are {you}; {user_list(message)}{about}"
    if kind == "users":
        return f"{when} * {user_list(message)}"
    if kind == "rooms":
        return f"{when} * {room_list(message)}"
    if kind == "error":
        return f"{when} ! {clean(str(message.get('text', message.get('code', 'error'))))}"
    return None


class AfterReplay:
    """Shows a join's ``welcome`` ("you are Bob; online ...") after the history replayed
    with it, not above it: the server sends the welcome first, then the replay, then
    the join notice. A welcome is held until the first message that is not a
    replayed chat (``history_end``, the join notice...), then shown before it."""

    def __init__(self) -> None:
        self._held: dict[str, Any] | None = None

    def feed(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The messages to show now, in order (maybe none, maybe two)."""
        kind = message.get("type")
        held = self._held
        if kind == "welcome":
            self._held = message
            return [held] if held is not None else []
        if held is None or (kind == "chat" and message.get("history") is True):
            return [message]
        self._held = None
        return [held, message]
