"""Every room on a server, and the names of everyone in them.

:class:`Rooms` is what a session talks to: the one registry of names (unique
server-wide, look-alikes included: :func:`~trio_chat.protocol.skeleton`) and of rooms
(by case-insensitive name, shown as first created; ``#lobby`` always exists and has no
owner), and the operations of the protocol on them: joining and renaming, entering
and parting rooms, chat, direct messages, ``who``, ``rooms``, topics. A connection
holds one name and one bounded queue (:class:`~.room.Member`) and may be in many rooms
(at most ``--max-rooms-per-connection``); each :class:`~.room.Room` fans out to its
own members only.

The v1 protocol is this with ``#lobby`` wherever a room is not named: ``join`` with a
name enters ``#lobby``, ``chat`` and ``who`` without a room mean ``#lobby``. The
methods here take the same defaults (:meth:`Rooms.join`, :meth:`Rooms.say`,
:meth:`Rooms.who`), so code and tests written for the one room read as before.

Rooms are bounded: ``--max-rooms`` on the server, a rate of creation per address
(``--room-create-rate``, :class:`~.addresses.ConnectThrottle`), and a room with no
members for ``--room-expiry`` is removed with its history (:meth:`Rooms.run_expiry`).
Each room's notices are coalesced on its own (:meth:`Rooms.run_notices` sends every
room's summaries from one task).

A connection that has not joined may *listen* to ``#lobby`` (:meth:`Rooms.listen`; the
seed's WebSocket clients do without asking): it gets ``#lobby``'s broadcasts and is no
member. A connection lost without a goodbye keeps its seat for ``--resume-grace``
(:mod:`.seats`): its name, and its place in every room it was in; a join bringing its
``resume`` token takes all of it back (:meth:`Rooms.resume`), with a ``welcome`` and a
replay for each of those rooms, and nobody is told anything.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING

import trio

from .. import protocol
from ..config import Config
from ..history.base import History
from ..protocol import (
    LOBBY,
    LOBBY_KEY,
    NAME_TAKEN,
    NOT_IN_ROOM,
    NOT_JOINED,
    TOO_MANY_ROOMS,
    ProtocolError,
    room_key,
    skeleton,
)
from ..pulse import Pulse
from .addresses import ConnectThrottle
from .delivery import Delivery, LocalDelivery
from .metrics import Metrics
from .moderating import Moderator
from .outbox import Flusher
from .pacing import PACE_SHARE, ReadPacer
from .replays import WRITE_BYTES, ReplayBudget
from .room import LOST, RESUMED, Member, Room
from .seats import Seats

if TYPE_CHECKING:
    from ..accounts.service import Accounts

log = logging.getLogger(__name__)

#: Deliveries per second that join/leave notices may cost before they are coalesced:
#: a room of 100 takes 19 joins at once one by one; a room of 4,000, one each 2 s.
#: (A notice to an idle client costs a whole write, 20-40 us: 2,000/s is ~5% of a core.)
#: The budget is per room.
NOTICE_RATE = 2_000
#: Shortest notice interval, in seconds; in a big room it is members / NOTICE_RATE,
#: so one summary to everyone stays within the rate (10,000 members: 5 s).
NOTICE_INTERVAL = 0.1
#: Rooms a ``rooms`` answer lists at most (the busiest first; ``total`` counts all).
ROOMS_LISTED = 1000
#: Seconds a ``rooms`` answer is reused: one encoding a second however many ask.
LISTING_AGE = 1.0
#: What ``not_joined`` says to a connection without a name (at nc, or in JSON).
PICK_A_NAME = 'pick a name first: /nick NAME (or {"type":"join","user":NAME})'
#: Longest time between two looks for expired rooms, in seconds (and at most an
#: eighth of ``--room-expiry``).
EXPIRY_SWEEP = 600.0


def _taken(name: str, holder: str | None, *, elsewhere: bool = False) -> ProtocolError:
    """``name_taken``; for a look-alike (see :func:`protocol.skeleton`), saying of what.
    Names are unique on the whole server: ``elsewhere`` says the holder is not in
    ``#lobby`` (a v1 client would not see it in ``who``)."""
    where = " by someone in another room (names are unique on the server)" if elsewhere else ""
    if holder is None or protocol.name_key(holder) == protocol.name_key(name):
        return ProtocolError(NAME_TAKEN, f"name '{name}' is taken{where}")
    return ProtocolError(
        NAME_TAKEN, f"name '{name}' is taken{where}: it looks like '{holder}'"
    )


