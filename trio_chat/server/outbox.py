"""A member's outgoing queue, and the write-through fast path that empties it.

Every connection has one :class:`Outbox`: a bounded list of encoded lines (and
replays) that broadcasts append to without waiting, and one writer task (the
session's) that writes it out. A Trio memory channel per member did the same job but
cost a channel state, two channel ends and a deque per connection, and woke the
writer task for every message: at light load, each message cost every member a task
switch and a write of its own.

The fast path (:class:`Flusher`): a broadcast only appends, and marks the outbox
dirty. One task per server, the flusher, runs after the readers of a scheduling
round have handled what their reads gave them; for each dirty outbox whose writer is
parked (no write, replay or partial write in progress) it writes everything queued
with one non-blocking send on the socket (:meth:`DirectSend.send_now`). Only when
that would block, or writes part of it, or the outbox holds a replay, or the
transport cannot (TLS, gRPC), is the writer woken; it waits for the socket as before,
within ``send_timeout``. So a message at light load costs one syscall per member and
no task switch, and under load one flush still carries everything a round queued.
While readers are still broadcasting, the flusher waits a few rounds more (within the
pacer's share of a queue: :meth:`Flusher._gather`), so a busy room's writes carry more
messages each; a WebSocket reader hands on only one message a round.

What the queue promises is unchanged: it holds at most ``limit`` entries (a full one
evicts its member: the slow-consumer rule), everything leaves in the order it was
queued (a partial direct write's rest goes out before anything else on that socket),
and the writer takes at most ``MAX_BATCH`` lines or ``WRITE_BYTES`` characters per
write, direct or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

import trio

from ..history.base import Replay
from .metrics import Metrics

#: Most lines handed to one transport write (and at most WRITE_BYTES of them).
MAX_BATCH = 512


@runtime_checkable
class DirectSend(Protocol):
    """A transport that can write without waiting (plain TCP and WebSocket sockets)."""

    def send_now(self, lines: list[str], *, batch: bool) -> bool | None:
        """Write ``lines`` now without waiting: True if all of it went; False if only
        part or none did (the transport keeps the rest and writes it first on its next
        ``send``); None if it cannot now (nothing was written: TLS, a write of the
        library's in progress, the connection closing)."""

    @property
    def pending(self) -> bool:
        """Bytes of a partial direct write are waiting for the next ``send``."""


class Outbox:
    """One member's bounded queue of encoded lines and replays (see the module doc).

    ``limit`` is the most entries it holds; ``flusher`` the server's fast path (None:
    every entry wakes the writer, as in tests that run no flusher)."""

    __slots__ = (
        "_busy", "_flusher", "_writer", "closed", "direct", "dirty", "items", "limit", "spawn",
    )

    def __init__(self, limit: int, flusher: Flusher | None = None) -> None:
        # A list, not a deque: an empty deque holds a 64-slot block (760 bytes per
        # connection); the writer takes from the head in slices, at most MAX_BATCH.
        self.items: list[str | Replay] = []
        self.limit = limit
        #: No more entries are taken; the writer drains what is queued, then stops.
        self.closed = False
        #: Waiting in the flusher's list.
        self.dirty = False
        #: Writes a batch of lines without waiting (the session's, when its transport
        #: can), for the flusher.
        self.direct: Callable[[list[str]], bool | None] | None = None
        #: Starts the writer task (the session's); None: the writer is always there.
        #: With a direct write, the writer exists only while it has work: an idle
        #: connection holds no task for it (memory per connection, issue 20).
        self.spawn: Callable[[], object] | None = None
        self._flusher = flusher
        self._writer: trio.lowlevel.Task | None = None  # the writer, parked in wait()
        self._busy = False  # a writer task exists and is not parked

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item: str | Replay) -> bool:
        """Queue ``item`` without waiting; False if the queue is full."""
        items = self.items
        if len(items) >= self.limit:
            return False
        items.append(item)
        if not self._busy and not self.dirty:
            flusher = self._flusher
            if flusher is not None and flusher.running:
                self.dirty = True
                flusher.mark(self)
            else:
                self.wake()
        return True

    def close(self) -> None:
        """Take no more entries; the writer drains the queue, then stops."""
        self.closed = True
        self.wake()

    def clear(self) -> None:
        """Drop whatever is queued (the connection is gone)."""
        self.closed = True
        self.items.clear()

    def take(self, max_size: int) -> tuple[list[str], int]:
        """The lines at the head of the queue, up to a replay, at most ``MAX_BATCH`` of
        them and about ``max_size`` characters; and their size in characters."""
        items = self.items
        size = taken = 0
        for item in items:
            if isinstance(item, Replay) or taken >= MAX_BATCH or size >= max_size:
                break
            taken += 1
            size += len(item)  # characters: cheaper than bytes, and close
        lines = cast("list[str]", items[:taken])  # no Replay among them
        del items[:taken]
        return lines, size

    @property
    def idle(self) -> bool:
        """No writer is at work: nothing of this connection's is being written."""
        return not self._busy

    def wake(self) -> None:
        """Wake the writer if it is parked, or start one if there is none."""
        task = self._writer
        if task is not None:
            self._writer = None
            self._busy = True
            trio.lowlevel.reschedule(task)
        elif not self._busy and self.spawn is not None:
            self._busy = True
            self.spawn()

    def writer_started(self) -> None:
        """The writer task (not started by :meth:`wake`) is running."""
        self._busy = True

    def writer_done(self) -> None:
        """The writer task has ended (nothing left to write, or the session ends)."""
        self._busy = False
        self._writer = None

    async def wait(self) -> None:
        """Park the writer until there is something to write (or the queue closes)."""
        if self.items or self.closed:
            await trio.lowlevel.checkpoint()
            return
        self._writer = trio.lowlevel.current_task()
        self._busy = False

        def abort(_: object) -> trio.lowlevel.Abort:
            self._writer = None
            self._busy = True
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def flush(self, max_size: int) -> int:
        """The fast path, from the flusher: write what is queued with one direct send
        if the writer is parked; else, or if that could not write all of it, wake the
        writer. Returns the lines written."""
        if self._busy or self.closed:
            return 0  # the writer is at work (it takes what is queued next) or draining
        direct = self.direct
        if direct is None:
            self.wake()
            return 0
        lines, _ = self.take(max_size)
        if not lines:  # a replay at the head: the writer's
            self.wake()
            return 0
        sent = direct(lines)
        if sent is None:
            self.items[:0] = lines  # nothing was written
            self.wake()
            return 0
        if not sent or self.items:
            self.wake()  # the rest of a partial write, or more than one batch
        return len(lines)


