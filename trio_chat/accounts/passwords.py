"""Password hashing: argon2id (``argon2-cffi``), in a bounded pool of worker threads.

The parameters are OWASP's second argon2id recommendation scaled up a little: 32 MiB
of memory per hash, 2 passes, 1 lane (about 150 ms per verification on the shared
2-core test machine: the pool of 2 checks some 13 passwords a second). Not the
library's default (64 MiB x 4 lanes): a burst of logins on a small server must not
need gigabytes. At most :data:`HASHES_AT_ONCE` hashes run at once (a
``trio.CapacityLimiter``), so a burst of logins waits for a slot instead of
multiplying the memory: the pool holds at most 64 MiB of hashing memory.

A login for an unknown account verifies the password against a dummy hash made with
the same parameters, so its answer (``login_failed``) and its time are those of a
wrong password: nobody learns which names have accounts by timing logins.
"""

from __future__ import annotations

from typing import Final

import trio
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: argon2id memory per hash, in KiB (32 MiB).
MEMORY_KIB: Final = 32 * 1024
#: argon2id passes over the memory.
TIME_COST: Final = 2
#: argon2id lanes (threads per hash: one, the pool gives the parallelism).
PARALLELISM: Final = 1
#: Hashes (or verifications) computed at once; the rest wait.
HASHES_AT_ONCE: Final = 2
#: Shortest and longest password taken at registration or a password change.
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 256


def hasher() -> PasswordHasher:
    """The argon2id hasher with the documented parameters."""
    return PasswordHasher(
        time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=PARALLELISM,
        hash_len=32, salt_len=16, type=Type.ID,
    )


class Passwords:
    """Hash and verify passwords in worker threads, at most ``at_once`` at a time."""

    def __init__(self, at_once: int = HASHES_AT_ONCE) -> None:
        self._hasher = hasher()
        self._limiter = trio.CapacityLimiter(at_once)
        self._dummy: str | None = None

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """The pool's limiter (its statistics say how many wait)."""
        return self._limiter

    def hash_sync(self, password: str) -> str:
        """Hash in this thread (the admin command-line tool)."""
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True if ``password`` matches ``stored``; with no ``stored`` hash (an unknown
        account), a dummy hash is checked instead, and the answer is False."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash("not a password of anyone's")
            await trio.to_thread.run_sync(self._check, self._dummy, password,
                                          limiter=self._limiter)
            return False
        return await trio.to_thread.run_sync(self._check, stored, password,
                                             limiter=self._limiter)

    def needs_rehash(self, stored: str) -> bool:
        """The stored hash was made with other parameters (rehash it at the next login)."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            return True

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
