"""The Protobuf form of the protocol's messages (``proto/trio_chat/v1/chat.proto``).

No I/O here. A ``ClientEvent`` becomes the JSON object it stands for and goes through
:func:`trio_chat.protocol.event_from_object`, so gRPC input is validated by the same
code, with the same error codes, as JSON input (and a kind of event the protocol learns
later needs only its Protobuf message). A server message, which the room builds once as
JSON for every connection, becomes a ``ServerEvent`` the same way: its ``type`` names
the oneof member and its fields the member's fields. The bytes are built once per
broadcast and kept with the message (:meth:`trio_chat.protocol.Encoded.form`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

from ...protocol import (
    BAD_JSON,
    MISSING_FIELD,
    UNKNOWN_TYPE,
    Encoded,
    Event,
    ProtocolError,
    event_from_object,
    validate_room,
)
from ...v1 import chat_pb2 as pb

#: The room an empty ``room`` field in a request means (the v1 room).
LOBBY: Final = "#lobby"
#: ``ServerEvent``'s oneof member that packs several events (``JoinRequest.batch``).
BATCH: Final = "batch"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int) -> bytes:
    """The key of a length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2)


def _fields(descriptor: Descriptor) -> frozenset[str]:
    return frozenset(field.name for field in descriptor.fields)


class _Member(NamedTuple):
    """A member of ``ServerEvent``'s oneof."""

    cls: type[Message]
    fields: frozenset[str]
    #: The key the member's bytes follow in a ServerEvent (field number, wire type 2).
    tag: bytes


def _members(descriptor: Descriptor) -> dict[str, _Member]:
    members = {}
    for field in descriptor.oneofs_by_name["event"].fields:
        message_type = field.message_type
        assert message_type is not None
        members[field.name] = _Member(
            getattr(pb, message_type.name), _fields(message_type), _tag(field.number)
        )
    return members


_SERVER_EVENTS: Final = _members(pb.ServerEvent.DESCRIPTOR)
_SERVER_KINDS: Final = {kind: entry for kind, entry in _SERVER_EVENTS.items() if kind != BATCH}


_BATCH_TAG: Final = _tag(pb.ServerEvent.DESCRIPTOR.fields_by_name[BATCH].number)
_EVENTS_TAG: Final = _tag(pb.EventBatch.DESCRIPTOR.fields_by_name["events"].number)


# ---------------------------------------------------------------- client to server


def client_event(data: bytes, max_text: int) -> Event:
    """Decode one ``ClientEvent`` into the protocol's event; raises ``ProtocolError``
    exactly as the same JSON message would (and ``bad_json`` for bytes that are no
    ``ClientEvent``, ``unknown_type`` for one with no event this server knows)."""
    try:
        message = pb.ClientEvent.FromString(data)
    except DecodeError:
        raise ProtocolError(BAD_JSON, "message is not a valid trio_chat.v1.ClientEvent") from None
    kind = message.WhichOneof("event")
    if kind is None:
        raise ProtocolError(
            UNKNOWN_TYPE, "the ClientEvent has no event set, or one this server does not know"
        )
    return event_from_object(_request(kind, as_object(kind, getattr(message, kind))), max_text)


#: Requests whose empty ``room`` is no room named: a join enters none (or
#: ``#lobby`` first), a moderation message means what the JSON protocol gives it
#: without ``room`` (server-wide for bans and mutes, ``#lobby`` for the others).
_JOINS: Final = frozenset({
    "join", "register", "login", "op", "deop", "kick", "ban", "unban", "mute", "unmute",
    "voice", "devoice", "bans", "mode",
})
#: Moderation requests that name their target by ``user`` or ``address``.
_TARGETED: Final = frozenset({
    "op", "deop", "kick", "ban", "unban", "mute", "unmute", "voice", "devoice",
})


def _request(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A request's empty strings as the JSON protocol says them. Proto3 cannot tell an
    empty string from an absent one: an empty ``room`` is ``#lobby`` (for a join: no
    room named), and a join that names a room may leave ``user`` empty (already
    named). A join with neither keeps its empty ``user``: ``name_invalid``, as before."""
    if obj.get("room") == "":
        if kind in _JOINS:
            del obj["room"]
        else:
            obj["room"] = LOBBY
    if kind == "join" and obj.get("user") == "" and "room" in obj:
        del obj["user"]
    if kind in _TARGETED:
        for name in ("user", "address"):  # one of them: the other is left empty
            if obj.get(name) == "":
                del obj[name]
    if kind == "register" and obj.get("invite") == "":
        del obj["invite"]
    if kind == "login":
        if obj.get("token") == "":
            del obj["token"]  # a login with user and password
        else:
            for name in ("user", "password"):  # a login with a token
                if obj.get(name) == "":
                    del obj[name]
    return obj


def as_object(kind: str, body: Message) -> dict[str, Any]:
    """A Protobuf message as the JSON object of the protocol: ``type`` and its fields
    (a field with presence only when set)."""
    obj: dict[str, Any] = {"type": kind}
    obj.update(_fields_of(body))
    return obj


def _set(body: Message) -> dict[str, Any]:
    """A nested message's fields, an empty string left out as JSON leaves it out."""
    return {name: value for name, value in _fields_of(body).items() if value != ""}


