"""Client events: what a peer's bytes mean, sans I/O.

Like h11 and wsproto, the protocol package does no networking and imports no trio:
this module turns text from a peer (a WebSocket text frame, or one TCP line) into a
typed event, or raises :class:`~.errors.ProtocolError`. Both transports call it, so
they speak one protocol. See ``docs/protocol.md`` for the contract.
"""

from __future__ import annotations

import enum
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
from .moderation import ModerationEvent, moderation_from_command, moderation_from_object
from .names import validate_name
from .rooms import LOBBY, validate_room, validate_topic

MAX_TEXT: Final = 4096


# ---------------------------------------------------------------- client events


class Here(enum.Enum):
    """Where a plain-text (nc) line without a room goes: the connection's *current*
    room, the one it last joined or switched to with ``/join``. (A JSON message
    without ``room`` means :data:`~.rooms.LOBBY`, as in v1.)"""

    CURRENT = "current"


#: The connection's current room (see :class:`Here`).
HERE: Final = Here.CURRENT
#: A room as an event names it: a valid room name, or the current one.
RoomRef = str | Here


@dataclass(frozen=True, slots=True)
class Join:
    """Claim (or change) a name, enter a room, or both.

    ``user`` alone: the first join of a connection enters :data:`~.rooms.LOBBY`; a
    later one renames it. ``room`` enters that room (creating it if new), after taking
    ``user`` if given; ``since`` is per room. ``batch`` is read on a first join.
    ``resume``: the token of a seat to take back (a reconnection within the server's
    grace); ``plain``: typed as ``/nick`` by a person (errors then say what to type).
    """

    user: str | None = None
    since: int | None = None
    batch: bool = False
    room: str | None = None
    resume: str | None = None
    plain: bool = False


@dataclass(frozen=True, slots=True)
class Chat:
    """A message to a room. ``user`` is only used to auto-join seed-style clients;
    ``plain``: a line of plain text from ``nc`` (errors then say what to type)."""

    text: str
    user: str | None = None
    room: RoomRef = LOBBY
    plain: bool = False


@dataclass(frozen=True, slots=True)
class Part:
    """Leave one room; the connection stays."""

    room: RoomRef


@dataclass(frozen=True, slots=True)
class Msg:
    """A direct message to the user named ``to``."""

    to: str
    text: str


@dataclass(frozen=True, slots=True)
class ListRooms:
    """Ask for the list of rooms."""


@dataclass(frozen=True, slots=True)
class Topic:
    """Set a room's topic (empty clears it)."""

    room: RoomRef
    topic: str


@dataclass(frozen=True, slots=True)
class Listen:
    """Receive ``#lobby``'s traffic without joining (``/listen``): a listener."""


@dataclass(frozen=True, slots=True)
class Help:
    """``/help``: the plain-text commands, for a person at ``nc``."""


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    room: RoomRef = LOBBY


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Blank:
    """An empty or whitespace-only line or frame. It means nothing, but it is input:
    flood control counts it like any other message, or a flood of newlines would cost
    the server a core while never being told ``rate_limited``."""


Event = (
    Join | Chat | Part | Msg | ListRooms | Topic | Leave | Who | Ping | Blank | Listen
    | Help | AccountEvent | ModerationEvent
)

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


def _required(obj: Mapping[str, Any], field: str) -> object:
    value = obj.get(field)
    if value is None:
        raise ProtocolError(MISSING_FIELD, f"field '{field}' is required")
    return value


