"""The room: who is in it, and who gets each message.

Every member has its own bounded outgoing channel. :meth:`Room.broadcast` never
awaits a client: it puts one already-encoded line into each queue with
``send_nowait``; a member whose queue is full is evicted (the slow-consumer policy)
and the others see it leave.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import trio

from . import protocol
from .protocol import NAME_TAKEN, SLOW_CONSUMER, ProtocolError

log = logging.getLogger(__name__)


class Member:
    """One connection's seat: its name once joined, and its outgoing queue."""

    def __init__(
        self,
        outgoing: trio.MemorySendChannel[str],
        *,
        peer: str = "?",
        on_evict: Callable[[], object] = lambda: None,
    ) -> None:
        self.name: str | None = None
        self.batch = False
        self.peer = peer
        self.evicted: str | None = None
        self._outgoing = outgoing
        self._on_evict = on_evict

    @property
    def joined(self) -> bool:
        return self.name is not None

    def deliver(self, line: str) -> bool:
        """Queue one line without waiting; False (and eviction) when the queue is full."""
        if self.evicted is not None:
            return False
        try:
            self._outgoing.send_nowait(line)
        except trio.WouldBlock:
            log.debug("%s queue full; evicting", self)
            self.evict(SLOW_CONSUMER)
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False  # the connection is already on its way out
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

    def __init__(self, clock: Callable[[], str] = protocol.timestamp) -> None:
        self._members: dict[str, Member] = {}  # casefolded name -> member, join order
        self._clock = clock
        self._evicted: deque[Member] = deque()
        self._evicting = False
        self.closed = False

    def close(self) -> None:
        """Stop all room traffic (server shutdown): no more broadcasts or leave notices,
        which with every client leaving at once would be quadratic."""
        self.closed = True

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._members.values() if m.name is not None]

    def __len__(self) -> int:
        return len(self._members)

    def join(self, member: Member, name: str, *, welcome: bool = True) -> None:
        """Seat ``member`` under ``name`` (already validated), or rename it if seated.

        ``welcome=False`` is for seed-style clients that never asked to join: they
        would print a ``welcome`` as a chat line from nobody.
        """
        key = name.casefold()
        holder = self._members.get(key)
        if holder is not None and holder is not member:
            raise ProtocolError(NAME_TAKEN, f"name '{name}' is taken")
        old = member.name
        if old is not None:
            del self._members[old.casefold()]
        member.name = name
        self._members[key] = member
        if old is None:
            log.info(
                "join %s from %s (%d online)", name, member.peer, len(self),
                extra={"event": "join", "user": name, "peer": member.peer, "online": len(self)},
            )
            if welcome:
                member.deliver(protocol.welcome(name, self.names))
            self._announce("join", name, f"{name} joined the chat")
        elif old != name:
            log.info("rename %s -> %s", old, name)
            member.deliver(protocol.welcome(name, self.names))
            self._announce("rename", name, f"{old} is now known as {name}", old=old)

    def leave(self, member: Member) -> None:
        """Remove ``member`` if seated, and tell everyone who stays."""
        name = member.name
        if name is None or self._members.get(name.casefold()) is not member:
            return
        del self._members[name.casefold()]
        if self.closed:
            return
        log.info(
            "leave %s%s (%d online)",
            name,
            f" ({member.evicted})" if member.evicted else "",
            len(self),
            extra={
                "event": "leave",
                "user": name,
                "peer": member.peer,
                "reason": member.evicted,
                "online": len(self),
            },
        )
        self._announce("leave", name, f"{name} left the chat")

    def say(self, member: Member, text: str) -> None:
        """Broadcast a chat message under the member's own name."""
        assert member.name is not None
        log.debug("chat %s: %s", member.name, text)
        self.broadcast(protocol.chat(member.name, text, self._clock()))

    def broadcast(self, line: str) -> None:
        """Queue ``line`` for every member; never awaits. Evicts the ones that are full."""
        if self.closed:
            return
        for member in list(self._members.values()):
            if not member.deliver(line):
                self._evicted.append(member)
        if self._evicting:
            return  # an outer broadcast is already announcing the evictions
        self._evicting = True
        try:
            # Each leave notice is a broadcast that may evict more members: a loop,
            # not recursion, however many are full at once.
            while self._evicted:
                self.leave(self._evicted.popleft())
        finally:
            self._evicting = False

    def _announce(self, event: str, name: str, text: str, **extra: str) -> None:
        self.broadcast(protocol.system(event, name, text, len(self), self._clock(), **extra))
