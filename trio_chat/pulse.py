"""A wake-up call for tasks waiting on a condition: :class:`Pulse`."""

from __future__ import annotations

import trio


class Pulse:
    """Wakes every task waiting right now, and only those.

    A ``trio.Event`` is set once; waking waiters again and again means replacing it
    after each ``set()``. This is that pattern, once. Waiters check their condition
    and wait in a loop (``while not ready(): await pulse.wait()``); with no checkpoint
    between the check and the wait, no change can slip between them.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        """Wake the tasks waiting now; later waiters wait for the next fire."""
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        """Wait for the next :meth:`fire`."""
        await self._event.wait()
