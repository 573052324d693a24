"""Who may do what to whom, and who is banned or muted where: pure data and rules.

Sans I/O like :mod:`trio_chat.protocol` (no trio, no sqlite here): the server keeps
one :class:`Moderation` in memory, asks it at accept, at join, at every chat and at
every moderation command, and hands each change to the store
(:mod:`.store`) to be written; the CLI (``trio-chat admin``) builds one from the
same store. Every rule is a function of the state and ``now``, so a test drives a
ban's expiry with a number instead of a clock.

**Who is who.** A connection is a :class:`Person`: its name as shown, its
account (the NFKC case-folded account name, or ``None`` for a guest) and its address.
Names are compared by :func:`~trio_chat.protocol.names.name_key`; rooms by their
lower-cased name (the caller passes room keys).

**Ranks.** A server admin (an account given by ``--admin NAME`` or granted with
``trio-chat admin grant``) outranks a room's op (an account: the one that created the
room, or one an op or admin made op), who outranks everyone else. Kick, ban, mute and
deop need a rank above the target's: an op cannot kick another op or an admin, an
admin can (an op may deop themselves). Admins are never stopped by a room's bans,
mutes or modes (they could lift them anyway).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import Final, Literal

from ..protocol.errors import BANNED, MUTED, NOT_PERMITTED, ProtocolError
from ..protocol.names import name_key

Kind = Literal["ban", "mute"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Most bans and mutes held at once on a server (each is checked at every join and
#: accept); a ban past it is refused with ``not_permitted`` saying so.
MAX_SANCTIONS: Final = 10_000
#: Most of them in one room (so one room's ops cannot take the whole server's).
MAX_SANCTIONS_PER_ROOM: Final = 1_000
#: Most ops and voiced users per room.
MAX_ROLES_PER_ROOM: Final = 1_000


class Rank(IntEnum):
    """How far a person's word goes in one room."""

    MEMBER = 0
    OP = 1
    ADMIN = 2


@dataclass(frozen=True)
class Person:
    """A connection as moderation sees it: its name, account key (None: a guest) and
    address (None: unknown, e.g. a unix socket)."""

    name: str
    account: str | None = None
    address: IPAddress | None = None

    @cached_property
    def key(self) -> str:
        return name_key(self.name)


def normalize_address(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:203.0.113.7``) as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Sanction:
    """A ban or a mute: on a name (its key) and the account of that name, or on an
    address range; in one room (its key) or server-wide (``room`` None)."""

    id: int
    kind: Kind
    room: str | None
    target: str  # what to show: the name as given, or the network
    name: str | None  # name key
    account: str | None  # account key
    network: str | None  # canonical network ("203.0.113.0/24")
    reason: str
    by: str
    created: float
    until: float | None  # None: until lifted

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def applies_to(self, person: Person) -> bool:
        if self.name is not None and self.name == person.key:
            return True
        if self.account is not None and self.account == person.account:
            return True
        if self.network is not None and person.address is not None:
            address = normalize_address(person.address)
            network = self.parsed_network
            return address.version == network.version and address in network
        return False

    @cached_property
    def parsed_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        assert self.network is not None
        return ipaddress.ip_network(self.network)

    def to_wire(self) -> dict[str, object]:
        """As a ``bans`` answer lists it."""
        wire: dict[str, object] = {"id": self.id}
        if self.network is not None:
            wire["address"] = self.network
        else:
            wire["user"] = self.target
        if self.room is not None:
            wire["room"] = self.room
        wire.update(by=self.by, reason=self.reason, since=self.created, until=self.until)
        return wire


def new_sanction(
    kind: Kind, room: str | None, *, by: str, reason: str, now: float, duration: int,
    user: str | None = None, account: str | None = None, network: str | None = None,
) -> Sanction:
    """A sanction not stored yet (``id`` 0) on ``user`` (a name as given; ``account``
    its account key when registered) or on ``network`` (canonical:
    :func:`~trio_chat.protocol.moderation.parse_network`)."""
    assert (user is None) != (network is None)
    return Sanction(
        id=0, kind=kind, room=room,
        target=user if user is not None else str(network),
        name=name_key(user) if user is not None else None,
        account=account,
        network=network,
        reason=reason, by=by, created=now,
        until=now + duration if duration else None,
    )


