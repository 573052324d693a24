"""Where a chat message goes once the room has taken it: the one seam between the room
and the store (or the other servers).

The room decides *who* gets a message (its members); a :class:`Delivery` decides
*how it gets there*:

- :class:`LocalDelivery` (one server): the history gives the message its id and hands
  it to the SQLite writer, and the room broadcasts it at once;
- :class:`trio_chat.cluster.Cluster` (``--redis``): the message goes to Redis, and
  every server, this one included, broadcasts it when it reads it back with its id.

Names are the same question one level up: a local delivery only has this server's
members to ask (the room does), a cluster must reserve a name across servers before a
join (:meth:`Delivery.claim`) and tells the room about the other servers' members.
Neither the room nor a session knows which delivery it has.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import trio

from .. import protocol
from ..history.base import History, IdsExhausted, chat_line
from .metrics import Histogram

if TYPE_CHECKING:
    from ..history.sqlite import SqliteHistory
    from .room import Room

log = logging.getLogger(__name__)


class Delivery(ABC):
    """What the room hands chat messages and name changes to (see the module doc)."""

    #: The history replays are planned from (None: no ids, no replays).
    history: History | None = None

    def bind(self, room: Room) -> None:
        """Called once by the room this delivery serves."""
        self.room = room

    @abstractmethod
    async def wait_writable(self) -> None:
        """Return once :meth:`publish` will not raise ``trio.WouldBlock``. Returns
        without a checkpoint when it can (it runs once per chat message)."""

    @abstractmethod
    def publish(self, user: str, text: str, ts: str) -> None:
        """Send a chat message on its way to every member (never awaits a client).
        Raises ``trio.WouldBlock`` (nothing changed) while the store cannot take it."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until everything published is stored (a graceful stop; bounded)."""

    # ------------------------------------------------ members on other servers

    @property
    @abstractmethod
    def version(self) -> int:
        """Changes whenever :meth:`other_names` does."""

    @abstractmethod
    def other_names(self) -> list[str]:
        """The members other servers have, in no particular order."""

    @abstractmethod
    def other_count(self) -> int:
        """How many members other servers have."""

    @abstractmethod
    async def claim(self, name: str) -> bool:
        """Reserve ``name`` before a member here joins (or renames) under it; False if
        another server's member holds it. Follow with :meth:`release` if the join does
        not happen (releasing a name a member here holds does nothing)."""

    @abstractmethod
    def release(self, name: str) -> None:
        """Give up a claimed name, unless a member here holds it."""

    @abstractmethod
    def joined(self, name: str) -> None:
        """A member here took ``name`` (tell the other servers; never waits)."""

    @abstractmethod
    def left(self, name: str) -> None:
        """A member here gave up ``name``."""

    @abstractmethod
    def renamed(self, old: str, new: str) -> None:
        """A member here changed its name."""

    # ------------------------------------------------ seats held for a resume

    @property
    def hold_margin(self) -> float:
        """Seconds a held seat waits past the grace before it leaves: long enough for
        another server's resume of it to arrive here first (0 on one server)."""
        return 0.0

    @abstractmethod
    def held(self, name: str, token: str, grace: float) -> None:
        """A member here lost its connection; its seat is held for ``grace`` seconds
        under ``token`` (a cluster makes the token work on every server)."""

    @abstractmethod
    def resumed(self, name: str, token: str, *, held: bool) -> None:
        """The seat ``token`` belonged to was taken back here (``held``: it had lost its
        connection); that token is spent."""

    @abstractmethod
    async def take_seat(self, token: str, name: str) -> str | None:
        """Take over a seat another server holds for ``token`` under ``name`` (or a
        look-alike): its name (the seat's own spelling), now this server's; None if
        there is no such seat."""

    # ------------------------------------------------ for /metrics and /readyz

    @property
    @abstractmethod
    def pending(self) -> int:
        """Chat messages taken and not yet stored (the store's writer, or Redis)."""

    @property
    @abstractmethod
    def commit_seconds(self) -> Histogram:
        """How long each batch took to reach the history (a commit, a Redis script)."""

    @abstractmethod
    def not_ready(self) -> str | None:
        """Why chat messages cannot be stored now (``/readyz`` says 503), or None."""

    @property
    def link(self) -> tuple[str, int] | None:
        """A link to other servers: its state (``down``, ``restoring``, ``up``) and how
        many times it came up; None on one server."""
        return None


class LocalDelivery(Delivery):
    """One server: the history (if any) stores the message with its id, then the room
    broadcasts it. Without a history (tests, ``Room()``), messages have no ids."""

    def __init__(self, history: SqliteHistory | None = None) -> None:
        self.history = self._store = history
        self._no_commits = Histogram()
        self._exhausted = False

    async def wait_writable(self) -> None:
        if self._store is not None:
            await self._store.store.wait_writable()
        else:
            await trio.lowlevel.checkpoint()

    def publish(self, user: str, text: str, ts: str) -> None:
        if self._store is None:
            self.room.broadcast(protocol.chat(user, text, ts))
            return
        try:
            message = self._store.record(user, text, ts)
        except IdsExhausted as error:
            # Only a database whose ids were pushed to the end gets here (2**53 ids):
            # the room goes on, without ids and without storing (docs/protocol.md).
            if not self._exhausted:
                self._exhausted = True
                log.error("history: %s; messages are delivered without ids and not "
                          "stored; start a new --db", error)
            self.room.broadcast(protocol.chat(user, text, ts))
            return
        self.room.broadcast(chat_line(message))

    async def flush(self) -> None:
        if self._store is not None:
            await self._store.store.flush()
        else:
            await trio.lowlevel.checkpoint()

    # One server: its members are all the room's, and the room checks their names.

    @property
    def version(self) -> int:
        return 0

    def other_names(self) -> list[str]:
        return []

    def other_count(self) -> int:
        return 0

    async def claim(self, name: str) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    def release(self, name: str) -> None:
        pass

    def joined(self, name: str) -> None:
        pass

    def left(self, name: str) -> None:
        pass

    def renamed(self, old: str, new: str) -> None:
        pass

    # One server: a seat is held here or nowhere (the room keeps it).

    def held(self, name: str, token: str, grace: float) -> None:
        pass

    def resumed(self, name: str, token: str, *, held: bool) -> None:
        pass

    async def take_seat(self, token: str, name: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return None

    @property
    def pending(self) -> int:
        return 0 if self._store is None else self._store.store.pending

    @property
    def commit_seconds(self) -> Histogram:
        return self._no_commits if self._store is None else self._store.store.commit_seconds

    def not_ready(self) -> str | None:
        return None if self._store is None else self._store.store.not_ready()