def _fields_of(body: Message) -> dict[str, Any]:
    """A message's fields as JSON values (a nested message as an object)."""
    obj: dict[str, Any] = {}
    for field in body.DESCRIPTOR.fields:
        if field.has_presence and not body.HasField(field.name):
            continue
        value = getattr(body, field.name)
        if field.message_type is not None:
            value = [_set(one) for one in value] if field.is_repeated else _set(value)
        elif field.is_repeated:
            value = list(value)
        obj[field.name] = value
    return obj


def post_text(data: bytes) -> tuple[str, str, str]:
    """A ``PostRequest``'s user, text and room (empty: none named)."""
    try:
        message = pb.PostRequest.FromString(data)
    except DecodeError:
        raise ProtocolError(
            BAD_JSON, "message is not a valid trio_chat.v1.PostRequest", fatal=True
        ) from None
    return message.user, message.text, message.room


def history_request(data: bytes) -> tuple[int | None, int, str]:
    """A ``HistoryRequest``'s ``since`` (None when absent), ``limit`` (0: none) and
    room (``#lobby`` when empty)."""
    try:
        message = pb.HistoryRequest.FromString(data)
    except DecodeError:
        raise ProtocolError(
            BAD_JSON, "message is not a valid trio_chat.v1.HistoryRequest"
        ) from None
    since = message.since if message.HasField("since") else None
    if since is not None and since < 0:
        raise ProtocolError(MISSING_FIELD, "field 'since' must be a non-negative integer")
    if message.limit < 0:
        raise ProtocolError(MISSING_FIELD, "field 'limit' must be a non-negative integer")
    return since, message.limit, validate_room(message.room or LOBBY)


# ---------------------------------------------------------------- server to client


def server_message(message: Mapping[str, Any]) -> bytes:
    """A server message (the JSON object) as ``ServerEvent`` bytes; empty for a type
    the Protobuf contract does not have."""
    kind = message.get("type")
    member = _SERVER_KINDS.get(kind) if isinstance(kind, str) else None
    if member is None:
        return b""
    fields = member.fields
    values = {name: value for name, value in message.items()
              if name in fields and value is not None}  # null: absent
    if kind == "history_end":
        values.setdefault("complete", True)  # JSON says so only when false
    body = member.cls(**values).SerializeToString()
    return member.tag + _varint(len(body)) + body


def _encode(line: str) -> bytes:
    return server_message(json.loads(line))


def event_bytes(line: str) -> bytes:
    """A server message line as ``ServerEvent`` bytes (empty for a type the contract
    does not have: nothing is sent); built once per broadcast message."""
    if isinstance(line, Encoded):
        return line.form("grpc", _encode)
    return _encode(line)


def pack(events: list[bytes]) -> bytes:
    """One ``ServerEvent`` whose ``batch`` holds ``events`` (each a serialized
    ``ServerEvent``), built from their bytes: no event is encoded again."""
    inner = b"".join([_EVENTS_TAG + _varint(len(event)) + event for event in events])
    return _BATCH_TAG + _varint(len(inner)) + inner


def chat_message(
    message_id: int | None, user: str, text: str, timestamp: str, room: str
) -> bytes:
    """A replayed chat message, as the ``History`` call streams it."""
    return pb.ChatMessage(
        id=message_id, user=user, text=text, timestamp=timestamp, history=True, room=room
    ).SerializeToString()


def who_request(data: bytes) -> str:
    """A ``WhoRequest``'s room (``#lobby`` when empty)."""
    try:
        message = pb.WhoRequest.FromString(data)
    except DecodeError:
        raise ProtocolError(BAD_JSON, "message is not a valid trio_chat.v1.WhoRequest") from None
    return validate_room(message.room or LOBBY)


def who_reply(users_line: str) -> bytes:
    """The room's answer to ``who`` (its JSON ``users`` message) as a ``WhoReply``."""
    message = json.loads(users_line)
    return pb.WhoReply(
        users=message["users"], clients_count=message["clients_count"],
        room=message.get("room", LOBBY),
    ).SerializeToString()


def post_summary(ids: list[int]) -> bytes:
    return pb.PostSummary(ids=ids).SerializeToString()


# ---------------------------------------------------------------- for clients


_CLIENT_EVENTS: Final = _members(pb.ClientEvent.DESCRIPTOR)


def client_message(message: Mapping[str, Any]) -> bytes:
    """A client message (the JSON object) as ``ClientEvent`` bytes: fields the
    contract does not have are left out. ``ValueError`` for a type it does not have."""
    kind = message.get("type")
    member = _CLIENT_EVENTS.get(kind) if isinstance(kind, str) else None
    if member is None:
        raise ValueError(f"no ClientEvent for a {kind!r} message")
    fields = member.fields
    body = member.cls(**{name: value for name, value in message.items() if name in fields})
    data = body.SerializeToString()
    return member.tag + _varint(len(data)) + data


def json_objects(data: bytes) -> list[dict[str, Any]]:
    """A ``ServerEvent`` as the JSON objects the same messages are over TCP (a batch
    unpacked; an event this code does not know, none): scalar fields with no presence
    are left out when empty, as the JSON protocol leaves them out."""
    event = pb.ServerEvent.FromString(data)
    return list(_objects(event))


def _objects(event: pb.ServerEvent) -> Iterator[dict[str, Any]]:
    kind = event.WhichOneof("event")
    if kind is None:
        return
    if kind == BATCH:
        for one in event.batch.events:
            yield from _objects(one)
        return
    obj = as_object(kind, getattr(event, kind))
    yield {name: value for name, value in obj.items() if value != ""}
