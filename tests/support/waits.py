"""Bounds on waiting: a test waits for something it expects, never for time to pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio

#: Real seconds any one expected message or event may take (a bound, never slept):
#: generous, since the machine is shared and slow.
WAIT: Final = 10
#: Under ``autojump_clock`` a wait is virtual: this bound never costs real time, and
#: a session that hangs reaches it at once.
VIRTUAL_WAIT: Final = 1000


async def until(condition: Callable[[], bool], wait: float = WAIT) -> None:
    """Return once ``condition()`` holds (looked at every 10 ms), for state that no
    message announces (a connection that became a listener); fails after ``wait``."""
    with trio.fail_after(wait):
        # No event announces such state: look again and again.
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)
