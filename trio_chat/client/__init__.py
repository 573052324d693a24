"""The terminal client behind ``trio-chat join``.

``transport`` opens the connection (TCP or WebSocket: the one place that knows how),
``session`` joins, keeps the connection alive and rejoins after a loss, and the two
front ends, ``line`` (pipes and scripts) and ``tui`` (urwid), only display what the
session reports and hand it what the user types.
"""

from .config import ClientConfig
from .session import ChatSession, ConnectionLost, JoinRefused
from .transport import ClientError, ConnectError

__all__ = [
    "ChatSession",
    "ClientConfig",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "JoinRefused",
]