@dataclass(frozen=True)
class RoomModes:
    registered_only: bool = False
    moderated: bool = False

    def to_wire(self) -> dict[str, bool]:
        return {"registered_only": self.registered_only, "moderated": self.moderated}


@dataclass(frozen=True)
class AuditEntry:
    """One moderation action: who did what to whom, when and why."""

    ts: float
    actor: str
    action: str
    room: str | None
    target: str | None
    reason: str
    detail: str = ""


def denied(text: str) -> ProtocolError:
    return ProtocolError(NOT_PERMITTED, text)


def banned_error(
    sanction: Sanction, *, fatal: bool = False, shown: str | None = None
) -> ProtocolError:
    """``banned`` for ``sanction``: with ``room`` (as ``shown``, else its key) for a
    room's ban; fatal, without ``room``, for a server-wide one."""
    room = shown if shown is not None else sanction.room
    where = "this server" if room is None else room
    why = f": {sanction.reason}" if sanction.reason else ""
    fields: dict[str, object] = {} if room is None else {"room": room}
    fields.update(until=sanction.until, reason=sanction.reason)
    return ProtocolError(BANNED, f"you are banned from {where}{why}", fatal=fatal,
                         fields=fields)


def muted_error(sanction: Sanction) -> ProtocolError:
    where = "on this server" if sanction.room is None else f"in {sanction.room}"
    why = f": {sanction.reason}" if sanction.reason else ""
    return ProtocolError(
        MUTED, f"you are muted {where}{why}",
        fields={"until": sanction.until, "reason": sanction.reason},
    )


@dataclass
class _Index:
    """:attr:`Moderation.sanctions` by what they hold for: a name key, an account key,
    an address range (by kind, IP version, prefix length and network number; with
    the prefix lengths in use, so a lookup masks an address once per length)."""

    by_name: dict[tuple[Kind, str], list[Sanction]] = field(default_factory=dict)
    by_account: dict[tuple[Kind, str], list[Sanction]] = field(default_factory=dict)
    by_network: dict[tuple[Kind, int, int, int], list[Sanction]] = field(default_factory=dict)
    prefixes: dict[Kind, list[tuple[int, int]]] = field(default_factory=dict)


