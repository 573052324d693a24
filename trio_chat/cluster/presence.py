"""Who is on the other servers, as this server knows it, and the changes of this
server's own members on their way to Redis."""

from __future__ import annotations

from collections import deque
from typing import Final

from ..protocol import skeleton
from ..pulse import Pulse

#: Presence changes sent per script call.
PRESENCE_BATCH: Final = 512


class ClusterPresence:
    """The other servers' members (server -> skeleton of the name -> name), kept from the
    events stream and full refreshes, and a bounded queue of local changes."""

    def __init__(self) -> None:
        #: Changes whenever the other servers' member names do.
        self.version = 0
        self._remote: dict[str, dict[str, str]] = {}
        self._names: list[str] | None = None
        self._count = 0
        #: (op, name, old name): changes not yet sent. Bounded: a reconnection sends
        #: the whole member list instead, so the oldest can go.
        self.changes: deque[tuple[str, str, str]] = deque(maxlen=PRESENCE_BATCH * 20)
        self._work = Pulse()

    def names(self) -> list[str]:
        if self._names is None:
            self._names = [name for users in self._remote.values() for name in users.values()]
        return self._names

    def count(self) -> int:
        return self._count

    def change(self, op: str, name: str, old: str = "") -> None:
        """Queue a change of this server's members (``join``, ``leave``, ``rename``,
        ``release`` of a claimed name) for the link to send."""
        self.changes.append((op, name, old))
        self._work.fire()

    def hold(self, name: str, key: str, ttl_ms: int) -> None:
        """Queue a seat held for a resume: its token's ``key`` in Redis for ``ttl_ms``."""
        self.change("hold", name, f"{key}:{ttl_ms}")

    async def wait_work(self) -> None:
        while not self.changes:
            await self._work.wait()

    # ------------------------------------------------------------ the view

    def replace(self, view: dict[str, dict[str, str]]) -> None:
        if view != self._remote:
            self._remote = view
            self._changed()

    def add(self, node: str, name: str) -> None:
        users = self._remote.setdefault(node, {})
        if users.get(skeleton(name)) != name:
            users[skeleton(name)] = name
            self._changed()

    def remove(self, node: str, name: str) -> None:
        if self._remote.get(node, {}).pop(skeleton(name), None) is not None:
            self._changed()

    def nodes(self) -> set[str]:
        """The other servers this one knows to be live."""
        return set(self._remote)

    def forget_name(self, name: str) -> None:
        """Drop ``name`` from whichever other server's list holds it (its seat moved
        to this server)."""
        key = skeleton(name)
        for users in self._remote.values():
            if key in users:
                del users[key]
                self._changed()
                return

    def forget(self, node: str) -> list[str]:
        users = self._remote.pop(node, {})
        if users:
            self._changed()
        return list(users.values())

    def _changed(self) -> None:
        self.version += 1
        self._names = None
        self._count = sum(len(users) for users in self._remote.values())
