"""One server's history in a SQLite file (stdlib ``sqlite3``).

:class:`SqliteStore` is the schema and the statements, run in the writer thread of
:class:`~.writer.BatchingStore`; :class:`SqliteHistory` allocates ids in the event loop,
so they follow the one order in which the rooms broadcast. A store holds its file's
lock (:mod:`.lock`: one server per database) from before it opens the file until after
it has closed it, and checks the file before it writes to it (``_prepare``).

Schema version 2 keeps every room's messages in one table (ids are one sequence), with
the room's key on each row and an index by room, and the rooms themselves (their name
as first created, topic, when last used, how far pruned) in ``rooms``. A version 1
file (one room) is migrated when a server first opens it: its messages are
``#lobby``'s. Each batch prunes the rooms it wrote to past ``--history-keep``, then the
oldest messages of any room while the database's pages in use are over
``--history-max-mb`` (what the file really holds, indexes included, read from two
pragmas: nothing to count per row).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, NamedTuple

from ..config import Config
from ..protocol import LOBBY, LOBBY_KEY, MAX_ID, room_key
from .base import (
    MEMORY_BUDGET,
    RING,
    History,
    IdsExhausted,
    Replay,
    RoomLog,
    Snapshot,
    StoredMessage,
    StoredRoom,
    Tails,
)
from .lock import DatabaseInUse, DatabaseLock
from .writer import (
    COMMIT_INTERVAL,
    MAX_PENDING,
    BatchingStore,
    RoomChange,
    StoreError,
    running,
)

log = logging.getLogger(__name__)

MEMORY: Final = ":memory:"
SCHEMA_VERSION: Final = 2
#: The tables and columns a database of each version must have: (type, primary key).
SCHEMAS: Final = {
    1: {
        "messages": {"id": ("INTEGER", 1), "user": ("TEXT", 0), "text": ("TEXT", 0),
                     "ts": ("TEXT", 0)},
        "meta": {"key": ("TEXT", 1), "value": ("INTEGER", 0)},
    },
    2: {
        "messages": {"id": ("INTEGER", 1), "user": ("TEXT", 0), "text": ("TEXT", 0),
                     "ts": ("TEXT", 0), "room": ("TEXT", 0)},
        "rooms": {"key": ("TEXT", 1), "name": ("TEXT", 0), "topic": ("TEXT", 0),
                  "active": ("REAL", 0), "pruned_through": ("INTEGER", 0)},
        "meta": {"key": ("TEXT", 1), "value": ("INTEGER", 0)},
    },
}
SCHEMA: Final = SCHEMAS[SCHEMA_VERSION]
#: The server-wide bound on stored history by default (``--history-max-mb``).
MAX_BYTES: Final = 1024 * 2**20
#: Rows deleted per step at most when pruning the oldest messages of every room.
PRUNE_STEP: Final = 512
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


def _stored(row: tuple[int, object, object, object], room: str = LOBBY) -> StoredMessage:
    """A row as a message whose fields are strings whatever a tampered row holds."""
    return StoredMessage(row[0], _text(row[1]), _text(row[2]), _text(row[3]), room)


def _used_bytes(conn: sqlite3.Connection) -> int:
    """The database's pages in use, in bytes (what ``--history-max-mb`` bounds)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _name_in(batch: list[StoredMessage], key: str) -> str:
    """The room's name as a message of ``batch`` shows it (a room new to the store)."""
    return next((m.room for m in batch if room_key(m.room) == key), key)


class _RoomRows:
    """A room's rows as the writer thread keeps count of them."""

    __slots__ = ("count", "name")

    def __init__(self, name: str, count: int = 0) -> None:
        self.name = name
        self.count = count


