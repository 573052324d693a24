"""The moderation model and its SQLite store, without a server: who is banned or muted
where and until when, who outranks whom, and what the store keeps across a reload."""

from __future__ import annotations

import ipaddress
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.moderation.model import (
    AuditEntry,
    Moderation,
    Person,
    RoomModes,
    new_sanction,
)
from trio_chat.moderation.store import ModerationStore, NotADatabase
from trio_chat.protocol import ProtocolError
from trio_chat.protocol.moderation import check_duration, check_reason, parse_network
from trio_chat.protocol.names import name_key

ADMIN = Person("Root", account="root")
OP = Person("Olga", account="olga")
USER = Person("Bob", account="bob")
GUEST = Person("Gus", address=ipaddress.ip_address("203.0.113.7"))


def state() -> Moderation:
    mod = Moderation(admins={"root"})
    mod.set_op("#dev", "olga", True)
    return mod


def code_of(excinfo: pytest.ExceptionInfo[ProtocolError]) -> str:
    return excinfo.value.code


def test_a_ban_by_name_holds_for_every_form_of_the_name_until_it_ends() -> None:
    mod = state()
    ban = new_sanction("ban", "#dev", by="Olga", reason="spam", now=100.0, duration=60,
                       user="Bob")
    mod.add(ban)
    for name in ("Bob", "bob", "\uff22\uff2f\uff22"):
        assert mod.ban_of(Person(name), "#dev", 100.0) == ban
    assert mod.ban_of(USER, "#other", 100.0) is None
    assert mod.ban_of(USER, None, 100.0) is None  # a room ban is not server-wide
    assert mod.ban_of(USER, "#dev", 159.9) == ban
    assert mod.ban_of(USER, "#dev", 160.0) is None
    with pytest.raises(ProtocolError) as info:
        mod.check_join(USER, "#dev", "#dev", 120.0)
    assert code_of(info) == "banned"
    assert '"until":160.0' in info.value.to_message()
    assert '"reason":"spam"' in info.value.to_message()


def test_a_ban_on_an_account_holds_whatever_the_connection_is_called() -> None:
    mod = state()
    mod.add(new_sanction("ban", None, by="Root", reason="", now=0, duration=0, user="Bob",
                         account="bob"))
    assert mod.ban_of(Person("Robert", account="bob"), None, 1e12) is not None
    assert mod.ban_of(Person("Robert"), None, 1e12) is None


def test_a_server_wide_ban_keeps_out_of_every_room_and_a_room_ban_not_admins() -> None:
    mod = state()
    mod.add(new_sanction("ban", None, by="Root", reason="", now=0, duration=0, user="Gus"))
    assert mod.ban_of(GUEST, "#any", 1.0) is not None
    mod.add(new_sanction("ban", "#dev", by="Olga", reason="", now=0, duration=0, user="Root"))
    assert mod.ban_of(ADMIN, "#dev", 1.0) is None
    mod.check_join(ADMIN, "#dev", "#dev", 1.0)


@given(
    st.ip_addresses(v=4), st.integers(min_value=0, max_value=32), st.ip_addresses(v=4)
)
def test_an_address_ban_covers_exactly_its_range_ipv4_mapped_too(
    base: ipaddress.IPv4Address, prefix: int, probe: ipaddress.IPv4Address
) -> None:
    network = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    mod = Moderation()
    mod.add(new_sanction("ban", None, by="Root", reason="", now=0, duration=0,
                         network=parse_network(f"{base}/{prefix}")))
    inside = probe in network
    assert (mod.address_ban(probe, 1.0) is not None) == inside
    mapped = ipaddress.ip_address(f"::ffff:{probe}")
    assert (mod.address_ban(mapped, 1.0) is not None) == inside
    assert (mod.ban_of(Person("x", address=probe), "#dev", 1.0) is not None) == inside


def test_an_ipv6_range_and_a_mapped_network() -> None:
    assert parse_network("::ffff:203.0.113.0/120") == "203.0.113.0/24"
    mod = Moderation()
    mod.add(new_sanction("ban", None, by="R", reason="", now=0, duration=0,
                         network=parse_network("2001:db8::/32")))
    assert mod.address_ban(ipaddress.ip_address("2001:db8::1"), 0) is not None
    assert mod.address_ban(ipaddress.ip_address("2001:db9::1"), 0) is None
    assert mod.address_ban(ipaddress.ip_address("32.1.13.184"), 0) is None
    with pytest.raises(ProtocolError):
        parse_network("203.0.113.300")


