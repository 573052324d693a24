"""Room names as the client handles them, and the bounds on what it keeps per room.

A room name is ``#`` and 1-32 characters from ``A-Z a-z 0-9 _ - .``, compared
case-insensitively (docs/protocol.md, *Rooms*; the rules are the protocol package's:
:func:`~trio_chat.protocol.validate_room`). The client checks names the user types
before sending them (a clear message instead of a round trip) and every room name a
server sends (one that is not a name is never shown or kept), and bounds what it
keeps: a hostile server cannot make it hold more than :data:`MAX_ROOMS` rooms or
:data:`MAX_CONVERSATIONS` conversations.
"""

from __future__ import annotations

from typing import Any, Final

from ..protocol import LOBBY, ROOM_INVALID, TOO_MANY_ROOMS, ProtocolError, room_key, validate_room

#: Rooms the client keeps at once (a server allows 50 per connection by default).
MAX_ROOMS: Final = 64
#: Conversations a front end keeps: the rooms, and direct ones (``@Bob``); the
#: direct conversation idle longest goes first.
MAX_CONVERSATIONS: Final = 128
#: Error codes that say a room could not be entered.
ROOM_ERRORS: Final = frozenset({ROOM_INVALID, TOO_MANY_ROOMS})


def is_room(value: object) -> bool:
    """A room name exactly as a server must send one."""
    try:
        return validate_room(value) == value
    except ProtocolError:
        return False


def in_room(message: dict[str, Any], room: str) -> dict[str, Any]:
    """``message`` with ``room``, unless it is #lobby: a message without one means
    #lobby, so a client that stays there speaks exactly the v1 protocol."""
    if room_key(room) != room_key(LOBBY):
        message["room"] = room
    return message


def parse_room(text: str) -> str | None:
    """A room name the user typed (``dev`` means ``#dev``); None if it is not one."""
    name = text.strip()
    if name and not name.startswith("#"):
        name = "#" + name
    return name if is_room(name) else None


ROOM_RULE: Final = "a room name is # and 1-32 of the letters A-Z a-z, digits, _ - ."

__all__ = [
    "LOBBY", "MAX_CONVERSATIONS", "MAX_ROOMS", "ROOM_ERRORS", "ROOM_RULE", "in_room",
    "is_room", "parse_room", "room_key",
]
