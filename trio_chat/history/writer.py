"""The history store's writer: a bounded hand-over buffer and one thread that commits.

The event loop never touches the database. Chat messages are handed to the store
with :meth:`BatchingStore.put_nowait` into a bounded buffer; a task hands everything
buffered, as one batch, to the store's single writer thread, which commits it as one
transaction (group commit), so a burst of thousands of messages costs a few commits.
While a batch commits, the next one gathers. When the buffer is full the *sender* waits
(:meth:`BatchingStore.wait_writable`); the room never does.

At most ``max_pending`` messages (and ids given to direct messages, which are not
stored: :meth:`BatchingStore.reserve`) are ever handed over and not yet committed: that
is the most a crash (not a clean stop) can lose. Changes to the rooms themselves (one
created, a topic, a room removed: :meth:`BatchingStore.save_room`) ride along with the
next batch; there is at most one per room waiting. A backend implements the
``_*_sync`` methods, which run in the writer thread, in order (``_read_sync`` and
``_start_sync`` may run beside it).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeVar

import trio

from ..errors import StartupError
from ..protocol import LOBBY_KEY
from ..pulse import Pulse
from ..server.metrics import Histogram
from .base import Snapshot, StoredMessage

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Most messages handed to the writer and not yet committed (one batch at most).
MAX_PENDING: Final = 1024
#: Least time (seconds) from one commit's start to the next one's while messages keep
#: coming, unless half of ``max_pending`` is waiting: each commit has a fixed cost (a
#: hand-off to the writer thread and back, five statements), so at 2,000 messages/s
#: one commit per few messages took a fifth of the server. Crash loss is still
#: bounded by ``max_pending``; a lone message after a quiet spell commits at once.
COMMIT_INTERVAL: Final = 0.02


@dataclass
class RoomChange:
    """What the store must do to one room with the next batch: remove it (its messages
    with it) and/or save it as it is now (created, a new topic, last used then)."""

    key: str
    drop: bool = False
    #: (name, topic, when last used as Unix time): saved after any drop.
    save: tuple[str, str, float] | None = None
    #: A removal takes the room's messages with ids up to this one (those handed over
    #: before it; set by the store): a room taken again at once keeps its new ones.
    drop_through: int = 0


class StoreError(StartupError):
    """The history store cannot be used (corrupt, unwritable, from a newer version):
    the server does not start, with one line and exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