class SqliteStore(BatchingStore):
    """History in one SQLite file (stdlib ``sqlite3``), WAL mode.

    Schema version in ``PRAGMA user_version``. ``synchronous=NORMAL``: a commit
    survives the process being killed; a power cut may roll back the last commits.
    ``keep`` is per room; ``max_bytes`` bounds the database's pages in use.
    """

    def __init__(
        self, path: str, *, keep: int, max_pending: int = MAX_PENDING,
        commit_interval: float = COMMIT_INTERVAL, max_bytes: int = MAX_BYTES,
    ) -> None:
        super().__init__(keep=keep, max_pending=max_pending, commit_interval=commit_interval)
        self.path = path
        self.max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # The writer thread's count of every room's rows (by key), and of all of them.
        self._rows: dict[str, _RoomRows] = {}
        self._bytes = 0  # the pages in use, in bytes, after the last commit
        self._meta_lost = 0  # the meta row pruned_through as the database has it
        self._lock: DatabaseLock | None = None  # one server per database file
        if path != MEMORY:
            # A file has a second connection, read from trio's worker threads (one at a
            # time), so replay reads never wait for a commit: WAL readers see the last
            # commit while the writer goes on.
            self._reads_beside_writer = True

    @property
    def stored_bytes(self) -> int:
        """The database's pages in use, in bytes (indexes included, the WAL not), as of
        the last commit: what ``max_bytes`` bounds."""
        return self._bytes

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
        """Check the database, then take it over for this run (migrating a version 1
        file first).

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
            elif conn.execute("PRAGMA user_version").fetchone()[0] == 1:
                self._migrate(conn)
            conn.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [
                    (0, "clean"),
                    (self.max_pending, "window"),
                    (plan.last_id, "id_floor"),
                    (plan.pruned, "pruned_through"),
                ],
            )
            rooms = self._load_rooms(conn)
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
        self._meta_lost = plan.pruned
        self.lost_through = plan.pruned
        names = {key: room.name for key, room in rooms.items()}
        rows = conn.execute(
            "SELECT id, user, text, ts, room FROM messages ORDER BY id DESC LIMIT ?", (tail,)
        ).fetchall()
        return Snapshot(
            last_id=plan.last_id,
            pruned_through=max([plan.pruned, *(r.pruned_through for r in rooms.values())]),
            count=plan.rows,
            tail=[_stored(row[:4], names.get(_text(row[4]), LOBBY)) for row in reversed(rows)],
            rooms=list(rooms.values()),
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
        self._check_schema(conn, SCHEMAS.get(version, SCHEMA))
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

    def _check_schema(
        self, conn: sqlite3.Connection, schema: dict[str, dict[str, tuple[str, int]]]
    ) -> None:
        for table, columns in schema.items():
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
            " text TEXT NOT NULL, ts TEXT NOT NULL, room TEXT NOT NULL)"
        )
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("pruned_through", 0), ("clean", 1), ("window", 0), ("id_floor", 0)],
        )
        self._create_rooms(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _create_rooms(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE INDEX messages_by_room ON messages (room, id)")
        conn.execute(
            "CREATE TABLE rooms (key TEXT PRIMARY KEY, name TEXT NOT NULL,"
            " topic TEXT NOT NULL, active REAL NOT NULL, pruned_through INTEGER NOT NULL)"
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Version 1 (one room) to 2, inside the transaction that takes the file over:
        every message is ``#lobby``'s (a column with a default: no row is rewritten; the
        index by room is built once)."""
        log.info("history: migrating %s to schema version %d (rooms)", self.path,
                 SCHEMA_VERSION)
        conn.execute(
            f"ALTER TABLE messages ADD COLUMN room TEXT NOT NULL DEFAULT '{LOBBY_KEY}'"
        )
        self._create_rooms(conn)
        (pruned,) = conn.execute(
            "SELECT value FROM meta WHERE key = 'pruned_through'"
        ).fetchone()
        conn.execute(
            "INSERT INTO rooms (key, name, topic, active, pruned_through)"
            " VALUES (?, ?, '', ?, ?)",
            (LOBBY_KEY, LOBBY, time.time(), pruned),
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load_rooms(self, conn: sqlite3.Connection) -> dict[str, StoredRoom]:
        """Every room, and the writer's count of its rows. A room with messages but no
        row of its own (an edited file) is given one, named by its key."""
        stored = {
            _text(key): (_text(name), _text(topic), active, pruned)
            for key, name, topic, active, pruned in conn.execute(
                "SELECT key, name, topic, active, pruned_through FROM rooms ORDER BY rowid"
            )
        }
        counts = {
            _text(key): (count, last or 0)
            for key, count, last in conn.execute(
                "SELECT room, COUNT(*), MAX(id) FROM messages GROUP BY room"
            )
        }
        rooms: dict[str, StoredRoom] = {}
        self._rows = {}
        self._bytes = _used_bytes(conn)
        now = time.time()
        for key in [*stored, *sorted(set(counts) - set(stored))]:  # in creation order
            name, topic, active, pruned = stored.get(key, (key, "", now, 0))
            count, last = counts.get(key, (0, 0))
            if room_key(name) != key:  # an edited row: the key decides
                name = key
            active = active if isinstance(active, (int, float)) else now
            pruned = pruned if isinstance(pruned, int) and 0 <= pruned <= MAX_ID else 0
            if key not in stored:
                conn.execute(
                    "INSERT INTO rooms (key, name, topic, active, pruned_through)"
                    " VALUES (?, ?, '', ?, 0)", (key, name, now)
                )
            rooms[key] = StoredRoom(name, topic, float(active), pruned, last, count)
            self._rows[key] = _RoomRows(name, count)
        return rooms

    def _write_sync(self, batch: list[StoredMessage]) -> int:
        conn = self._conn
        assert conn is not None
        changes, floor = self.changes_in_flight, self.floor_in_flight
        lost = self.lost_through
        rows = self._rows
        counts: dict[str, _RoomRows] = {}  # the rooms this batch changes: new counts
        pruned: dict[str, int] = {}
        conn.execute("BEGIN")
        try:
            if batch:
                # The room's key is SQLite's to compute, and the rows are counted per
                # room by one query: no work per message in Python (this thread holds
                # the GIL while it runs Python).
                conn.executemany(
                    "INSERT INTO messages (id, user, text, ts, room)"
                    " VALUES (?1, ?2, ?3, ?4, lower(?5))",
                    batch,
                )
                added = conn.execute(
                    "SELECT room, COUNT(*) FROM messages WHERE id >= ? AND id <= ?"
                    " GROUP BY room", (batch[0].id, batch[-1].id),
                ).fetchall()
                for raw_key, count in added:
                    key = _text(raw_key)
                    known = rows.get(key) or _RoomRows(_name_in(batch, key))
                    counts[key] = _RoomRows(known.name, known.count + count)
            written = set(counts)
            for change in changes:  # after the messages: a removal takes what came before
                self._change_room(conn, change, counts)
            for key, counted in counts.items():
                if counted.count > self.keep:
                    self._prune_room(conn, key, counted, pruned)
            used = self._prune_oldest(conn, counts, pruned)
            # Each room written to has its row (a room new to the file, too), and was
            # used now; not one that is gone.
            now = time.time()
            conn.executemany(
                "INSERT INTO rooms (key, name, topic, active, pruned_through)"
                " VALUES (?, ?, '', ?, 0) ON CONFLICT (key) DO UPDATE SET"
                " active = MAX(active, excluded.active)",
                [(key, counts[key].name, now) for key in written if counts[key].count],
            )
            if pruned:
                conn.executemany(
                    "UPDATE rooms SET pruned_through = MAX(pruned_through, ?) WHERE key = ?",
                    [(through, key) for key, through in pruned.items()],
                )
            if floor:
                conn.execute(
                    "UPDATE meta SET value = MAX(value, ?) WHERE key = 'id_floor'", (floor,)
                )
            if lost != self._meta_lost:  # a batch that failed before
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'pruned_through'", (lost,)
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for key, counted in counts.items():
            if counted.count or any(c.key == key and c.save for c in changes):
                rows[key] = counted
            else:
                rows.pop(key, None)  # removed, and not taken again
        self._bytes = used
        self._meta_lost = lost
        self.pruned_rooms = pruned
        return max([lost, self.pruned_through, *pruned.values()])

    def _change_room(
        self, conn: sqlite3.Connection, change: RoomChange, counts: dict[str, _RoomRows]
    ) -> None:
        """Remove a room (the messages handed over before its removal) and/or save it;
        ``counts`` gets its rows as they are after."""
        key = change.key
        known = counts.get(key) or self._rows.get(key)
        if change.drop:
            conn.execute("DELETE FROM messages WHERE room = ? AND id <= ?",
                         (key, change.drop_through))
            conn.execute("DELETE FROM rooms WHERE key = ?", (key,))
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE room = ?", (key,)
            ).fetchone()
            name = change.save[0] if change.save is not None else key
            counts[key] = _RoomRows(name, count)
        elif known is not None and key not in counts:
            counts[key] = _RoomRows(known.name, known.count)
        if change.save is not None:
            name, topic, active = change.save
            conn.execute(
                "INSERT INTO rooms (key, name, topic, active, pruned_through)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT (key) DO UPDATE SET"
                " topic = excluded.topic, active = MAX(active, excluded.active)",
                (key, name, topic, active),
            )
            counts.setdefault(key, _RoomRows(name))

    def _prune_room(
        self, conn: sqlite3.Connection, key: str, counted: _RoomRows, pruned: dict[str, int]
    ) -> None:
        """Delete the oldest rows of one room past ``keep``."""
        (first_kept,) = conn.execute(
            "SELECT id FROM messages WHERE room = ? ORDER BY id LIMIT 1 OFFSET ?",
            (key, counted.count - self.keep),
        ).fetchone()
        conn.execute("DELETE FROM messages WHERE room = ? AND id < ?", (key, first_kept))
        counted.count = self.keep
        # Ids up to there may be missing from the room (the ids between its last deleted
        # message and first_kept are other rooms').
        pruned[key] = max(pruned.get(key, 0), first_kept - 1)

    def _prune_oldest(
        self, conn: sqlite3.Connection, counts: dict[str, _RoomRows], pruned: dict[str, int]
    ) -> int:
        """While the database's pages in use are over ``max_bytes``, delete the oldest
        messages of any room, :data:`PRUNE_STEP` at a time (deleting the oldest rows
        frees whole pages: they are next to each other); returns the bytes in use."""
        used = _used_bytes(conn)
        if used <= self.max_bytes:
            return used
        rows = sum(c.count for c in counts.values()) + sum(
            r.count for key, r in self._rows.items() if key not in counts
        )
        while used > self.max_bytes:
            # About as many rows as the excess holds (pages per row overestimated: the
            # schema's own pages count), at least one, at most PRUNE_STEP.
            step = max(1, min(PRUNE_STEP, (used - self.max_bytes) * rows // used))
            found = conn.execute(
                "SELECT id FROM messages ORDER BY id LIMIT 1 OFFSET ?", (step - 1,)
            ).fetchone()
            if found is None:
                found = conn.execute("SELECT MAX(id) FROM messages").fetchone()
                if found[0] is None:
                    break  # nothing left to prune
            through = int(found[0])
            for raw_key, count in conn.execute(
                "SELECT room, COUNT(*) FROM messages WHERE id <= ? GROUP BY room", (through,)
            ).fetchall():
                key = _text(raw_key)
                if key not in counts:
                    row = self._rows.get(key) or _RoomRows(key)
                    counts[key] = _RoomRows(row.name, row.count)
                counts[key].count -= count
                rows -= count
                pruned[key] = max(pruned.get(key, 0), through)
            conn.execute("DELETE FROM messages WHERE id <= ?", (through,))
            used = _used_bytes(conn)
        return used

    def _read_sync(
        self, after: int, before: int, limit: int | None = None, room: str = LOBBY_KEY
    ) -> tuple[list[StoredMessage], int]:
        conn = self._reader
        assert conn is not None
        conn.execute("BEGIN")  # one snapshot for both reads (WAL readers never block)
        try:
            rows = conn.execute(
                "SELECT id, user, text, ts FROM messages WHERE room = ? AND id > ?"
                " AND id < ? ORDER BY id LIMIT ?",
                (room, after, before, -1 if limit is None else limit),
            ).fetchall()
            (lost,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'pruned_through'"
            ).fetchone()
            found = conn.execute(
                "SELECT name, pruned_through FROM rooms WHERE key = ?", (room,)
            ).fetchone()
        finally:
            conn.execute("COMMIT")
        name, pruned = (_text(found[0]), found[1]) if found else (room, 0)
        return [_stored(row, name) for row in rows], max(lost, pruned)

    def _start_sync(self, room: str, before: int, count: int) -> int:
        conn = self._reader
        assert conn is not None
        found = conn.execute(
            "SELECT id FROM messages WHERE room = ? AND id < ? ORDER BY id DESC"
            " LIMIT 1 OFFSET ?", (room, before, count),
        ).fetchone()
        return 0 if found is None else int(found[0])

    def _close_sync(self, last_id: int) -> None:
        try:
            if self._conn is not None:
                self._conn.executemany(
                    "UPDATE meta SET value = MAX(value, ?) WHERE key = ?",
                    [(last_id, "id_floor"), (self.lost_through, "pruned_through"),
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
    rooms broadcast; every room's newest messages in memory under one byte budget."""

    def __init__(
        self, store: BatchingStore, snapshot: Snapshot, *, replay: int, ring: int = RING,
        memory: int = MEMORY_BUDGET,
    ) -> None:
        super().__init__(last_id=snapshot.last_id, replay=replay)
        self.store = store
        #: Messages one room keeps in memory, at most.
        self.ring = self.ring_size(store, replay, ring)
        self.tails = Tails(memory)
        self._logs: dict[str, RoomLog] = {}
        self.stored_rooms = snapshot.rooms
        tail: dict[str, list[StoredMessage]] = {}
        for message in snapshot.tail:
            tail.setdefault(room_key(message.room), []).append(message)
        cutoff = snapshot.tail[0].id - 1 if snapshot.tail else 0
        for room in snapshot.rooms:
            loaded = tail.get(room_key(room.name), [])
            # Memory has every message of the room after the tail's cutoff; the store
            # may have older ones.
            floor = 0 if room.count <= len(loaded) else (cutoff if loaded else room.last_id)
            # After a crash, the room may have had ids up to the skipped window.
            log = RoomLog(room.name, cap=self.ring, floor=floor, pruned=room.pruned_through,
                          last_id=max(room.last_id, store.lost_through))
            self._logs[log.key] = log
            for message in loaded:
                self.tails.add(log, message)
        store.on_pruned = self._pruned

    @staticmethod
    def ring_size(store: BatchingStore, replay: int, ring: int = RING) -> int:
        """Messages one room keeps in memory, at most: never more than it stores."""
        return min(store.keep, max(ring, replay, store.max_pending))

    @property
    def pruned_through(self) -> int:
        return self.store.lost_through

    @property
    def memory_bytes(self) -> int | None:
        return self.tails.size

    @property
    def stored_bytes(self) -> int | None:
        store = self.store
        return store.stored_bytes if isinstance(store, SqliteStore) else None

    def log(self, name: str) -> RoomLog:
        key = room_key(name)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = RoomLog(name, cap=self.ring)
        return log

    def forget(self, room: RoomLog) -> None:
        """``room`` was removed: its messages leave memory (the store deletes them)."""
        self.tails.forget(room)
        self._logs.pop(room.key, None)

    def replay(self, since: int | None, room: RoomLog | None = None) -> Replay:
        room = room if room is not None else self.log(LOBBY)
        self.tails.touch(room)
        return room.plan(since, self.replay_count)

    def record(self, user: str, text: str, ts: str, room: RoomLog | None = None) -> StoredMessage:
        """Give a new message in ``room`` (``#lobby`` by default) the next id and hand
        it to the store; raises ``trio.WouldBlock`` (nothing changed) when the store is
        full (await ``store.wait_writable()`` first), :class:`~.base.IdsExhausted` once
        the last id (``MAX_ID``) is used."""
        room = room if room is not None else self.log(LOBBY)
        if self.last_id >= MAX_ID:
            raise IdsExhausted(f"every message id up to {MAX_ID} is used")
        message = StoredMessage(self.last_id + 1, user, text, ts, room.name)
        self.store.put_nowait(message)
        self.last_id = room.last_id = message.id
        self.tails.add(room, message)
        return message

    def reserve(self) -> int:
        """The next id, for a direct message (not stored); the same exceptions as
        :meth:`record`."""
        if self.last_id >= MAX_ID:
            raise IdsExhausted(f"every message id up to {MAX_ID} is used")
        self.store.reserve(self.last_id + 1)
        self.last_id += 1
        return self.last_id

    def _pruned(self, rooms: dict[str, int]) -> None:
        for key, through in rooms.items():
            log = self._logs.get(key)
            if log is not None:
                self.tails.trim(log, through)

    async def _read(
        self, room: str, after: int, before: int, limit: int
    ) -> tuple[list[StoredMessage], int]:
        # What memory no longer holds may have been handed over just now.
        await self.store.wait_committed(before - 1)
        return await self.store.read(after, before, limit, room_key(room))

    async def _start(self, room: str, before: int, count: int) -> int:
        await self.store.wait_committed(before - 1)
        return await self.store.start(room_key(room), before, count)


@asynccontextmanager
async def open_history(
    config: Config, store: BatchingStore | None = None
) -> AsyncIterator[SqliteHistory]:
    """The configured store, running; everything handed over is committed on exit.

    Raises :class:`~.writer.StoreError` if the database cannot be used.
    """
    if store is None:
        store = SqliteStore(config.db, keep=config.history_keep,
                            max_bytes=config.history_max_mb * 2**20)
    tail = SqliteHistory.ring_size(store, config.history_replay)
    async with running(store, tail) as snapshot:
        log.info(
            "history: %s, %d messages kept in %d rooms, ids continue after %d",
            config.db, snapshot.count, len(snapshot.rooms), snapshot.last_id,
        )
        yield SqliteHistory(store, snapshot, replay=config.history_replay,
                            memory=config.history_memory_mb * 2**20)
