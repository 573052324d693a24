"""Seats kept for a reconnection: the secret that takes a seat back, and the seats whose
connection was lost, held for a grace period.

A page reload or a network blip drops a connection that comes straight back. Without
this, everyone would see "Bob left" then "Bob joined" each time. With it
(``--resume-grace``), every ``welcome`` carries a fresh random token (``resume``); a
member whose connection is lost keeps its seat for the grace, its name still taken and
still in ``who``; a join that brings the token back within the grace takes the seat
over, with no notice to anyone. A seat nobody takes back leaves then, announced as
usual. A token is a secret, never derived from the name: knowing someone's name is
not enough to take their seat (Socket.IO's connection state recovery works the same
way).

This module only keeps the books (which token is whose, which seats are held until
when); :class:`~.room.Room` decides what a join, a resume and a leave mean, and a
cluster's delivery makes tokens work on every server (:mod:`trio_chat.cluster`).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

from ..pulse import Pulse

if TYPE_CHECKING:
    from .room import Member

log = logging.getLogger(__name__)

#: Random bytes in a token (it is sent as URL-safe base64: 24 characters).
TOKEN_BYTES: Final = 18


def token_key(token: str) -> str:
    """What a token is stored under where others could read it (Redis): its hash, so
    the store never holds a token that works."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class Seats:
    """Resume tokens of the members of one room, and the seats held for their grace.

    ``grace`` is ``--resume-grace`` (0: no tokens, nothing held); ``margin`` is how much
    longer a held seat waits before it leaves, so that a resume another server took
    (cluster mode) reaches this server first.
    """

    def __init__(self, grace: float, margin: float = 0.0) -> None:
        self.grace = grace
        self.margin = margin
        self._members: dict[str, Member] = {}  # token -> its member (live or held)
        self._held: dict[Member, float] = {}  # held seat -> when it leaves (Trio's clock)
        self._deadlines: list[tuple[float, int, Member]] = []  # heap over _held
        self._order = 0
        self._changed = Pulse()
        self._running = False

    @property
    def enabled(self) -> bool:
        return self.grace > 0

    def issue(self, member: Member) -> str | None:
        """A new token for ``member`` (its previous one no longer works), or None when
        resuming is off."""
        if not self.enabled:
            return None
        self.forget_token(member)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        member.token = token
        self._members[token] = member
        return token

    def find(self, token: str) -> Member | None:
        """The member (live or held) whose current token this is."""
        return self._members.get(token)

    def forget_token(self, member: Member) -> None:
        if member.token is not None:
            self._members.pop(member.token, None)
            member.token = None

    def forget(self, member: Member) -> None:
        """``member`` is gone for good (left, expired, or taken over): its token and its
        hold go."""
        self.forget_token(member)
        self._held.pop(member, None)
        member.held = False

    def hold(self, member: Member) -> bool:
        """Keep the seat of ``member``, whose connection was lost, for the grace; False
        if it cannot be kept (resuming off, no token, or :meth:`run` not running)."""
        if not (self.enabled and self._running and member.token is not None):
            return False
        deadline = trio.current_time() + self.grace + self.margin
        member.held = True
        self._held[member] = deadline
        self._order += 1
        heapq.heappush(self._deadlines, (deadline, self._order, member))
        self._changed.fire()
        return True

    def held(self) -> list[tuple[Member, float]]:
        """The seats held now, with the seconds each has left."""
        now = trio.current_time()
        return [(member, max(0.0, when - now)) for member, when in self._held.items()]

    async def run(
        self,
        expire: Callable[[Member], object],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``expire`` for each held seat whose time is up, until cancelled. Seats
        are held only while this runs."""
        self._running = True
        try:
            task_status.started()
            while True:
                heap = self._deadlines
                while heap and self._held.get(heap[0][2]) != heap[0][0]:
                    heapq.heappop(heap)  # taken back, or held again since
                if not heap:
                    await self._changed.wait()
                    continue
                with trio.move_on_at(heap[0][0]):
                    await self._changed.wait()
                    continue
                _, _, member = heapq.heappop(heap)
                self.forget(member)
                expire(member)
        finally:
            self._running = False