def _room(obj: Mapping[str, Any]) -> str:
    """The message's ``room``: :data:`~.rooms.LOBBY` when it has none (v1)."""
    room = obj.get("room")
    return LOBBY if room is None else validate_room(room)


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
            room=_room(obj),
        )
    if kind == "join":
        room = obj.get("room")
        user = obj.get("user")
        return Join(
            # Without a room, a join is a name (v1): ``user`` is required.
            user=validate_name(_checked_str(obj, "user"))
            if user is not None or room is None else None,
            since=_optional_int(obj, "since"),
            batch=obj.get("batch") is True,
            room=validate_room(room) if room is not None else None,
            resume=_resume_token(obj),
        )
    if kind == "leave":
        return Leave()
    if kind == "who":
        return Who(room=_room(obj))
    if kind == "part":
        return Part(room=validate_room(_required(obj, "room")))
    if kind == "msg":
        return Msg(
            to=validate_name(_checked_str(obj, "to")),
            text=validate_text(_checked_str(obj, "text"), max_text),
        )
    if kind == "rooms":
        return ListRooms()
    if kind == "topic":
        return Topic(
            room=validate_room(_required(obj, "room")),
            topic=validate_topic(_checked_str(obj, "topic")),
        )
    if kind == "ping":
        return Ping()
    if kind == "listen":
        return Listen()
    if isinstance(kind, str) and (moderation := moderation_from_object(kind, obj)) is not None:
        return moderation
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


def _room_arg(arg: str) -> str:
    """A room typed at nc: ``#dev``, or ``dev`` for short."""
    arg = arg.strip()
    return validate_room(arg if arg.startswith("#") else "#" + arg)


def _split_msg(arg: str) -> tuple[str, str]:
    """``NAME text`` or ``"Ann Lee" text``: the name and the text."""
    arg = arg.strip()
    if arg.startswith('"'):
        end = arg.find('"', 1)
        if end < 0:
            raise ProtocolError(MISSING_FIELD, 'usage: /msg "NAME WITH SPACES" TEXT')
        return arg[1:end], arg[end + 1 :]
    name, _, text = arg.partition(" ")
    return name, text


#: The plain-text commands, as ``/help`` lists them (docs/protocol.md, *Plain text on TCP*).
HELP_TEXT: Final = (
    "/nick NAME: join the chat (or change your name); /join #ROOM: enter a room (or "
    "switch to it); /part [#ROOM]: leave one; /rooms: list rooms; /who [#ROOM]: who is "
    "there; /msg NAME TEXT: a direct message; /topic TEXT: set this room's topic; "
    "/listen: watch #lobby without joining; /ping: check the connection; /quit: leave; "
    "/help: this; " + ACCOUNT_HELP + ". Ops and admins: /kick NAME [REASON]; /ban "
    "[#ROOM|*] NAME|ADDRESS [DURATION] [REASON]; /unban [#ROOM|*] NAME|ADDRESS; /bans "
    "[#ROOM|*]; /mute [#ROOM|*] NAME [DURATION] [REASON]; /unmute NAME; /op NAME; /deop "
    "NAME; /voice NAME; /devoice NAME; /mode [+r|-r] [+m|-m] (registered only, "
    "moderated). Any other line is a message to the current room (//text sends /text)."
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
        if command == "/join":
            if not arg.strip():
                raise ProtocolError(MISSING_FIELD, "usage: /join #ROOM")
            return Join(room=_room_arg(arg), plain=True)
        if command == "/part":
            return Part(room=_room_arg(arg) if arg.strip() else HERE)
        if command == "/msg":
            name, message = _split_msg(arg)
            if not name.strip() or not message.strip():
                raise ProtocolError(MISSING_FIELD, "usage: /msg NAME TEXT")
            return Msg(to=validate_name(name), text=validate_text(message.strip(), max_text))
        if command == "/rooms":
            return ListRooms()
        if command == "/topic":
            return Topic(room=HERE, topic=validate_topic(arg))
        if command == "/who":
            return Who(room=_room_arg(arg) if arg.strip() else HERE)
        if command in ("/quit", "/exit"):
            return Leave()
        if command == "/ping":
            return Ping()
        if command == "/listen":
            return Listen()
        if command == "/help":
            return Help()
        if (moderation := moderation_from_command(command, arg)) is not None:
            return moderation
        if command in PLAIN_COMMANDS:
            return plain_account_event(command, arg)
        if not text.startswith("//"):
            raise ProtocolError(
                UNKNOWN_TYPE,
                f"unknown command '{command[:32]}'; try /nick NAME, /join #ROOM, /msg, "
                "/who, /listen, /quit, or /help",
            )
        text = text[1:]  # "//x" sends the literal text "/x"
    return Chat(text=validate_text(text, max_text), room=HERE, plain=True)
