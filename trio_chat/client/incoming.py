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
- unknown types and unknown fields pass through untouched (a newer server's).

Each kind of problem is logged once per session (a warning: stderr in line mode).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from ..protocol import MAX_ID, MAX_NAME, MAX_RESUME, ProtocolError, validate_name

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
        names = [name for name in users if _is_name(name)]
        if len(names) != len(users):
            self._report(f"names that are not names in '{message['type']}'")
            message["users"] = names

    # ------------------------------------------------------------ types

    def _chat(self, message: Message) -> bool:
        self._common(message)
        self._drop(message, "id", _is_int(message.get("id"), 1))
        return self._name(message, "user", required=True) and self._text(
            message, "text", required=True
        )

    def _system(self, message: Message) -> bool:
        self._common(message)
        for field in ("event", "name", "old"):
            self._text(message, field, required=False)
        for field in ("joined", "left"):
            self._drop(message, field, _is_int(message.get(field), 0))
        return self._text(message, "text", required=True)

    def _welcome(self, message: Message) -> bool:
        self._common(message)
        self._users(message)
        self._drop(message, "max_text", _is_int(message.get("max_text"), 1))
        token = message.get("resume")
        self._drop(message, "resume", isinstance(token, str) and 0 < len(token) <= MAX_RESUME
                   and token.isascii() and token.isprintable())
        return self._name(message, "user", own=True)  # else the session keeps its own

    def _user_list(self, message: Message) -> bool:
        self._common(message)
        self._users(message)
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
    "history_end": Incoming._history_end,
    "error": Incoming._error,
    "token": Incoming._token,
}
