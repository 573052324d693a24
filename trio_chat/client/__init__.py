"""The terminal client behind ``trio-chat join``.

``transport`` opens the connection (TCP or WebSocket: the one place that knows how),
``session`` joins, keeps the connection alive and rejoins after a loss, and the two
front ends, ``line`` (pipes and scripts) and ``tui`` (urwid), only display what the
session reports and hand it what the user types.
"""

from functools import partial

import trio

from .config import ClientConfig
from .session import ChatSession, ConnectionLost, JoinRefused
from .transport import ClientError, ConnectError


def run(config: ClientConfig, *, interactive: bool = False, json_output: bool = False) -> None:
    """Chat until the user leaves: full-screen (``interactive``) or in line mode.

    Raises :class:`ClientError` (its text is the one line to show) on failure.
    """
    if interactive:
        from .tui import run_tui  # urwid is imported only when it is needed

        trio.run(run_tui, config)
    else:
        from .line import run_line

        trio.run(partial(run_line, config, json_output=json_output))

__all__ = [
    "ChatSession",
    "ClientConfig",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "JoinRefused",
    "run",
]
