"""Starting up: binding listeners, and the errors that stop a start with one clear line."""

from __future__ import annotations

import trio


def url_host(host: str) -> str:
    """A host as it appears in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


class StartupError(Exception):
    """The server cannot start (port taken, bad settings): one line for the user, no traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def find_startup_error(error: BaseException) -> StartupError | None:
    if isinstance(error, StartupError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if found := find_startup_error(inner):
                return found
    return None


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind, turning the usual failures into a :class:`StartupError`."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(f"cannot listen on {url_host(host)}:{port}: {reason}") from None