def test_ranks_who_may_act_on_whom() -> None:
    mod = state()
    # A guest or a plain user may do nothing; an op only in their room.
    for actor in (GUEST, USER):
        with pytest.raises(ProtocolError) as info:
            mod.check_over(actor, OP, "#dev", "#dev")
        assert code_of(info) == "not_permitted"
    mod.check_over(OP, USER, "#dev", "#dev")
    with pytest.raises(ProtocolError):
        mod.check_over(OP, USER, "#other", "#other")
    with pytest.raises(ProtocolError):
        mod.check_over(OP, USER, None, "the server")  # server-wide: admins only
    # An op is not above another op or an admin; an admin is above both.
    mod.set_op("#dev", "bob", True)
    with pytest.raises(ProtocolError):
        mod.check_over(OP, USER, "#dev", "#dev")
    with pytest.raises(ProtocolError):
        mod.check_over(OP, ADMIN, "#dev", "#dev")
    mod.check_over(ADMIN, OP, "#dev", "#dev")
    mod.check_over(ADMIN, USER, None, "the server")
    mod.check_over(OP, OP, "#dev", "#dev", oneself=True)  # deop oneself
    with pytest.raises(ProtocolError):
        mod.check_over(OP, OP, "#dev", "#dev")  # kick or ban oneself


def test_topic_is_free_until_the_room_has_ops() -> None:
    mod = state()
    mod.check_topic(GUEST, "#free", "#free")
    with pytest.raises(ProtocolError):
        mod.check_topic(USER, "#dev", "#dev")
    mod.check_topic(OP, "#dev", "#dev")
    mod.check_topic(ADMIN, "#dev", "#dev")


def test_mutes_and_modes_decide_who_speaks() -> None:
    mod = state()
    mod.add(new_sanction("mute", "#dev", by="Olga", reason="calm down", now=0, duration=10,
                         user="Bob"))
    with pytest.raises(ProtocolError) as info:
        mod.check_speak(USER, "#dev", "#dev", 5.0)
    assert code_of(info) == "muted"
    mod.check_speak(USER, "#dev", "#dev", 10.0)  # the mute ended
    mod.check_speak(USER, "#other", "#other", 5.0)
    mod.set_modes("#dev", RoomModes(registered_only=True))
    with pytest.raises(ProtocolError) as info:
        mod.check_join(GUEST, "#dev", "#dev", 20.0)
    assert code_of(info) == "not_permitted"
    with pytest.raises(ProtocolError):
        mod.check_speak(GUEST, "#dev", "#dev", 20.0)
    mod.check_join(USER, "#dev", "#dev", 20.0)
    mod.set_modes("#dev", RoomModes(moderated=True))
    with pytest.raises(ProtocolError) as info:
        mod.check_speak(USER, "#dev", "#dev", 20.0)
    assert code_of(info) == "muted"
    mod.check_speak(OP, "#dev", "#dev", 20.0)
    mod.check_speak(ADMIN, "#dev", "#dev", 20.0)
    mod.set_voice("#dev", Person("BOB").key, True)
    mod.check_speak(USER, "#dev", "#dev", 20.0)
    mod.set_voice("#dev", USER.key, False)
    with pytest.raises(ProtocolError):
        mod.check_speak(USER, "#dev", "#dev", 20.0)


@pytest.mark.parametrize("raw", [-1, 1.5, "10", True, 10 * 365 * 24 * 3600 + 1])
def test_a_duration_is_whole_seconds_in_range(raw: object) -> None:
    with pytest.raises(ProtocolError):
        check_duration(raw)


def test_a_reason_is_bounded() -> None:
    assert check_reason(None) == ""
    assert check_reason("  spam ") == "spam"
    with pytest.raises(ProtocolError):
        check_reason("x" * 257)
    with pytest.raises(ProtocolError):
        check_reason(3)


