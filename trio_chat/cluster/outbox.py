"""The messages this server took from its members and Redis has not shown back yet.

With Redis up, a chat message is queued here, published by the link, and confirmed
when this server reads it back from the history stream with its id (only then is it
delivered, here as everywhere). With Redis unreachable it is delivered here at once,
without an id, and waits here, in order and bounded, to be published on
reconnection; this server then does not deliver it a second time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from itertools import chain, takewhile
from typing import NamedTuple

import trio

from ..protocol import LOBBY
from ..pulse import Pulse

log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """A message this server took from a member and Redis has not (yet) shown back."""

    seq: int
    user: str
    text: str
    timestamp: str
    #: Already delivered here (sent while Redis was unreachable).
    local: bool
    #: The room it was said in (as the room is shown).
    room: str = LOBBY


class Outbox:
    """Queued (not yet published) and sent (published, not yet read back) messages,
    numbered by a per-server sequence the publish script uses to skip repeats."""

    def __init__(self, *, max_pending: int, keep: int) -> None:
        self.max_pending = max_pending
        #: Most messages kept during an outage (the oldest unpublished go first).
        self.keep = keep
        self.connected = False
        self._queue: deque[Outgoing] = deque()  # not yet published
        self._sent: deque[Outgoing] = deque()  # published, not yet read back
        self._seq = 0
        self._dropped = 0
        self._work = Pulse()
        self.progress = Pulse()

    def __len__(self) -> int:
        """Messages taken here that Redis has not shown back yet."""
        return len(self._sent) + len(self._queue)

    @property
    def full(self) -> bool:
        # Published and not read back counts too: a server whose reader falls behind
        # makes its senders wait, as the SQLite store's writer does.
        return self.connected and len(self) >= self.max_pending

    async def wait_writable(self) -> None:
        while self.full:
            await self.progress.wait()

    def add(self, user: str, text: str, ts: str, room: str = LOBBY) -> bool:
        """Queue a message for Redis; True if it must be delivered here now (Redis is
        unreachable). Raises ``trio.WouldBlock`` when full."""
        if self.full:
            raise trio.WouldBlock
        self._seq += 1
        local = not self.connected
        self._queue.append(Outgoing(self._seq, user, text, ts, local, room))
        self._work.fire()
        if local and len(self._queue) > self.keep:
            # A long outage: the oldest unpublished message is delivered here but will
            # not reach the other servers or the history.
            self._drop_oldest_unpublished()
        return local

    def delivered_here(self) -> Iterator[Outgoing]:
        """The messages delivered here during an outage that Redis has not shown back,
        in order (they come first: the outbox is in order)."""
        return takewhile(lambda out: out.local, chain(self._sent, self._queue))

    def confirm(self, seq: int) -> bool:
        """Redis has this server's message ``seq`` (and every earlier one): out of the
        outbox. True if it was delivered here already."""
        shown = False
        # Read back, maybe before the publisher saw the script's reply.
        for queue in (self._sent, self._queue):
            while queue and queue[0].seq <= seq:
                out = queue.popleft()
                shown = out.local if out.seq == seq else shown
        self.progress.fire()
        return shown

    def stop_watching(self, room: str) -> None:
        """This server no longer reads ``room``'s stream: its messages that Redis has
        (published) will not be shown back here, and need not be."""
        if any(out.room == room for out in self._sent):
            self._sent = deque(out for out in self._sent if out.room != room)
            self.progress.fire()

    def unpublished(self, limit: int) -> list[Outgoing]:
        """The oldest ``limit`` messages not published yet."""
        queue = self._queue
        return [queue[i] for i in range(min(limit, len(queue)))]

    def mark_published(self, batch: list[Outgoing]) -> None:
        if batch:
            queue, last = self._queue, batch[-1].seq
            while queue and queue[0].seq <= last:
                self._sent.append(queue.popleft())
        self.progress.fire()

    async def wait_work(self) -> None:
        """Wait until a message waits to be published."""
        while not self._queue:
            await self._work.wait()

    def went_down(self) -> list[Outgoing]:
        """Redis is unreachable: every message it has not shown back is to be delivered
        here now, in order; returns them. (Redis may have some of them: when they come
        back they are not delivered here again.)"""
        self.connected = False
        now_local = []
        for queue in (self._sent, self._queue):
            for i, out in enumerate(queue):
                if not out.local:
                    queue[i] = out._replace(local=True)
                    now_local.append(out)
        self.progress.fire()
        return now_local

    def came_back(self) -> None:
        """Redis answers again: what was published may have been lost with it, so
        everything not shown back is published again (the script skips repeats)."""
        self._sent.extend(self._queue)
        self._queue, self._sent = self._sent, deque()
        self.connected = True
        self.progress.fire()
        self._work.fire()

    def _drop_oldest_unpublished(self) -> None:
        self._queue.popleft()
        self._dropped += 1
        if self._dropped == 1 or self._dropped % 1000 == 0:
            log.warning(
                "cluster: outbox full during the outage; %d messages delivered here only",
                self._dropped,
            )
