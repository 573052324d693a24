"""The trio-chat wire protocol, sans I/O.

Like h11 and wsproto, this module does no networking and imports no trio: it turns
bytes and text from a peer into typed events (or :class:`ProtocolError`), and server
messages into text. Both transports (raw TCP and WebSocket) go through it, so they
speak one protocol. See ``docs/protocol.md`` for the contract.
"""

from __future__ import annotations

import json
import struct
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Final

MAX_NAME: Final = 32
MAX_TEXT: Final = 4096
MAX_LINE: Final = 64 * 1024
SYSTEM_USER: Final = "System"

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
    }
)


class ProtocolError(Exception):
    """A peer's mistake, answered with an ``error`` message carrying ``code``.

    ``fatal`` errors close the connection after the answer; the others do not.
    """

    def __init__(self, code: str, text: str, *, fatal: bool = False) -> None:
        assert code in ERROR_CODES, code
        super().__init__(text)
        self.code = code
        self.text = text
        self.fatal = fatal

    def to_message(self) -> str:
        return encode({"type": "error", "code": self.code, "text": self.text})


# ---------------------------------------------------------------- client events


@dataclass(frozen=True, slots=True)
class Join:
    """Claim (or change) a name. ``since``/``batch`` are options of later protocol parts."""

    user: str
    since: int | None = None
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Chat:
    """A message to the room. ``user`` is only used to auto-join seed-style clients."""

    text: str
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Event = Join | Chat | Leave | Who | Ping


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


_FORBIDDEN_IN_NAMES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def validate_name(raw: str) -> str:
    """Trim and check a user name; raise ``name_invalid`` with the reason."""
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise ProtocolError(NAME_INVALID, f"name must be 1-{MAX_NAME} characters")
    if any(unicodedata.category(ch) in _FORBIDDEN_IN_NAMES for ch in name):
        raise ProtocolError(NAME_INVALID, "name must not contain control characters")
    if name.casefold() == SYSTEM_USER.casefold():
        raise ProtocolError(NAME_INVALID, f"name '{SYSTEM_USER}' is reserved")
    return name


def validate_text(text: str, max_text: int) -> str:
    if not text.strip():
        raise ProtocolError(MISSING_FIELD, "field 'text' must not be empty")
    if len(text) > max_text:
        raise ProtocolError(TOO_LONG, f"message is longer than {max_text} characters")
    return text


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
        )
    if kind == "leave":
        return Leave()
    if kind == "who":
        return Who()
    if kind == "ping":
        return Ping()
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


def decode_frame(data: str | bytes, max_text: int = MAX_TEXT) -> Event | None:
    """Decode a WebSocket message; binary frames are refused, blank ones ignored."""
    if isinstance(data, bytes):
        raise ProtocolError(BAD_JSON, "binary frames are not supported; send JSON text")
    if not data.strip():
        return None
    return decode_json(data, max_text)


