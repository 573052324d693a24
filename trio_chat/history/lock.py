"""One server per history database: an exclusive OS lock on ``PATH.lock``.

Two servers on one database would hand out the same ids and lose each other's
messages (SQLite itself lets them both write). Each server therefore holds an exclusive
``flock`` on a lock file beside the database for as long as it runs. It is an advisory
lock on a separate file, not SQLite's exclusive locking mode, so ``sqlite3`` and other
admin tools can still read and write the database beside a running server. The OS
releases it when the holder's process ends however it ends (SIGKILL included), so a
crash never leaves a stale lock. ``flock`` locks belong to an open file, so two stores
in one process exclude each other too.

The file holds the holder's pid (for the message a second server prints); it is left
in place when the server stops: removing it could let a third server lock a new file
while a second still holds the old one.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from typing import Final

#: Bytes of the lock file read for the holder's pid.
_PID_BYTES: Final = 32


class DatabaseInUse(Exception):
    """Another process holds the database's lock; ``pid`` is what its lock file says."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"history database {path} is in use by another trio-chat ({holder})")
        self.pid = pid


def lock_path(path: str) -> str:
    """The lock file of database ``path``: beside the real file (symlinks resolved), so
    every name of one database finds the same lock."""
    return os.path.realpath(path) + ".lock"


class DatabaseLock:
    """An exclusive lock on ``lock_path(path)``, held from :meth:`acquire` to
    :meth:`release` (or the end of the process)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting; raise :class:`DatabaseInUse` if another
        holds it, ``OSError`` if the lock file cannot be opened."""
        fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DatabaseInUse(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # Ours now: say who holds it (a holder that crashed left its pid behind).
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Let the next server in (closing the file releases the lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The holder's pid as its lock file says (None while it is being written)."""
    try:
        text = os.pread(fd, _PID_BYTES, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
