"""Moderation messages (``kick``, ``ban``, ``mute``, ``op``, ``mode``...), sans I/O:
their JSON and their plain-text (nc) commands as typed events.

What they do, and who may, is :mod:`trio_chat.moderation.model`'s; here they are only
read and checked. The shapes are documented in ``docs/protocol.md`` (*Moderation*).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .errors import MISSING_FIELD, ProtocolError
from .names import validate_name
from .rooms import LOBBY, validate_room

#: The actions on one user (or address) a moderation message may take.
Action = Literal["kick", "ban", "unban", "mute", "unmute", "op", "deop", "voice", "devoice"]
ACTIONS: Final[tuple[Action, ...]] = (
    "kick", "ban", "unban", "mute", "unmute", "op", "deop", "voice", "devoice",
)
#: Actions that may be server-wide (no ``room``: admins only); the others without a
#: ``room`` mean ``#lobby``, like every v1 message.
SERVER_WIDE: Final = frozenset({"ban", "unban", "mute", "unmute"})
#: Actions that may name an ``address`` instead of a ``user``.
BY_ADDRESS: Final = frozenset({"ban", "unban"})
#: Actions that take a ``duration`` (seconds; 0 until lifted) and a ``reason``.
TIMED: Final = frozenset({"ban", "mute"})
#: The modes a room has, as ``mode`` names them.
MODES: Final = ("registered_only", "moderated")
#: Longest ``reason``, in characters.
MAX_REASON: Final = 256
#: Longest duration, in seconds (ten years).
MAX_DURATION: Final = 10 * 365 * 24 * 3600
#: The room of a plain-text command without one: the connection's current room.
Current = Literal["current"]
CURRENT: Final[Current] = "current"


@dataclass(frozen=True, slots=True)
class Moderate:
    """One moderation action. ``room`` None: server-wide (only :data:`SERVER_WIDE`
    actions); :data:`CURRENT`: the nc connection's current room. Exactly one of
    ``user`` (a valid name) and ``address`` (a canonical network, ``203.0.113.0/24``)."""

    action: Action
    room: str | Current | None
    user: str | None = None
    address: str | None = None
    duration: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ListBans:
    """Ask for a room's bans and mutes (``room`` None: the server-wide ones)."""

    room: str | Current | None


@dataclass(frozen=True, slots=True)
class Mode:
    """Set a room's modes (a field None is left as it is); with neither, ask for them."""

    room: str | Current
    registered_only: bool | None = None
    moderated: bool | None = None


ModerationEvent = Moderate | ListBans | Mode


