"""Moderation on a running server: the rooms ask it before a join, a listen, a chat or
a topic, and sessions hand it the moderation messages (``kick``, ``ban``, ``op``...).

The rules are :mod:`trio_chat.moderation.model`'s (pure); the state and its store
are :class:`~trio_chat.moderation.service.ModerationService`'s. This module is what
they mean for live connections: a ban takes the banned out of the room at once (a
server-wide one closes their connections with a fatal ``banned``), a mode takes guest
listeners off ``#lobby``, and each action is announced with a ``system`` notice. A
change made to the database by ``trio-chat admin`` is applied the same way when the
service notices it (:meth:`Moderator.run`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

import trio

from .. import protocol
from ..moderation.model import (
    MAX_ROLES_PER_ROOM,
    MAX_SANCTIONS,
    MAX_SANCTIONS_PER_ROOM,
    AuditEntry,
    IPAddress,
    Kind,
    Moderation,
    Person,
    Rank,
    RoomModes,
    Sanction,
    banned_error,
    denied,
    muted_error,
    new_sanction,
)
from ..moderation.service import WATCH_INTERVAL, ModerationService
from ..protocol import LOBBY, LOBBY_KEY, NO_SUCH_USER, NOT_JOINED, ProtocolError, room_key
from ..protocol.errors import NOT_PERMITTED
from ..protocol.moderation import ListBans, Mode, Moderate, ModerationEvent
from ..protocol.names import name_key

if TYPE_CHECKING:
    from .room import Member, Room
    from .rooms import Rooms

log = logging.getLogger(__name__)

#: Background writes queued at most (a room created by an account makes it op; an
#: expired room forgets its roles): past it they are done in place of queueing.
MAX_QUEUED_WRITES = 1024
#: Bans (and mutes) a ``bans`` answer lists at most: the newest; ``bans_total`` and
#: ``mutes_total`` count them all.
LISTED = 1000


@lru_cache(maxsize=1024)
def _address(host: str) -> IPAddress | None:
    """``host`` as an address (None: not one). Asked for every chat message a member
    sends (:meth:`Moderator.check_speak`): parsed once per host, not per message, and
    the addresses are immutable."""
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _until_text(until: float | None) -> str:
    if until is None:
        return ""
    return " until " + datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Moderator:
    """Moderation for one server's rooms (see the module doc)."""

    def __init__(
        self, rooms: Rooms, service: ModerationService | None = None, *,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self.rooms = rooms
        self.watch_interval = watch_interval
        self.service = service if service is not None else ModerationService()
        send, self._writes = trio.open_memory_channel[Callable[[], Awaitable[None]]](
            MAX_QUEUED_WRITES
        )
        self._queue = send

    @property
    def state(self) -> Moderation:
        return self.service.state

    def now(self) -> float:
        return self.service.now()

    def person(self, member: Member, name: str | None = None) -> Person:
        """``member`` as the rules see it (``name``: the name it is taking). Its
        account is compared by key: the account's name, NFKC case-folded."""
        account = name_key(member.account) if member.account is not None else None
        return Person(name or member.name or "", account, _address(member.host))

    def role(self, member: Member, room: Room) -> str | None:
        """``admin`` or ``op`` when ``member`` may moderate ``room`` (its ``welcome``
        says so, for a client's controls); None otherwise."""
        if member.account is None:
            return None
        rank = self.state.rank(self.person(member), room.key)
        return "admin" if rank is Rank.ADMIN else "op" if rank is Rank.OP else None

    # ------------------------------------------------------------ checks

    def check_accept(self, host: str) -> ProtocolError | None:
        """A new connection from ``host``: ``banned`` (fatal) if a server-wide ban
        covers its address."""
        address = _address(host)
        if address is None:
            return None
        ban = self.state.address_ban(address, self.now())
        return banned_error(ban, fatal=True) if ban is not None else None

    def check_name(self, member: Member, name: str) -> None:
        """Taking ``name`` (a join or a rename): a fatal ``banned`` if a server-wide ban
        holds for that name, the connection's account or its address."""
        ban = self.state.ban_of(self.person(member, name), None, self.now())
        if ban is not None:
            raise banned_error(ban, fatal=True)

    def check_entry(self, member: Member, room: str, name: str | None = None) -> None:
        """Entering ``room`` (``name``: the name the member is taking, if any)."""
        self.state.check_join(self.person(member, name), room_key(room), room, self.now())

    def check_listen(self, member: Member) -> None:
        """Listening to ``#lobby``: its bans (by address) and modes hold for listeners."""
        self.state.check_join(self.person(member), LOBBY_KEY, LOBBY, self.now())

    def check_speak(self, member: Member, room: Room) -> None:
        self.state.check_speak(self.person(member), room.key, room.name, self.now())

    def check_direct(self, member: Member) -> None:
        """A direct message: not from someone muted server-wide."""
        mute = self.state.mute_of(self.person(member), None, self.now())
        if mute is not None:
            raise muted_error(mute)

    def check_topic(self, member: Member, room: Room) -> None:
        self.state.check_topic(self.person(member), room.key, room.name)

    def created(self, room: Room, member: Member) -> None:
        """A room was created by ``member``: an account becomes its first op."""
        if member.account is None or room.lobby:
            return
        account = name_key(member.account)
        self.state.set_op(room.key, account, True)
        entry = AuditEntry(self.now(), member.name or account, "op", room.key, member.name,
                           "", "created the room")
        self._later(lambda: self.service.set_op(room.key, account, True, entry))

    def expired(self, room: Room) -> None:
        """A room was removed: its roles, modes and bans go with it."""
        self.state.forget_room(room.key)
        self._later(lambda: self.service.forget_room(room.key))

    def _later(self, write: Callable[[], Awaitable[None]]) -> None:
        """Queue the write of a change already made in memory; until it is written, a
        reload keeps the state (:meth:`ModerationService.changing`)."""
        service = self.service
        service.begin_change()

        async def written() -> None:
            try:
                await write()
            finally:
                service.end_change()

        try:
            self._queue.send_nowait(written)
        except trio.WouldBlock:
            service.end_change()
            log.warning("moderation: too many writes queued; one is dropped")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The queued writes, and applying changes other processes make to the
        database, until cancelled."""
        async with trio.open_nursery() as nursery:
            try:
                await self.service.reload()
            except Exception as error:  # the watch tries again
                log.warning("moderation: cannot load the store: %r", error)
            nursery.start_soon(partial(self.service.watch, self._reloaded,
                                       interval=self.watch_interval))
            task_status.started()
            async for write in self._writes:
                try:
                    await write()
                except Exception:
                    log.exception("moderation: a write failed")

    async def _reloaded(self, state: Moderation) -> None:
        """Apply the database's state to every live connection (bans, modes)."""
        self.enforce()

    # ------------------------------------------------------------ applying

    def enforce(self, only: Sanction | None = None) -> None:
        """Take out of each room (or off the server) whoever a ban now holds for:
        every ban, or ``only`` the new one. Guest listeners leave a ``registered_only``
        ``#lobby``."""
        state, now, rooms = self.state, self.now(), self.rooms
        server_wide = only is None or only.room is None
        if server_wide:
            for member in [*rooms.named, *rooms.lobby.listening]:
                person = self.person(member)
                if only is None:
                    ban = state.ban_of(person, None, now)
                else:
                    ban = only if only.applies_to(person) else None
                if ban is not None:
                    self._halt(member, ban)
        if only is None:
            targets = rooms.all
        else:
            found = rooms.room(only.room) if only.room is not None else None
            targets = [found] if found is not None else []
        for room in targets:
            self._ban_room(room, only)
        lobby = rooms.lobby
        for member in lobby.listening:
            try:
                self.check_listen(member)
            except ProtocolError as error:
                lobby.unlisten(member)
                member.deliver(error.to_message())

    def _ban_room(self, room: Room, only: Sanction | None) -> list[Member]:
        """Expel from ``room`` its members a room ban holds for (``only`` that one, or
        any); the notice goes to each and to the room. Returns who was expelled."""
        state, now = self.state, self.now()
        expelled: dict[Sanction, list[Member]] = {}
        for member in room.members:
            person = self.person(member)
            if only is None:
                ban = state.ban_of(person, room.key, now)
            else:
                ban = only if only.applies_to(person) and not state.is_admin(person) else None
            if ban is not None and ban.room is not None:
                expelled.setdefault(ban, []).append(member)
        for ban, members in expelled.items():
            self._expel(room, members, "ban", ban.by, ban.reason, until=ban.until,
                        sanction=ban)
        return [m for members in expelled.values() for m in members]

    def _halt(self, member: Member, ban: Sanction) -> None:
        """Close ``member``'s connection (and its account's other connections) with a
        fatal ``banned``; a seat held for a resume is let go."""
        for connection in [*member.mirrors, member]:
            if connection.held:
                self.rooms.seats.forget(connection)
                self.rooms.leave(connection)
            else:
                connection.halt(banned_error(ban, fatal=True))

    def _notice(
        self, room: Room | None, event: str, target: str, text: str, **extra: Any
    ) -> str:
        count = room.count if room is not None else 0
        return protocol.system(event, target, text, count, self.rooms.clock(),
                               room=room.name if room is not None else None, **extra)

    def _expel(
        self, room: Room, members: list[Member], event: str, by: str, reason: str, *,
        until: float | None = None, sanction: Sanction | None = None,
    ) -> None:
        """Take ``members`` out of ``room``; each, and the room, gets the notice."""
        for member in members:
            room.expel(member)
        for member in members:
            assert member.name is not None
            line = self._announcement(room, event, member.name, by, reason, until=until)
            member.deliver(line)
            room.broadcast(line)

    def _announcement(
        self, room: Room | None, event: str, target: str, by: str, reason: str, *,
        until: float | None = None,
    ) -> str:
        where = room.name if room is not None else "the server"
        verbs = {
            "kick": f"{target} was kicked from {where} by {by}",
            "ban": f"{target} was banned from {where} by {by}{_until_text(until)}",
            "unban": f"{by} lifted the ban on {target} in {where}",
            "mute": f"{target} was muted in {where} by {by}{_until_text(until)}",
            "unmute": f"{by} unmuted {target} in {where}",
            "op": f"{by} made {target} an op of {where}",
            "deop": f"{by} took op from {target} in {where}",
            "voice": f"{by} gave {target} voice in {where}",
            "devoice": f"{by} took voice from {target} in {where}",
        }
        text = verbs[event] + (f": {reason}" if reason else "")
        extra: dict[str, Any] = {"by": by, "reason": reason}
        if event in ("ban", "mute"):
            extra["until"] = until
        return self._notice(room, event, target, text, **extra)

    def kicked(self, room_key: str, name: str, by: str, reason: str) -> None:
        """``by`` on another server kicked ``name`` from the room keyed ``room_key``
        (:meth:`~trio_chat.server.delivery.Delivery.kick_elsewhere`): expel them here,
        the notice to them and to this server's members of the room. Nothing if they
        left meanwhile."""
        room = self.rooms.room(room_key)
        if room is None:
            return
        inside = [m for m in self.rooms.connections(name) if m in room]
        if inside:
            self._expel(room, inside, "kick", by, reason)

    def _tell(self, actor: Member, room: Room | None, line: str) -> None:
        """``line`` to ``room`` (when there is one), and to ``actor`` if it is not in
        it."""
        if room is not None:
            room.broadcast(line)
        if room is None or actor not in room:
            actor.deliver(line)

    # ------------------------------------------------------------ messages

    async def handle(self, member: Member, event: ModerationEvent, room: str | None) -> None:
        """Act on a moderation message from ``member``; ``room`` is the room it means
        (None: server-wide). Raises the error to answer with (``not_permitted`` too when
        the store fails: the action did not happen)."""
        try:
            await self._handle(member, event, room)
        except ProtocolError:
            raise
        except Exception:
            log.exception("moderation: %s failed", type(event).__name__)
            raise ProtocolError(NOT_PERMITTED, "moderation is unavailable now: the store "
                                "failed; try again") from None

    async def _handle(self, member: Member, event: ModerationEvent, room: str | None) -> None:
        found = self.rooms.room(room) if room is not None else None
        shown = found.name if found is not None else (room or "the server")
        key = room_key(room) if room is not None else None
        if isinstance(event, Mode) and event.registered_only is None and event.moderated is None:
            modes = self.state.modes_of(key or LOBBY_KEY)
            member.deliver(protocol.encode({"type": "mode", "room": shown, **modes.to_wire()}))
            return
        if member.name is None:
            raise ProtocolError(NOT_JOINED, 'moderation needs a name: {"type":"join",...}')
        actor = self.person(member)
        if room is not None and found is None:
            raise ProtocolError(protocol.NOT_IN_ROOM, f"there is no room {room}")
        if isinstance(event, ListBans):
            self.state.check_op(actor, key, shown)
            self._list(member, key, shown)
        elif isinstance(event, Mode):
            assert found is not None and key is not None
            await self._mode(member, actor, found, event)
        else:
            await self._moderate(member, actor, found, key, shown, event)

    def _list(self, member: Member, key: str | None, shown: str) -> None:
        now = self.now()
        answer: dict[str, Any] = {"type": "bans"}
        if key is not None:
            answer["room"] = shown
        kinds: tuple[tuple[Kind, str], ...] = (("ban", "bans"), ("mute", "mutes"))
        for kind, field in kinds:
            listing = self.state.listing(kind, key, now)
            # The newest LISTED of each (10,000 would be a line of megabytes).
            answer[field] = [s.to_wire() for s in listing[-LISTED:]]
            for entry in answer[field]:
                entry.pop("room", None)
            answer[f"{field}_total"] = len(listing)
        member.deliver(protocol.encode(answer))

    async def _mode(self, member: Member, actor: Person, room: Room, event: Mode) -> None:
        self.state.check_op(actor, room.key, room.name)
        old = self.state.modes_of(room.key)
        new = RoomModes(
            old.registered_only if event.registered_only is None else event.registered_only,
            old.moderated if event.moderated is None else event.moderated,
        )
        flags = " ".join(f"{'+' if on else '-'}{name}" for name, on in new.to_wire().items())
        await self.service.set_modes(room.key, new, AuditEntry(
            self.now(), actor.name, "mode", room.key, None, "", flags))
        assert member.name is not None
        text = f"{member.name} set the modes of {room.name}: {flags}"
        self._tell(member, room, self._notice(room, "mode", member.name, text,
                                              by=member.name, **new.to_wire()))
        if room.lobby and new.registered_only:
            self.enforce()

    def _target(self, event: Moderate) -> tuple[Person | None, list[Member]]:
        """Who ``event`` is about (None for an address) and their live connections."""
        if event.user is None:
            return None, []
        online = self.rooms.connections(event.user)  # the member, then its mirrors
        if online:
            return self.person(online[0]), online
        # Not here: its account, if the name is registered (a logged-in user's name is
        # the account's name).
        return Person(event.user, account=self._account_of(event.user)), []

    def _account_of(self, name: str) -> str | None:
        accounts = self.rooms.accounts
        holder = accounts.registered(name) if accounts is not None else None
        if holder is None or name_key(holder) != name_key(name):
            return None  # not registered (a look-alike of an account is not it)
        return name_key(holder)

    async def _moderate(
        self, member: Member, actor: Person, room: Room | None, key: str | None, shown: str,
        event: Moderate,
    ) -> None:
        state, now, action = self.state, self.now(), event.action
        target, online = self._target(event)
        if target is not None:
            state.check_over(actor, target, key, shown, oneself=action == "deop")
        else:
            state.check_op(actor, key, shown)
        assert member.name is not None
        by = member.name
        what = target.name if target is not None else event.address or ""
        entry = AuditEntry(now, by, action, key, what, event.reason)
        if action == "kick":
            assert room is not None
            inside = [m for m in online if m in room]
            # Not here: on another server of the cluster (the name as held there)?
            elsewhere = None if inside else next(
                (other for other in self.rooms.delivery.other_names(room.key)
                 if name_key(other) == name_key(what)), None)
            if not inside and elsewhere is None:
                raise ProtocolError(NO_SUCH_USER, f"nobody called {what} is in {shown}")
            if elsewhere is not None:
                await self.service.record(replace(entry, target=elsewhere))
                # That server expels them, with the notice to them and to its members
                # of the room; this server tells its own.
                if not await self.rooms.delivery.kick_elsewhere(room, elsewhere, by,
                                                                event.reason):
                    raise ProtocolError(NO_SUCH_USER, f"nobody called {what} is in {shown}")
                self._tell(member, room, self._announcement(room, "kick", elsewhere, by,
                                                            event.reason))
                return
            await self.service.record(entry)
            self._expel(room, inside, "kick", by, event.reason)
            if member not in room and member not in inside:
                member.deliver(self._announcement(room, "kick", what, by, event.reason))
        elif action in ("ban", "mute"):
            kind: Kind = "ban" if action == "ban" else "mute"
            if len(state.sanctions) >= MAX_SANCTIONS:
                raise denied(f"this server holds {MAX_SANCTIONS} bans and mutes, its most: "
                             "lift some first")
            if key is not None and sum(
                1 for s in state.sanctions.values() if s.room == key
            ) >= MAX_SANCTIONS_PER_ROOM:
                raise denied(f"{shown} has {MAX_SANCTIONS_PER_ROOM} bans and mutes, its "
                             "most: lift some first")
            sanction = new_sanction(
                kind, key, by=by, reason=event.reason, now=now, duration=event.duration,
                user=target.name if target is not None else None,
                account=target.account if target is not None else None,
                network=event.address,
            )
            entry = replace(entry, detail=f"{event.duration}s" if event.duration
                            else "until lifted")
            stored = await self.service.add(sanction, entry)
            line = self._announcement(room, kind, what, by, event.reason, until=stored.until)
            if kind == "mute":
                self._tell(member, room, line)
                if room is None and online and online[0] is not member:
                    online[0].deliver(line)  # a server-wide mute: its target is told
            elif room is not None:
                expelled = self._ban_room(room, stored)
                if not expelled:
                    room.broadcast(line)
                if member not in room and member not in expelled:
                    member.deliver(line)
            else:
                member.deliver(line)
                self.enforce(stored)
        elif action in ("unban", "unmute"):
            kind = "ban" if action == "unban" else "mute"
            lifted = state.find(kind, key, name=target.key if target is not None else None,
                                network=event.address, now=now)
            if not lifted:
                raise ProtocolError(NO_SUCH_USER, f"{what} is not {kind}ned"
                                    f"{'' if key is None else ' in ' + shown}"
                                    if kind == "ban" else f"{what} is not muted"
                                    f"{'' if key is None else ' in ' + shown}")
            await self.service.lift(kind, lifted, entry)
            self._tell(member, room, self._announcement(room, action, lifted[0].target, by, ""))
        elif action in ("op", "deop"):
            assert room is not None and key is not None and target is not None
            account = target.account
            if action == "op" and account is None:
                raise denied(f"{what} is not logged in to an account: only accounts are ops")
            if action == "deop":
                account = target.account
                if account is None or not state.is_op(target, key):
                    raise ProtocolError(NO_SUCH_USER, f"{what} is not an op of {shown}")
            elif len(state.ops.get(key, ())) >= MAX_ROLES_PER_ROOM:
                raise denied(f"{shown} has {MAX_ROLES_PER_ROOM} ops, its most")
            assert account is not None
            await self.service.set_op(key, account, action == "op", entry)
            self._tell(member, room, self._announcement(room, action, what, by, ""))
        elif action in ("voice", "devoice"):
            assert room is not None and key is not None and target is not None
            if action == "voice" and len(state.voiced.get(key, ())) >= MAX_ROLES_PER_ROOM:
                raise denied(f"{shown} has {MAX_ROLES_PER_ROOM} voiced users, its most")
            await self.service.set_voice(key, target.key, action == "voice", entry)
            self._tell(member, room, self._announcement(room, action, what, by, ""))

