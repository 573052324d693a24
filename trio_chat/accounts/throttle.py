"""Login throttling: failed attempts per account and per address, bounded in memory.

Like ergo's (3 attempts a minute per account), each key has a bucket of attempts:
an account :data:`ACCOUNT_ATTEMPTS` (3), refilled at that many a minute; an address
:data:`ADDRESS_ATTEMPTS` (10) a minute. A login with a password or a password change
takes one from both its account's and its address's bucket before any hashing (a
token login or a registration, from its address's alone); a successful login gives
them back, so only failures count (a registration keeps its attempt). An
empty bucket refuses the attempt (``rate_limited``, the connection stays) without
hashing anything: a guesser gets 3 tries a minute at one account, and one address
10 a minute at all accounts together. Unknown names are throttled exactly like known
ones (nothing tells them apart).

Memory is bounded: at most :data:`MAX_KEYS` keys per kind; full buckets are
forgotten, and past the cap the key that waited longest goes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

ACCOUNT_ATTEMPTS: Final = 3
ADDRESS_ATTEMPTS: Final = 10
#: Seconds over which a bucket refills completely.
WINDOW: Final = 60.0
MAX_KEYS: Final = 10_000


class Buckets:
    """One attempt bucket per key: ``capacity`` attempts, refilled over ``window``."""

    def __init__(
        self, capacity: int, window: float, clock: Callable[[], float],
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.capacity = capacity
        self.rate = capacity / window
        self._clock = clock
        self._max_keys = max_keys
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._levels)

    def _level(self, key: str, now: float) -> float:
        entry = self._levels.get(key)
        if entry is None:
            return float(self.capacity)
        level, at = entry
        return min(float(self.capacity), level + (now - at) * self.rate)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        level = self._level(key, self._clock())
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def take(self, key: str) -> None:
        now = self._clock()
        level = self._level(key, now) - 1
        self._levels.pop(key, None)
        self._levels[key] = (level, now)
        while len(self._levels) > self._max_keys:
            self._levels.popitem(last=False)

    def give(self, key: str) -> None:
        """Give back an attempt that succeeded."""
        now = self._clock()
        level = self._level(key, now) + 1
        if level >= self.capacity:
            self._levels.pop(key, None)  # full: nothing to remember
        else:
            self._levels[key] = (level, now)


class LoginThrottle:
    """Attempts per account (its name key) and per address."""

    def __init__(
        self, clock: Callable[[], float], *, account_attempts: int = ACCOUNT_ATTEMPTS,
        address_attempts: int = ADDRESS_ATTEMPTS, window: float = WINDOW,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.accounts = Buckets(account_attempts, window, clock, max_keys)
        self.addresses = Buckets(address_attempts, window, clock, max_keys)

    def attempt(self, account: str | None, address: str) -> float:
        """Take an attempt for ``account`` (None: a token or registration without one)
        from ``address``: 0.0 if it may go ahead, else the seconds to wait (nothing
        taken)."""
        wait = self.addresses.wait(address)
        if account is not None:
            wait = max(wait, self.accounts.wait(account))
        if wait:
            return wait
        self.addresses.take(address)
        if account is not None:
            self.accounts.take(account)
        return 0.0

    def succeeded(self, account: str | None, address: str) -> None:
        self.addresses.give(address)
        if account is not None:
            self.accounts.give(account)
