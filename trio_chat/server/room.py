"""One room: who is in it, and who gets each of its messages.

Every connection has its own bounded outgoing queue (a :class:`Member`), whatever
rooms it is in. :meth:`Room.broadcast` never awaits a client: it puts one
already-encoded line into the queue of each of *this room's* members with
``send_nowait`` (so a message costs what its room's size costs, not the server's); a
member whose queue is full is evicted (the slow-consumer rule, per connection) and it
leaves every room it was in (:meth:`~.rooms.Rooms.settle`).

Where a chat message goes once the room has it (the store, then a broadcast; or
Redis, then every server's broadcast) is its :class:`~.delivery.Delivery`'s business.
With a history, a joiner's queue gets one :class:`~trio_chat.history.base.Replay`
item right after its ``welcome``.

Join and leave notices go to the room's members, so a crowd arriving at once would
cost members x joins deliveries. While :meth:`~.rooms.Rooms.run_notices` runs
(``serve`` starts it), notices past a budget of deliveries per interval are coalesced
into one ``summary`` notice per interval, per room; a joiner still gets its own
``join`` notice at once.

When several servers share ``#lobby`` (:mod:`trio_chat.cluster`), its
``clients_count``, ``who`` and ``welcome`` count the other servers' members too (the
delivery knows them), and the other servers' joins and leaves are announced here like
local ones (:meth:`Room.remote`).

Two kinds of seat besides the members:

- **listeners** (:meth:`Room.listen`, ``#lobby`` only) get every broadcast of
  ``#lobby``, as members do, without a name: not in ``who`` nor ``clients_count``, no
  notices of their own. They are the seed's clients, which see the room from the
  moment they connect;
- **held seats** (:mod:`.seats`): a member whose connection was lost keeps its seat
  (its name, its place in ``who`` of every room it was in) for ``--resume-grace``
  seconds, silently, for a join that brings back its ``resume`` token
  (:meth:`~.rooms.Rooms.resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .. import protocol
from ..history.base import Replay, RoomLog
from ..protocol import SLOW_CONSUMER, ProtocolError, skeleton
from .outbox import Outbox

if TYPE_CHECKING:
    from .rooms import Rooms

log = logging.getLogger(__name__)

#: Why a member's session ends when a join elsewhere took its seat back with its token
#: (WebSocket close 4009).
RESUMED = "resumed"
#: Eviction reason for a peer that vanished (reset, broken pipe).
GONE = "gone"
#: End reason for a WebSocket peer that did not answer a ping in time.
PING_TIMEOUT = "ping_timeout"
#: End reason for a peer that closed the connection without ``leave``.
CLOSED_BY_PEER = "closed by peer"
#: Reasons a connection ends that lose it rather than end it on purpose: the member's
#: seat is held for a resume (``--resume-grace``). A ``leave``, a shutdown, or a
#: disconnect for misbehaving (flooding, protocol errors) is not one of them. (Here, not
#: in :mod:`.session`, since a broadcast that overflows a queue decides too.)
LOST = frozenset({CLOSED_BY_PEER, GONE, PING_TIMEOUT, SLOW_CONSUMER})


class Member:
    """One connection's seat: its name once it has one, its outgoing queue (one for
    all its rooms), and the rooms it is in."""

    __slots__ = (
        "_on_evict", "account", "batch", "evicted", "halt", "held", "host", "listening",
        "mirrors", "name", "outbox", "peer", "primary", "rooms", "token",
    )

    def __init__(
        self,
        outbox: Outbox,
        *,
        peer: str = "?",
        host: str | None = None,
        on_evict: Callable[[], object] = lambda: None,
    ) -> None:
        self.name: str | None = None
        self.batch = False
        self.peer = peer
        #: Its address, for what is limited per address (creating rooms).
        self.host = host if host is not None else peer
        self.evicted: str | None = None
        #: The rooms it is in (key -> room), in the order it entered them.
        self.rooms: dict[str, Room] = {}
        #: Receiving ``#lobby``'s traffic without a name (:meth:`Room.listen`).
        self.listening = False
        #: Its connection is gone, its seat kept for a resume (:mod:`.seats`).
        self.held = False
        #: The secret that takes this seat back (the last ``welcome``'s ``resume``).
        self.token: str | None = None
        #: The account this connection is logged in to; None for a guest.
        self.account: str | None = None
        #: Further connections logged in to this member's account (a phone beside a
        #: laptop): they get everything it gets (:meth:`deliver`), under its name.
        self.mirrors: list[Member] = []
        #: On such a connection: the member it mirrors (and acts as).
        self.primary: Member | None = None
        #: Ends its connection with a fatal error sent first (a server-wide ban); its
        #: session sets this to its own ``stop`` (the writer drains, then closes).
        self.halt: Callable[[ProtocolError], None] = lambda error: self.evict(error.code)
        self.outbox = outbox
        self._on_evict = on_evict

    @property
    def joined(self) -> bool:
        """It has a name (it may be in no room)."""
        return self.name is not None

    @property
    def queued(self) -> int:
        """Entries waiting in this member's queue now."""
        return len(self.outbox)

    def deliver(self, line: str | Replay) -> bool:
        """Queue one line (or a replay) without waiting; False (and eviction) when the
        queue is full. A held seat takes everything (and keeps nothing): what it misses
        comes back in the replay of its resume."""
        for mirror in self.mirrors:
            # Its account's other connections, also while this one is held: one
            # that is full is evicted on its own.
            mirror.deliver(line)
        if self.held:
            return True
        if self.evicted is not None:
            return False
        outbox = self.outbox
        if outbox.closed:
            # The connection is already on its way out; a held seat has no connection,
            # and what it misses comes back in the replay of its resume.
            return False
        if not outbox.put(line):
            log.debug("%s queue full; evicting", self)
            self.evict(SLOW_CONSUMER)
            return False
        return True

    def evict(self, reason: str) -> None:
        """Mark this member for disconnection; its session does the closing."""
        if self.evicted is None:
            self.evicted = reason
            self.outbox.closed = True  # nothing more goes out but the session's goodbye
            self._on_evict()

    def __repr__(self) -> str:
        return f"<Member {self.name!r} from {self.peer}>"


