"""Room names and topics: what a valid one is, and when two names are one room.

A room name is ``#`` and 1-32 characters from ``A-Z a-z 0-9 _ - .``: ASCII on
purpose, so there are no look-alikes to refuse (``#dev`` and one spelled with a
Cyrillic e cannot both exist) and nothing for a terminal to misread. Names are
compared case-insensitively (:func:`room_key`) and shown as the room was first
created.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import ROOM_INVALID, TOO_LONG, ProtocolError

#: The room every server has, that every v1 client is in, and nobody owns.
LOBBY: Final = "#lobby"
#: Characters after the ``#``, at most.
MAX_ROOM: Final = 32
#: Characters a topic may have, at most (it goes in every ``welcome`` and ``rooms``).
MAX_TOPIC: Final = 256

_ROOM: Final = re.compile(r"#[A-Za-z0-9_.\-]{1,32}")


def validate_room(raw: object) -> str:
    """A room name as given (surrounding whitespace trimmed); ``room_invalid`` if it is
    not one."""
    if not isinstance(raw, str):
        raise ProtocolError(ROOM_INVALID, "field 'room' must be a room name like #dev")
    name = raw.strip()
    if _ROOM.fullmatch(name) is None:
        shown = name if len(name) <= 40 and name.isprintable() and name.isascii() else None
        what = f"'{shown}' is not a room name" if shown else "not a room name"
        raise ProtocolError(
            ROOM_INVALID,
            f"{what}: # and 1-{MAX_ROOM} of the letters A-Z a-z, digits, _ - .",
        )
    return name


def room_key(name: str) -> str:
    """What two names of one room share (their case does not matter)."""
    return name.lower()


LOBBY_KEY: Final = room_key(LOBBY)


def validate_topic(raw: str) -> str:
    """A topic, trimmed (empty clears it); ``too_long`` past :data:`MAX_TOPIC`."""
    topic = raw.strip()
    if len(topic) > MAX_TOPIC:
        raise ProtocolError(TOO_LONG, f"a topic is at most {MAX_TOPIC} characters")
    return topic
