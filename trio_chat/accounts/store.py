"""The accounts store: its own tables in the server's ``--db`` SQLite file.

The history owns the file's schema version; these tables are created beside its own
(``CREATE TABLE IF NOT EXISTS``) and never change it:

- ``accounts``: one row per account, keyed by the name's :func:`~trio_chat.protocol.name_key`
  (``Ann`` and ``ann`` are one account), with the name as registered, its argon2id
  hash, its token *generation* (incremented by a logout or a password change: tokens
  of an older generation are refused) and whether it is a server admin;
- ``invites``: codes from ``trio-chat admin invite`` for ``--registration invite``,
  each good for one registration until it expires.

:class:`AccountsDB` is synchronous (the ``trio-chat admin`` commands use it as is);
:class:`AccountStore` runs it in a worker thread, one call at a time, off the event
loop. One connection: a file is shared with a running server's history (WAL) and
with ``trio-chat admin`` (which takes no lock: SQLite serializes the writes, and a
busy timeout waits out another's transaction). ``:memory:``: accounts live for the
process.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, ParamSpec, Protocol, TypeVar

import trio

from ..protocol import name_key

#: Milliseconds a statement waits for another connection's write to finish.
BUSY_TIMEOUT_MS: Final = 5000
#: Seconds an invite code is good for, unless ``trio-chat admin invite`` says otherwise.
INVITE_LIFETIME: Final = 7 * 24 * 3600
MEMORY: Final = ":memory:"

_P = ParamSpec("_P")
_T = TypeVar("_T")

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS accounts (key TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " hash TEXT NOT NULL, generation INTEGER NOT NULL DEFAULT 0,"
    " admin INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS invites (code TEXT PRIMARY KEY, created REAL NOT NULL,"
    " expires REAL NOT NULL, used_by TEXT)",
    # Direct messages between two accounts (ids from the history's sequence), kept
    # for replay at login; the newest DM_KEEP of them.
    "CREATE TABLE IF NOT EXISTS dm_history (id INTEGER PRIMARY KEY, sender TEXT NOT NULL,"
    " recipient TEXT NOT NULL, text TEXT NOT NULL, ts TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dm_history_sender ON dm_history (sender, id)",
    "CREATE INDEX IF NOT EXISTS dm_history_recipient ON dm_history (recipient, id)",
)
#: Direct messages kept in ``dm_history`` (the oldest go first).
DM_KEEP: Final = 100_000


class AccountExists(Exception):
    """The name, or one that looks like it, is an account already (``holder``)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@dataclass(frozen=True)
class Account:
    name: str
    hash: str
    generation: int
    admin: bool


