"""Direct messages between two accounts: kept in ``dm_history`` (or, with ``--redis``,
in Redis), replayed at login.

A direct message is delivered at once (the room never waits for the store); when
both ends are logged in to accounts, it is also handed to :class:`DmLog`, which
writes the waiting ones in one transaction at a time from a worker thread. At most
:data:`MAX_PENDING` wait: a sender waits (:meth:`DmLog.wait_writable`) while that
many do, so nothing delivered is dropped on the way to the store. A graceful stop
writes everything still waiting (:meth:`DmLog.flush`). A DM to or from a guest is
never kept.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from ..pulse import Pulse
from .store import AccountsBackend, StoredDM

log = logging.getLogger(__name__)

#: Direct messages waiting for the store before senders wait.
MAX_PENDING: Final = 4096
#: Direct messages a login replays when it sends no ``since`` (the newest ones).
DM_REPLAY: Final = 50
#: Most direct messages one login replays, ``since`` or not.
DM_REPLAY_MAX: Final = 1000


class DmLog:
    def __init__(self, store: AccountsBackend, max_pending: int = MAX_PENDING) -> None:
        self.store = store
        self.max_pending = max_pending
        self._pending: list[StoredDM] = []
        self._writing = 0
        self._changed = Pulse()
        self._lock = trio.Lock()  # one batch at a time, in order

    @property
    def waiting(self) -> int:
        return len(self._pending) + self._writing

    async def wait_writable(self) -> None:
        """Wait until :meth:`record` may take one more."""
        while len(self._pending) >= self.max_pending:
            await self._changed.wait()

    def record(self, dm: StoredDM) -> None:
        """Keep ``dm`` (written soon, in the background); never waits."""
        self._pending.append(dm)
        self._changed.fire()

    async def run(self) -> None:
        """Write what waits, a batch at a time, until cancelled."""
        while True:
            while not self._pending:
                await self._changed.wait()
            await self._write()

    async def _write(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            self._writing = len(batch)
            self._changed.fire()  # senders waiting for room may go on
            try:
                with trio.CancelScope(shield=True):  # a batch taken is a batch written
                    await self.store.add_dms(batch)
            except Exception:
                log.exception("direct messages: %d could not be kept", len(batch))
            finally:
                self._writing = 0
                self._changed.fire()

    async def flush(self) -> None:
        """Write everything waiting now (a graceful stop, a replay)."""
        await self._write()
        async with self._lock:  # and whatever another task was writing
            pass

    async def replay(self, account: str, since: int | None) -> list[StoredDM]:
        """The direct messages of ``account`` to replay at its login: after ``since``
        (at most :data:`DM_REPLAY_MAX`), or the newest :data:`DM_REPLAY`. Ones still
        waiting for the store are written first."""
        await self.flush()
        limit = DM_REPLAY if since is None else DM_REPLAY_MAX
        return await self.store.dms(account, since, limit)
