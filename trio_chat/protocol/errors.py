"""Error codes and :class:`ProtocolError`: a peer's mistake, with the code it is answered with.

Every code is documented in ``docs/protocol.md``; :data:`ERROR_CODES` is the set a test
checks that document against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .messages import encode

# Error codes, each documented in docs/protocol.md.
BAD_JSON: Final = "bad_json"
NOT_OBJECT: Final = "not_object"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_FIELD: Final = "missing_field"
NAME_INVALID: Final = "name_invalid"
NAME_TAKEN: Final = "name_taken"
NOT_JOINED: Final = "not_joined"
TOO_LONG: Final = "too_long"
SLOW_CONSUMER: Final = "slow_consumer"
RATE_LIMITED: Final = "rate_limited"
SERVER_FULL: Final = "server_full"
IDLE_TIMEOUT: Final = "idle_timeout"
ROOM_INVALID: Final = "room_invalid"
NOT_IN_ROOM: Final = "not_in_room"
TOO_MANY_ROOMS: Final = "too_many_rooms"
NO_SUCH_USER: Final = "no_such_user"
WRONG_PORT: Final = "wrong_port"
# Moderation (see "Moderation" in docs/protocol.md).
NOT_PERMITTED: Final = "not_permitted"
BANNED: Final = "banned"
MUTED: Final = "muted"
# Accounts (docs/protocol.md, *Accounts*).
NAME_REGISTERED: Final = "name_registered"
LOGIN_FAILED: Final = "login_failed"
PASSWORD_INVALID: Final = "password_invalid"
REGISTRATION_CLOSED: Final = "registration_closed"
INVITE_INVALID: Final = "invite_invalid"
NOT_LOGGED_IN: Final = "not_logged_in"
TLS_REQUIRED: Final = "tls_required"
ERROR_CODES: Final = frozenset(
    {
        BAD_JSON,
        NOT_OBJECT,
        UNKNOWN_TYPE,
        MISSING_FIELD,
        NAME_INVALID,
        NAME_TAKEN,
        NOT_JOINED,
        TOO_LONG,
        SLOW_CONSUMER,
        RATE_LIMITED,
        SERVER_FULL,
        IDLE_TIMEOUT,
        ROOM_INVALID,
        NOT_IN_ROOM,
        TOO_MANY_ROOMS,
        NO_SUCH_USER,
        WRONG_PORT,
        NOT_PERMITTED,
        BANNED,
        MUTED,
        NAME_REGISTERED,
        LOGIN_FAILED,
        PASSWORD_INVALID,
        REGISTRATION_CLOSED,
        INVITE_INVALID,
        NOT_LOGGED_IN,
        TLS_REQUIRED,
    }
)


class ProtocolError(Exception):
    """A peer's mistake, answered with an ``error`` message carrying ``code``.

    ``fatal`` errors close the connection after the answer; the others do not.
    ``fields`` are added to the message after ``code`` and ``text`` (``banned``
    carries ``until`` and ``reason``).
    """

    def __init__(
        self, code: str, text: str, *, fatal: bool = False,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        assert code in ERROR_CODES, code
        super().__init__(text)
        self.code = code
        self.text = text
        self.fatal = fatal
        self.fields = dict(fields) if fields else {}

    def to_message(self) -> str:
        return encode({"type": "error", "code": self.code, "text": self.text, **self.fields})
