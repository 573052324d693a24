"""trio-chat: chat rooms shared by raw-TCP (nc), WebSocket and browser clients, on Trio.

``from trio_chat import Config, serve`` is the library's entry point. Those names are
loaded on first use (PEP 562), so ``import trio_chat.cli`` for ``trio-chat join`` does
not import the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config
    from .server.app import Bound, serve

__all__ = ["Bound", "Config", "serve"]


def __getattr__(name: str) -> Any:
    if name == "Config":
        from .config import Config

        return Config
    if name in ("Bound", "serve"):
        from .server import app

        return getattr(app, name)
    raise AttributeError(f"module 'trio_chat' has no attribute {name!r}")
