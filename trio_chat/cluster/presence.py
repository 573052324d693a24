"""Who is on the other servers, as this server knows it, and the changes of this
server's own members on their way to Redis."""

from __future__ import annotations

from collections import deque
from typing import Final

from ..protocol import name_key, skeleton
from ..pulse import Pulse

#: Presence changes sent per script call.
PRESENCE_BATCH: Final = 512


class ClusterPresence:
    """The other servers' members (server -> skeleton of the name -> name) and the rooms
    each is in (server -> skeleton -> room keys), kept from the events stream and full
    refreshes, with an index by room kept as they change (``who`` of a room and its
    ``clients_count`` cost that room's size, not the cluster's), and a bounded queue
    of local changes."""

    def __init__(self) -> None:
        #: Changes whenever the other servers' member names (or rooms) do.
        self.version = 0
        self._remote: dict[str, dict[str, str]] = {}
        self._where: dict[str, dict[str, set[str]]] = {}
        #: room key -> (server, skeleton) -> name: the index of _where.
        self._rooms: dict[str, dict[tuple[str, str], str]] = {}
        self._names: list[str] | None = None
        self._count = 0
        #: (op, name, old name, extra): changes not yet sent. Bounded: a reconnection
        #: sends the whole member list instead, so the oldest can go.
        self.changes: deque[tuple[str, str, str, str]] = deque(maxlen=PRESENCE_BATCH * 20)
        self._work = Pulse()

    def names(self, room: str | None = None) -> list[str]:
        """The other servers' members, in the room keyed ``room`` or in any."""
        if room is None:
            if self._names is None:
                self._names = [name for users in self._remote.values()
                               for name in users.values()]
            return self._names
        return list(self._rooms.get(room, {}).values())

    def holder(self, room: str, name: str) -> tuple[str, str] | None:
        """The other server holding ``name`` (in any case) in the room keyed ``room``,
        and the name as it is held there; None if none."""
        wanted = name_key(name)
        for (node, _), held in self._rooms.get(room, {}).items():
            if name_key(held) == wanted:
                return node, held
        return None

    def count(self, room: str | None = None) -> int:
        if room is None:
            return self._count
        return len(self._rooms.get(room, ()))

    def rooms_of(self, node: str, name: str) -> set[str]:
        """The rooms (keys) the member ``name`` of ``node`` is in."""
        return set(self._where.get(node, {}).get(skeleton(name), ()))

    def change(self, op: str, name: str, old: str = "", extra: str = "") -> None:
        """Queue a change of this server's members (``join``, ``leave``, ``rename``,
        ``release`` of a claimed name, ``enter`` and ``part`` of a room, ``topic``) for
        the link to send."""
        self.changes.append((op, name, old, extra))
        self._work.fire()

    def hold(self, name: str, key: str, ttl_ms: int, rooms: str = "[]") -> None:
        """Queue a seat held for a resume: its token's ``key`` in Redis for ``ttl_ms``,
        with the rooms it is in (a JSON list of names)."""
        self.change("hold", name, f"{key}:{ttl_ms}", rooms)

    async def wait_work(self) -> None:
        while not self.changes:
            await self._work.wait()

    # ------------------------------------------------------------ the view

    def replace(
        self, view: dict[str, dict[str, str]], where: dict[str, dict[str, set[str]]]
    ) -> None:
        """A full refresh (every ``--presence-ttl / 4`` s): the index is rebuilt only
        if something differs."""
        if view == self._remote and where == self._where:
            return
        self._remote, self._where = view, where
        self._rooms = {}
        for node, users in view.items():
            for key, rooms in where.get(node, {}).items():
                name = users.get(key)
                if name is not None:
                    for room in rooms:
                        self._rooms.setdefault(room, {})[node, key] = name
        self._changed()

    def add(self, node: str, name: str, rooms: set[str] | None = None) -> None:
        """``name`` is on ``node`` (in ``rooms``, if given: its rooms from now on)."""
        users = self._remote.setdefault(node, {})
        key = skeleton(name)
        if users.get(key) == name and rooms is None:
            return
        users[key] = name
        where = self._where.setdefault(node, {})
        old = where.get(key, set())
        new = set(rooms) if rooms is not None else old
        for room in old - new:
            self._unindex(room, node, key)
        where[key] = new
        for room in new:
            self._rooms.setdefault(room, {})[node, key] = name
        self._changed()

    def remove(self, node: str, name: str) -> set[str]:
        """``name`` left ``node``: the rooms it was in."""
        key = skeleton(name)
        rooms = self._where.get(node, {}).pop(key, set())
        for room in rooms:
            self._unindex(room, node, key)
        if self._remote.get(node, {}).pop(key, None) is not None or rooms:
            self._changed()
        return rooms

    def enter(self, node: str, name: str, room: str) -> bool:
        """``name`` of ``node`` entered the room keyed ``room``; False if known already."""
        key = skeleton(name)
        self._remote.setdefault(node, {})[key] = name
        rooms = self._where.setdefault(node, {}).setdefault(key, set())
        if room in rooms:
            return False
        rooms.add(room)
        self._rooms.setdefault(room, {})[node, key] = name
        self._changed()
        return True

    def part(self, node: str, name: str, room: str) -> bool:
        key = skeleton(name)
        rooms = self._where.get(node, {}).get(key)
        if rooms is None or room not in rooms:
            return False
        rooms.discard(room)
        self._unindex(room, node, key)
        self._changed()
        return True

    def rename(self, node: str, old: str, name: str) -> set[str]:
        """``old`` of ``node`` is now ``name``: the rooms it is in."""
        rooms = self.remove(node, old)
        self.add(node, name, rooms)
        return rooms

    def nodes(self) -> set[str]:
        """The other servers this one knows to be live."""
        return set(self._remote)

    def forget_name(self, name: str) -> set[str]:
        """Drop ``name`` from whichever other server's list holds it (its seat moved
        to this server): the rooms it was in there."""
        key = skeleton(name)
        for node, users in self._remote.items():
            if key in users:
                return self.remove(node, name)
        return set()

    def forget(self, node: str) -> dict[str, set[str]]:
        """``node`` is gone: its members (name -> the rooms each was in)."""
        users = self._remote.pop(node, {})
        where = self._where.pop(node, {})
        for key, rooms in where.items():
            for room in rooms:
                self._unindex(room, node, key)
        if users or where:
            self._changed()
        return {name: where.get(key, set()) for key, name in users.items()}

    def _unindex(self, room: str, node: str, key: str) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.pop((node, key), None)
            if not members:
                del self._rooms[room]

    def _changed(self) -> None:
        self.version += 1
        self._names = None
        self._count = sum(len(users) for users in self._remote.values())