def decode_line(line: bytes, max_text: int = MAX_TEXT) -> Event | None:
    """Decode one TCP line (without its newline); ``None`` for a blank line.

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
        return None
    if stripped.startswith("{"):
        return decode_json(stripped, max_text)
    return _decode_plain(stripped, max_text)


def _decode_plain(text: str, max_text: int) -> Event:
    if text.startswith("/"):
        command, _, arg = text.partition(" ")
        command = command.lower()
        if command in ("/nick", "/name"):
            if not arg.strip():
                raise ProtocolError(MISSING_FIELD, f"usage: {command} NAME")
            return Join(user=validate_name(arg))
        if command == "/who":
            return Who()
        if command in ("/quit", "/exit"):
            return Leave()
        if command == "/ping":
            return Ping()
        if not text.startswith("//"):
            raise ProtocolError(
                UNKNOWN_TYPE, f"unknown command '{command[:32]}'; try /nick, /who, /quit"
            )
        text = text[1:]  # "//x" sends the literal text "/x"
    return Chat(text=validate_text(text, max_text))


# ---------------------------------------------------------------- framing


class LineBuffer:
    """Splits a byte stream into lines, never holding more than ``max_line`` bytes
    of an unfinished line (h11's ``max_incomplete_event_size``, for NDJSON)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        #: The lines :meth:`feed` completed before it raised ``too_long``: they came
        #: first, and how the stream was split into reads must not drop them.
        self.before_error: list[bytes] = []

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add bytes; return the complete lines they finish (``\\n`` and ``\\r\\n``).

        Raises ``too_long`` (fatal) once a line passes the limit (see
        :attr:`before_error`).
        """
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", max(start, self._scanned))
            if end < 0:
                break
            line = bytes(self._buf[start:end])
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                raise self._too_long(lines)
            lines.append(line)
            start = end + 1
        del self._buf[:start]
        self._scanned = len(self._buf)
        # The limit is on the line itself: a trailing "\r" may be half of its "\r\n".
        if len(self._buf) - self._buf.endswith(b"\r") > self.max_line:
            raise self._too_long(lines)
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line (a peer that disconnects mid-line leaves these)."""
        return len(self._buf)

    def _too_long(self, completed: list[bytes]) -> ProtocolError:
        self.before_error = completed
        self._buf.clear()
        self._scanned = 0
        return ProtocolError(
            TOO_LONG, f"line is longer than {self.max_line} bytes", fatal=True
        )


# ---------------------------------------------------------------- server messages


def timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-26T18:00:00.123Z``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Encoded(str):
    """A server message serialized once, carrying its wire bytes for every recipient.

    It is the message's JSON text (a ``str``, so anything that handles text handles
    it), plus ``data`` (UTF-8 with the NDJSON newline, for TCP) and ``frame`` (one
    unmasked WebSocket text frame), each built once however many clients get it.
    """

    @cached_property
    def data(self) -> bytes:
        return self.encode("utf-8") + b"\n"

    @cached_property
    def frame(self) -> bytes:
        return ws_frame_header(len(self.data) - 1) + self.data[:-1]


def wire_line(line: str) -> bytes:
    """One message as an NDJSON line: cached when it is :class:`Encoded`."""
    return line.data if isinstance(line, Encoded) else (line + "\n").encode("utf-8")


def wire_frame(line: str) -> bytes:
    """One message as a WebSocket text frame: cached when it is :class:`Encoded`."""
    if isinstance(line, Encoded):
        return line.frame
    payload = line.encode("utf-8")
    return ws_frame_header(len(payload)) + payload


#: Most bytes in one batched WebSocket frame (the documented message limit): a backlog
#: of long messages in one frame would exceed what clients accept (trio-websocket's
#: default is 1 MiB) and be refused with 1009, again on every reconnect.
MAX_BATCH_FRAME: Final = 64 * 1024


def wire_batch_frame(lines: list[str]) -> bytes:
    """Several messages in WebSocket text frames, newline-separated (``batch``): as few
    frames as :data:`MAX_BATCH_FRAME` allows (a longer message is a frame of its own)."""
    frames: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for data in map(wire_line, lines):
        if group and size + len(data) - 1 > MAX_BATCH_FRAME:
            frames.append(_text_frame(b"".join(group)[:-1]))
            group, size = [], 0
        group.append(data)
        size += len(data)
    frames.append(_text_frame(b"".join(group)[:-1]))
    return b"".join(frames)


def _text_frame(payload: bytes) -> bytes:
    return ws_frame_header(len(payload)) + payload


def ws_frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame (RFC 6455 5.2), as servers send."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def encode(message: Mapping[str, Any]) -> Encoded:
    """Serialize a server message: compact JSON on one line (newlines are escaped)."""
    return Encoded(json.dumps(message, ensure_ascii=False, separators=(",", ":")))


def welcome(user: str, users: list[str]) -> str:
    return encode({"type": "welcome", "user": user, "users": users, "clients_count": len(users)})


def json_array(items: list[str]) -> str:
    """A list of strings as compact JSON, as :func:`encode` writes it inside messages."""
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


def json_array_append(array: str, item: str) -> str:
    """``array`` (compact JSON) with ``item`` appended: a copy, not a re-encode."""
    item_json = json.dumps(item, ensure_ascii=False)
    return f"{array[:-1]},{item_json}]" if array != "[]" else f"[{item_json}]"


def welcome_encoded(user: str, users_json: str, clients_count: int) -> str:
    """:func:`welcome` with the user list already encoded (the room keeps it, so a
    join in a big room does not re-encode every name). Same bytes as ``welcome``."""
    user_json = json.dumps(user, ensure_ascii=False)
    return Encoded(
        f'{{"type":"welcome","user":{user_json},"users":{users_json},'
        f'"clients_count":{clients_count}}}'
    )


def chat(
    user: str, text: str, ts: str, message_id: int | None = None, *, history: bool = False
) -> str:
    """A chat message; ``history`` marks one replayed from the store (sent earlier)."""
    message: dict[str, Any] = {"type": "chat"}
    if message_id is not None:
        message["id"] = message_id
    message.update(user=user, text=text, timestamp=ts)
    if history:
        message["history"] = True
    return encode(message)


def history_end(last_id: int, *, complete: bool = True) -> str:
    """Ends a replay; ``last_id`` is the newest id at join time (resume from it)."""
    message: dict[str, Any] = {"type": "history_end", "last_id": last_id}
    if not complete:
        message["complete"] = False
    return encode(message)


def system(event: str, name: str, text: str, clients_count: int, ts: str, **extra: Any) -> str:
    return encode(
        {
            "type": "system",
            "event": event,
            "user": SYSTEM_USER,
            "name": name,
            "text": text,
            "clients_count": clients_count,
            "timestamp": ts,
            **extra,
        }
    )


def summary(joined: int, left: int, clients_count: int, ts: str) -> str:
    """Join and leave notices coalesced under load (docs/protocol.md, "Busy rooms")."""
    parts = [f"{n} {what}" for n, what in ((joined, "joined"), (left, "left")) if n]
    return encode(
        {
            "type": "system",
            "event": "summary",
            "user": SYSTEM_USER,
            "joined": joined,
            "left": left,
            "text": ", ".join(parts) or "no change",
            "clients_count": clients_count,
            "timestamp": ts,
        }
    )


def users(names: list[str]) -> str:
    return encode({"type": "users", "users": names, "clients_count": len(names)})


def users_encoded(users_json: str, clients_count: int) -> str:
    """:func:`users` with the list already encoded (the room keeps it). Same bytes."""
    return Encoded(f'{{"type":"users","users":{users_json},"clients_count":{clients_count}}}')


def pong() -> str:
    return encode({"type": "pong"})


SHUTDOWN_TEXT: Final = "server shutting down"


def shutdown() -> str:
    """The last message every client gets when the server stops."""
    return encode({"type": "system", "event": "shutdown", "text": SHUTDOWN_TEXT})
