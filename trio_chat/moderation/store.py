"""Moderation in the server's ``--db`` SQLite file: bans, mutes, ops, modes, voice and
the audit log, in tables of their own.

Synchronous on purpose: the server runs every call in one worker thread
(:class:`~trio_chat.moderation.service.ModerationService`), ``trio-chat admin`` calls
it directly. The tables are created with ``CREATE TABLE IF NOT EXISTS`` beside the
history's (whose schema version this never touches), and only in a database the
history already made its own (a file with tables but no history version is refused
by the history as "not trio-chat's", so this never creates one). WAL and a busy
timeout let ``trio-chat admin`` write beside a running server, which notices
(:meth:`ModerationStore.changed`) and reloads.

Each change and its audit row are one transaction: the log never misses an action
that took effect, nor records one that did not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Final

from .model import AuditEntry, Kind, Moderation, RoomModes, Sanction

MEMORY: Final = ":memory:"
#: How long a write waits for another connection's (the history writer's, an admin
#: command's) transaction, in milliseconds.
BUSY_TIMEOUT_MS: Final = 5000
#: Most audit rows kept; older ones are pruned as new ones come.
MAX_AUDIT: Final = 100_000

_SANCTION_COLUMNS: Final = (
    "id INTEGER PRIMARY KEY, room TEXT, target TEXT NOT NULL, name TEXT, account TEXT,"
    " network TEXT, reason TEXT NOT NULL, by TEXT NOT NULL, created REAL NOT NULL,"
    " until REAL"
)
_TABLES: Final = (
    f"CREATE TABLE IF NOT EXISTS bans ({_SANCTION_COLUMNS})",
    f"CREATE TABLE IF NOT EXISTS mutes ({_SANCTION_COLUMNS})",
    "CREATE TABLE IF NOT EXISTS room_ops (room TEXT NOT NULL, account TEXT NOT NULL,"
    " by TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (room, account))",
    "CREATE TABLE IF NOT EXISTS room_modes (room TEXT PRIMARY KEY,"
    " registered_only INTEGER NOT NULL, moderated INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS voiced (room TEXT NOT NULL, name TEXT NOT NULL,"
    " PRIMARY KEY (room, name))",
    "CREATE TABLE IF NOT EXISTS moderation_meta (key TEXT PRIMARY KEY,"
    " value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO moderation_meta (key, value) VALUES ('changes', 0)",
    "CREATE TABLE IF NOT EXISTS audit_log (id INTEGER PRIMARY KEY, ts REAL NOT NULL,"
    " actor TEXT NOT NULL, action TEXT NOT NULL, room TEXT, target TEXT,"
    " reason TEXT NOT NULL, detail TEXT NOT NULL)",
)
_TABLE: Final[dict[Kind, str]] = {"ban": "bans", "mute": "mutes"}


class NotADatabase(Exception):
    """The file is not a trio-chat database (yet): nothing was written to it."""


class ModerationStore:
    """One connection to the database; every method is one transaction."""

    def __init__(self, path: str, *, must_exist: bool = False) -> None:
        if path != MEMORY and must_exist and not Path(path).is_file():
            raise NotADatabase(f"no database at {path} (start the server on it once)")
        self.path = path
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        try:
            self._setup(must_exist)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, must_exist: bool) -> None:
        conn = self._conn
        if must_exist and self.path != MEMORY:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise NotADatabase(
                    f"{self.path} is not a trio-chat database (start the server on it once)"
                )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _TABLES:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()

    def changed(self) -> tuple[int, tuple[str, ...]]:
        """A counter every change to the moderation tables bumps (whoever makes it),
        and the admin accounts (``trio-chat admin grant`` changes those)."""
        row = self._conn.execute(
            "SELECT value FROM moderation_meta WHERE key = 'changes'"
        ).fetchone()
        return (int(row[0]) if row is not None else 0), tuple(self.admin_accounts())

    def admin_accounts(self) -> list[str]:
        """The keys of the accounts the accounts store (:mod:`trio_chat.accounts`)
        says are server admins; none before it has made its table."""
        try:
            rows = self._conn.execute(
                "SELECT key FROM accounts WHERE admin != 0 ORDER BY key"
            ).fetchall()
        except sqlite3.OperationalError:  # no such table (yet)
            return []
        return [str(row[0]) for row in rows]

    # -- reading ---------------------------------------------------------------
    def load(self, now: float, admins: Iterable[str] = ()) -> Moderation:
        """Everything in force at ``now`` (expired sanctions are left out)."""
        state = Moderation(admins={*admins, *self.admin_accounts()})
        conn = self._conn
        conn.execute("BEGIN")
        try:
            for kind, table in _TABLE.items():
                for row in conn.execute(
                    f"SELECT id, room, target, name, account, network, reason, by, created,"
                    f" until FROM {table} WHERE until IS NULL OR until > ?", (now,)
                ):
                    state.add(Sanction(row[0], kind, *row[1:]))
            for room, account in conn.execute("SELECT room, account FROM room_ops"):
                state.set_op(room, account, True)
            for room, name in conn.execute("SELECT room, name FROM voiced"):
                state.set_voice(room, name, True)
            for room, registered_only, moderated in conn.execute(
                "SELECT room, registered_only, moderated FROM room_modes"
            ):
                state.set_modes(room, RoomModes(bool(registered_only), bool(moderated)))
        finally:
            conn.execute("COMMIT")
        return state

    def log(self, limit: int = 100, room: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` audit rows (of one room, if given), oldest first."""
        where, args = ("WHERE room = ?", [room]) if room is not None else ("", [])
        rows = self._conn.execute(
            f"SELECT ts, actor, action, room, target, reason, detail FROM audit_log {where}"
            " ORDER BY id DESC LIMIT ?", [*args, limit],
        ).fetchall()
        return [AuditEntry(*row) for row in reversed(rows)]

    # -- changes, each with its audit row -------------------------------------
    def add_sanction(self, sanction: Sanction, entry: AuditEntry) -> Sanction:
        """Store ``sanction`` (its ``id`` is given here) and log ``entry``."""
        with self._transaction():
            cursor = self._conn.execute(
                f"INSERT INTO {_TABLE[sanction.kind]} (room, target, name, account, network,"
                " reason, by, created, until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sanction.room, sanction.target, sanction.name, sanction.account,
                 sanction.network, sanction.reason, sanction.by, sanction.created,
                 sanction.until),
            )
            self._audit(entry)
        assert cursor.lastrowid is not None
        return replace(sanction, id=cursor.lastrowid)

    def remove_sanctions(self, kind: Kind, ids: list[int], entry: AuditEntry | None) -> None:
        with self._transaction():
            self._conn.executemany(
                f"DELETE FROM {_TABLE[kind]} WHERE id = ?", [(i,) for i in ids]
            )
            if entry is not None:
                self._audit(entry)
            else:
                self._bump()

    def purge_expired(self, now: float) -> None:
        with self._transaction():
            for table in _TABLE.values():
                self._conn.execute(f"DELETE FROM {table} WHERE until <= ?", (now,))

    def set_op(self, room: str, account: str, on: bool, entry: AuditEntry | None) -> None:
        with self._transaction():
            if on:
                self._conn.execute(
                    "INSERT OR IGNORE INTO room_ops (room, account, by, created)"
                    " VALUES (?, ?, ?, ?)",
                    (room, account, entry.actor if entry else "", entry.ts if entry else 0.0),
                )
            else:
                self._conn.execute(
                    "DELETE FROM room_ops WHERE room = ? AND account = ?", (room, account)
                )
            if entry is not None:
                self._audit(entry)
            else:
                self._bump()

    def set_voice(self, room: str, name: str, on: bool, entry: AuditEntry) -> None:
        with self._transaction():
            if on:
                self._conn.execute(
                    "INSERT OR IGNORE INTO voiced (room, name) VALUES (?, ?)", (room, name)
                )
            else:
                self._conn.execute(
                    "DELETE FROM voiced WHERE room = ? AND name = ?", (room, name)
                )
            self._audit(entry)

    def set_modes(self, room: str, modes: RoomModes, entry: AuditEntry) -> None:
        with self._transaction():
            if modes == RoomModes():
                self._conn.execute("DELETE FROM room_modes WHERE room = ?", (room,))
            else:
                self._conn.execute(
                    "INSERT OR REPLACE INTO room_modes (room, registered_only, moderated)"
                    " VALUES (?, ?, ?)", (room, int(modes.registered_only), int(modes.moderated)),
                )
            self._audit(entry)

    def record(self, entry: AuditEntry) -> None:
        """An action that changes nothing stored (a kick)."""
        with self._transaction():
            self._audit(entry)

    def forget_room(self, room: str) -> None:
        with self._transaction():
            for table in ("bans", "mutes", "room_ops", "room_modes", "voiced"):
                self._conn.execute(f"DELETE FROM {table} WHERE room = ?", (room,))
            self._bump()

    def _bump(self) -> None:
        self._conn.execute(
            "UPDATE moderation_meta SET value = value + 1 WHERE key = 'changes'"
        )

    def _audit(self, entry: AuditEntry) -> None:
        self._bump()
        cursor = self._conn.execute(
            "INSERT INTO audit_log (ts, actor, action, room, target, reason, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry.ts, entry.actor, entry.action, entry.room, entry.target, entry.reason,
             entry.detail),
        )
        if cursor.lastrowid is not None and cursor.lastrowid % 1000 == 0:
            self._conn.execute(
                "DELETE FROM audit_log WHERE id <= ?", (cursor.lastrowid - MAX_AUDIT,)
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._conn.execute("COMMIT" if kind is None else "ROLLBACK")