class WriterThread:
    """The one thread that owns the database's writing connection: it runs jobs one at
    a time, in the order they were given, and wakes the awaiting task when done."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()
            # Not kept until the next job comes: a batch of messages would stay alive
            # with it while the server is quiet.
            del job

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the thread. Not cancellable, like ``trio.to_thread.run_sync``:
        a job once handed over runs to its end and its result is not dropped."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        result: list[T] = []
        error: list[BaseException] = []

        def job() -> None:
            try:
                result.append(fn())
            except BaseException as exc:
                error.append(exc)
            token.run_sync_soon(done.set)

        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        if error:
            raise error[0]
        return result[0]

    def stop(self) -> None:
        """Let the thread end after the jobs already given."""
        self._jobs.put(None)


class BatchingStore(ABC):
    """The bounded hand-over buffer and group-commit writer shared by every backend."""

    def __init__(
        self, *, keep: int, max_pending: int = MAX_PENDING,
        commit_interval: float = COMMIT_INTERVAL,
    ) -> None:
        if keep < 1 or max_pending < 1:
            raise ValueError("keep and max_pending must be positive")
        self.keep = keep
        # Never more in flight than is kept, so whatever the in-memory tail of the
        # newest messages does not hold is already committed (see history.py).
        self.max_pending = min(max_pending, keep)
        #: Messages with ids up to this one may be missing in some room: pruned past
        #: the retention, or lost in a crash.
        self.pruned_through = 0
        #: Messages of every room with ids up to this one may be missing: lost in a
        #: crash, or in a batch that could not be written. A replay from before it is
        #: not complete (each room's own pruning is the store's to say).
        self.lost_through = 0
        self._pending: list[StoredMessage] = []
        self._in_flight = 0
        self._committing = False  # a batch is in the writer thread
        self._handed = 0  # messages handed over, ever
        self._last_handed_id = 0
        self._done = 0  # ... of which committed (or given up on after an error)
        self._done_id = 0  # the last id of the last batch done: every id up to it is
        #: Ids given to direct messages since the last batch (and the newest): they count
        #: toward the window a crash may lose, so the next start skips past them.
        self._reserved = 0
        #: Changes to rooms waiting for the next batch, by room key.
        self._rooms: dict[str, RoomChange] = {}
        #: What the batch being committed does besides its messages (read in the writer
        #: thread by ``_write_sync``): the room changes, and the id floor to record.
        self.changes_in_flight: list[RoomChange] = []
        self.floor_in_flight = 0
        #: Called in the event loop after each batch with the rooms it pruned (key ->
        #: pruned through), by the per-room retention or the server-wide byte bound.
        self.on_pruned: Callable[[dict[str, int]], None] | None = None
        #: Set in the writer thread by ``_write_sync``: what it pruned (see on_pruned).
        self.pruned_rooms: dict[str, int] = {}
        self._work = trio.Event()
        self._urgent = trio.Event()  # half the window waits, or a flush: commit now
        self.commit_interval = commit_interval
        self._last_commit = float("-inf")
        self._progress = Pulse()
        self._writer_alive = False
        self._closed = False
        #: Seconds each batch took to commit (hand-off to the thread and back included).
        self.commit_seconds = Histogram()
        #: Why the last batch could not be written (None once one is written again).
        self._write_error: str | None = None
        self._writer: WriterThread | None = None
        #: Reads run in the writer thread too, unless a backend can read beside it.
        self._reads_beside_writer = False
        self._read_limiter = trio.CapacityLimiter(1)

    # ------------------------------------------------------------ backend hooks

    @abstractmethod
    def _open_sync(self, tail: int) -> Snapshot:
        """Open (creating if needed); the newest ``tail`` rows and where ids continue."""

    @abstractmethod
    def _write_sync(self, batch: list[StoredMessage]) -> int:
        """Commit ``batch`` in one transaction, prune; return ``pruned_through``."""

    @abstractmethod
    def _read_sync(
        self, after: int, before: int, limit: int | None = None, room: str = LOBBY_KEY
    ) -> tuple[list[StoredMessage], int]:
        """Messages of ``room`` (its key) with ``after < id < before``, oldest first (the
        first ``limit``), and how far that room is pruned, read from one consistent
        snapshot."""

    def _start_sync(self, room: str, before: int, count: int) -> int:
        """The id after which the newest ``count`` messages of ``room`` before
        ``before`` begin (0 if it has no more than that)."""
        raise NotImplementedError

    @abstractmethod
    def _close_sync(self, last_id: int) -> None:
        """Record a clean stop; ids continue after ``last_id`` (even if its batch
        could not be written), and ``pruned_through`` is kept."""

    # ------------------------------------------------------------ event-loop side

    async def open(self, tail: int) -> Snapshot:
        """Open (creating if needed); returns the newest ``tail`` rows and the next id."""
        self._writer = WriterThread(f"trio-chat history writer ({type(self).__name__})")
        try:
            snapshot = await self._writer.run_sync(partial(self._open_sync, tail))
        except BaseException:
            self._writer.stop()
            raise
        self.pruned_through = snapshot.pruned_through
        return snapshot

    @property
    def full(self) -> bool:
        return self.pending >= self.max_pending

    @property
    def pending(self) -> int:
        """Messages (and direct messages' ids) handed over and not committed yet
        (``trio_chat_history_pending``)."""
        return len(self._pending) + self._in_flight + self._reserved

    def put_nowait(self, message: StoredMessage) -> None:
        """Hand one message to the writer; ``trio.WouldBlock`` when the buffer is full."""
        if self._closed:
            raise trio.ClosedResourceError("the history store is closed")
        if self.full:
            raise trio.WouldBlock
        self._pending.append(message)
        self._handed += 1
        self._last_handed_id = message.id
        self._work.set()
        if 2 * len(self._pending) >= self.max_pending:
            self._urgent.set()

    def reserve(self, message_id: int) -> None:
        """``message_id`` was given to a direct message, which is not stored: record it
        with the next batch, so no later start gives it out again. Counts toward the
        window like a message; ``trio.WouldBlock`` when the buffer is full."""
        if self._closed:
            raise trio.ClosedResourceError("the history store is closed")
        if self.full:
            raise trio.WouldBlock
        self._reserved += 1
        self._last_handed_id = message_id
        self._work.set()
        if 2 * (len(self._pending) + self._reserved) >= self.max_pending:
            self._urgent.set()

    def save_room(self, change: RoomChange) -> None:
        """Queue a change to a room for the next batch (never waits: there is at most
        one per room). A removal followed by a save (the name taken again) keeps both."""
        if self._closed:
            return
        waiting = self._rooms.get(change.key)
        if change.drop:
            change.drop_through = self._last_handed_id
        elif waiting is not None and waiting.drop:
            change.drop, change.drop_through = True, waiting.drop_through
        self._rooms[change.key] = change
        self._work.set()

    async def wait_committed(self, through: int) -> None:
        """Return once every message handed over with an id up to ``through`` is
        committed (or given up on): a replay reads the store only for messages its
        room's tail no longer holds, which may have been handed over just now."""
        through = min(through, self._last_handed_id)
        while self._done_id < through:
            if self._writer_alive:
                self._urgent.set()
                await self._progress.wait()
            else:
                await self._commit_pending()

    async def wait_writable(self) -> None:
        """Return once :meth:`put_nowait` will succeed (if called without awaiting).

        Returns at once, without a checkpoint, when there is room: it is called once
        per chat message by a reader that has just awaited its socket anyway.
        """
        while self.full:
            await self._progress.wait()

    async def run(self) -> None:
        """The writer task: commit whatever is buffered, one transaction per batch."""
        self._writer_alive = True
        try:
            while True:
                await self._work.wait()
                delay = self._last_commit + self.commit_interval - trio.current_time()
                if delay > 0:  # gather more into this commit (see COMMIT_INTERVAL)
                    with trio.move_on_after(delay):
                        await self._urgent.wait()
                await self._commit_pending()
        finally:
            self._writer_alive = False
            self._wake()

    async def flush(self) -> None:
        """Wait until every message handed over so far is committed (and every id
        reserved, and every change to a room, recorded)."""
        target = self._handed
        self._urgent.set()
        while self._done < target or self._reserved or self._rooms or self._committing:
            if self._writer_alive:
                await self._progress.wait()
            else:
                await self._commit_pending()

    async def read(
        self, after: int, before: int, limit: int | None = None, room: str = LOBBY_KEY
    ) -> tuple[list[StoredMessage], int]:
        """Committed messages of ``room`` (its key) with ``after < id < before`` (in a
        thread; the first ``limit`` of them) and how far that room is pruned."""
        return await self._reading(partial(self._read_sync, after, before, limit, room))

    async def start(self, room: str, before: int, count: int) -> int:
        """Where the newest ``count`` committed messages of ``room`` before ``before``
        begin (see ``_start_sync``)."""
        return await self._reading(partial(self._start_sync, room, before, count))

    async def _reading(self, read: Callable[[], T]) -> T:
        if self._reads_beside_writer:
            return await trio.to_thread.run_sync(read, limiter=self._read_limiter)
        return await self._in_writer(read)

    async def aclose(self) -> None:
        """Commit what is left (the writer task must have stopped), then close."""
        self._closed = True
        await self.flush()
        try:
            await self._in_writer(partial(self._close_sync, self._last_handed_id))
        finally:
            assert self._writer is not None
            self._writer.stop()

    async def _commit_pending(self) -> None:
        self._work = trio.Event()
        self._urgent = trio.Event()
        self._last_commit = trio.current_time()
        batch, self._pending = self._pending, []
        reserved, self._reserved = self._reserved, 0
        changes, self._rooms = list(self._rooms.values()), {}
        if not batch and not reserved and not changes:
            await trio.lowlevel.checkpoint()
            return
        through = self._last_handed_id  # every id up to it is in this batch or done
        self._in_flight = len(batch) + reserved
        self.changes_in_flight = changes
        self.floor_in_flight = through if reserved else 0
        self.pruned_rooms = {}
        started = time.perf_counter()
        self._committing = True
        try:
            # Not cancellable: a batch once started is committed before we go on.
            pruned = await self._in_writer(partial(self._write_logged, batch))
            self.commit_seconds.observe(time.perf_counter() - started)
        finally:
            self._committing = False
            self._in_flight = 0
            self._done += len(batch)
            self._done_id = max(self._done_id, through)
            self._wake()
        # A batch that could not be written counts as lost: replays say so.
        if pruned is None:
            if batch:
                self.lost_through = batch[-1].id
                self.pruned_through = max(self.pruned_through, batch[-1].id)
        else:
            self.pruned_through = pruned
        if self.pruned_rooms and self.on_pruned is not None:
            self.on_pruned(self.pruned_rooms)

    async def _in_writer(self, fn: Callable[[], T]) -> T:
        assert self._writer is not None, "the store is not open"
        return await self._writer.run_sync(fn)

    def _write_logged(self, batch: list[StoredMessage]) -> int | None:
        """Commit ``batch``; a batch that cannot be written is logged and skipped.

        Not only ``sqlite3.Error`` (disk full, a table an admin dropped): binding a
        value can raise ``OverflowError`` or ``ValueError`` too, and one bad batch
        must cost its messages, never the server (docs/protocol.md, *Durability*).
        """
        try:
            pruned = self._write_sync(batch)
        except Exception as error:
            why = str(error) if isinstance(error, sqlite3.Error) else repr(error)
            if batch:
                log.error(
                    "history: could not store %d messages (ids %d-%d): %s",
                    len(batch), batch[0].id, batch[-1].id, why,
                )
            else:
                log.error("history: could not store the rooms' changes: %s", why)
            self._write_error = why  # (one attribute set from the thread: atomic)
            return None
        self._write_error = None
        return pruned

    def not_ready(self) -> str | None:
        """Why the store cannot take messages now (for ``/readyz``), or None."""
        if self._closed:
            return "the history store is closed"
        if not self._writer_alive:
            return "the history writer is not running"
        if self._write_error is not None:
            return f"the history store cannot write: {self._write_error}"
        return None

    def _wake(self) -> None:
        self._progress.fire()


@asynccontextmanager
async def running(store: BatchingStore, tail: int) -> AsyncIterator[Snapshot]:
    """Open ``store``, run its writer, and on the way out (also when cancelled) commit
    everything handed over and close it. Yields what :meth:`BatchingStore.open` read."""
    snapshot = await store.open(tail)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run)
            try:
                yield snapshot
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
