"""One server's history in a SQLite file (stdlib ``sqlite3``).

:class:`SqliteStore` is the schema and the statements, run in the writer thread of
:class:`~.writer.BatchingStore`; :class:`SqliteHistory` allocates ids in the event loop,
so they follow the one order in which the room broadcasts. A store holds its file's
lock (:mod:`.lock`: one server per database) from before it opens the file until after
it has closed it, and checks the file before it writes to it (``_prepare``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, NamedTuple

from ..config import Config
from ..protocol import MAX_ID
from .base import RING, History, IdsExhausted, Snapshot, StoredMessage
from .lock import DatabaseInUse, DatabaseLock
from .writer import COMMIT_INTERVAL, MAX_PENDING, BatchingStore, StoreError, running

log = logging.getLogger(__name__)

MEMORY: Final = ":memory:"
SCHEMA_VERSION: Final = 1
#: The tables and columns a database of this version must have: (type, primary key).
SCHEMA: Final = {
    "messages": {"id": ("INTEGER", 1), "user": ("TEXT", 0), "text": ("TEXT", 0),
                 "ts": ("TEXT", 0)},
    "meta": {"key": ("TEXT", 1), "value": ("INTEGER", 0)},
}
#: The meta rows, each an integer from 0 to this.
META: Final = {"pruned_through": MAX_ID, "clean": 1, "window": MAX_ID, "id_floor": MAX_ID}


class _Plan(NamedTuple):
    """What a database says about this run, checked: where ids continue, and so on."""

    last_id: int
    pruned: int
    rows: int
    lost_window: int = 0  # ids skipped after a run that did not stop cleanly


def _decode(data: bytes) -> str:
    """TEXT as it is stored; bytes that are not UTF-8 (a tampered row) become U+FFFD."""
    return data.decode("utf-8", "replace")


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # a BLOB where text belongs (a tampered row)
        return _decode(value)
    return str(value)


def _stored(row: tuple[int, object, object, object]) -> StoredMessage:
    """A row as a message whose fields are strings whatever a tampered row holds."""
    return StoredMessage(row[0], _text(row[1]), _text(row[2]), _text(row[3]))


class SqliteStore(BatchingStore):
    """History in one SQLite file (stdlib ``sqlite3``), WAL mode.

    Schema version in ``PRAGMA user_version``. ``synchronous=NORMAL``: a commit
    survives the process being killed; a power cut may roll back the last commits.
    """

    def __init__(
        self, path: str, *, keep: int, max_pending: int = MAX_PENDING,
        commit_interval: float = COMMIT_INTERVAL,
    ) -> None:
        super().__init__(keep=keep, max_pending=max_pending, commit_interval=commit_interval)
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._count = 0
        self._meta_pruned = 0  # pruned_through as the database has it
        self._lock: DatabaseLock | None = None  # one server per database file
        if path != MEMORY:
            # A file has a second connection, read from trio's worker threads (one at a
            # time), so replay reads never wait for a commit: WAL readers see the last
            # commit while the writer goes on.
            self._reads_beside_writer = True

    def _connect(self, *, for_reads: bool = False) -> sqlite3.Connection:
        # Autocommit mode: we BEGIN/COMMIT ourselves. The writing connection lives in
        # the writer thread; the reading one moves between worker threads.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=not for_reads)
        conn.text_factory = _decode  # a tampered row must not stop a replay
        return conn

    def _open_sync(self, tail: int) -> Snapshot:
        try:
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._lock = DatabaseLock(self.path)
                self._lock.acquire()  # before the database is touched at all
            conn = self._conn = self._connect()
            snapshot = self._prepare(conn, tail)
            self._reader = self._connect(for_reads=True) if self.path != MEMORY else conn
        except DatabaseInUse as error:
            self._close_connections()
            raise StoreError(str(error)) from None
        except StoreError:
            self._close_connections()
            raise
        except (sqlite3.Error, OSError) as error:
            self._close_connections()
            raise StoreError(f"cannot use history database {self.path}: {error}") from None
        except Exception as error:  # whatever else a damaged file does: still one line
            self._close_connections()
            raise StoreError(
                f"cannot use history database {self.path}: {type(error).__name__}: {error}"
            ) from None
        return snapshot

    def _prepare(self, conn: sqlite3.Connection, tail: int) -> Snapshot:
        """Check the database, then take it over for this run.

        Everything that can refuse it is read first, in a read transaction, before
        anything is written (not even the switch to WAL): a database this refuses is
        left byte for byte as it was. The same checks run again inside the write
        transaction that marks it in use (an admin tool may have written meanwhile).
        """
        conn.execute("BEGIN")
        try:
            self._plan(conn)
        finally:
            conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")  # fails here, not later, if we cannot write
        try:
            plan = self._plan(conn)
            if plan is None:
                self._create(conn)
                plan = _Plan(last_id=0, pruned=0, rows=0)
            conn.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [
                    (0, "clean"),
                    (self.max_pending, "window"),
                    (plan.last_id, "id_floor"),
                    (plan.pruned, "pruned_through"),
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if plan.lost_window:
            # The last run was killed: up to its window of ids may have been broadcast
            # and never committed. They are skipped so no id is reused, and resuming
            # clients are told that their replay may lack some.
            log.warning(
                "history: the last run did not stop cleanly; up to %d messages "
                "may be lost; ids continue after %d", plan.lost_window, plan.last_id
            )
        self._count = plan.rows
        self._meta_pruned = plan.pruned
        rows = conn.execute(
            "SELECT id, user, text, ts FROM messages ORDER BY id DESC LIMIT ?", (tail,)
        ).fetchall()
        return Snapshot(
            last_id=plan.last_id,
            pruned_through=plan.pruned,
            count=plan.rows,
            tail=[_stored(row) for row in reversed(rows)],
        )

    def _plan(self, conn: sqlite3.Connection) -> _Plan | None:
        """Where this run's ids continue, read and checked (no writes); None for a
        new, empty database. Raises :class:`StoreError` for one it must not use."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"history database {self.path} has schema version {version}, newer than "
                f"this trio-chat understands ({SCHEMA_VERSION})"
            )
        checked = conn.execute("PRAGMA quick_check").fetchone()[0]
        if checked != "ok":
            raise StoreError(f"history database {self.path} is corrupt: {checked}")
        if version == 0:
            if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path} is an SQLite database, but not trio-chat's")
            return None
        self._check_schema(conn)
        meta = self._read_meta(conn)
        max_id, count = conn.execute(
            "SELECT COALESCE(MAX(id), 0), COUNT(*) FROM messages"
        ).fetchone()
        last_id, pruned = max(max_id, meta["id_floor"]), meta["pruned_through"]
        lost_window = 0 if meta["clean"] else meta["window"]
        if lost_window:
            last_id += lost_window
            pruned = last_id
        if last_id >= MAX_ID:
            raise StoreError(
                f"history database {self.path} has no message ids left (ids continue "
                f"after {last_id}; the largest is {MAX_ID}): start a new --db"
            )
        return _Plan(last_id, pruned, count, lost_window)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        for table, columns in SCHEMA.items():
            found = {
                row[1]: (str(row[2]).upper(), row[5])  # name: (declared type, primary key)
                for row in conn.execute(f"PRAGMA table_info({table})")
            }
            if not found:
                raise StoreError(f"history database {self.path} is damaged: no table {table}")
            for column, (kind, key) in columns.items():
                if found.get(column) != (kind, key):
                    raise StoreError(
                        f"history database {self.path} is damaged: no column {table}.{column}"
                        f" {kind}{' PRIMARY KEY' if key else ''}"
                    )

    def _read_meta(self, conn: sqlite3.Connection) -> dict[str, int]:
        values = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        meta: dict[str, int] = {}
        for key, high in META.items():
            if key not in values:
                raise StoreError(
                    f"history database {self.path} is damaged: meta row {key!r} is missing"
                )
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                shown = repr(value)
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                raise StoreError(
                    f"history database {self.path} is damaged: meta {key!r} is {shown}, "
                    f"not an integer from 0 to {high}"
                )
            meta[key] = value
        return meta

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, user TEXT NOT NULL,"
            " text TEXT NOT NULL, ts TEXT NOT NULL)"
        )
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("pruned_through", 0), ("clean", 1), ("window", 0), ("id_floor", 0)],
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write_sync(self, batch: list[StoredMessage]) -> int:
        conn = self._conn
        assert conn is not None
        count = self._count + len(batch)
        pruned = self.pruned_through
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT INTO messages (id, user, text, ts) VALUES (?, ?, ?, ?)",
                batch,
            )
            if count > self.keep:
                (first_kept,) = conn.execute(
                    "SELECT id FROM messages ORDER BY id LIMIT 1 OFFSET ?",
                    (count - self.keep,),
                ).fetchone()
                conn.execute("DELETE FROM messages WHERE id < ?", (first_kept,))
                pruned, count = max(pruned, first_kept - 1), self.keep
            if pruned != self._meta_pruned:  # pruned now, or a failed batch before
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'pruned_through'", (pruned,)
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._count, self._meta_pruned = count, pruned
        return pruned

    def _read_sync(
        self, after: int, before: int, limit: int | None = None
    ) -> tuple[list[StoredMessage], int]:
        conn = self._reader
        assert conn is not None
        conn.execute("BEGIN")  # one snapshot for both reads (WAL readers never block)
        try:
            rows = conn.execute(
                "SELECT id, user, text, ts FROM messages WHERE id > ? AND id < ?"
                " ORDER BY id LIMIT ?",
                (after, before, -1 if limit is None else limit),
            ).fetchall()
            (pruned,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'pruned_through'"
            ).fetchone()
        finally:
            conn.execute("COMMIT")
        return [_stored(row) for row in rows], pruned

    def _close_sync(self, last_id: int) -> None:
        try:
            if self._conn is not None:
                self._conn.executemany(
                    "UPDATE meta SET value = MAX(value, ?) WHERE key = ?",
                    [(last_id, "id_floor"), (self.pruned_through, "pruned_through"),
                     (1, "clean")],
                )
        except sqlite3.Error as error:
            log.error("history: could not mark the database closed cleanly: %s", error)
        finally:
            self._close_connections()

    def _close_connections(self) -> None:
        """Close the database, then let the next server in."""
        try:
            for conn in {id(c): c for c in (self._reader, self._conn) if c is not None}.values():
                conn.close()
        finally:
            self._conn = self._reader = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None


