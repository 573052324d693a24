"""Bounds on waiting: a test waits for something it expects, never for time to pass."""

from __future__ import annotations

from typing import Final

#: Real seconds any one expected message or event may take (a bound, never slept):
#: generous, since the machine is shared and slow.
WAIT: Final = 10
#: Under ``autojump_clock`` a wait is virtual: this bound never costs real time, and
#: a session that hangs reaches it at once.
VIRTUAL_WAIT: Final = 1000
