"""Server messages: each encoded once, as compact JSON, for every recipient.

:class:`Encoded` carries a message's wire forms (the NDJSON line, the WebSocket
frame), built on first use and shared by every connection that gets the message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Final, TypeVar

from .safetext import escape_unsafe
from .wsframes import batch_frames, text_frame

SYSTEM_USER: Final = "System"
_Form = TypeVar("_Form")

#: The largest message id (JavaScript's ``Number.MAX_SAFE_INTEGER``): every id is an
#: exact number in any JSON parser, and far inside SQLite's 64-bit INTEGER.
MAX_ID: Final = 2**53 - 1


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
        return text_frame(self.data[:-1])

    def form(self, name: str, build: Callable[[str], _Form]) -> _Form:
        """Another wire form of this message, a transport's own (gRPC's Protobuf bytes),
        built by ``build`` on first use and kept like ``data`` and ``frame``: once for
        every recipient, and no longer than the message."""
        forms = self.__dict__
        try:
            value: _Form = forms[name]
        except KeyError:
            value = forms[name] = build(self)
        return value


def wire_line(line: str) -> bytes:
    """One message as an NDJSON line: cached when it is :class:`Encoded`."""
    return line.data if isinstance(line, Encoded) else (line + "\n").encode("utf-8")


def wire_frame(line: str) -> bytes:
    """One message as a WebSocket text frame: cached when it is :class:`Encoded`."""
    return line.frame if isinstance(line, Encoded) else text_frame(line.encode("utf-8"))


class _LastBatch:
    """The last batch built, for the next member: a flush writes the same lines to
    every member of a busy room (everything queued since the last flush), so their
    frame is built once, not once per member. One entry: it holds a copy of the
    lines and their bytes (at most one write's worth) until the next batch."""

    __slots__ = ("data", "lines")

    def __init__(self) -> None:
        self.lines: list[str] | None = None
        self.data = b""


_last_batch: Final = _LastBatch()


def wire_batch_frame(lines: list[str]) -> bytes:
    """Several messages in as few WebSocket text frames as the size bound allows (the
    same lines as the last call: the same bytes, not built again)."""
    last = _last_batch
    if lines == last.lines:  # mostly the same objects: a pointer comparison each
        return last.data
    data = batch_frames(map(wire_line, lines))
    last.lines, last.data = list(lines), data  # a copy: the caller's list may change
    return data


#: One encoder for every message: ``json.dumps`` with options builds a new one per call.
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: object) -> str:
    """Compact JSON as every server message is written: UTF-8 text as it is, except
    controls, bidi controls and line separators, escaped (:mod:`.safetext`)."""
    return escape_unsafe(_to_json(value))


def encode(message: Mapping[str, Any]) -> Encoded:
    """Serialize a server message: compact JSON on one line (newlines are escaped)."""
    return Encoded(dumps(message))


def json_array(items: list[str]) -> str:
    """A list of strings as compact JSON, as :func:`encode` writes it inside messages."""
    return dumps(items)


def json_array_append(array: str, item: str) -> str:
    """``array`` (compact JSON) with ``item`` appended: a copy, not a re-encode."""
    item_json = dumps(item)
    return f"{array[:-1]},{item_json}]" if array != "[]" else f"[{item_json}]"


def welcome(
    user: str, users_json: str, clients_count: int, max_text: int,
    resume: str | None = None, *, room: str | None = None, topic: str = "",
    account: str | None = None, role: str | None = None,
) -> str:
    """The answer to a join: the room, the joiner's name, who is there, the room's
    topic, and the longest chat text this server takes (so a client can keep an
    over-long message instead of sending it to be refused); ``resume``, the secret that
    takes the seat back after a lost connection. ``users_json`` is the member list
    already encoded (:func:`json_array`): the room keeps it, so a join in a big room
    does not re-encode every name. Without ``room`` (a rename on a connection in no
    room), it only says the name. ``account``: the account this connection is logged
    in to (a guest's welcome has none). ``role``: ``op`` or ``admin`` when the
    connection may moderate the room (a client shows its moderation controls)."""
    user_json = dumps(user)
    token = f',"resume":{dumps(resume)}' if resume is not None else ""
    if account is not None:
        token += f',"account":{dumps(account)}'
    if role is not None:
        token += f',"role":{dumps(role)}'
    if room is None:
        return Encoded(
            f'{{"type":"welcome","user":{user_json},"users":{users_json},'
            f'"clients_count":{clients_count},"max_text":{max_text}{token}}}'
        )
    return Encoded(
        f'{{"type":"welcome","room":{dumps(room)},"user":{user_json},"users":{users_json},'
        f'"topic":{dumps(topic)},"clients_count":{clients_count},"max_text":{max_text}'
        f'{token}}}'
    )


