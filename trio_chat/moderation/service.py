"""The server's moderation: the state in memory, the store behind a backend.

Every check (at accept, at join, at each chat) reads :attr:`ModerationService.state`
in the event loop, without I/O. Every change is written first, by the backend (the
SQLite store in one worker thread at a time, or Redis for a cluster), and applied to
the state only once committed, so what the server enforces is always what a restart
would load.

:meth:`ModerationService.watch` notices a change another process made to the
database (``trio-chat admin ban``, ``admin grant``: the store's change counter, or the
admins' list, differs from the last look), reloads the state and tells the server
(``on_reload``), which applies new bans to live connections. It also drops the bans
and mutes that ended, from the state and the store, once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Final, Protocol, TypeVar

import trio

from .model import AuditEntry, Kind, Moderation, RoomModes, Sanction
from .store import ModerationStore

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Seconds between two looks at the database for changes made by ``trio-chat admin``.
WATCH_INTERVAL: Final = 1.0
#: Seconds between two purges of the bans and mutes that ended.
PURGE_INTERVAL: Final = 60.0


class Backend(Protocol):
    """Where moderation is kept: the ``--db`` SQLite file (:class:`SqliteBackend`), or
    Redis for a cluster (:mod:`trio_chat.cluster.moderation`). Every change comes with
    its audit entry and bumps :meth:`changed`."""

    async def load(self, now: float, admins: Iterable[str]) -> Moderation: ...
    async def add_sanction(self, sanction: Sanction, entry: AuditEntry) -> Sanction: ...
    async def remove_sanctions(self, kind: Kind, ids: list[int], entry: AuditEntry) -> None: ...
    async def set_op(self, room: str, account: str, on: bool,
                     entry: AuditEntry | None) -> None: ...
    async def set_voice(self, room: str, name: str, on: bool, entry: AuditEntry) -> None: ...
    async def set_modes(self, room: str, modes: RoomModes, entry: AuditEntry) -> None: ...
    async def record(self, entry: AuditEntry) -> None: ...
    async def forget_room(self, room: str) -> None: ...
    async def purge_expired(self, now: float) -> None: ...
    async def changed(self) -> object: ...
    async def aclose(self) -> None: ...


class SqliteBackend:
    """:class:`~.store.ModerationStore` run in one worker thread at a time."""

    def __init__(self, store: ModerationStore) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def load(self, now: float, admins: Iterable[str]) -> Moderation:
        return await self._run(partial(self.store.load, now, list(admins)))

    async def add_sanction(self, sanction: Sanction, entry: AuditEntry) -> Sanction:
        return await self._run(partial(self.store.add_sanction, sanction, entry))

    async def remove_sanctions(self, kind: Kind, ids: list[int], entry: AuditEntry) -> None:
        await self._run(partial(self.store.remove_sanctions, kind, ids, entry))

    async def set_op(self, room: str, account: str, on: bool,
                     entry: AuditEntry | None) -> None:
        await self._run(partial(self.store.set_op, room, account, on, entry))

    async def set_voice(self, room: str, name: str, on: bool, entry: AuditEntry) -> None:
        await self._run(partial(self.store.set_voice, room, name, on, entry))

    async def set_modes(self, room: str, modes: RoomModes, entry: AuditEntry) -> None:
        await self._run(partial(self.store.set_modes, room, modes, entry))

    async def record(self, entry: AuditEntry) -> None:
        await self._run(partial(self.store.record, entry))

    async def forget_room(self, room: str) -> None:
        await self._run(partial(self.store.forget_room, room))

    async def purge_expired(self, now: float) -> None:
        await self._run(partial(self.store.purge_expired, now))

    async def changed(self) -> object:
        return await self._run(self.store.changed)

    async def aclose(self) -> None:
        await self._run(self.store.close)


class ModerationService:
    """The state, and the changes to it written through ``backend`` (see the module
    doc); without one, an in-memory SQLite database.

    ``admins`` gives the server admins' account keys (``--admin`` and the accounts
    store's), read at each :meth:`reload` (the first in :meth:`open`). ``wall`` is the
    clock of bans and the log (Unix seconds; a test passes its own).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        admins: Callable[[], Iterable[str]] = tuple,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.backend: Backend = (
            backend if backend is not None else SqliteBackend(ModerationStore(":memory:"))
        )
        self.wall = wall
        self._admins = admins
        self.state = Moderation(admins=set(admins()))
        #: Changes made here and not yet in the store (:meth:`changing`), and how many
        #: ever began: a reload whose snapshot may predate one keeps the state.
        self._unwritten = 0
        self._begun = 0

    def now(self) -> float:
        return self.wall()

    def begin_change(self) -> None:
        """A change made here begins (in memory now, in the store when its write ends,
        :meth:`end_change`): a reload while one is on its way would put back the
        store's older state (a room's creator no longer its op until the next one)."""
        self._unwritten += 1
        self._begun += 1

    def end_change(self) -> None:
        self._unwritten -= 1

    @contextmanager
    def changing(self) -> Iterator[None]:
        """:meth:`begin_change` and :meth:`end_change` around a block."""
        self.begin_change()
        try:
            yield
        finally:
            self.end_change()

    async def add(self, sanction: Sanction, entry: AuditEntry) -> Sanction:
        with self.changing():
            stored = await self.backend.add_sanction(sanction, entry)
            self.state.add(stored)
        return stored

    async def lift(self, kind: Kind, sanctions: list[Sanction], entry: AuditEntry) -> None:
        ids = [s.id for s in sanctions]
        with self.changing():
            await self.backend.remove_sanctions(kind, ids, entry)
            self.state.remove(kind, ids)

    async def set_op(
        self, room: str, account: str, on: bool, entry: AuditEntry | None
    ) -> None:
        with self.changing():
            await self.backend.set_op(room, account, on, entry)
            self.state.set_op(room, account, on)

    async def set_voice(self, room: str, name: str, on: bool, entry: AuditEntry) -> None:
        with self.changing():
            await self.backend.set_voice(room, name, on, entry)
            self.state.set_voice(room, name, on)

    async def set_modes(self, room: str, modes: RoomModes, entry: AuditEntry) -> None:
        with self.changing():
            await self.backend.set_modes(room, modes, entry)
            self.state.set_modes(room, modes)

    async def record(self, entry: AuditEntry) -> None:
        await self.backend.record(entry)

    async def forget_room(self, room: str) -> None:
        with self.changing():
            await self.backend.forget_room(room)
            self.state.forget_room(room)

    async def reload(self) -> Moderation | None:
        """Read everything again (at start, and when another process or server
        changed it). None, the state kept, when a change made here was on its way to
        the store meanwhile: the snapshot may lack it (the caller tries again)."""
        now = self.wall()
        begun = self._begun
        admins = await trio.to_thread.run_sync(lambda: list(self._admins()))
        loaded = await self.backend.load(now, admins)
        if self._unwritten or self._begun != begun:
            return None
        self.state = loaded
        return self.state

    async def _signature(self) -> tuple[object, list[str]]:
        admins = await trio.to_thread.run_sync(lambda: sorted(self._admins()))
        return await self.backend.changed(), admins

    async def watch(
        self,
        on_reload: Callable[[Moderation], Awaitable[None]],
        *,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        """Forever: every ``interval`` seconds, reload if the store changed (this
        server's own changes cause one harmless reload each)."""
        seen: tuple[object, list[str]] | None = None
        try:
            seen = await self._signature()
        except Exception as error:
            log.warning("moderation: cannot read the store: %r", error)
        purged = self.wall()
        while True:
            await trio.sleep(interval)
            try:
                if self.wall() - purged >= PURGE_INTERVAL:
                    purged = self.wall()
                    await self._purge(purged)
                signature = await self._signature()
                if signature == seen:
                    continue
                seen = signature
                state = await self.reload()
            except Exception as error:  # a locked file, Redis away: try again next time
                log.warning("moderation: cannot read the store's changes: %r", error)
                continue
            if state is None:
                seen = None  # a change of ours was under way: read it all next time
                continue
            await on_reload(state)

    async def _purge(self, now: float) -> None:
        ended = self.state.expired(now)
        if ended:
            await self.backend.purge_expired(now)
            for kind in ("ban", "mute"):
                self.state.remove(kind, [s.id for s in ended if s.kind == kind])

    async def aclose(self) -> None:
        await self.backend.aclose()