def _trio_now() -> float:
    return trio.current_time()


class Rooms:
    """Every room of one server, the names in use, and what a session may do with them
    (see the module doc)."""

    def __init__(
        self,
        delivery: Delivery | None = None,
        *,
        config: Config | None = None,
        clock: Callable[[], str] = protocol.timestamp,
        notice_rate: float = NOTICE_RATE,
        notice_interval: float = NOTICE_INTERVAL,
        max_text: int | None = None,
        metrics: Metrics | None = None,
        replays: ReplayBudget | None = None,
        now: Callable[[], float] = _trio_now,
        resume_grace: float | None = None,
        moderation: Moderator | None = None,
    ) -> None:
        # Without a config (tests, tools), nothing is resumable unless asked.
        if resume_grace is None:
            resume_grace = config.resume_grace if config is not None else 0.0
        config = config if config is not None else Config()
        self.config = config
        #: The longest chat text the sessions accept (``--max-text``), told in ``welcome``.
        self.max_text = max_text if max_text is not None else config.max_text
        #: What this server counts (read on a /metrics scrape).
        self.metrics = metrics if metrics is not None else Metrics()
        #: Replay chunks all members' writers may hold at once (:mod:`.replays`).
        self.replays = replays if replays is not None else ReplayBudget()
        #: The timestamp of a new message or notice.
        self.clock = clock
        #: Trio's clock (expiry, and the rate of room creation per address).
        self.now = now
        self.notice_rate = notice_rate
        self.notice_interval = notice_interval
        self.pacer = ReadPacer()
        #: The write-through fast path of every member's outbox (:mod:`.outbox`); its
        #: task runs while ``serve`` does.
        self.flusher = Flusher(
            WRITE_BYTES, self.metrics, gather=max(1, config.queue_size // PACE_SHARE)
        )
        #: Where sessions start their writer tasks while the server runs (a nursery
        #: from before the first connection until after the last); None: each session
        #: opens its own (a handler run on its own, as in tests). Server-wide, so that
        #: an idle connection holds no nursery (memory per connection, issue 20).
        self.writers: trio.Nursery | None = None
        self.closed = False
        self.delivery = delivery if delivery is not None else LocalDelivery()
        self._users: dict[str, Member] = {}  # skeleton of the name -> member, join order
        self._rooms: dict[str, Room] = {}  # key -> room, in the order they were created
        #: Members evicted by a broadcast, whose leaving is still to be announced.
        self.evicted: deque[Member] = deque()
        self._evicting = False
        #: True while run_notices() runs: notices past the budget are coalesced.
        self.coalescing = False
        self._schedule: list[tuple[float, int, Room]] = []  # (when, seq, room): summaries
        self._order = count()
        self._pending = Pulse()
        self._listing: tuple[float, str] | None = None  # (when built, the rooms answer)
        rate = config.room_create_rate  # per minute
        self._creations = (
            ConnectThrottle(rate / 60, config.room_create_burst, self.now) if rate > 0 else None
        )
        #: Resume tokens, and the seats held for their grace (``--resume-grace``).
        self.seats = Seats(resume_grace)
        self.delivery.bind(self)
        self.seats.margin = self.delivery.hold_margin
        #: The server's accounts (:mod:`trio_chat.accounts`); None: no accounts here.
        self.accounts: Accounts | None = None
        self.lobby = self._seat_stored()
        #: Bans, mutes, ops and modes (:mod:`.moderating`): the database's on a server,
        #: an in-memory one for a Rooms made without.
        self.moderation = moderation if moderation is not None else Moderator(self)

    def _seat_stored(self) -> Room:
        """``#lobby``, then the rooms the history kept from the last run (their
        expiry counting from when they were last used then)."""
        history = self.delivery.history
        stored = {room_key(room.name): room for room in
                  (history.stored_rooms if history is not None else [])}
        kept = stored.pop(LOBBY_KEY, None)
        lobby = self._add_room(LOBBY, topic=kept.topic if kept is not None else "")
        if kept is None:
            self.delivery.room_saved(lobby)
        if stored:
            now, wall = self.now(), time.time()
            for room in stored.values():
                idle = max(0.0, wall - room.active)
                self._add_room(room.name, topic=room.topic, active=now - idle)
        return lobby

    def _add_room(self, name: str, *, topic: str = "", active: float = 0.0) -> Room:
        history = self.delivery.history
        room = Room(self, name, log=history.log(name) if history is not None else None,
                    topic=topic, active=active)
        self._rooms[room.key] = room
        return room

    # ------------------------------------------------------------ the server

    def close(self) -> None:
        """Stop all room traffic (server shutdown): no more broadcasts or leave notices,
        which with every client leaving at once would be quadratic. The rooms that have
        members are saved as used now (their expiry counts from the stop)."""
        if self.closed:
            return
        self.closed = True
        for room in self._rooms.values():
            if len(room) and not room.lobby:
                room.active = self.now()
                self.delivery.room_saved(room)

    @property
    def history(self) -> History | None:
        """Where replays are planned from (the delivery's)."""
        return self.delivery.history

    def __len__(self) -> int:
        """Named connections on this server."""
        return len(self._users)

    @property
    def online(self) -> int:
        """Users online: this server's, and the other servers' with ``--redis``."""
        return len(self._users) + self.delivery.other_count()

    def room(self, name: str) -> Room | None:
        """The room called ``name`` (in any case), if it exists."""
        return self._rooms.get(room_key(name))

    @property
    def all(self) -> list[Room]:
        """Every room, in the order they were created (``#lobby`` first)."""
        return list(self._rooms.values())

    def user(self, name: str) -> Member | None:
        """The connection called ``name`` (the same name in any case or width:
        :func:`protocol.name_key`), if any; a look-alike is not that user."""
        member = self._users.get(skeleton(name))
        if member is None or member.name is None:
            return None
        if protocol.name_key(member.name) != protocol.name_key(name):
            return None
        return member

    @property
    def named(self) -> list[Member]:
        """Every connection with a name on this server (held seats too), in join order."""
        return list(self._users.values())

    @property
    def user_names(self) -> list[str]:
        """Every name in use on this server, in the order taken."""
        return [m.name for m in self._users.values() if m.name is not None]

    def holds(self, name: str) -> bool:
        """A member here has this name (or one that looks like it)."""
        return skeleton(name) in self._users

    def holder(self, name: str) -> Member | None:
        """The member here whose name is ``name`` or looks like it."""
        return self._users.get(skeleton(name))

    def connections(self, name: str) -> list[Member]:
        """Every connection here called ``name``: the member, and the further
        connections of its account (:meth:`Member.mirrors`)."""
        member = self.user(name)
        return [] if member is None else [member, *member.mirrors]

    # ------------------------------------------------------------ v1: #lobby

    @property
    def names(self) -> list[str]:
        """Who is in ``#lobby`` on this server, in join order."""
        return self.lobby.names

    @property
    def count(self) -> int:
        """Members of ``#lobby``: this server's, and the other servers' if shared."""
        return self.lobby.count

    def who(self, room: str = LOBBY) -> str:
        """The answer to ``who`` for ``room`` (an empty list for a room that does not
        exist: nobody is in it)."""
        found = self.room(room)
        if found is None:
            return protocol.users("[]", 0, room=room)
        return found.who()

    # ------------------------------------------------------------ names

    async def claim(self, name: str) -> None:
        """Before a join under ``name``: reserve it wherever else members may hold it
        (other servers: raises ``name_taken``). Follow with :meth:`unclaim` whether or
        not the join happened."""
        key = skeleton(name)
        if key in self._users:
            return  # a local holder: join() decides
        if not await self.delivery.claim(name):
            # Held on another server: say so if the holder is not in #lobby there (a v1
            # client would not see it in who), as far as this server knows.
            lobby = self.delivery.other_names(LOBBY_KEY)
            raise _taken(name, None, elsewhere=all(skeleton(n) != key for n in lobby))

    async def prepare(self, room: str) -> None:
        """Before a join that enters ``room``: what the delivery needs first (maybe a
        Redis round trip: see :meth:`Delivery.prepare`)."""
        await self.delivery.prepare(room)

    def unclaim(self, name: str) -> None:
        """Release a claimed name if no member here holds it (the join failed)."""
        if skeleton(name) not in self._users:
            self.delivery.release(name)

    def _check_name(self, member: Member, name: str) -> None:
        key = skeleton(name)
        holder = self._users.get(key)
        if holder is not None and holder is not member:
            raise _taken(name, holder.name, elsewhere=LOBBY_KEY not in holder.rooms)
        if key == skeleton(protocol.SYSTEM_USER):
            raise _taken(name, protocol.SYSTEM_USER)

    def _take_name(self, member: Member, name: str, *, resumable: bool = True) -> None:
        """Give ``member`` the name (checked): a first name (with a resume token unless
        not ``resumable``), or a rename announced in every room it is in (with a fresh
        token: the welcomes of the rename carry it)."""
        old = member.name
        if old is not None:
            if old == name:
                return
            del self._users[skeleton(old)]
        member.name = name
        self._users[skeleton(name)] = member
        if old is None:
            if resumable:
                self.seats.issue(member)
            log.info(
                "join %s from %s (%d online)", name, member.peer, self.online,
                extra={"event": "join", "user": name, "peer": member.peer,
                       "online": self.online},
            )
            self.delivery.joined(name)
            return
        log.info("rename %s -> %s", old, name)
        self.delivery.renamed(old, name)
        # A held seat renamed (a clash found after a Redis outage) keeps its token.
        if member.token is not None and not member.held:
            self.seats.issue(member)
        for room in list(member.rooms.values()):
            room.renamed(member, old)
        if not member.rooms:  # in no room: it still learns its new name
            member.deliver(protocol.welcome(name, "[]", 0, self.max_text, member.token))

    def _mirror(self, member: Member, holder: Member, since: int | None) -> None:
        """Seat ``member`` as another connection of ``holder``'s account: the same
        name and rooms, no notice; a welcome (no resume token: it has its login
        token) and replay of each of the rooms, then everything ``holder`` gets."""
        if member.name is not None:
            self.leave(member)  # a guest logging in: its guest name goes
            member.name = None
        self.lobby.unlisten(member)
        member.name = holder.name
        member.primary = holder
        member.rooms = holder.rooms  # one set of rooms for the account, shared
        holder.mirrors.append(member)
        log.info(
            "join %s from %s (another connection of the account)", member.name, member.peer,
            extra={"event": "join", "user": member.name, "peer": member.peer,
                   "online": self.online},
        )
        for room in list(holder.rooms.values()):
            room.replay_to(member, since)

    def _unmirror(self, member: Member) -> bool:
        """A connection of an account logged in more than once goes: silently, the
        name and rooms staying with the others (the next in line takes its place).
        False if ``member`` is not one of several."""
        primary = member.primary
        if primary is not None:
            primary.mirrors.remove(member)
            member.primary = None
            member.rooms = {}
        elif member.mirrors and member.name is not None:
            heir, *rest = member.mirrors
            member.mirrors = []
            heir.primary = None
            heir.mirrors = rest
            for mirror in rest:
                mirror.primary = heir
            self.seats.forget(member)
            self._users[skeleton(member.name)] = heir  # its place in the join order
            rooms = member.rooms
            for room in list(rooms.values()):
                room.replace(member, heir)
            heir.rooms = rooms
            member.rooms = {}
        else:
            return False
        log.info("%s closed one of its connections", member.name,
                 extra={"event": "leave", "user": member.name, "peer": member.peer})
        return True

    def rename(self, name: str, new: str) -> None:
        """The server renames the member called ``name`` (a clash found after a Redis
        outage): a new ``welcome`` and a ``rename`` notice in every room it is in.
        ``new`` must be valid and free (claimed)."""
        member = self._users.get(skeleton(name))
        if member is not None and member.name == name:
            self._check_name(member, new)
            self._take_name(member, new)

    # ------------------------------------------------------------ joining

    def join(
        self, member: Member, name: str | None = None, since: int | None = None, *,
        room: str | None = None, welcome: bool = True, resumable: bool = True,
        wanted: str | None = None,
    ) -> Room | None:
        """A ``join``: take ``name`` (a first name, or a rename), then enter ``room``;
        a first join without a room enters ``#lobby``, a rename without one enters
        nothing. Returns the room entered, if any.

        ``welcome=False`` (neither a welcome nor a replay) is for seed-style clients
        that never asked to join: they would print a ``welcome`` as a chat line from
        nobody. ``resumable=False``: no ``resume`` token (a person at ``nc`` does not
        resume). ``wanted``: the name a seed-style join asked for, when ``name`` is a
        variant of it (that client cannot rename): it is told so in a ``system`` line
        first. Everything is checked before anything changes: a join that is refused
        (``name_taken``, ``too_many_rooms``...) leaves the connection as it was. A
        listener that joins stops listening (and, entering ``#lobby`` without
        ``since``, gets no replay: it was sent everything already).
        """
        first = member.name is None
        if name is None and first:
            raise ProtocolError(NOT_JOINED, PICK_A_NAME)
        if name is not None:
            self.moderation.check_name(member, name)  # banned server-wide: fatal
        holder = self._users.get(skeleton(name)) if name is not None else None
        if (holder is not None and holder is not member and member.account is not None
                and holder.account == member.account):
            # Another connection of the account: it mirrors the one there already.
            self._mirror(member, holder, since)
            if room is None or room_key(room) in holder.rooms:
                return None
            return self.enter(holder, room, since, welcome=welcome)
        target = room if room is not None else (LOBBY if first else None)
        if name is not None:
            self._check_name(member, name)
        if target is not None and room_key(target) not in member.rooms:
            self._check_entry(member, target, name)
        if name is not None:
            # A seed-style join (no welcome) never sees a token: it cannot resume.
            self._take_name(member, name, resumable=resumable and welcome)
        listened = self.lobby.unlisten(member)
        if target is None:
            return None
        return self._enter(member, target, since, welcome=welcome,
                           listened=listened and room_key(target) == LOBBY_KEY, wanted=wanted)

    def enter(
        self, member: Member, name: str, since: int | None = None, *, welcome: bool = True
    ) -> Room:
        """Enter the room ``name`` (creating it if new): its welcome, replay and join
        notice. A member already in it gets its welcome and replay again (a resync;
        nc's ``/join`` to switch rooms), without a notice."""
        if room_key(name) not in member.rooms:
            self._check_entry(member, name)
        return self._enter(member, name, since, welcome=welcome)

    def _enter(
        self, member: Member, name: str, since: int | None, *, welcome: bool,
        listened: bool = False, wanted: str | None = None,
    ) -> Room:
        """:meth:`enter`, once :meth:`_check_entry` said yes."""
        key = room_key(name)
        room = self._rooms.get(key)
        if room is not None and key in member.rooms:
            room.replay_to(member, since)
            return room
        if room is None:
            room = self._create(name, member)
        room.add(member, since, welcome=welcome, listened=listened, wanted=wanted)
        return room

    def _check_entry(self, member: Member, name: str, as_name: str | None = None) -> None:
        """Raise if ``member`` (taking the name ``as_name``, if given) may not enter
        ``name`` now: banned from it, a guest at a ``registered_only`` room, in too many
        rooms, or a new room that cannot be created."""
        self.moderation.check_entry(member, name, as_name)
        if len(member.rooms) >= self.config.max_rooms_per_connection:
            raise ProtocolError(
                TOO_MANY_ROOMS,
                f"you are in {len(member.rooms)} rooms, the most a connection may be in:"
                " part one first",
            )
        key = room_key(name)
        if key in self._rooms:
            return
        if len(self._rooms) >= self.config.max_rooms:
            raise ProtocolError(
                TOO_MANY_ROOMS, f"this server has {len(self._rooms)} rooms, the most it "
                "keeps: join one of them (send rooms for the list)"
            )
        if self._creations is not None and not self._creations.admit(member.host):
            raise ProtocolError(
                TOO_MANY_ROOMS, "your address created rooms too fast: try again in a "
                "minute, or join one that exists"
            )

    def _create(self, name: str, member: Member) -> Room:
        room = self._add_room(name, active=self.now())
        self._listing = None
        self.delivery.room_saved(room)
        self.moderation.created(room, member)
        log.info("room %s created by %s", name, member.name,
                 extra={"event": "room", "room": name, "user": member.name,
                        "peer": member.peer})
        return room

    def part(self, member: Member, name: str) -> Room:
        """Leave the room ``name``; ``not_in_room`` if ``member`` is not in it."""
        room = member.rooms.get(room_key(name))
        if room is None:
            raise ProtocolError(NOT_IN_ROOM, f"you are not in {name}")
        room.remove(member, parting=True)
        return room

    def leave(self, member: Member, *, hold: bool = False) -> None:
        """``member`` is leaving the server: out of every room it is in (each told),
        and its name is free; a listener goes silently. ``hold``: its connection was
        lost, not closed on purpose, so its seat is kept for a resume (:mod:`.seats`)
        if it can be: nobody is told yet (and a seat already held stays so)."""
        if member.held:
            return
        if self.lobby.unlisten(member):
            return
        if self._unmirror(member):
            return
        name = member.name
        if name is None or self._users.get(skeleton(name)) is not member:
            return
        if hold and not self.closed and self.seats.hold(member):
            log.info(
                "hold %s for %gs (%s)", name, self.seats.grace, member.evicted or "closed",
                extra={"event": "hold", "user": name, "peer": member.peer},
            )
            self.delivery.held(name, member.token or "", self.seats.grace)
            return
        self.seats.forget(member)
        del self._users[skeleton(name)]
        rooms = list(member.rooms.values())
        for room in rooms:
            room.remove(member)
        if self.closed:
            return  # the cluster forgets this server's members all at once
        self.delivery.left(name)
        log.info(
            "leave %s%s (%d online)",
            name,
            f" ({member.evicted})" if member.evicted else "",
            self.online,
            extra={
                "event": "leave",
                "user": name,
                "peer": member.peer,
                "reason": member.evicted,
                "online": self.online,
            },
        )

    def settle(self) -> None:
        """Announce the leaving of the members a broadcast evicted. Each leave notice
        is a broadcast that may evict more members: a loop, not recursion, however
        many are full at once."""
        if self._evicting:
            return  # an outer broadcast is already announcing the evictions
        self._evicting = True
        try:
            while self.evicted:
                # A lost one (its queue overflowed; or already gone, its session not
                # yet ended) is held for a resume, as its session's own leave would.
                member = self.evicted.popleft()
                self.leave(member, hold=member.evicted in LOST)
        finally:
            self._evicting = False

    # ------------------------------------------------------------ listeners and resumes

    def listen(self, member: Member) -> None:
        """Make a connection that has not joined a listener of ``#lobby``: from now on
        it gets every broadcast there (chat and notices), as members do, without being
        one."""
        if member.joined or member.listening or member.evicted is not None:
            return
        self.moderation.check_listen(member)
        self.lobby.listen(member)

    @property
    def listeners(self) -> int:
        """Listeners on this server."""
        return self.lobby.listeners

    def resume(self, member: Member, token: str, name: str, since: int | None) -> bool:
        """Seat ``member`` in the place of the seat ``token`` belongs to, if that seat
        is here and called ``name`` (or a look-alike: the same skeleton): its name and
        every room it was in, each with a ``welcome`` and a replay (after ``since``:
        ids are one sequence across rooms, so the newest id the client saw anywhere
        does for all of them). False (nothing done) otherwise. No notice: for everyone
        else the member never left. A seat whose connection is still open (its loss
        not noticed yet) is taken over, and that connection closed (``resumed``)."""
        seat = self.seats.find(token)
        if seat is None or seat is member or seat.name is None or member.joined:
            return False
        try:
            self.moderation.check_name(member, seat.name)
        except ProtocolError:
            return False  # banned meanwhile: the join that follows says so
        if skeleton(seat.name) != skeleton(name):
            return False
        key = skeleton(seat.name)
        if self._users.get(key) is not seat:
            return False
        held = seat.held
        self.seats.forget(seat)
        if not held:
            seat.evict(RESUMED)  # its session ends; it is no longer the seat's member
        member.account = seat.account  # a logged-in seat stays logged in
        rooms = list(seat.rooms.values())
        for room in rooms:
            room.replace(seat, member)
        # The account's other connections mirror the member now, and share its rooms.
        member.mirrors, seat.mirrors = seat.mirrors, []
        for mirror in member.mirrors:
            mirror.primary = member
            mirror.rooms = member.rooms
        self._seat(member, seat.name, since, rooms)
        self.delivery.resumed(seat.name, token, held=held)
        return True

    async def take_seat(
        self, member: Member, token: str, name: str, since: int | None
    ) -> bool:
        """:meth:`resume`, or, if the seat is on another server, take it from there
        (the delivery moves its name and rooms to this server): False when neither (an
        unknown or expired token: the join is an ordinary one)."""
        if self.resume(member, token, name, since):
            return True
        try:
            self.moderation.check_name(member, name)
        except ProtocolError:
            return False  # banned: the join that follows says so
        if not self.seats.enabled:
            return False
        moved = await self.delivery.take_seat(token, name)
        if moved is None:
            return False
        moved_name, room_names = moved
        if member.joined or member.evicted is not None or skeleton(moved_name) in self._users:
            # Gone meanwhile, or the name is held here after all: the seat leaves.
            log.info("resume of %s from another server came too late; it leaves",
                     moved_name)
            self.delivery.left(moved_name)
            return False
        rooms: list[Room] = []
        for room_name in room_names:
            await self.delivery.prepare(room_name)
            room = self._rooms.get(room_key(room_name))
            if room is None and len(self._rooms) < self.config.max_rooms:
                room = self._create(room_name, member)
            if room is not None and len(rooms) < self.config.max_rooms_per_connection:
                rooms.append(room)
        for room in rooms:
            room.enter_quietly(member, moved_name)
        self._seat(member, moved_name, since, rooms)
        return True

    def _seat(self, member: Member, name: str, since: int | None, rooms: list[Room]) -> None:
        """Seat ``member`` under ``name`` (already its seat's, and in ``rooms``
        already) with no notice: a fresh token, and each room's welcome and replay."""
        self.lobby.unlisten(member)
        member.name = name
        self._users[skeleton(name)] = member  # in its place in the join order
        log.info(
            "resume %s from %s (%d online)", name, member.peer, self.online,
            extra={"event": "resume", "user": name, "peer": member.peer,
                   "online": self.online},
        )
        self.seats.issue(member)
        for room in rooms:
            room.replay_to(member, since)
        if not rooms:  # in no room: it still learns it is back, and its new token
            member.deliver(protocol.welcome(name, "[]", 0, self.max_text, member.token))

    def moved_away(self, name: str) -> None:
        """A seat of this server was taken back on another server (cluster mode): it
        goes from every room without a notice, and its connection, if still open, is
        closed."""
        key = skeleton(name)
        seat = self._users.get(key)
        if seat is None or seat.name != name:
            return
        del self._users[key]
        for room in list(seat.rooms.values()):
            room.drop(seat)
        held = seat.held
        self.seats.forget(seat)
        if not held:
            seat.evict(RESUMED)
        log.info("%s resumed on another server", name)

    async def run_seats(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Let held seats leave when their grace is up, until cancelled. Without this
        task running (``serve`` starts it), no seat is held: a lost connection leaves
        at once."""
        await self.seats.run(self._expire, task_status=task_status)

    def _expire(self, member: Member) -> None:
        """A held seat's grace is up: it leaves, announced as usual in every room."""
        log.info("%s did not come back within %gs", member.name, self.seats.grace)
        self.leave(member)

    # ------------------------------------------------------------ saying things

    def _in(self, member: Member, name: str) -> Room:
        room = member.rooms.get(LOBBY_KEY if name is LOBBY else room_key(name))
        if room is None:
            raise ProtocolError(NOT_IN_ROOM, f"you are not in {name}: join it first")
        return room

    async def wait_writable(self) -> None:
        """Wait until :meth:`say` (or :meth:`direct`) can hand a message on
        (backpressure on the one sender calling this; the rooms go on)."""
        await self.delivery.wait_writable()

    def say(self, member: Member, text: str, room: str = LOBBY) -> None:
        """Send a chat message under the member's own name to a room it is in,
        through the delivery. Raises ``trio.WouldBlock`` if the store is full (await
        :meth:`wait_writable` first)."""
        assert member.name is not None
        target = self._in(member, room)
        self.moderation.check_speak(member, target)
        if self.closed:
            return  # shutting down: neither stored nor broadcast
        log.debug("chat %s in %s: %s", member.name, target.name, text)
        self.delivery.publish(target, member.name, text, self.clock())

    def direct(self, member: Member, to: str, text: str) -> None:
        """A direct message from ``member`` to the user called ``to``, through the
        delivery (``no_such_user`` if nobody has that name)."""
        if member.name is None:
            raise ProtocolError(NOT_JOINED, PICK_A_NAME)
        self.moderation.check_direct(member)
        if self.closed:
            return
        log.debug("msg %s -> %s: %s", member.name, to, text)
        self.delivery.direct(member, to, text, self.clock())
        self.metrics.direct_messages += 1

    def topic(self, member: Member, name: str, topic: str) -> None:
        """Set the topic of a room ``member`` is in (any member may, until rooms have
        ops)."""
        assert member.name is not None
        room = self._in(member, name)
        self.moderation.check_topic(member, room)
        if self.closed:
            return
        room.set_topic(member.name, topic)
        self._listing = None

    def forget_listing(self) -> None:
        """The ``rooms`` answer is out of date (a topic set on another server)."""
        self._listing = None

    def remote_room(self, name: str) -> Room | None:
        """The room called ``name``, created here if it is new (another server's member
        entered it), unless this server keeps ``--max-rooms`` already."""
        room = self._rooms.get(room_key(name))
        if room is None and len(self._rooms) < self.config.max_rooms:
            room = self._add_room(name, active=self.now())
            self._listing = None
        return room

    def list_rooms(self) -> str:
        """The answer to ``rooms``: the busiest :data:`ROOMS_LISTED` rooms (then by
        name), rebuilt at most once per :data:`LISTING_AGE` however many ask, so a
        server of ten thousand rooms encodes it once a second at most, and clients that
        ask and do not read share one copy."""
        now = self.now()
        if self._listing is not None and now - self._listing[0] < LISTING_AGE:
            return self._listing[1]
        rooms = heapq.nsmallest(
            ROOMS_LISTED, self._rooms.values(), key=lambda r: (-r.count, r.key)
        )
        answer = protocol.rooms_list(
            [protocol.room_entry(r.name, r.count, r.topic) for r in rooms], len(self._rooms)
        )
        self._listing = (now, answer)
        return answer

    # ------------------------------------------------------------ the background tasks

    def summary_at(self, room: Room, when: float) -> None:
        """``room`` has coalesced notices: send its summary at ``when``."""
        if not room.summary_due:
            room.summary_due = True
            heapq.heappush(self._schedule, (when, next(self._order), room))
            self._pending.fire()

    async def run_notices(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Send every room's coalesced join/leave notices as one ``summary`` per
        interval, until cancelled. Without this task running, every notice goes out on
        its own."""
        self.coalescing = True
        schedule = self._schedule
        try:
            task_status.started()
            while True:
                while not schedule:
                    await self._pending.wait()
                when = schedule[0][0]
                if trio.current_time() < when:
                    with trio.move_on_at(when):  # or an earlier summary is scheduled
                        await self._pending.wait()
                    continue
                _, _, room = heapq.heappop(schedule)
                room.summary_due = False
                if self._rooms.get(room.key) is room:
                    room.send_summary()
        finally:
            self.coalescing = False

    async def run_expiry(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Remove the rooms nobody has been in for ``--room-expiry`` (a room with no
        members gets no messages either), with their history, until cancelled.
        ``#lobby`` stays."""
        expiry = self.config.room_expiry
        sweep = min(EXPIRY_SWEEP, expiry / 8)
        task_status.started()
        while True:
            await trio.sleep(sweep)
            self.expire()

    def expire(self) -> list[Room]:
        """Remove the rooms unused for ``--room-expiry`` now; returns them."""
        now = self.now()
        expiry = self.config.room_expiry
        gone = [room for room in self._rooms.values()
                if not room.lobby and not room.count and now - room.active >= expiry]
        for room in gone:
            del self._rooms[room.key]
            self.delivery.room_removed(room)
            self.moderation.expired(room)
            log.info("room %s removed: nobody in it for %.0f s", room.name, now - room.active,
                     extra={"event": "room_removed", "room": room.name})
        if gone:
            self._listing = None
        return gone
