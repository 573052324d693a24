"""The room: who is in it, and who gets each message.

Every member has its own bounded outgoing channel. :meth:`Room.broadcast` never
awaits a client: it puts one already-encoded line into each queue with
``send_nowait``; a member whose queue is full is evicted (the slow-consumer policy)
and the others see it leave.

Where a chat message goes once the room has it (the store, then a broadcast; or
Redis, then every server's broadcast) is its :class:`~.delivery.Delivery`'s business.
With a history, a joiner's queue gets one :class:`~trio_chat.history.base.Replay`
item right after its ``welcome``.

Join and leave notices go to everyone, so a crowd arriving at once would cost
members x joins deliveries. While :meth:`Room.run_notices` runs (``serve`` starts
it), notices past a budget of deliveries per interval are coalesced into one
``summary`` notice per interval; a joiner still gets its own ``join`` notice at once.

When several servers share the room (:mod:`trio_chat.cluster`), ``clients_count``,
``who`` and ``welcome`` count the other servers' members too (the delivery knows
them), names are claimed through the delivery before a join, and the other servers'
joins and leaves are announced here like local ones (:meth:`Room.remote`).

Two kinds of seat besides the members:

- **listeners** (:meth:`Room.listen`) get every broadcast, as members do, without a
  name: not in ``who`` nor ``clients_count``, no notices of their own. They are the
  seed's clients, which see the room from the moment they connect;
- **held seats** (:mod:`.seats`): a member whose connection was lost keeps its seat
  (its name, its place in ``who``) for ``--resume-grace`` seconds, silently, for a
  join that brings back its ``resume`` token (:meth:`Room.resume`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .. import protocol
from ..history.base import History, Replay
from ..protocol import NAME_TAKEN, SLOW_CONSUMER, ProtocolError, skeleton
from ..pulse import Pulse
from .delivery import Delivery, LocalDelivery
from .metrics import Metrics
from .pacing import ReadPacer
from .replays import ReplayBudget
from .seats import Seats

if TYPE_CHECKING:
    from ..accounts.service import Accounts

log = logging.getLogger(__name__)

#: Deliveries per second that join/leave notices may cost before they are coalesced:
#: a room of 100 takes 19 joins at once one by one; a room of 4,000, one each 2 s.
#: (A notice to an idle client costs a whole write, 20-40 us: 2,000/s is ~5% of a core.)
NOTICE_RATE = 2_000
#: Shortest notice interval, in seconds; in a big room it is members / NOTICE_RATE,
#: so one summary to everyone stays within the rate (10,000 members: 5 s).
NOTICE_INTERVAL = 0.1
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


def _taken(name: str, holder: str | None) -> ProtocolError:
    """``name_taken``; for a look-alike (see :func:`protocol.skeleton`), saying of what."""
    if holder is None or protocol.name_key(holder) == protocol.name_key(name):
        return ProtocolError(NAME_TAKEN, f"name '{name}' is taken")
    return ProtocolError(NAME_TAKEN, f"name '{name}' is taken: it looks like '{holder}'")


class Member:
    """One connection's seat: its name once joined, and its outgoing queue."""

    def __init__(
        self,
        outgoing: trio.MemorySendChannel[str | Replay],
        *,
        peer: str = "?",
        on_evict: Callable[[], object] = lambda: None,
    ) -> None:
        self.name: str | None = None
        self.batch = False
        self.peer = peer
        self.evicted: str | None = None
        #: Receiving the room's traffic without a name (:meth:`Room.listen`).
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
        #: On such a connection: the member it mirrors.
        self.primary: Member | None = None
        self._outgoing = outgoing
        self._on_evict = on_evict

    @property
    def joined(self) -> bool:
        return self.name is not None

    @property
    def queued(self) -> int:
        """Entries waiting in this member's queue now."""
        return self._outgoing.statistics().current_buffer_used

    def deliver(self, line: str | Replay) -> bool:
        """Queue one line (or a replay) without waiting; False (and eviction) when the
        queue is full. A held seat takes everything (and keeps nothing): what it misses
        comes back in the replay of its resume."""
        if self.held:
            return True
        if self.evicted is not None:
            return False
        for mirror in self.mirrors:
            mirror.deliver(line)  # one that is full is evicted on its own
        try:
            self._outgoing.send_nowait(line)
        except trio.WouldBlock:
            log.debug("%s queue full; evicting", self)
            self.evict(SLOW_CONSUMER)
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # The connection is already on its way out; a held seat has no connection,
            # and what it misses comes back in the replay of its resume.
            return self.held
        return True

    def evict(self, reason: str) -> None:
        """Mark this member for disconnection; its session does the closing."""
        if self.evicted is None:
            self.evicted = reason
            self._on_evict()

    def __repr__(self) -> str:
        return f"<Member {self.name!r} from {self.peer}>"


