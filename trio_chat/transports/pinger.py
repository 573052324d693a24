"""WebSocket keepalive for the whole server: one task, not one per connection.

Every WebSocket connection is pinged ``ping_interval`` after its last pong, and a
peer whose pong takes over ``ping_timeout`` is dead (:func:`ping_once`). A keepalive
task per connection did that with a task, its coroutine frames and a cancel scope
sleeping in every idle connection (about 1.5 KB of heap each: issue 20's memory per
idle connection). Here one task per server, :meth:`Pinger.run`, keeps the
connections in a queue ordered by when each is due (every connection waits the same
interval, so appending keeps it sorted: no heap needed), and when one is due starts
:func:`ping_once` in that connection's own nursery: a task lives only while a ping
waits for its pong, and a connection's errors stay in its handler as before.

Without a running pinger (a handler run on its own, as in tests), each connection
keeps its own keepalive task (:func:`keepalive`): the same pings, the same timeouts.
"""

from __future__ import annotations

import logging
from collections import deque

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..config import Config
from ..server.session import GONE, PING_TIMEOUT, Session

log = logging.getLogger(__name__)


class Pinged:
    """One connection in the pinger's queue; ``done`` once its handler has ended."""

    __slots__ = ("done", "nursery", "session", "ws")

    def __init__(self, ws: WebSocketConnection, session: Session, nursery: trio.Nursery) -> None:
        self.ws = ws
        self.session = session
        self.nursery = nursery
        self.done = False


async def ping_once(ws: WebSocketConnection, session: Session, config: Config) -> bool:
    """Ping the peer and wait for its pong: True if it came within ``ping_timeout``;
    else the member is evicted (``ping_timeout``) and False. trio-websocket's
    ``ping()`` alone would wait for ever."""
    closed = False
    with trio.move_on_after(config.ping_timeout):
        try:
            await ws.ping()
        except ConnectionClosed:
            closed = True
        else:
            return True
    if closed:
        # The peer sent a close frame. trio-websocket answers it before it ends the
        # connection (and our session); a peer that never reads that answer would
        # hold its seat for ever, so it gets ping_timeout, like a pong.
        await trio.sleep(config.ping_timeout)
        log.debug("%s closed but did not read our answer", session.member)
        session.member.evict(GONE)
    else:
        log.debug("%s did not answer a ping", session.member)
        session.member.evict(PING_TIMEOUT)
    return False


async def keepalive(ws: WebSocketConnection, session: Session, config: Config) -> None:
    """One connection's own keepalive, when no :class:`Pinger` runs."""
    if config.ping_interval <= 0:
        return
    while True:
        await trio.sleep(config.ping_interval)
        if not await ping_once(ws, session, config):
            return


class Pinger:
    """The server's WebSocket keepalive (see the module doc)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        #: The task runs: connections join its queue instead of starting their own.
        self.running = False
        self._due: deque[tuple[float, Pinged]] = deque()  # (when, connection), in order
        self._wake: trio.Event | None = None  # set when the queue gets its first entry

    def watch(self, ws: WebSocketConnection, session: Session, nursery: trio.Nursery) -> Pinged:
        """Keep ``ws`` alive from now on; its pings run in ``nursery`` (its handler's).
        Mark the result ``done`` when the handler ends."""
        entry = Pinged(ws, session, nursery)
        self._schedule(entry)
        return entry

    def _schedule(self, entry: Pinged) -> None:
        self._due.append((trio.current_time() + self.config.ping_interval, entry))
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    async def _ping(self, entry: Pinged) -> None:
        if await ping_once(entry.ws, entry.session, self.config) and not entry.done:
            self._schedule(entry)

    async def run(self) -> None:
        """Start each connection's ping when it is due, until cancelled."""
        if self.running:
            raise RuntimeError("the pinger is already running")
        if self.config.ping_interval <= 0:
            return  # connections are never pinged (and never join the queue)
        self.running = True
        due = self._due
        try:
            while True:
                if not due:
                    self._wake = wake = trio.Event()
                    await wake.wait()
                    continue
                await trio.sleep_until(due[0][0])
                now = trio.current_time()
                while due and due[0][0] <= now:
                    _, entry = due.popleft()
                    if not entry.done:
                        entry.nursery.start_soon(self._ping, entry)
        finally:
            self.running = False
            self._wake = None
            due.clear()
