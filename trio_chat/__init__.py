"""trio-chat: one chat room shared by raw-TCP and WebSocket clients, built on Trio."""

from .config import Config
from .server import Bound, serve

__all__ = ["Bound", "Config", "serve"]