class SqliteHistory(History):
    """One server's history in SQLite: ids allocated here, in the event loop
    (continuing after the store's last id), so they follow the order in which the
    room broadcasts."""

    def __init__(
        self, store: BatchingStore, snapshot: Snapshot, *, replay: int, ring: int = RING
    ) -> None:
        size = self.ring_size(store, replay, ring)
        super().__init__(snapshot.tail, last_id=snapshot.last_id, replay=replay, ring=size)
        self.store = store
        self._older_in_store = snapshot.count > len(self._ring)

    @staticmethod
    def ring_size(store: BatchingStore, replay: int, ring: int = RING) -> int:
        """Never smaller than the store's uncommitted window (see the module doc)."""
        return min(store.keep, max(ring, replay, store.max_pending))

    @property
    def pruned_through(self) -> int:
        return self.store.pruned_through

    def record(self, user: str, text: str, ts: str) -> StoredMessage:
        """Give a new message the next id and hand it to the store; raises
        ``trio.WouldBlock`` (nothing changed) when the store is full (await
        ``store.wait_writable()`` first), :class:`~.base.IdsExhausted` once the last
        id (``MAX_ID``) is used."""
        if self.last_id >= MAX_ID:
            raise IdsExhausted(f"every message id up to {MAX_ID} is used")
        message = StoredMessage(self.last_id + 1, user, text, ts)
        self.store.put_nowait(message)
        self.last_id = message.id
        self._remember(message)
        return message

    async def _read(
        self, after: int, before: int, limit: int
    ) -> tuple[list[StoredMessage], int]:
        return await self.store.read(after, before, limit)


@asynccontextmanager
async def open_history(
    config: Config, store: BatchingStore | None = None
) -> AsyncIterator[SqliteHistory]:
    """The configured store, running; everything handed over is committed on exit.

    Raises :class:`~.writer.StoreError` if the database cannot be used.
    """
    if store is None:
        store = SqliteStore(config.db, keep=config.history_keep)
    tail = SqliteHistory.ring_size(store, config.history_replay)
    async with running(store, tail) as snapshot:
        log.info(
            "history: %s, %d messages kept, ids continue after %d",
            config.db, snapshot.count, snapshot.last_id,
        )
        yield SqliteHistory(store, snapshot, replay=config.history_replay)