def make_db(path: Path) -> str:
    """A database the history made its own (a schema version set)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    return str(path)


def test_the_store_keeps_everything_across_a_reload(tmp_path: Path) -> None:
    path = make_db(tmp_path / "chat.db")
    store = ModerationStore(path)
    entry = AuditEntry(100.0, "Olga", "ban", "#dev", "Bob", "spam")
    ban = store.add_sanction(
        new_sanction("ban", "#dev", by="Olga", reason="spam", now=100.0, duration=0,
                     user="Bob"), entry,
    )
    short = store.add_sanction(
        new_sanction("mute", "#dev", by="Olga", reason="", now=100.0, duration=5,
                     user="Ann"), AuditEntry(100.0, "Olga", "mute", "#dev", "Ann", ""),
    )
    assert ban.id >= 1 and short.id >= 1
    store.set_op("#dev", "olga", True, AuditEntry(101.0, "Root", "op", "#dev", "Olga", ""))
    store.set_voice("#dev", "ann", True, AuditEntry(102.0, "Olga", "voice", "#dev", "Ann", ""))
    store.set_modes("#dev", RoomModes(moderated=True),
                    AuditEntry(103.0, "Olga", "mode", "#dev", None, "", "moderated"))
    store.close()

    again = ModerationStore(path, must_exist=True)
    mod = again.load(now=110.0, admins={"root"})
    assert list(mod.sanctions.values()) == [ban]  # the mute had ended
    assert mod.is_op(OP, "#dev")
    assert mod.is_voiced(Person("ANN"), "#dev")
    assert mod.modes_of("#dev") == RoomModes(moderated=True)
    assert [(e.actor, e.action, e.target) for e in again.log()] == [
        ("Olga", "ban", "Bob"), ("Olga", "mute", "Ann"), ("Root", "op", "Olga"),
        ("Olga", "voice", "Ann"), ("Olga", "mode", None),
    ]
    again.remove_sanctions("ban", [ban.id], AuditEntry(120.0, "Olga", "unban", "#dev", "Bob", ""))
    assert again.load(now=121.0).sanctions == {}
    assert again.log(limit=1)[0].action == "unban"
    again.close()


def test_the_store_refuses_a_file_that_is_not_a_trio_chat_database(tmp_path: Path) -> None:
    with pytest.raises(NotADatabase):
        ModerationStore(str(tmp_path / "missing.db"), must_exist=True)
    assert not (tmp_path / "missing.db").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(NotADatabase):
        ModerationStore(str(empty), must_exist=True)


def test_the_store_works_in_memory() -> None:
    store = ModerationStore(":memory:")
    store.record(AuditEntry(1.0, "Olga", "kick", "#dev", "Bob", "rude"))
    assert store.log()[0].reason == "rude"
    store.close()


_NAMES = st.sampled_from(["Ann", "ann", "Bob", "Gus"])
_SANCTIONS = st.lists(
    st.tuples(
        st.sampled_from(["ban", "mute"]),
        st.sampled_from([None, "#a", "#b"]),
        st.one_of(_NAMES.map(lambda n: ("user", n)),
                  st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(
                      lambda t: ("address", f"{t[0]}/{t[1]}"))),
        st.sampled_from([0, 10]),
        st.booleans(),
    ),
    max_size=30,
)


@given(_SANCTIONS, _NAMES, st.sampled_from([None, "ann", "bob"]), st.ip_addresses(v=4),
       st.sampled_from([None, "#a", "#b"]), st.sampled_from([5.0, 15.0]))
def test_the_index_finds_exactly_what_a_scan_finds(
    specs: list[tuple[Any, str | None, tuple[str, str], int, bool]], name: str,
    account: str | None, address: ipaddress.IPv4Address, room: str | None, now: float,
) -> None:
    mod = Moderation()
    for number, (kind, where, (what, target), duration, with_account) in enumerate(specs):
        sanction = new_sanction(
            kind, where, by="x", reason="", now=0.0, duration=duration,
            user=target if what == "user" else None,
            account=name_key(target) if what == "user" and with_account else None,
            network=parse_network(target) if what == "address" else None,
        )
        mod.add(replace(sanction, id=number + 1))
    person = Person(name, account, address)
    for kind in ("ban", "mute"):
        scanned = sorted(
            (s for s in mod.sanctions.values()
             if s.kind == kind and s.room in (None, room) and s.active(now)
             and s.applies_to(person)),
            key=lambda s: (s.room is not None, s.id),
        )
        assert list(mod.matching(kind, person, room, now)) == scanned  # type: ignore[arg-type]


async def test_a_reload_keeps_a_change_still_on_its_way_to_the_store() -> None:
    """A room's creator becomes its op in memory at once and in the store a moment
    later; a reload in between (another process's change) must not take the op away,
    and once the write is done a reload reads it back from the store."""
    from trio_chat.moderation.service import ModerationService

    service = ModerationService()
    creator = Person("Olga", "olga", None)
    service.begin_change()  # as Moderator.created does, before its queued write
    service.state.set_op("#dev", "olga", True)
    assert await service.reload() is None  # the snapshot lacks it: the state stays
    assert service.state.is_op(creator, "#dev")
    await service.set_op("#dev", "olga", True, None)  # the write lands
    service.end_change()
    reloaded = await service.reload()
    assert reloaded is not None and reloaded.is_op(creator, "#dev")