#: Most scheduling rounds the flusher waits for readers that are still broadcasting
#: before it writes (:meth:`Flusher.run`).
GATHER_ROUNDS = 6


class Flusher:
    """The server's fast path: one task that writes every dirty outbox once the
    readers of a scheduling round are done (see the module doc).

    ``gather``: while readers go on broadcasting, it waits up to that many more
    broadcasts (and :data:`GATHER_ROUNDS` rounds) before it writes, so each write
    carries more of them. A WebSocket reader hands its session one message per
    round (trio-websocket's reader task and channel), where a TCP read hands on
    every line it got: without waiting, a busy room's WebSocket members got a write
    for every 7 messages, TCP members one for every 24. The pacer's share of a queue
    (:data:`~.pacing.PACE_SHARE`) bounds it, as it bounds what readers broadcast
    between two turns of the writers; a round without a broadcast (light load) ends
    the wait at once. 1: write every round."""

    def __init__(self, max_size: int, metrics: Metrics | None = None, gather: int = 1) -> None:
        self.max_size = max_size
        self.gather = gather
        #: The flusher task runs: outboxes wait for it instead of waking their writers.
        self.running = False
        self._metrics = metrics if metrics is not None else Metrics()
        self._dirty: list[Outbox] = []
        self._since = 0  # broadcasts counted when the first of them was marked
        self._task: trio.lowlevel.Task | None = None  # parked, nothing dirty

    def mark(self, outbox: Outbox) -> None:
        """``outbox`` has something new to write."""
        dirty = self._dirty
        if not dirty:
            self._since = self._metrics.broadcasts  # for :meth:`_gather`
        dirty.append(outbox)
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        """Flush dirty outboxes until cancelled. Whatever is dirty when it stops goes
        to the writers."""
        if self.running:
            raise RuntimeError("the flusher is already running")
        self.running = True
        try:
            while True:
                if not self._dirty:
                    self._task = trio.lowlevel.current_task()

                    def abort(_: object) -> trio.lowlevel.Abort:
                        self._task = None
                        return trio.lowlevel.Abort.SUCCEEDED

                    await trio.lowlevel.wait_task_rescheduled(abort)
                else:
                    await trio.lowlevel.checkpoint()
                await self._gather()
                dirty, self._dirty = self._dirty, []
                max_size, metrics = self.max_size, self._metrics
                for outbox in dirty:
                    outbox.dirty = False
                    written = outbox.flush(max_size)
                    if written > metrics.queue_high_water:
                        # Everything queued was taken at once: the queue's depth (the
                        # writer's check, for what the fast path writes).
                        metrics.queue_depth(written + len(outbox))
        finally:
            self.running = False
            self._task = None
            dirty, self._dirty = self._dirty, []
            for outbox in dirty:
                outbox.dirty = False
                outbox.wake()

    async def _gather(self) -> None:
        """Wait while the readers are still broadcasting, a round at a time: until a
        whole round passes without a broadcast, or one more round like the last would
        take what was broadcast since the first mark past ``gather``, or
        :data:`GATHER_ROUNDS` rounds. (Trio runs a round's tasks in any order, so
        only the count from two turns back, or from the mark, spans a whole round of
        every other task.)"""
        gather = self.gather
        if gather <= 1:
            return
        metrics = self._metrics
        first = self._since
        # The count just after the broadcast that marked: the first look, a round back.
        earlier = latest = first + 1
        for turn in range(GATHER_ROUNDS):
            now = metrics.broadcasts
            if (turn and now <= earlier) or 2 * now - first - latest >= gather:
                return
            earlier, latest = latest, now
            await trio.lowlevel.checkpoint()