class AccountsDB:
    """The accounts tables, synchronously, on one connection (``check_same_thread``
    off: :class:`AccountStore` moves it between worker threads, one call at a time)."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        if path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                     timeout=BUSY_TIMEOUT_MS / 1000)
        for statement in SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        self._conn.close()

    def get(self, name: str) -> Account | None:
        row = self._conn.execute(
            "SELECT name, hash, generation, admin FROM accounts WHERE key = ?",
            (name_key(name),),
        ).fetchone()
        if row is None:
            return None
        return Account(str(row[0]), str(row[1]), int(row[2]), bool(row[3]))

    def names(self) -> list[str]:
        """Every account's name (the server keeps their skeletons in memory)."""
        return [str(row[0]) for row in self._conn.execute("SELECT name FROM accounts")]

    def names_since(self, rowid: int) -> tuple[list[str], int]:
        """Names of the accounts created after row ``rowid``, and the last row's id
        (servers of a cluster sharing this file follow each other's registrations)."""
        rows = self._conn.execute(
            "SELECT rowid, name FROM accounts WHERE rowid > ? ORDER BY rowid", (rowid,)
        ).fetchall()
        return [str(row[1]) for row in rows], max([rowid, *(int(row[0]) for row in rows)])

    def create(self, name: str, password_hash: str, *, admin: bool = False) -> None:
        """Add an account; :class:`AccountExists` if the name (its key) is one. (Look-alikes
        are the server's to refuse first: it knows every account's skeleton.)"""
        try:
            self._conn.execute(
                "INSERT INTO accounts (key, name, hash, generation, admin, created)"
                " VALUES (?, ?, ?, 0, ?, ?)",
                (name_key(name), name, password_hash, int(admin), self._clock()),
            )
        except sqlite3.IntegrityError:
            existing = self.get(name)
            raise AccountExists(existing.name if existing else name) from None

    def set_password(self, name: str, password_hash: str) -> int:
        """Store a new hash and revoke the account's tokens; its new generation."""
        self._conn.execute(
            "UPDATE accounts SET hash = ?, generation = generation + 1 WHERE key = ?",
            (password_hash, name_key(name)),
        )
        return self.generation(name)

    def rehash(self, name: str, old_hash: str, password_hash: str) -> None:
        """Replace a hash made with older parameters (tokens stay good)."""
        self._conn.execute(
            "UPDATE accounts SET hash = ? WHERE key = ? AND hash = ?",
            (password_hash, name_key(name), old_hash),
        )

    def revoke(self, name: str) -> int:
        """Revoke every token of the account (a logout); its new generation."""
        self._conn.execute(
            "UPDATE accounts SET generation = generation + 1 WHERE key = ?", (name_key(name),)
        )
        return self.generation(name)

    def generation(self, name: str) -> int:
        row = self._conn.execute(
            "SELECT generation FROM accounts WHERE key = ?", (name_key(name),)
        ).fetchone()
        return int(row[0]) if row is not None else -1

    def set_admin(self, name: str, admin: bool) -> str | None:
        """Make the account an admin or not; its name, or None if there is no account."""
        conn = self._conn
        cursor = conn.execute(
            "UPDATE accounts SET admin = ? WHERE key = ?", (int(admin), name_key(name))
        )
        if cursor.rowcount == 0:
            return None
        account = self.get(name)
        return account.name if account is not None else None

    def admins(self) -> list[str]:
        return [str(row[0]) for row in self._conn.execute(
            "SELECT name FROM accounts WHERE admin != 0 ORDER BY name"
        )]

    def is_admin(self, name: str) -> bool:
        row = self._conn.execute(
            "SELECT admin FROM accounts WHERE key = ?", (name_key(name),)
        ).fetchone()
        return row is not None and bool(row[0])

    def create_invite(self, lifetime: float = INVITE_LIFETIME) -> tuple[str, float]:
        """A new invite code, and when it expires (Unix seconds)."""
        now = self._clock()
        code = secrets.token_urlsafe(12)
        self._conn.execute(
            "INSERT INTO invites (code, created, expires, used_by) VALUES (?, ?, ?, NULL)",
            (code, now, now + lifetime),
        )
        return code, now + lifetime

    def use_invite(self, code: str, name: str) -> bool:
        """Spend an unused, unexpired invite on ``name``'s registration."""
        cursor = self._conn.execute(
            "UPDATE invites SET used_by = ? WHERE code = ? AND used_by IS NULL"
            " AND expires > ?",
            (name, code, self._clock()),
        )
        return cursor.rowcount == 1

    def add_dms(self, batch: list[StoredDM], keep: int = DM_KEEP) -> None:
        """Keep direct messages (one transaction), then only the newest ``keep``."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO dm_history (id, sender, recipient, text, ts)"
                " VALUES (?, ?, ?, ?, ?)",
                [(dm.id, name_key(dm.sender), name_key(dm.recipient), dm.text, dm.ts)
                 for dm in batch],
            )
            conn.execute(
                "DELETE FROM dm_history WHERE id <= (SELECT id FROM dm_history"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)", (keep,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def dms(self, account: str, since: int | None, limit: int) -> list[StoredDM]:
        """The direct messages to or from ``account`` after id ``since`` (oldest
        first), at most ``limit`` of them: the newest ones when more are there. Names
        come back as the accounts registered them."""
        key = name_key(account)
        rows = self._conn.execute(
            "SELECT d.id, COALESCE(s.name, d.sender), COALESCE(r.name, d.recipient),"
            " d.text, d.ts FROM dm_history d"
            " LEFT JOIN accounts s ON s.key = d.sender"
            " LEFT JOIN accounts r ON r.key = d.recipient"
            " WHERE (d.sender = ? OR d.recipient = ?) AND d.id > ?"
            " ORDER BY d.id DESC LIMIT ?",
            (key, key, since if since is not None else 0, limit),
        ).fetchall()
        return [StoredDM(int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]))
                for row in reversed(rows)]

    def return_invite(self, code: str) -> None:
        """Give back an invite whose registration failed after spending it."""
        self._conn.execute("UPDATE invites SET used_by = NULL WHERE code = ?", (code,))


@dataclass(frozen=True)
class StoredDM:
    """A direct message between two accounts, as kept (names as registered)."""

    id: int
    sender: str
    recipient: str
    text: str
    ts: str


class AccountsBackend(Protocol):
    """Where a server's accounts, invites and kept direct messages live: the ``--db``
    SQLite file (:class:`AccountStore`), or Redis for a cluster of servers on several
    machines (:mod:`trio_chat.cluster.accounts`). :class:`~.service.Accounts` and
    :class:`~.dms.DmLog` use only this."""

    async def get(self, name: str) -> Account | None: ...
    async def names(self) -> list[str]: ...
    async def names_since(self, cursor: int) -> tuple[list[str], int]: ...
    async def create(self, name: str, password_hash: str, *, admin: bool = False) -> None: ...
    async def set_password(self, name: str, password_hash: str) -> int: ...
    async def rehash(self, name: str, old_hash: str, password_hash: str) -> None: ...
    async def revoke(self, name: str) -> int: ...
    async def is_admin(self, name: str) -> bool: ...
    async def set_admin(self, name: str, admin: bool) -> str | None: ...
    async def use_invite(self, code: str, name: str) -> bool: ...
    async def return_invite(self, code: str) -> None: ...
    async def add_dms(self, batch: list[StoredDM]) -> None: ...
    async def dms(self, account: str, since: int | None, limit: int) -> list[StoredDM]: ...
    async def aclose(self) -> None: ...


class AccountStore:
    """:class:`AccountsDB` off the event loop: each call in a worker thread, one at a
    time (a ``CapacityLimiter`` of 1 owns the connection). The SQLite
    :class:`AccountsBackend`."""

    def __init__(self, db: AccountsDB) -> None:
        self.db = db
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args)`` (a method of :attr:`db`) in the store's thread."""
        def call() -> _T:
            return fn(*args, **kwargs)
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def get(self, name: str) -> Account | None:
        return await self.run(self.db.get, name)

    async def names(self) -> list[str]:
        return await self.run(self.db.names)

    async def names_since(self, cursor: int) -> tuple[list[str], int]:
        return await self.run(self.db.names_since, cursor)

    async def create(self, name: str, password_hash: str, *, admin: bool = False) -> None:
        await self.run(self.db.create, name, password_hash, admin=admin)

    async def set_password(self, name: str, password_hash: str) -> int:
        return await self.run(self.db.set_password, name, password_hash)

    async def rehash(self, name: str, old_hash: str, password_hash: str) -> None:
        await self.run(self.db.rehash, name, old_hash, password_hash)

    async def revoke(self, name: str) -> int:
        return await self.run(self.db.revoke, name)

    async def is_admin(self, name: str) -> bool:
        return await self.run(self.db.is_admin, name)

    async def set_admin(self, name: str, admin: bool) -> str | None:
        return await self.run(self.db.set_admin, name, admin)

    async def use_invite(self, code: str, name: str) -> bool:
        return await self.run(self.db.use_invite, code, name)

    async def return_invite(self, code: str) -> None:
        await self.run(self.db.return_invite, code)

    async def add_dms(self, batch: list[StoredDM]) -> None:
        await self.run(self.db.add_dms, batch)

    async def dms(self, account: str, since: int | None, limit: int) -> list[StoredDM]:
        return await self.run(self.db.dms, account, since, limit)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.db.close, limiter=self._limiter)