class Room:
    """The one chat room shared by every transport."""

    def __init__(
        self,
        delivery: Delivery | None = None,
        *,
        clock: Callable[[], str] = protocol.timestamp,
        notice_rate: float = NOTICE_RATE,
        notice_interval: float = NOTICE_INTERVAL,
        max_text: int = protocol.MAX_TEXT,
        metrics: Metrics | None = None,
        replays: ReplayBudget | None = None,
        resume_grace: float = 0.0,
    ) -> None:
        #: The longest chat text the sessions accept (``--max-text``), told in ``welcome``.
        self.max_text = max_text
        self._members: dict[str, Member] = {}  # skeleton of the name -> member, join order
        self._listeners: dict[Member, None] = {}  # an ordered set
        #: Resume tokens, and the seats held for their grace (``--resume-grace``).
        self.seats = Seats(resume_grace)
        #: What this room's server counts (read on a /metrics scrape).
        self.metrics = metrics if metrics is not None else Metrics()
        #: Replay chunks all members' writers may hold at once (:mod:`.replays`).
        self.replays = replays if replays is not None else ReplayBudget()
        self._clock = clock
        self.delivery = delivery if delivery is not None else LocalDelivery()
        self.delivery.bind(self)
        self.seats.margin = self.delivery.hold_margin
        self._others_version = self.delivery.version
        self._evicted: deque[Member] = deque()
        self._evicting = False
        self._notice_rate = notice_rate
        self._notice_interval = notice_interval
        self._coalescing = False  # True while run_notices() runs
        self._window_end = float("-inf")
        self._window_spent = 0
        self._window_budget = 0.0  # deliveries notices may take before window_end
        self._joined = self._left = 0  # coalesced, not yet announced
        self._pending = Pulse()
        self._users_json: str | None = None  # names in join order, as JSON
        self._who: tuple[str, str] | None = None  # (_users_json it was built from, answer)
        self.pacer = ReadPacer()
        self.closed = False
        #: The server's accounts (:mod:`trio_chat.accounts`); None: no accounts here.
        self.accounts: Accounts | None = None

    def close(self) -> None:
        """Stop all room traffic (server shutdown): no more broadcasts or leave notices,
        which with every client leaving at once would be quadratic."""
        self.closed = True

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._members.values() if m.name is not None]

    @property
    def history(self) -> History | None:
        """Where replays are planned from (the delivery's)."""
        return self.delivery.history

    @property
    def count(self) -> int:
        """Members in the room: this server's, and the other servers' if shared."""
        return len(self._members) + self.delivery.other_count()

    def _users(self) -> str:
        """The member names as a JSON array (this server's in join order, then the
        other servers'), cached: joins append to it."""
        delivery = self.delivery
        if delivery.version != self._others_version:
            self._others_version = delivery.version
            self._users_json = None
        if self._users_json is None:
            self._users_json = protocol.json_array(self.names + delivery.other_names())
        return self._users_json

    def who(self) -> str:
        """The answer to ``who``, encoded once per change of membership: in a room of
        10,000 it is ~120 KB, and a client that asks again and again while not reading
        must not make the server hold a fresh copy per question."""
        users = self._users()
        if self._who is None or self._who[0] is not users:
            self._who = (users, protocol.users(users, self.count))
        return self._who[1]

    def _welcome(self, name: str, token: str | None = None, account: str | None = None) -> str:
        """The ``welcome`` for a join or a rename: everyone in the room, on every server,
        the token that takes the seat back (``resume``), the account logged in to."""
        return protocol.welcome(name, self._users(), self.count, self.max_text, token, account)

    def __len__(self) -> int:
        """Members on this server (held seats included)."""
        return len(self._members)

    @property
    def listeners(self) -> int:
        """Listeners on this server."""
        return len(self._listeners)

    def _reach(self) -> int:
        """The deliveries one broadcast costs: members and listeners."""
        return len(self._members) + len(self._listeners)

    def listen(self, member: Member) -> None:
        """Make a connection that has not joined a listener: from now on it gets every
        broadcast (chat and notices), as members do, without being one."""
        if member.joined or member.listening or member.evicted is not None:
            return
        member.listening = True
        self._listeners[member] = None
        log.debug("%s listens", member)

    def rename(self, name: str, new: str) -> None:
        """The server renames the member called ``name`` (a clash found after a Redis
        outage): it gets a new ``welcome``, the room a ``rename`` notice. ``new`` must be
        valid and free (claimed)."""
        member = self._members.get(skeleton(name))
        if member is not None and member.name == name:
            self.join(member, new)

    def holds(self, name: str) -> bool:
        """A member here has this name."""
        return skeleton(name) in self._members

    def holder(self, name: str) -> Member | None:
        """The member here whose name is ``name`` or looks like it."""
        return self._members.get(skeleton(name))

    async def claim(self, name: str) -> None:
        """Before a join under ``name``: reserve it wherever else members may hold it
        (other servers sharing the room; raises ``name_taken``). Follow with
        :meth:`unclaim` whether or not the join happened."""
        if skeleton(name) in self._members:
            return  # a local holder: join() decides
        if not await self.delivery.claim(name):
            raise ProtocolError(NAME_TAKEN, f"name '{name}' is taken")

    def unclaim(self, name: str) -> None:
        """Release a claimed name if no member here holds it (the join failed)."""
        if skeleton(name) not in self._members:
            self.delivery.release(name)

    def join(
        self,
        member: Member,
        name: str,
        since: int | None = None,
        *,
        welcome: bool = True,
        resumable: bool = True,
        wanted: str | None = None,
    ) -> None:
        """Seat ``member`` under ``name`` (already validated), or rename it if seated.

        A first join gets its welcome, then the replayed history (after ``since`` if
        given; for a listener without ``since``, what it was not sent as one: nothing).
        ``welcome=False`` (neither) is for seed-style clients that never asked to join:
        they would print a ``welcome`` as a chat line from nobody. ``resumable=False``:
        no ``resume`` token in the welcome (a person at ``nc`` does not resume).
        ``wanted``: the name a seed-style join asked for, when ``name`` is a variant of
        it (that client cannot rename): it is told so in a ``system`` line first.
        """
        key = skeleton(name)
        holder = self._members.get(key)
        if holder is not None and holder is not member:
            if member.account is not None and holder.account == member.account:
                self._mirror(member, holder, since)
                return
            raise _taken(name, holder.name)
        if key == skeleton(protocol.SYSTEM_USER):
            raise _taken(name, protocol.SYSTEM_USER)
        old = member.name
        if old is not None:
            del self._members[skeleton(old)]
            self._users_json = None  # a rename moves the name to the end
        listened = member.listening
        if listened:
            member.listening = False
            del self._listeners[member]
        member.name = name
        self._members[key] = member
        if old is None:
            log.info(
                "join %s from %s (%d online)", name, member.peer, self.count,
                extra={"event": "join", "user": name, "peer": member.peer, "online": self.count},
            )
            if self._users_json is not None and not self.delivery.other_count():
                # The newest member is last in join order.
                self._users_json = protocol.json_array_append(self._users_json, name)
            else:
                self._users_json = None
            self.delivery.joined(name)
            if welcome:
                self._greet(member, since, listened=listened, resumable=resumable)
            if wanted is not None and wanted != name:
                member.deliver(protocol.system(
                    "variant", name, f"the name {wanted} is taken: you are {name}",
                    self.count, self._clock(), wanted=wanted,
                ))
            text = f"{name} joined the chat"
            if not self._notice("join", name, text):
                # Coalesced for the others; the joiner still sees its own join.
                member.deliver(protocol.system("join", name, text, self.count, self._clock()))
        elif old != name:
            log.info("rename %s -> %s", old, name)
            self.delivery.renamed(old, name)
            # A held seat renamed (a clash found after a Redis outage) keeps its token.
            token = member.token
            if token is not None and not member.held:
                token = self.seats.issue(member)
            member.deliver(self._welcome(name, token, member.account))
            self._announce("rename", name, f"{old} is now known as {name}", old=old)

    def _greet(
        self, member: Member, since: int | None, *, listened: bool, resumable: bool
    ) -> None:
        """A joiner's ``welcome`` (with a fresh resume token), then its replay."""
        assert member.name is not None
        token = self.seats.issue(member) if resumable else None
        member.deliver(self._welcome(member.name, token, member.account))
        self._replay(member, since, listened=listened)

    def _replay(self, member: Member, since: int | None, *, listened: bool) -> None:
        history = self.history
        if history is None:
            return
        if listened and since is None:
            # A listener got every broadcast, and each message enters the history and
            # is broadcast in one step (no checkpoint between): it has been sent
            # everything up to the newest id, so its replay is empty.
            member.deliver(history.caught_up())
        else:
            member.deliver(history.replay(since))

    def _mirror(self, member: Member, holder: Member, since: int | None) -> None:
        """Seat ``member`` as another connection of ``holder``'s account: the same
        name, no notice; its own welcome (no resume token: it has its login token) and
        replay, then everything ``holder`` gets."""
        if member.name is not None:
            self.leave(member)  # a guest logging in: its guest name goes
            member.name = None
        listened = member.listening
        if listened:
            member.listening = False
            del self._listeners[member]
        name = holder.name
        assert name is not None
        member.name = name
        member.primary = holder
        holder.mirrors.append(member)
        log.info(
            "join %s from %s (another connection of the account)", name, member.peer,
            extra={"event": "join", "user": name, "peer": member.peer, "online": self.count},
        )
        member.deliver(self._welcome(name, None, member.account))
        self._replay(member, since, listened=listened)

    def connections(self, name: str) -> list[Member]:
        """Every connection here under ``name`` (several for an account logged in more
        than once)."""
        member = self._members.get(skeleton(name))
        if member is None or member.name != name:
            return []
        return [member, *member.mirrors]

    def _unmirror(self, member: Member) -> bool:
        """A connection of an account logged in more than once goes: silently, its
        name staying with the others (the next in line takes its place in the room).
        False if ``member`` is not one of several."""
        primary = member.primary
        if primary is not None:
            primary.mirrors.remove(member)
            member.primary = None
        elif member.mirrors and member.name is not None:
            heir, *rest = member.mirrors
            member.mirrors = []
            heir.primary = None
            heir.mirrors = rest
            for mirror in rest:
                mirror.primary = heir
            self.seats.forget(member)
            self._members[skeleton(member.name)] = heir  # its place in the join order
        else:
            return False
        log.info("%s closed one of its connections", member.name,
                 extra={"event": "leave", "user": member.name, "peer": member.peer})
        return True

    def resume(self, member: Member, token: str, name: str, since: int | None) -> bool:
        """Seat ``member`` in the place of the seat ``token`` belongs to, if that seat
        is here and called ``name`` (or a look-alike: the same skeleton); False (nothing
        done) otherwise. No notice: for everyone else the member never left. A seat
        whose connection is still open (its loss not noticed yet) is taken over, and
        that connection closed (``resumed``)."""
        seat = self.seats.find(token)
        if seat is None or seat is member or seat.name is None or member.joined:
            return False
        if skeleton(seat.name) != skeleton(name):
            return False
        key = skeleton(seat.name)
        if self._members.get(key) is not seat:
            return False
        held = seat.held
        self.seats.forget(seat)
        if not held:
            seat.evict(RESUMED)  # its session ends; it is no longer the seat's member
        member.account = seat.account  # a logged-in seat stays logged in
        self._seat(member, seat.name, since)
        self.delivery.resumed(seat.name, token, held=held)
        return True

    async def take_seat(self, member: Member, token: str, name: str, since: int | None) -> bool:
        """:meth:`resume`, or, if the seat is on another server sharing the room, take
        it from there (the delivery moves its name to this server): False when neither
        (an unknown or expired token: the join is an ordinary one)."""
        if self.resume(member, token, name, since):
            return True
        if not self.seats.enabled:
            return False
        moved = await self.delivery.take_seat(token, name)
        if moved is None:
            return False
        if member.joined or member.evicted is not None or skeleton(moved) in self._members:
            # Gone meanwhile, or the name is held here after all: the seat leaves.
            log.info("resume of %s from another server came too late; it leaves", moved)
            self.delivery.left(moved)
            return False
        self._seat(member, moved, since)
        return True

    def _seat(self, member: Member, name: str, since: int | None) -> None:
        """Seat ``member`` under ``name`` (already its seat's) with no notice."""
        key = skeleton(name)
        if member.listening:
            member.listening = False
            del self._listeners[member]
        member.name = name
        if key not in self._members:
            self._users_json = None
        self._members[key] = member  # in its place in the join order, if it had one
        log.info(
            "resume %s from %s (%d online)", name, member.peer, self.count,
            extra={"event": "resume", "user": name, "peer": member.peer, "online": self.count},
        )
        self._greet(member, since, listened=False, resumable=True)

    def moved_away(self, name: str) -> None:
        """A seat of this server was taken back on another server (cluster mode): it
        goes without a notice, and its connection, if still open, is closed."""
        key = skeleton(name)
        seat = self._members.get(key)
        if seat is None or seat.name != name:
            return
        del self._members[key]
        self._users_json = None
        held = seat.held
        self.seats.forget(seat)
        if not held:
            seat.evict(RESUMED)
        log.info("%s resumed on another server", name)

    def leave(self, member: Member, *, hold: bool = False) -> None:
        """Remove ``member`` if seated, and tell everyone who stays; a listener goes
        silently. ``hold``: its connection was lost, not closed on purpose, so its seat
        is kept for a resume (:mod:`.seats`) if it can be: nobody is told yet (and a
        seat already held stays so)."""
        if member.held:
            return
        if member.listening:
            member.listening = False
            del self._listeners[member]
            return
        if self._unmirror(member):
            return
        name = member.name
        if name is None or self._members.get(skeleton(name)) is not member:
            return
        if hold and not self.closed and self.seats.hold(member):
            log.info(
                "hold %s for %gs (%s)", name, self.seats.grace, member.evicted or "closed",
                extra={"event": "hold", "user": name, "peer": member.peer},
            )
            self.delivery.held(name, member.token or "", self.seats.grace)
            return
        self.seats.forget(member)
        del self._members[skeleton(name)]
        self._users_json = None
        if self.closed:
            return  # the cluster forgets this server's members all at once
        self.delivery.left(name)
        log.info(
            "leave %s%s (%d online)",
            name,
            f" ({member.evicted})" if member.evicted else "",
            self.count,
            extra={
                "event": "leave",
                "user": name,
                "peer": member.peer,
                "reason": member.evicted,
                "online": self.count,
            },
        )
        self._notice("leave", name, f"{name} left the chat")

    async def wait_writable(self) -> None:
        """Wait until :meth:`say` can hand a message on (backpressure on the one sender
        calling this; the room goes on)."""
        await self.delivery.wait_writable()

    def say(self, member: Member, text: str) -> None:
        """Send a chat message under the member's own name to everyone, through the
        delivery. Raises ``trio.WouldBlock`` if the store is full (await
        :meth:`wait_writable` first)."""
        assert member.name is not None
        if self.closed:
            return  # shutting down: neither stored nor broadcast
        log.debug("chat %s: %s", member.name, text)
        self.delivery.publish(member.name, text, self._clock())

    def broadcast(self, line: str) -> None:
        """Queue ``line`` for every member and listener; never awaits. Evicts the ones
        that are full."""
        if self.closed:
            return
        members = list(self._members.values())
        if self._listeners:
            members += self._listeners

        evicted = self._evicted
        before = len(evicted)
        for member in members:
            if not member.deliver(line):
                evicted.append(member)
        metrics = self.metrics
        metrics.broadcasts += 1
        failed = len(evicted) - before
        metrics.deliveries += len(members) - failed
        if failed:  # a full queue is the deepest a queue gets (its writers never see it)
            metrics.queue_depth(max(member.queued for member in list(evicted)[before:]))
        if self._evicting:
            return  # an outer broadcast is already announcing the evictions
        self._evicting = True
        try:
            # Each leave notice is a broadcast that may evict more members: a loop,
            # not recursion, however many are full at once. A lost one (its queue
            # overflowed; or already gone, its session not yet ended) is held for a
            # resume, as its session's own leave would hold it.
            while self._evicted:
                member = self._evicted.popleft()
                self.leave(member, hold=member.evicted in LOST)
        finally:
            self._evicting = False

    def remote(self, event: str, name: str, old: str | None = None) -> None:
        """Announce a join, leave or rename on another server (the delivery has
        already counted it)."""
        if self.closed:
            return
        if event == "join":
            self._notice("join", name, f"{name} joined the chat")
        elif event == "leave":
            self._notice("leave", name, f"{name} left the chat")
        elif event == "rename" and old is not None:
            self._announce("rename", name, f"{old} is now known as {name}", old=old)

    def _announce(self, event: str, name: str, text: str, **extra: str) -> None:
        self.metrics.notices += 1
        self.broadcast(protocol.system(event, name, text, self.count, self._clock(), **extra))

    def _notice(self, event: str, name: str, text: str) -> bool:
        """Announce a join or leave now if the interval's budget allows; else count
        it for the next summary. True if it went out on its own."""
        if self._coalescing:
            now = trio.current_time()
            if now >= self._window_end:
                window = self._window()
                self._window_end = now + window
                # rate x window, exactly: a quiet big room announces one join per window.
                self._window_budget = max(
                    self._notice_rate * self._notice_interval, self._reach()
                )
                self._window_spent = 0
            cost = self._reach() or 1  # deliveries this notice would take
            if self._window_spent + cost > self._window_budget:
                if event == "join":
                    self._joined += 1
                else:
                    self._left += 1
                self._pending.fire()
                return False
            self._window_spent += cost
        self._announce(event, name, text)
        return True

    async def run_notices(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Send coalesced join/leave notices as one ``summary`` per interval, until
        cancelled. Without this task running, every notice goes out on its own."""
        self._coalescing = True
        try:
            task_status.started()
            while True:
                while not (self._joined or self._left):
                    await self._pending.wait()
                await trio.sleep_until(self._window_end)
                joined, left = self._joined, self._left
                self._joined = self._left = 0
                self.metrics.notices += 1
                self.broadcast(protocol.summary(joined, left, self.count, self._clock()))
                # Still busy: the next interval starts coalesced too, so a steady
                # crowd costs one broadcast per interval.
                self._window_end = trio.current_time() + self._window()
                self._window_spent = self._window_budget = 0
        finally:
            self._coalescing = False

    def _window(self) -> float:
        return max(self._notice_interval, self._reach() / self._notice_rate)

    async def run_seats(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Let held seats leave when their grace is up, until cancelled. Without this
        task running (``serve`` starts it), no seat is held: a lost connection leaves
        at once."""
        await self.seats.run(self._expire, task_status=task_status)

    def _expire(self, member: Member) -> None:
        """A held seat's grace is up: it leaves, announced as usual."""
        log.info("%s did not come back within %gs", member.name, self.seats.grace)
        self.leave(member)