@dataclass
class Moderation:
    """Every ban, mute, role and mode of one server (or cluster), in memory.

    ``admins`` are account keys: the ``--admin`` names and the accounts store's admins.
    ``creators`` says which rooms were created by an account (their first op).
    """

    admins: set[str] = field(default_factory=set)
    sanctions: dict[tuple[Kind, int], Sanction] = field(default_factory=dict)
    ops: dict[str, set[str]] = field(default_factory=dict)
    modes: dict[str, RoomModes] = field(default_factory=dict)
    voiced: dict[str, set[str]] = field(default_factory=dict)
    #: The sanctions indexed for :meth:`matching`; None: to be built (after a change).
    _index: _Index | None = field(default=None, init=False, repr=False, compare=False)

    # -- roles -----------------------------------------------------------------
    def is_admin(self, person: Person) -> bool:
        return person.account is not None and person.account in self.admins

    def is_op(self, person: Person, room: str) -> bool:
        return person.account is not None and person.account in self.ops.get(room, ())

    def rank(self, person: Person, room: str | None) -> Rank:
        if self.is_admin(person):
            return Rank.ADMIN
        if room is not None and self.is_op(person, room):
            return Rank.OP
        return Rank.MEMBER

    def has_ops(self, room: str) -> bool:
        return bool(self.ops.get(room))

    def is_voiced(self, person: Person, room: str) -> bool:
        return person.key in self.voiced.get(room, ())

    # -- sanctions -------------------------------------------------------------
    def matching(
        self, kind: Kind, person: Person, room: str | None, now: float
    ) -> Iterator[Sanction]:
        """Active sanctions of ``kind`` on ``person`` in ``room`` (server-wide ones
        first, then the room's; ``room`` None: server-wide only). Looked up in an
        index (by name, by account, by address range), not scanned: this runs at
        every chat and join, with up to :data:`MAX_SANCTIONS` held."""
        index = self._index if self._index is not None else self._build_index()
        found: dict[int, Sanction] = {}
        for sanction in index.by_name.get((kind, person.key), ()):
            found[id(sanction)] = sanction
        if person.account is not None:
            for sanction in index.by_account.get((kind, person.account), ()):
                found[id(sanction)] = sanction
        if person.address is not None and index.prefixes.get(kind):
            address = normalize_address(person.address)
            number = int(address)
            for version, prefix in index.prefixes[kind]:
                if version != address.version:
                    continue
                bits = 32 if version == 4 else 128
                masked = number >> (bits - prefix) << (bits - prefix) if prefix else 0
                for sanction in index.by_network.get((kind, version, prefix, masked), ()):
                    found[id(sanction)] = sanction
        for sanction in sorted(found.values(), key=lambda s: (s.room is not None, s.id)):
            if sanction.room in (None, room) and sanction.active(now):
                yield sanction

    def _build_index(self) -> _Index:
        index = _Index()
        for sanction in self.sanctions.values():
            kind = sanction.kind
            if sanction.name is not None:
                index.by_name.setdefault((kind, sanction.name), []).append(sanction)
            if sanction.account is not None:
                index.by_account.setdefault((kind, sanction.account), []).append(sanction)
            if sanction.network is not None:
                network = sanction.parsed_network
                key = (kind, network.version, network.prefixlen,
                       int(network.network_address))
                index.by_network.setdefault(key, []).append(sanction)
                prefixes = index.prefixes.setdefault(kind, [])
                if (network.version, network.prefixlen) not in prefixes:
                    prefixes.append((network.version, network.prefixlen))
        self._index = index
        return index

    def ban_of(self, person: Person, room: str | None, now: float) -> Sanction | None:
        """The ban that keeps ``person`` out of ``room`` (None: out of the server), if
        any. Admins are not kept out of rooms; a server-wide ban holds for them too
        unless it names their account (an admin is unbanned by another admin)."""
        for sanction in self.matching("ban", person, room, now):
            if sanction.room is not None and self.is_admin(person):
                continue
            return sanction
        return None

    def address_ban(self, address: IPAddress, now: float) -> Sanction | None:
        """A server-wide ban on the range ``address`` is in: refused at accept."""
        probe = Person("", None, address)
        for sanction in self.matching("ban", probe, None, now):
            if sanction.network is not None:
                return sanction
        return None

    def mute_of(self, person: Person, room: str | None, now: float) -> Sanction | None:
        if self.is_admin(person):
            return None
        return next(iter(self.matching("mute", person, room, now)), None)

    def find(
        self, kind: Kind, room: str | None, *, name: str | None = None,
        network: str | None = None, now: float,
    ) -> list[Sanction]:
        """The active sanctions an ``unban``/``unmute`` of this target lifts."""
        found = []
        for sanction in self.sanctions.values():
            if sanction.kind != kind or sanction.room != room or not sanction.active(now):
                continue
            by_name = name is not None and sanction.name == name
            if by_name or (network is not None and sanction.network == network):
                found.append(sanction)
        return found

    def listing(self, kind: Kind, room: str | None, now: float) -> list[Sanction]:
        """Active sanctions of one room (or the server-wide ones), oldest first."""
        return sorted(
            (s for s in self.sanctions.values()
             if s.kind == kind and s.room == room and s.active(now)),
            key=lambda s: s.id,
        )

    def expired(self, now: float) -> list[Sanction]:
        return [s for s in self.sanctions.values() if not s.active(now)]

    # -- applying changes (the store calls these after it has written them) ----
    def add(self, sanction: Sanction) -> None:
        self.sanctions[sanction.kind, sanction.id] = sanction
        self._index = None

    def remove(self, kind: Kind, ids: Iterable[int]) -> None:
        for sanction_id in ids:
            self.sanctions.pop((kind, sanction_id), None)
        self._index = None

    def set_op(self, room: str, account: str, on: bool) -> None:
        ops = self.ops.setdefault(room, set())
        if on:
            ops.add(account)
        else:
            ops.discard(account)
            if not ops:
                del self.ops[room]

    def set_voice(self, room: str, name: str, on: bool) -> None:
        voiced = self.voiced.setdefault(room, set())
        if on:
            voiced.add(name)
        else:
            voiced.discard(name)
            if not voiced:
                del self.voiced[room]

    def set_modes(self, room: str, modes: RoomModes) -> None:
        if modes == RoomModes():
            self.modes.pop(room, None)
        else:
            self.modes[room] = modes

    def modes_of(self, room: str) -> RoomModes:
        return self.modes.get(room, RoomModes())

    def forget_room(self, room: str) -> None:
        """A room was removed (it expired): its roles, modes and bans go with it."""
        self.ops.pop(room, None)
        self.voiced.pop(room, None)
        self.modes.pop(room, None)
        for key in [key for key, s in self.sanctions.items() if s.room == room]:
            del self.sanctions[key]
        self._index = None

    # -- the rules -------------------------------------------------------------
    def check_join(self, person: Person, room: str, shown: str, now: float) -> None:
        """May ``person`` enter (or listen to) ``room``? ``banned`` or
        ``not_permitted`` (a registered-only room, for a guest) if not."""
        ban = self.ban_of(person, room, now)
        if ban is not None:
            raise banned_error(ban, shown=shown if ban.room is not None else None,
                               fatal=ban.room is None)
        if self.modes_of(room).registered_only and person.account is None:
            raise denied(f"{shown} is for registered users only: log in to join it")

    def check_speak(self, person: Person, room: str, shown: str, now: float) -> None:
        """May ``person`` speak in ``room``? ``muted`` (a mute, or a moderated room
        without voice) or ``not_permitted`` (a guest in a registered-only room)."""
        if self.is_admin(person):
            return
        mute = self.mute_of(person, room, now)
        if mute is not None:
            raise muted_error(mute)
        modes = self.modes_of(room)
        if modes.registered_only and person.account is None:
            raise denied(f"{shown} is for registered users only: log in to speak there")
        if modes.moderated and not (self.is_op(person, room) or self.is_voiced(person, room)):
            raise ProtocolError(
                MUTED, f"{shown} is moderated: only ops and voiced users speak there",
                fields={"until": None, "reason": "moderated"},
            )

    def check_topic(self, person: Person, room: str, shown: str) -> None:
        """Once a room has ops, only they (and admins) set its topic."""
        if self.has_ops(room) and self.rank(person, room) < Rank.OP:
            raise denied(f"only the ops of {shown} set its topic")

    def check_op(self, actor: Person, room: str | None, shown: str) -> None:
        """Is ``actor`` an op of ``room`` (or an admin)? Server-wide (``room`` None):
        an admin?"""
        if room is None:
            if not self.is_admin(actor):
                raise denied("only server admins act server-wide (give a room)")
        elif self.rank(actor, room) < Rank.OP:
            raise denied(f"only the ops of {shown} (and server admins) may do that")

    def check_over(
        self, actor: Person, target: Person, room: str | None, shown: str, *,
        oneself: bool = False,
    ) -> None:
        """Act on ``target`` (kick, ban, mute, deop...): an op or admin, above the
        target's rank. On oneself only where ``oneself`` says so (an op may deop
        themselves; nobody bans or kicks themselves)."""
        self.check_op(actor, room, shown)
        if actor.key == target.key:
            if not oneself:
                raise denied("not on yourself")
            return
        if self.rank(target, room) >= self.rank(actor, room):
            raise denied(f"{target.name} is an op or admin as well: only a higher rank may")
