"""Where a chat message goes once a room has taken it: the one seam between the rooms
and the store (or the other servers).

A room decides *who* gets a message (its members); a :class:`Delivery` decides *how
it gets there*:

- :class:`LocalDelivery` (one server): the history gives the message its id and hands
  it to the SQLite writer, and the room broadcasts it at once;
- :class:`trio_chat.cluster.Cluster` (``--redis``): the message goes to Redis, and
  every server, this one included, broadcasts it when it reads it back with its id.

A direct message is the same question for one user (:meth:`Delivery.direct`: an id
from the same sequence, not stored; the connection here, or on another server). So
are the rooms themselves (:meth:`Delivery.room_saved`: a new room, a topic, when it
was last used; the SQLite file keeps them). Names are the question one level up: a
local delivery only has this server's members to ask (the rooms do), a cluster must
reserve a name across servers before a join (:meth:`Delivery.claim`) and tells
``#lobby`` about the other servers' members. Neither a room nor a session knows which
delivery it has.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import trio

from .. import protocol
from ..accounts.store import StoredDM
from ..history.base import History, IdsExhausted, chat_line
from ..history.writer import RoomChange
from ..protocol import NO_SUCH_USER, ProtocolError
from .metrics import Histogram

if TYPE_CHECKING:
    from ..history.sqlite import SqliteHistory
    from .room import Member, Room
    from .rooms import Rooms

log = logging.getLogger(__name__)


class Delivery(ABC):
    """What the rooms hand chat messages and name changes to (see the module doc)."""

    #: The history replays are planned from (None: no ids, no replays).
    history: History | None = None

    def bind(self, rooms: Rooms) -> None:
        """Called once by the rooms this delivery serves."""
        self.rooms = rooms

    @abstractmethod
    async def wait_writable(self) -> None:
        """Return once :meth:`publish` will not raise ``trio.WouldBlock``. Returns
        without a checkpoint when it can (it runs once per chat message)."""

    @abstractmethod
    def publish(self, room: Room, user: str, text: str, ts: str) -> None:
        """Send a chat message on its way to every member of ``room`` (never awaits a
        client). Raises ``trio.WouldBlock`` (nothing changed) while the store cannot
        take it."""

    @abstractmethod
    def direct(self, sender: Member, to: str, text: str, ts: str) -> None:
        """Send a direct message to the user called ``to`` and, as the echo, to its
        sender (never awaits a client); ``no_such_user`` if nobody has that name,
        ``trio.WouldBlock`` (nothing changed) while the store cannot take its id."""

    @abstractmethod
    def room_saved(self, room: Room) -> None:
        """``room`` was created, or its topic changed, or its last member left: keep
        it as it is now (never waits)."""

    @abstractmethod
    def room_removed(self, room: Room) -> None:
        """``room`` expired: forget it and its history (never waits)."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until everything published is stored (a graceful stop; bounded)."""

    # ------------------------------------------------ members on other servers

    @property
    @abstractmethod
    def version(self) -> int:
        """Changes whenever :meth:`other_names` does."""

    @abstractmethod
    def other_names(self, room: str | None = None) -> list[str]:
        """The members other servers have in the room keyed ``room``
        (:func:`~trio_chat.protocol.room_key`), or in any room (None), in no
        particular order."""

    async def kick_elsewhere(self, room: Room, name: str, by: str, reason: str) -> bool:
        """Have the server holding ``name`` in ``room`` (another one) expel it with the
        kick notice; False if no other server has it there (one server: never)."""
        return False

    @abstractmethod
    def other_count(self, room: str | None = None) -> int:
        """How many members other servers have in the room keyed ``room``, or in all
        (None)."""

    async def prepare(self, room: str) -> None:
        """Before a member here enters the room called ``room``: make ready what its
        replay and live messages need (a cluster: where the room's stream ends)."""
        await trio.lowlevel.checkpoint()

    def occupied(self, room: Room) -> None:  # noqa: B027 (optional hook)
        """``room`` has its first member on this server (its messages must reach this
        server from now on)."""

    def vacated(self, room: Room) -> None:  # noqa: B027 (optional hook)
        """``room``'s last member on this server left it."""

    def entered(self, name: str, room: Room) -> None:  # noqa: B027 (optional hook)
        """The member ``name`` here entered ``room``."""

    def parted(self, name: str, room: Room) -> None:  # noqa: B027 (optional hook)
        """The member ``name`` here left ``room`` (a ``part``; leaving the server is
        :meth:`left`)."""

    def topic_changed(self, room: Room, name: str) -> None:  # noqa: B027 (optional hook)
        """The member ``name`` here set ``room.topic``."""

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
    async def take_seat(self, token: str, name: str) -> tuple[str, list[str]] | None:
        """Take over a seat another server holds for ``token`` under ``name`` (or a
        look-alike): its name (the seat's own spelling), now this server's, and the
        rooms it was in; None if there is no such seat."""

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

    def publish(self, room: Room, user: str, text: str, ts: str) -> None:
        if self._store is None or room.log is None:
            room.broadcast(protocol.chat(user, text, ts, room=room.name))
            return
        try:
            message = self._store.record(user, text, ts, room.log)
        except IdsExhausted as error:
            self._no_ids(error)
            room.broadcast(protocol.chat(user, text, ts, room=room.name))
            return
        room.broadcast(chat_line(message))

    def direct(self, sender: Member, to: str, text: str, ts: str) -> None:
        recipient = self.rooms.user(to)
        if recipient is None or recipient.name is None:
            raise ProtocolError(NO_SUCH_USER, f"nobody here is called '{to}'")
        assert sender.name is not None
        message_id = None
        if self._store is not None:
            try:
                message_id = self._store.reserve()
            except IdsExhausted as error:
                self._no_ids(error)
        line = protocol.direct(sender.name, recipient.name, text, ts, message_id)
        recipient.deliver(line)
        if recipient is not sender:
            sender.deliver(line)
        accounts = self.rooms.accounts
        if (accounts is not None and message_id is not None
                and sender.account is not None and recipient.account is not None):
            # Between two accounts: kept, and replayed at their next login.
            accounts.dms.record(StoredDM(message_id, sender.account, recipient.account,
                                         text, ts))

    def _no_ids(self, error: IdsExhausted) -> None:
        # Only a database whose ids were pushed to the end gets here (2**53 ids): the
        # rooms go on, without ids and without storing (docs/protocol.md).
        if not self._exhausted:
            self._exhausted = True
            log.error("history: %s; messages are delivered without ids and not "
                      "stored; start a new --db", error)

    def room_saved(self, room: Room) -> None:
        if self._store is None:
            return
        # When it was last used, as Unix time (its expiry survives a restart).
        active = time.time()
        if not room.lobby and not len(room):
            active -= max(0.0, self.rooms.now() - room.active)
        self._store.store.save_room(RoomChange(room.key, save=(room.name, room.topic, active)))

    def room_removed(self, room: Room) -> None:
        if self._store is None:
            return
        if room.log is not None:
            self._store.forget(room.log)
        self._store.store.save_room(RoomChange(room.key, drop=True))

    async def flush(self) -> None:
        if self._store is not None:
            await self._store.store.flush()
        else:
            await trio.lowlevel.checkpoint()

    # One server: its members are all the room's, and the room checks their names.

    @property
    def version(self) -> int:
        return 0

    def other_names(self, room: str | None = None) -> list[str]:
        return []

    def other_count(self, room: str | None = None) -> int:
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

    async def take_seat(self, token: str, name: str) -> tuple[str, list[str]] | None:
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