def chat(
    user: str, text: str, ts: str, message_id: int | None = None, *, history: bool = False,
    room: str | None = None,
) -> str:
    """A chat message in ``room``; ``history`` marks one replayed from the store (sent
    earlier).

    A replayed message goes to one client only: it is a plain ``str``, since an
    :class:`Encoded` would keep its wire bytes beside it (twice what a replay holds)."""
    if room is not None and message_id is not None and not history:  # a live room message
        return encode({"type": "chat", "room": room, "id": message_id, "user": user,
                       "text": text, "timestamp": ts})
    message: dict[str, Any] = {"type": "chat"}
    if room is not None:
        message["room"] = room
    if message_id is not None:
        message["id"] = message_id
    message.update(user=user, text=text, timestamp=ts)
    if history:
        message["history"] = True
        return dumps(message)
    return encode(message)


def history_end(last_id: int, *, complete: bool = True, room: str | None = None) -> str:
    """Ends a replay; ``last_id`` is the room's newest id at join time (resume from it)."""
    message: dict[str, Any] = {"type": "history_end"}
    if room is not None:
        message["room"] = room
    message["last_id"] = last_id
    if not complete:
        message["complete"] = False
    return encode(message)


def system(
    event: str, name: str, text: str, clients_count: int, ts: str, *,
    room: str | None = None, **extra: Any,
) -> str:
    """A notice to a room's members: ``join``, ``leave``, ``rename``, ``topic``."""
    message: dict[str, Any] = {"type": "system"}
    if room is not None:
        message["room"] = room
    message.update(
        event=event, user=SYSTEM_USER, name=name, text=text, clients_count=clients_count,
        timestamp=ts, **extra,
    )
    return encode(message)


def summary(
    joined: int, left: int, clients_count: int, ts: str, *, room: str | None = None
) -> str:
    """Join and leave notices coalesced under load (docs/protocol.md, "Busy rooms")."""
    parts = [f"{n} {what}" for n, what in ((joined, "joined"), (left, "left")) if n]
    message: dict[str, Any] = {"type": "system"}
    if room is not None:
        message["room"] = room
    message.update(
        event="summary", user=SYSTEM_USER, joined=joined, left=left,
        text=", ".join(parts) or "no change", clients_count=clients_count, timestamp=ts,
    )
    return encode(message)


def users(users_json: str, clients_count: int, *, room: str | None = None) -> str:
    """The answer to ``who``, with the member list already encoded (:func:`json_array`)."""
    where = f'"room":{dumps(room)},' if room is not None else ""
    return Encoded(
        f'{{"type":"users",{where}"users":{users_json},"clients_count":{clients_count}}}'
    )


def direct(
    sender: str, to: str, text: str, ts: str, message_id: int | None = None,
    *, history: bool = False,
) -> str:
    """A direct message, to its recipient and (the echo) its sender; ``history``
    marks one replayed from the store at a login."""
    message: dict[str, Any] = {"type": "msg"}
    if message_id is not None:
        message["id"] = message_id
    message.update({"from": sender, "to": to, "text": text, "timestamp": ts})
    if history:
        message["history"] = True
        return dumps(message)  # to one client: no wire forms kept beside it
    return encode(message)


def room_entry(room: str, members: int, topic: str) -> str:
    """One room of a ``rooms`` answer, encoded (:func:`rooms_list` joins them)."""
    return dumps({"room": room, "users": members, "topic": topic})


def rooms_list(entries: list[str], total: int) -> str:
    """The answer to ``rooms``: the rooms (encoded by :func:`room_entry`), and how many
    there are in all (the list may hold only the busiest of them)."""
    return Encoded(f'{{"type":"rooms","rooms":[{",".join(entries)}],"total":{total}}}')


def pong() -> str:
    return encode({"type": "pong"})


SHUTDOWN_TEXT: Final = "server shutting down"


def shutdown(clients_count: int) -> str:
    """The last message every client gets when the server stops; like every ``system``
    message it says how many are online (the seed's client prints it)."""
    return encode(
        {"type": "system", "event": "shutdown", "text": SHUTDOWN_TEXT,
         "clients_count": clients_count}
    )


#: What the TCP greeting tells a person at ``nc`` (docs/protocol.md).
HELLO_TEXT: Final = "type /nick NAME to join, /help for commands"


def hello(version: str, text: str = HELLO_TEXT) -> str:
    """The greeting a TCP connection gets once it has been quiet for a moment after
    connecting (a person at ``nc``; a program has spoken by then), and every gRPC
    ``Session`` stream first (with a ``text`` of its own: nobody types ``/nick`` there)."""
    return encode({"type": "hello", "server": "trio-chat", "version": version,
                   "text": text})


def help_message(text: str) -> str:
    """The answer to ``/help``."""
    return encode({"type": "help", "text": text})
