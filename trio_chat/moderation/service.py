"""The server's moderation: the state in memory, the store in one worker thread.

Every check (at accept, at join, at each chat) reads :attr:`ModerationService.state`
in the event loop, without I/O. Every change is written first, in the store's thread
(one at a time: a :class:`trio.CapacityLimiter` of one around a connection made for
threads), and applied to the state only once committed, so what the server enforces
is always what a restart would load.

:meth:`ModerationService.watch` notices a change another process made to the
database (``trio-chat admin ban``, ``admin grant``: the store's change counter, or the
admins' list, differs from the last look), reloads the state and tells the server
(``on_reload``), which applies new bans to live connections. It also drops the bans
and mutes that ended, from the state and the store, once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Final, TypeVar

import trio

from .model import AuditEntry, Kind, Moderation, RoomModes, Sanction
from .store import ModerationStore

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Seconds between two looks at the database for changes made by ``trio-chat admin``.
WATCH_INTERVAL: Final = 1.0
#: Seconds between two purges of the bans and mutes that ended.
PURGE_INTERVAL: Final = 60.0


class ModerationService:
    """The state, and the changes to it written through ``store`` (see the module doc).

    ``admins`` gives the server admins' account keys (``--admin`` and the accounts
    store's), read at start and at each reload. ``wall`` is the clock of bans and the
    log (Unix seconds; a test passes one driven by trio's autojump clock).
    """

    def __init__(
        self,
        store: ModerationStore,
        *,
        admins: Callable[[], Iterable[str]] = tuple,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.wall = wall
        self._admins = admins
        self._limiter = trio.CapacityLimiter(1)
        self.state = store.load(wall(), admins())

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    def now(self) -> float:
        return self.wall()

    async def add(self, sanction: Sanction, entry: AuditEntry) -> Sanction:
        stored = await self._run(partial(self.store.add_sanction, sanction, entry))
        self.state.add(stored)
        return stored

    async def lift(self, kind: Kind, sanctions: list[Sanction], entry: AuditEntry) -> None:
        ids = [s.id for s in sanctions]
        await self._run(partial(self.store.remove_sanctions, kind, ids, entry))
        self.state.remove(kind, ids)

    async def set_op(
        self, room: str, account: str, on: bool, entry: AuditEntry | None
    ) -> None:
        await self._run(partial(self.store.set_op, room, account, on, entry))
        self.state.set_op(room, account, on)

    async def set_voice(self, room: str, name: str, on: bool, entry: AuditEntry) -> None:
        await self._run(partial(self.store.set_voice, room, name, on, entry))
        self.state.set_voice(room, name, on)

    async def set_modes(self, room: str, modes: RoomModes, entry: AuditEntry) -> None:
        await self._run(partial(self.store.set_modes, room, modes, entry))
        self.state.set_modes(room, modes)

    async def record(self, entry: AuditEntry) -> None:
        await self._run(partial(self.store.record, entry))

    async def forget_room(self, room: str) -> None:
        await self._run(partial(self.store.forget_room, room))
        self.state.forget_room(room)

    async def reload(self) -> Moderation:
        """Read everything again (another process changed the database)."""
        now = self.wall()
        admins = await self._run(lambda: list(self._admins()))
        self.state = await self._run(partial(self.store.load, now, admins))
        return self.state

    def _signature(self) -> tuple[int, list[str]]:
        return self.store.changed(), sorted(self._admins())

    async def watch(
        self,
        on_reload: Callable[[Moderation], Awaitable[None]],
        *,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        """Forever: every ``interval`` seconds, reload if the database changed (this
        server's own changes cause one harmless reload each)."""
        seen = await self._run(self._signature)
        purged = self.wall()
        while True:
            await trio.sleep(interval)
            if self.wall() - purged >= PURGE_INTERVAL:
                purged = self.wall()
                await self._purge(purged)
            try:
                signature = await self._run(self._signature)
                if signature == seen:
                    continue
                seen = signature
                state = await self.reload()
            except Exception:  # a locked or damaged file: try again next time
                log.exception("moderation: cannot read the database's changes")
                continue
            await on_reload(state)

    async def _purge(self, now: float) -> None:
        ended = self.state.expired(now)
        if ended:
            await self._run(partial(self.store.purge_expired, now))
            for kind in ("ban", "mute"):
                self.state.remove(kind, [s.id for s in ended if s.kind == kind])

    async def aclose(self) -> None:
        await self._run(self.store.close)
