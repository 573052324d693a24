"""What the client takes from a server: every field it uses checked before use.

A server (or something pretending to be one) may send anything: a ``chat`` whose
``text`` is a list, an ``id`` of 10**4000, a ``users`` list of numbers, a timestamp a
megabyte long. :class:`Incoming` turns each decoded object into a message whose known
fields have the types and ranges of docs/protocol.md, or drops it:

- a field the client uses that does not fit is removed (an ``id`` that is not an integer
  in 1..MAX_ID makes a chat one without an id; a bad ``timestamp`` shows as "now");
- a message that cannot be shown without the field (a ``chat`` without a string
  ``user`` and ``text``, a ``system`` notice without ``text``) is dropped;
- long strings are cut to :data:`MAX_SHOWN` characters (with a marker), so a front end
  never holds more than that per field;
- a ``room`` that is not a room name drops the message (it could be shown nowhere);
  lists (``users``, ``rooms``) keep at most :data:`MAX_LIST` entries;
- unknown types and unknown fields pass through untouched (a newer server's).

Each kind of problem is logged once per session (a warning: stderr in line mode).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from ..protocol import MAX_ID, MAX_NAME, MAX_RESUME, ProtocolError, validate_name
from .rooms import is_room

log = logging.getLogger(__name__)

Message = dict[str, Any]

#: Longest string field kept (characters); longer ones are cut with :data:`CUT`.
MAX_SHOWN: Final = 64 * 1024
CUT: Final = " [...]"
#: Longest timestamp taken as one ("2026-11-26T18:00:00.123Z" is 24 characters).
MAX_TIMESTAMP: Final = 64
#: Longest login token kept.
MAX_TOKEN: Final = 512
#: Longest error code kept.
MAX_CODE: Final = 64
#: Longest topic kept (a server takes 256 characters).
MAX_TOPIC_SHOWN: Final = 1024
#: Entries kept of a list (``users``, ``rooms``); the rest are dropped, and said so.
MAX_LIST: Final = 10_000


def _is_int(value: object, low: int, high: int = MAX_ID) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_NAME


def _is_own_name(value: object) -> bool:
    """A name the client could join under: it becomes ours (and the status line's)."""
    if not isinstance(value, str):
        return False
    try:
        return validate_name(value) == value
    except ProtocolError:
        return False


class Reporter:
    """Logs each kind of problem with what a server sent once (the kinds are a fixed,
    small set), so a server repeating it cannot flood stderr."""

    def __init__(self) -> None:
        self._reported: set[str] = set()

    def __call__(self, problem: str) -> None:
        if problem not in self._reported:
            self._reported.add(problem)
            log.warning("ignoring %s from the server", problem)


class Incoming:
    """Checks server messages for one session, reporting each kind of problem once."""

    def __init__(self) -> None:
        self._report = Reporter()

    def report(self, problem: str) -> None:
        """Log a problem found above this module (once per kind)."""
        self._report(problem)

    def check(self, obj: object) -> Message | None:
        """The message ``obj`` as the client may use it, or None to ignore it."""
        if not isinstance(obj, dict):
            self._report("a message that is not a JSON object")
            return None
        kind = obj.get("type")
        check = _CHECKS.get(kind) if isinstance(kind, str) else None
        if check is None:
            return obj  # unknown (or no) type: front ends ignore it; --json prints it
        message = dict(obj)
        if "room" in message and not is_room(message["room"]):
            self._report(f"'{kind}' for a room that is not a room name")
            return None
        if not check(self, message):
            return None
        return message

    # ------------------------------------------------------------ fields

    def _drop(self, message: Message, field: str, ok: bool) -> bool:
        """Remove ``field`` when present and not ``ok``; True if it is (now) fine."""
        if field in message and not ok:
            del message[field]
            self._report(f"a bad '{field}' in '{message['type']}'")
        return True

    def _text(self, message: Message, field: str, *, required: bool) -> bool:
        """A string field, cut to MAX_SHOWN; False when required and missing or bad."""
        value = message.get(field)
        if isinstance(value, str):
            if len(value) > MAX_SHOWN:
                message[field] = value[:MAX_SHOWN] + CUT
            return True
        if field in message or required:
            message.pop(field, None)
            self._report(f"'{message['type']}' without a string '{field}'")
            return not required
        return True

    def _name(
        self, message: Message, field: str, *, required: bool = False, own: bool = False
    ) -> bool:
        value = message.get(field)
        if _is_own_name(value) if own else _is_name(value):
            return True
        if field in message or required:
            message.pop(field, None)
            self._report(f"'{message['type']}' without a valid '{field}'")
            return not required
        return True

    def _common(self, message: Message) -> None:
        ts = message.get("timestamp")
        self._drop(message, "timestamp", isinstance(ts, str) and len(ts) <= MAX_TIMESTAMP)
        self._drop(message, "clients_count", _is_int(message.get("clients_count"), 0))
        self._drop(message, "history", isinstance(message.get("history"), bool))

    def _users(self, message: Message) -> None:
        if "users" not in message:
            return
        users = message["users"]
        if not isinstance(users, list):
            self._drop(message, "users", False)
            return
        if len(users) > MAX_LIST:
            self._report(f"more than {MAX_LIST:,} names in '{message['type']}'")
            users = message["users"] = users[:MAX_LIST]
        names = [name for name in users if _is_name(name)]
        if len(names) != len(users):
            self._report(f"names that are not names in '{message['type']}'")
            message["users"] = names

    def _topic(self, message: Message) -> None:
        topic = message.get("topic")
        if "topic" in message and not isinstance(topic, str):
            self._drop(message, "topic", False)
        elif isinstance(topic, str) and len(topic) > MAX_TOPIC_SHOWN:
            message["topic"] = topic[:MAX_TOPIC_SHOWN] + CUT

    # ------------------------------------------------------------ types

    def _chat(self, message: Message) -> bool:
        self._common(message)
        self._drop(message, "id", _is_int(message.get("id"), 1))
        return self._name(message, "user", required=True) and self._text(
            message, "text", required=True
        )

    def _system(self, message: Message) -> bool:
        self._common(message)
        self._topic(message)
        for field in ("event", "name", "old"):
            self._text(message, field, required=False)
        for field in ("joined", "left"):
            self._drop(message, field, _is_int(message.get(field), 0))
        return self._text(message, "text", required=True)

    def _welcome(self, message: Message) -> bool:
        self._common(message)
        self._users(message)
        self._topic(message)
        self._drop(message, "max_text", _is_int(message.get("max_text"), 1))
        token = message.get("resume")
        self._drop(message, "resume", isinstance(token, str) and 0 < len(token) <= MAX_RESUME
                   and token.isascii() and token.isprintable())
        return self._name(message, "user", own=True)  # else the session keeps its own

    def _user_list(self, message: Message) -> bool:
        self._common(message)
        self._users(message)
        return True

    def _direct(self, message: Message) -> bool:
        """A direct message: ``from`` and ``to`` names and a ``text`` it cannot do
        without."""
        self._common(message)
        self._drop(message, "id", _is_int(message.get("id"), 1))
        return (
            self._name(message, "from", required=True)
            and self._name(message, "to", required=True)
            and self._text(message, "text", required=True)
        )

    def _rooms(self, message: Message) -> bool:
        """The room list: entries that are not ``{room, users, topic}`` are dropped."""
        rooms = message.get("rooms")
        if not isinstance(rooms, list):
            self._report("'rooms' without a list of rooms")
            return False
        if len(rooms) > MAX_LIST:
            self._report(f"more than {MAX_LIST:,} rooms in 'rooms'")
            rooms = rooms[:MAX_LIST]
        kept = []
        for entry in rooms:
            if not isinstance(entry, dict) or not is_room(entry.get("room")):
                self._report("a room list entry that is not a room")
                continue
            entry = dict(entry)
            entry["type"] = "rooms"
            self._drop(entry, "users", _is_int(entry.get("users"), 0))
            self._topic(entry)
            del entry["type"]
            kept.append(entry)
        message["rooms"] = kept
        self._drop(message, "total", _is_int(message.get("total"), 0))
        return True

    def _history_end(self, message: Message) -> bool:
        self._drop(message, "last_id", _is_int(message.get("last_id"), 0))
        self._drop(message, "complete", isinstance(message.get("complete"), bool))
        return True

    def _token(self, message: Message) -> bool:
        """A login token: printable ASCII of a sane length, or the message is dropped
        (it is written to ``--token-file`` and sent back to the server)."""
        token = message.get("token")
        ok = isinstance(token, str) and 0 < len(token) <= MAX_TOKEN and token.isascii() \
            and token.isprintable() and not any(ch.isspace() for ch in token)
        if not ok:
            self._report("a 'token' without a valid token")
        return ok

    def _error(self, message: Message) -> bool:
        code = message.get("code")
        self._drop(message, "code", isinstance(code, str) and len(code) <= MAX_CODE)
        return self._text(message, "text", required=False)


_CHECKS = {
    "chat": Incoming._chat,
    "system": Incoming._system,
    "welcome": Incoming._welcome,
    "users": Incoming._user_list,
    "msg": Incoming._direct,
    "rooms": Incoming._rooms,
    "history_end": Incoming._history_end,
    "error": Incoming._error,
    "token": Incoming._token,
}
