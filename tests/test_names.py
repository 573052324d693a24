"""Names that cannot impersonate (issue 13): invisible and blank characters are
refused, and a name that looks like one in use (or like ``System``) is taken."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.seats import Seat
from trio_chat import protocol
from trio_chat.protocol import NAME_INVALID, NAME_TAKEN, ProtocolError, name_key, skeleton
from trio_chat.server.rooms import Rooms

ANN = "Ann"


@pytest.mark.parametrize(
    "name",
    [
        "System\ufe0f",  # variation selector
        "System\u034f",  # combining grapheme joiner
        "System\u3164",  # Hangul filler
        "System\u2800",  # braille blank
        "\u115fAnn",  # Hangul choseong filler
        "Ann\u1160",  # Hangul jungseong filler
        "Ann\uffa0",  # halfwidth Hangul filler
        "Ann\ufe0f",
        "Ann\u2003Lee",  # an em space: looks like a space, is not one
        "\u200bAnn",  # zero-width space
        "An\u00adn",  # soft hyphen
        "Ann\u202e",  # right-to-left override
        "\uff33\uff59\uff53\uff54\uff45\uff4d",  # fullwidth System: its NFKC is System
        "SYSTEM",
    ],
)
def test_invisible_blank_and_reserved_names_are_invalid(name: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        protocol.validate_name(name)
    assert raised.value.code == NAME_INVALID


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        ("Ann", "\u13aann"),  # Cherokee A
        ("Ann", "\uff21nn"),  # fullwidth A
        ("Ann", "aNN"),
        ("Bob", "B0b"),  # digit zero
        ("Paypal", "PayPa1"),  # digit one looks like l
        ("Ann Lee", "ann lee"),
    ],
)
def test_a_look_alike_of_a_name_in_use_is_taken(held: str, wanted: str) -> None:
    room = Rooms()
    room.join(Seat(room).member, held)
    other = Seat(room)
    with pytest.raises(ProtocolError) as raised:
        room.join(other.member, protocol.validate_name(wanted))
    assert raised.value.code == NAME_TAKEN
    assert room.names == [held]


def test_a_look_alike_of_system_is_taken() -> None:
    room = Rooms()
    seat = Seat(room)
    cyrillic = "\u0405ystem"  # CYRILLIC CAPITAL LETTER DZE
    with pytest.raises(ProtocolError) as raised:
        room.join(seat.member, protocol.validate_name(cyrillic))
    assert raised.value.code == NAME_TAKEN
    assert "looks like 'System'" in raised.value.text


def test_a_member_may_rename_to_a_look_alike_of_its_own_name() -> None:
    room = Rooms()
    seat = Seat(room)
    room.join(seat.member, "ann")
    room.join(seat.member, "Ann")
    assert room.names == ["Ann"]


def test_a_name_is_free_for_look_alikes_once_its_holder_leaves() -> None:
    room = Rooms()
    ann = Seat(room)
    room.join(ann.member, "Ann")
    room.leave(ann.member)
    room.join(Seat(room).member, "\u13aann")
    assert room.names == ["\u13aann"]


# ---------------------------------------------------------------- properties

names = st.text(
    st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=protocol.MAX_NAME
)
ignorables = st.sampled_from(["\u200b", "\u00ad", "\ufe0f", "\u034f", "\u2060", "\u3164"])


@given(names)
def test_a_valid_name_has_no_invisible_character_and_is_not_system(raw: str) -> None:
    try:
        name = protocol.validate_name(raw)
    except ProtocolError as error:
        assert error.code == NAME_INVALID
        return
    assert name == name.strip() and 1 <= len(name) <= protocol.MAX_NAME
    assert all(unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp") for ch in name)
    assert name_key(name) != "system"


@given(names, ignorables, st.integers(min_value=0))
def test_an_invisible_character_never_makes_a_new_name(
    raw: str, ignorable: str, where: int
) -> None:
    """Whatever is inserted where, the result is refused or looks the same."""
    at = where % (len(raw) + 1)
    spoofed = raw[:at] + ignorable + raw[at:]
    try:
        protocol.validate_name(spoofed)
    except ProtocolError as error:
        assert error.code == NAME_INVALID
    else:  # pragma: no cover - every ignorable above is refused
        raise AssertionError(f"accepted {spoofed!r}")
    assert skeleton(spoofed) == skeleton(raw)


@given(names)
def test_case_and_compatibility_forms_share_a_skeleton(raw: str) -> None:
    assert skeleton(raw) == skeleton(raw.upper().lower()) or raw.upper().lower() != raw.lower()
    assert skeleton(raw) == skeleton(unicodedata.normalize("NFKC", raw))
    assert skeleton(raw) == skeleton(skeleton(raw))