def parse_network(raw: str) -> str:
    """An address or a CIDR, canonical (``203.0.113.7`` is ``203.0.113.7/32``; an
    IPv4-mapped IPv6 range is its IPv4 range); ``missing_field`` if neither."""
    try:
        network = ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise ProtocolError(
            MISSING_FIELD,
            "field 'address' must be an IP address or a CIDR like 203.0.113.0/24",
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return str(ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}"))
    return str(network)


def check_reason(raw: object) -> str:
    """A reason, trimmed ("" when absent); ``missing_field`` if not a string or too long."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ProtocolError(MISSING_FIELD, "field 'reason' must be a string")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(MISSING_FIELD, "field 'reason' is not valid Unicode") from None
    reason = raw.strip()
    if len(reason) > MAX_REASON:
        raise ProtocolError(MISSING_FIELD, f"a reason is at most {MAX_REASON} characters")
    return reason


def check_duration(raw: object) -> int:
    """Whole seconds from 0 (until lifted; also when absent) to :data:`MAX_DURATION`."""
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_DURATION:
        raise ProtocolError(
            MISSING_FIELD,
            f"field 'duration' must be whole seconds from 0 (until lifted) to {MAX_DURATION}",
        )
    return raw


def _room_of(obj: Mapping[str, Any], action: str) -> str | None:
    room = obj.get("room")
    if room is None:
        return None if action in SERVER_WIDE else LOBBY
    return validate_room(room)


def moderation_from_object(kind: str, obj: Mapping[str, Any]) -> ModerationEvent | None:
    """The event of a JSON moderation message of type ``kind``; None if ``kind`` is
    not one."""
    if kind in ACTIONS:
        action: Action = kind
        user, address = obj.get("user"), obj.get("address")
        if address is not None and action in BY_ADDRESS:
            if user is not None:
                raise ProtocolError(MISSING_FIELD, "give 'user' or 'address', not both")
            if not isinstance(address, str):
                raise ProtocolError(MISSING_FIELD, "field 'address' must be a string")
            target: dict[str, str] = {"address": parse_network(address)}
        else:
            if user is None:
                also = " (or 'address')" if action in BY_ADDRESS else ""
                raise ProtocolError(MISSING_FIELD, f"field 'user'{also} is required")
            if not isinstance(user, str):
                raise ProtocolError(MISSING_FIELD, "field 'user' must be a string")
            target = {"user": validate_name(user)}
        timed = action in TIMED or action == "kick"
        return Moderate(
            action, _room_of(obj, action), **target,
            duration=check_duration(obj.get("duration")) if action in TIMED else 0,
            reason=check_reason(obj.get("reason")) if timed else "",
        )
    if kind == "bans":
        room = obj.get("room")
        return ListBans(validate_room(room) if room is not None else None)
    if kind == "mode":
        room = obj.get("room")
        flags: dict[str, bool] = {}
        for mode in MODES:
            value = obj.get(mode)
            if value is None:
                continue
            if not isinstance(value, bool):
                raise ProtocolError(MISSING_FIELD, f"field '{mode}' must be true or false")
            flags[mode] = value
        return Mode(validate_room(room) if room is not None else LOBBY, **flags)
    return None


# ---------------------------------------------------------------- nc commands

_DURATION: Final = re.compile(r"(\d{1,12})([smhd]?)", re.IGNORECASE)
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MODE_FLAG: Final = re.compile(r"([+-])(registered_only|moderated|r|m)", re.IGNORECASE)
_SHORT: Final = {"r": "registered_only", "m": "moderated"}
#: The nc commands of this module, and their usage.
USAGE: Final = {
    "/kick": "/kick NAME [REASON]",
    "/ban": "/ban [#ROOM|*] NAME|ADDRESS [DURATION] [REASON]",
    "/unban": "/unban [#ROOM|*] NAME|ADDRESS",
    "/bans": "/bans [#ROOM|*]",
    "/mute": "/mute [#ROOM|*] NAME [DURATION] [REASON]",
    "/unmute": "/unmute [#ROOM|*] NAME",
    "/op": "/op NAME",
    "/deop": "/deop NAME",
    "/voice": "/voice NAME",
    "/devoice": "/devoice NAME",
    "/mode": "/mode [#ROOM] [+r|-r] [+m|-m]",
}


def parse_duration(word: str) -> int | None:
    """``600``, ``90s``, ``10m``, ``12h``, ``7d`` as seconds; None if it is not one."""
    match = _DURATION.fullmatch(word)
    if match is None:
        return None
    return check_duration(int(match[1]) * _UNITS[match[2].lower()])


def _words(arg: str) -> list[str]:
    """Words, a ``"quoted name"`` being one."""
    words: list[str] = []
    rest = arg.strip()
    while rest:
        if rest.startswith('"'):
            end = rest.find('"', 1)
            if end < 0:
                raise ProtocolError(MISSING_FIELD, 'a quoted name needs its closing "')
            words.append(rest[1:end])
            rest = rest[end + 1 :].lstrip()
        else:
            word, _, rest = rest.partition(" ")
            words.append(word)
            rest = rest.lstrip()
    return words


def _is_address(word: str) -> bool:
    try:
        ipaddress.ip_network(word, strict=False)
    except ValueError:
        return False
    return True


def moderation_from_command(command: str, arg: str) -> ModerationEvent | None:
    """The event of a plain-text moderation command (``/ban Bob 10m spam``); None if
    ``command`` is not one. A first word ``#room`` names the room (else the current
    one); ``*`` makes a ban or mute server-wide. A target that reads as an IP address
    or CIDR is an address (``/ban`` and ``/unban``)."""
    if command not in USAGE:
        return None
    usage = ProtocolError(MISSING_FIELD, f"usage: {USAGE[command]}")
    words = _words(arg)
    room: str | Current | None = CURRENT
    if words and words[0].startswith("#"):
        room = validate_room(words.pop(0))
    elif words and words[0] == "*" and command in ("/ban", "/unban", "/bans", "/mute",
                                                    "/unmute"):
        words.pop(0)
        room = None
    if command == "/bans":
        if words:
            raise usage
        return ListBans(room)
    if command == "/mode":
        assert room is not None
        flags: dict[str, bool] = {}
        for word in words:
            match = _MODE_FLAG.fullmatch(word)
            if match is None:
                raise usage
            name = match[2].lower()
            flags[_SHORT.get(name, name)] = match[1] == "+"
        return Mode(room, **flags)
    action: Action = command[1:]  # type: ignore[assignment]  # one of USAGE's
    if not words:
        raise usage
    target = words.pop(0)
    fields: dict[str, Any] = {}
    if action in BY_ADDRESS and _is_address(target):
        fields["address"] = parse_network(target)
    else:
        fields["user"] = validate_name(target)
    if action == "kick":
        fields["reason"] = check_reason(" ".join(words))
    elif action in TIMED:
        if words and (seconds := parse_duration(words[0])) is not None:
            fields["duration"] = seconds
            words.pop(0)
        fields["reason"] = check_reason(" ".join(words))
    elif words:
        raise usage
    if room is None and action not in SERVER_WIDE:
        raise usage
    return Moderate(action, room, **fields)


def moderation_message(event: ModerationEvent, here: str = LOBBY) -> dict[str, Any]:
    """The JSON message of ``event`` (its :data:`CURRENT` room as ``here``): what a
    client that reads these commands itself (``trio-chat join``) sends."""
    room = here if event.room == CURRENT else event.room
    message: dict[str, Any] = {}
    if isinstance(event, Moderate):
        message["type"] = event.action
        if room is not None:
            message["room"] = room
        if event.user is not None:
            message["user"] = event.user
        if event.address is not None:
            message["address"] = event.address
        if event.action in TIMED:
            message["duration"] = event.duration
        if event.reason:
            message["reason"] = event.reason
    elif isinstance(event, ListBans):
        message["type"] = "bans"
        if room is not None:
            message["room"] = room
    else:
        message.update(type="mode", room=room)
        for mode in MODES:
            value = getattr(event, mode)
            if value is not None:
                message[mode] = value
    return message
