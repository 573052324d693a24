"""Client events: what a peer's bytes mean, sans I/O.

Like h11 and wsproto, the protocol package does no networking and imports no trio:
this module turns text from a peer (a WebSocket text frame, or one TCP line) into a
typed event, or raises :class:`~.errors.ProtocolError`. Both transports call it, so
they speak one protocol. See ``docs/protocol.md`` for the contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .accounts import (
    ACCOUNT_TYPES,
    PLAIN_COMMANDS,
    AccountEvent,
    account_event,
    plain_account_event,
)
from .accounts import HELP_TEXT as ACCOUNT_HELP
from .errors import (
    BAD_JSON,
    MISSING_FIELD,
    NOT_OBJECT,
    TOO_LONG,
    UNKNOWN_TYPE,
    ProtocolError,
)
from .names import validate_name

MAX_TEXT: Final = 4096


# ---------------------------------------------------------------- client events


@dataclass(frozen=True, slots=True)
class Join:
    """Claim (or change) a name. ``since``: replay after that id; ``batch``: several
    messages per WebSocket frame; ``resume``: the token of a seat to take back (a
    reconnection within the server's grace); ``plain``: typed as ``/nick`` by a person
    (errors then say what to type)."""

    user: str
    since: int | None = None
    batch: bool = False
    resume: str | None = None
    plain: bool = False


@dataclass(frozen=True, slots=True)
class Chat:
    """A message to the room. ``user`` is only used to auto-join seed-style clients;
    ``plain``: a line of plain text from ``nc`` (errors then say what to type)."""

    text: str
    user: str | None = None
    plain: bool = False


@dataclass(frozen=True, slots=True)
class Listen:
    """Receive the room's traffic without joining (``/listen``): a listener."""


@dataclass(frozen=True, slots=True)
class Help:
    """``/help``: the plain-text commands, for a person at ``nc``."""


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Blank:
    """An empty or whitespace-only line or frame. It means nothing, but it is input:
    flood control counts it like any other message, or a flood of newlines would cost
    the server a core while never being told ``rate_limited``."""


Event = Join | Chat | Leave | Who | Ping | Blank | Listen | Help | AccountEvent

#: Longest ``resume`` token taken from a client; a longer one is no token of ours
#: (ignored, as an unknown one is).
MAX_RESUME: Final = 128


# ---------------------------------------------------------------- validation


def _encodable(value: str) -> bool:
    """False for strings with lone surrogates: ``json.loads`` accepts them in ``\\u``
    escapes, but they cannot be encoded as UTF-8 to go back out."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _checked_str(obj: Mapping[str, Any], field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise ProtocolError(MISSING_FIELD, f"field '{field}' is required")
    if not isinstance(value, str):
        raise ProtocolError(MISSING_FIELD, f"field '{field}' must be a string")
    if not _encodable(value):
        raise ProtocolError(BAD_JSON, f"field '{field}' is not valid Unicode")
    return value


def validate_text(text: str, max_text: int) -> str:
    if not text.strip():
        raise ProtocolError(MISSING_FIELD, "field 'text' must not be empty")
    if len(text) > max_text:
        raise ProtocolError(TOO_LONG, f"message is longer than {max_text} characters")
    return text


def _resume_token(obj: Mapping[str, Any]) -> str | None:
    """The ``resume`` field of a join: a string (an unknown, expired or over-long one
    is ignored later: an ordinary join), or absent."""
    value = obj.get("resume")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(MISSING_FIELD, "field 'resume' must be a string")
    return value if 0 < len(value) <= MAX_RESUME and value.isascii() else None


def _optional_int(obj: Mapping[str, Any], field: str) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(MISSING_FIELD, f"field '{field}' must be a non-negative integer")
    return value


def event_from_object(obj: object, max_text: int = MAX_TEXT) -> Event:
    """Turn one decoded JSON value into an event."""
    if not isinstance(obj, dict):
        raise ProtocolError(NOT_OBJECT, "each message must be a JSON object")
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError(MISSING_FIELD, "field 'type' is required")
    if kind == "chat":
        user = obj.get("user")
        return Chat(
            text=validate_text(_checked_str(obj, "text"), max_text),
            user=_checked_str(obj, "user") if user is not None else None,
        )
    if kind == "join":
        return Join(
            user=validate_name(_checked_str(obj, "user")),
            since=_optional_int(obj, "since"),
            batch=obj.get("batch") is True,
            resume=_resume_token(obj),
        )
    if kind == "leave":
        return Leave()
    if kind == "who":
        return Who()
    if kind == "ping":
        return Ping()
    if kind == "listen":
        return Listen()
    if isinstance(kind, str) and kind in ACCOUNT_TYPES:
        return account_event(kind, obj)
    # Echo the type back only if it is short and can be encoded (a lone surrogate from
    # a \u escape would break the UTF-8 encoding of the error itself).
    shown = kind if isinstance(kind, str) and len(kind) <= 32 and _encodable(kind) else "?"
    raise ProtocolError(UNKNOWN_TYPE, f"unknown message type '{shown}'")


def decode_json(text: str, max_text: int = MAX_TEXT) -> Event:
    """Decode one JSON message (a WebSocket text frame, or a TCP line starting with ``{``)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and ints past sys.get_int_max_str_digits();
        # RecursionError is deeply nested arrays/objects.
        raise ProtocolError(BAD_JSON, "message is not valid JSON") from None
    return event_from_object(obj, max_text)


def decode_frame(data: str | bytes, max_text: int = MAX_TEXT) -> Event:
    """Decode a WebSocket message; binary frames are refused, blank ones are
    :class:`Blank`."""
    if isinstance(data, bytes):
        raise ProtocolError(BAD_JSON, "binary frames are not supported; send JSON text")
    if not data.strip():
        return Blank()
    return decode_json(data, max_text)


def decode_line(line: bytes, max_text: int = MAX_TEXT) -> Event:
    """Decode one TCP line (without its newline); :class:`Blank` for a blank line.

    A line whose first non-blank character is ``{`` is JSON; anything else is the
    plain-text dialect for people at ``nc``: ``/nick NAME``, ``/who``, ``/quit``, or a
    chat message.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(BAD_JSON, "line is not valid UTF-8") from None
    stripped = text.strip()
    if not stripped:
        return Blank()
    if stripped.startswith("{"):
        return decode_json(stripped, max_text)
    return _decode_plain(stripped, max_text)


#: The plain-text commands, as ``/help`` lists them (docs/protocol.md, *Plain text on TCP*).
HELP_TEXT: Final = (
    "/nick NAME: join the chat (or change your name); /who: who is online; "
    "/listen: watch without joining; /ping: check the connection; /quit: leave; "
    "/help: this; " + ACCOUNT_HELP + ". Any other line is a message (//text sends /text)."
)


def _decode_plain(text: str, max_text: int) -> Event:
    if text.startswith("/"):
        command, _, arg = text.partition(" ")
        command = command.lower()
        if command in ("/nick", "/name"):
            if not arg.strip():
                raise ProtocolError(MISSING_FIELD, f"usage: {command} NAME")
            try:
                return Join(user=validate_name(arg), plain=True)
            except ProtocolError as error:
                raise ProtocolError(
                    error.code, f"{error.text}; type {command} with another name"
                ) from None
        if command == "/who":
            return Who()
        if command in ("/quit", "/exit"):
            return Leave()
        if command == "/ping":
            return Ping()
        if command == "/listen":
            return Listen()
        if command == "/help":
            return Help()
        if command in PLAIN_COMMANDS:
            return plain_account_event(command, arg)
        if not text.startswith("//"):
            raise ProtocolError(
                UNKNOWN_TYPE,
                f"unknown command '{command[:32]}'; try /nick NAME, /who, /listen, "
                "/login, /quit, or /help",
            )
        text = text[1:]  # "//x" sends the literal text "/x"
    return Chat(text=validate_text(text, max_text), plain=True)