class Room:
    """One room of the server's :class:`~.rooms.Rooms`: its members (by the skeleton
    of their names, in join order), its topic, its log, its notices."""

    def __init__(
        self, rooms: Rooms, name: str, *, log: RoomLog | None = None, topic: str = "",
        active: float = 0.0,
    ) -> None:
        self.rooms = rooms
        #: The name as the room was first created, and what compares equal to it.
        self.name = name
        self.key = protocol.room_key(name)
        self.lobby = self.key == protocol.LOBBY_KEY
        self.topic = topic
        #: Its history (newest id, the messages in memory); None without a history.
        self.log = log
        #: When it was last used (Trio's clock): when its last member left. A room with
        #: no members for ``--room-expiry`` is removed (not ``#lobby``).
        self.active = active
        self._members: dict[str, Member] = {}  # skeleton of the name -> member, join order
        self._listeners: dict[Member, None] = {}  # an ordered set (#lobby only)
        self._users_json: str | None = None  # names in join order, as JSON
        self._who: tuple[str, str] | None = None  # (_users_json it was built from, answer)
        self._others_version = rooms.delivery.version
        # Notice coalescing (see the module doc; Rooms.run_notices sends the summaries).
        self._window_end = float("-inf")
        self._window_spent = 0
        self._window_budget = 0.0  # deliveries notices may take before window_end
        self._joined = self._left = 0  # coalesced, not yet announced
        #: A summary of this room is due (Rooms keeps it in its schedule).
        self.summary_due = False

    def __len__(self) -> int:
        """Members on this server (the deliveries a broadcast costs)."""
        return len(self._members)

    @property
    def listeners(self) -> int:
        """Listeners on this server (``#lobby`` only has any)."""
        return len(self._listeners)

    def _reach(self) -> int:
        """The deliveries one broadcast costs: members and listeners."""
        return len(self._members) + len(self._listeners)

    def __contains__(self, member: Member) -> bool:
        name = member.name
        return name is not None and self._members.get(skeleton(name)) is member

    def __repr__(self) -> str:
        return f"<Room {self.name} ({len(self)} members)>"

    @property
    def listening(self) -> list[Member]:
        """Its listeners on this server (``#lobby`` only has any)."""
        return list(self._listeners)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._members.values() if m.name is not None]

    @property
    def members(self) -> list[Member]:
        return list(self._members.values())

    @property
    def count(self) -> int:
        """Members in the room: this server's, and (with ``--redis``) the other
        servers'."""
        return len(self._members) + self.rooms.delivery.other_count(self.key)

    def _users(self) -> str:
        """The member names as a JSON array (this server's in join order, then the
        other servers'), cached: joins append to it."""
        delivery = self.rooms.delivery
        if delivery.version != self._others_version:
            self._others_version = delivery.version
            self._users_json = None
        if self._users_json is None:
            self._users_json = protocol.json_array(self.names + delivery.other_names(self.key))
        return self._users_json

    def who(self) -> str:
        """The answer to ``who``, encoded once per change of membership: in a room of
        10,000 it is ~120 KB, and a client that asks again and again while not reading
        must not make the server hold a fresh copy per question."""
        users = self._users()
        if self._who is None or self._who[0] is not users:
            self._who = (users, protocol.users(users, self.count, room=self.name))
        return self._who[1]

    def welcome(
        self, name: str, token: str | None = None, account: str | None = None,
        role: str | None = None,
    ) -> str:
        """The ``welcome`` for a join or a rename: everyone in the room, on every server,
        the token that takes the connection's seat back (``resume``), the account the
        connection is logged in to, and its ``role`` there (op, admin) if any."""
        return protocol.welcome(name, self._users(), self.count, self.rooms.max_text,
                                token, room=self.name, topic=self.topic, account=account,
                                role=role)

    def _welcome_for(self, member: Member, name: str) -> str:
        return self.welcome(name, member.token, member.account,
                            self.rooms.moderation.role(member, self))

    # ------------------------------------------------------------ membership

    def listen(self, member: Member) -> None:
        """Make ``member`` (a connection without a name) a listener: from now on it gets
        every broadcast of this room (chat and notices), as members do, without being
        one."""
        member.listening = True
        self._listeners[member] = None
        log.debug("%s listens", member)

    def unlisten(self, member: Member) -> bool:
        """``member`` stops listening (it joins, or goes); True if it was listening."""
        if not member.listening:
            return False
        member.listening = False
        self._listeners.pop(member, None)
        return True

    def add(
        self, member: Member, since: int | None = None, *, welcome: bool = True,
        listened: bool = False, wanted: str | None = None,
    ) -> None:
        """Seat ``member`` (named, not in the room yet): its welcome and replay (unless
        ``welcome`` is False: a seed-style client that never asked to join), then the
        join notice. ``listened``: it was this room's listener until now, so without
        ``since`` its replay is empty (it was sent everything as it happened).
        ``wanted``: the name a seed-style join asked for, when it got a variant (that
        client cannot rename): it is told so before the join notice."""
        name = member.name
        assert name is not None
        delivery = self.rooms.delivery
        self._members[skeleton(name)] = member
        member.rooms[self.key] = self
        if len(self._members) == 1:
            delivery.occupied(self)
        delivery.entered(name, self)
        if self._users_json is not None and not delivery.other_count(self.key):
            # The newest member is last in join order.
            self._users_json = protocol.json_array_append(self._users_json, name)
        else:
            self._users_json = None
        if welcome:
            self.replay_to(member, since, caught_up=listened and since is None)
        if wanted is not None and wanted != name:
            member.deliver(protocol.system(
                "variant", name, f"the name {wanted} is taken: you are {name}", self.count,
                self.rooms.clock(), room=self.name, wanted=wanted,
            ))
        text = f"{name} joined the chat" if self.lobby else f"{name} joined {self.name}"
        if not self._notice("join", name, text):
            # Coalesced for the others; the joiner still sees its own join.
            member.deliver(protocol.system("join", name, text, self.count,
                                           self.rooms.clock(), room=self.name))

    def replay_to(self, member: Member, since: int | None, *, caught_up: bool = False) -> None:
        """Queue the room's ``welcome`` for ``member`` (with its resume token), then its
        replay (a join, a resume, or a join of a room it is in already: a resync).
        ``caught_up``: it has been sent everything up to the newest id (a listener: each
        message enters the history and is broadcast in one step), so nothing."""
        assert member.name is not None
        member.deliver(self._welcome_for(member, member.name))
        history = self.rooms.history
        if history is not None and self.log is not None:
            if caught_up:
                member.deliver(history.caught_up(self.log))
            else:
                member.deliver(history.replay(since, self.log))

    def replace(self, seat: Member, member: Member) -> None:
        """``member`` takes ``seat``'s place (a resume), with no notice: the same name
        in the same place of the join order."""
        assert seat.name is not None
        key = skeleton(seat.name)
        if self._members.get(key) is seat:
            self._members[key] = member
        seat.rooms.pop(self.key, None)
        member.rooms[self.key] = self

    def enter_quietly(self, member: Member, name: str) -> None:
        """Seat ``member`` under ``name`` with no notice (a seat taken over from
        another server: for everyone it never left)."""
        self._members[skeleton(name)] = member
        member.rooms[self.key] = self
        self._users_json = None
        if len(self._members) == 1:
            self.rooms.delivery.occupied(self)

    def drop(self, member: Member) -> None:
        """Take ``member`` out with no notice (its seat was taken back on another
        server)."""
        name = member.name
        if name is not None and self._members.get(skeleton(name)) is member:
            del self._members[skeleton(name)]
            self._users_json = None
            if not self._members:
                self.rooms.delivery.vacated(self)
        member.rooms.pop(self.key, None)

    def expel(self, member: Member) -> bool:
        """Take ``member`` out with no leave notice: a moderator removed it (kick, ban),
        and the notice that says so is the moderator's to send. False if it was not in."""
        name = member.name
        if name is None or self._members.get(skeleton(name)) is not member:
            return False
        self.drop(member)
        if not self.rooms.closed:
            self.rooms.delivery.parted(name, self)  # the other servers' view of the room
        if not self._members and not self.lobby:
            self.active = self.rooms.now()
            self.rooms.delivery.room_saved(self)  # when it was last used, for its expiry
        return True

    def remove(self, member: Member, *, parting: bool = False) -> bool:
        """Take ``member`` out (it parted, or is leaving the server) and tell the
        others (and, when it ``parting``, itself: its part is done); False if it was
        not in."""
        name = member.name
        if name is None or self._members.get(skeleton(name)) is not member:
            return False
        del self._members[skeleton(name)]
        member.rooms.pop(self.key, None)
        self._users_json = None
        delivery = self.rooms.delivery
        if parting and not self.rooms.closed:
            delivery.parted(name, self)
        if not self._members:
            delivery.vacated(self)
            if not self.lobby:
                self.active = self.rooms.now()
                delivery.room_saved(self)  # when it was last used, for its expiry
        if self.rooms.closed:
            return True  # shutting down: every client leaves at once, quadratic
        text = f"{name} left the chat" if self.lobby else f"{name} left {self.name}"
        self._notice("leave", name, text)
        if parting:
            member.deliver(protocol.system("leave", name, text, self.count,
                                           self.rooms.clock(), room=self.name))
        return True

    def renamed(self, member: Member, old: str) -> None:
        """``member`` (in this room) is now called ``member.name``: it moves to the end
        of the join order, gets a new ``welcome``, and the room a ``rename`` notice."""
        name = member.name
        assert name is not None
        if self._members.get(skeleton(old)) is member:
            del self._members[skeleton(old)]
        self._members[skeleton(name)] = member
        self._users_json = None
        member.deliver(self._welcome_for(member, name))
        self._announce("rename", name, f"{old} is now known as {name}", old=old)

    def set_topic(self, name: str, topic: str) -> None:
        """``name`` (a member) set the topic; everyone in the room is told."""
        self.topic = topic
        self.rooms.delivery.room_saved(self)
        self.rooms.delivery.topic_changed(self, name)
        text = (f"{name} set the topic of {self.name}: {topic}" if topic
                else f"{name} cleared the topic of {self.name}")
        self._announce("topic", name, text, topic=topic)

    # ------------------------------------------------------------ messages

    def broadcast(self, line: str) -> None:
        """Queue ``line`` for every member (and listener); never awaits. Evicts the ones
        that are full."""
        rooms = self.rooms
        if rooms.closed:
            return
        members = list(self._members.values())
        if self._listeners:
            members += self._listeners
        evicted = rooms.evicted
        before = len(evicted)
        for member in members:
            if not member.deliver(line):
                evicted.append(member)
        metrics = rooms.metrics
        metrics.broadcasts += 1
        failed = len(evicted) - before
        metrics.deliveries += len(members) - failed
        if failed:  # a full queue is the deepest a queue gets (its writers never see it)
            metrics.queue_depth(max(member.queued for member in list(evicted)[before:]))
            rooms.settle()

    def remote(self, event: str, name: str, old: str | None = None) -> None:
        """Announce a join, leave, rename or topic on another server (the delivery
        has already counted it; for a topic, ``old`` is the new topic)."""
        if self.rooms.closed:
            return
        where = "the chat" if self.lobby else self.name
        if event == "join":
            self._notice("join", name, f"{name} joined {where}")
        elif event == "leave":
            if not self.count:  # its last member anywhere: expiry counts from now
                self.active = self.rooms.now()
            self._notice("leave", name, f"{name} left {where}")
        elif event == "rename" and old is not None:
            self._announce("rename", name, f"{old} is now known as {name}", old=old)
        elif event == "topic" and old is not None:
            self.topic = old
            self.rooms.forget_listing()
            text = (f"{name} set the topic of {self.name}: {old}" if old
                    else f"{name} cleared the topic of {self.name}")
            self._announce("topic", name, text, topic=old)

    # ------------------------------------------------------------ notices

    def _announce(self, event: str, name: str, text: str, **extra: str) -> None:
        self.rooms.metrics.notices += 1
        self.broadcast(protocol.system(event, name, text, self.count, self.rooms.clock(),
                                       room=self.name, **extra))

    def _notice(self, event: str, name: str, text: str) -> bool:
        """Announce a join or leave now if the interval's budget allows; else count
        it for the next summary. True if it went out on its own."""
        rooms = self.rooms
        if rooms.coalescing:
            now = trio.current_time()
            if now >= self._window_end:
                window = self.window()
                self._window_end = now + window
                # rate x window, exactly: a quiet big room announces one join per window.
                self._window_budget = max(
                    rooms.notice_rate * rooms.notice_interval, self._reach()
                )
                self._window_spent = 0
            cost = self._reach() or 1  # deliveries this notice would take
            if self._window_spent + cost > self._window_budget:
                if event == "join":
                    self._joined += 1
                else:
                    self._left += 1
                rooms.summary_at(self, self._window_end)
                return False
            self._window_spent += cost
        self._announce(event, name, text)
        return True

    def send_summary(self) -> None:
        """The coalesced notices of the interval that just ended, as one ``summary``;
        the next interval starts coalesced too (a steady crowd costs one broadcast per
        interval)."""
        joined, left = self._joined, self._left
        self._joined = self._left = 0
        if joined or left:
            self.rooms.metrics.notices += 1
            self.broadcast(protocol.summary(joined, left, self.count, self.rooms.clock(),
                                            room=self.name))
        self._window_end = trio.current_time() + self.window()
        self._window_spent = 0
        self._window_budget = 0

    def window(self) -> float:
        """This room's notice interval: longer for a big room, so a summary to everyone
        stays within the rate."""
        rooms = self.rooms
        return max(rooms.notice_interval, self._reach() / rooms.notice_rate)
