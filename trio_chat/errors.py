"""The errors that stop a start with one clear line (no traceback) and an exit code."""

from __future__ import annotations


class StartupError(Exception):
    """The server cannot start (port taken, bad settings): one line for the user, no traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def find_startup_error(error: BaseException) -> StartupError | None:
    """The :class:`StartupError` in ``error`` (maybe inside exception groups), if any."""
    if isinstance(error, StartupError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if found := find_startup_error(inner):
                return found
    return None


def first_leaf(error: BaseException) -> BaseException:
    """The first exception that is not a group, for a log line about a failure that
    reached us wrapped in nurseries' exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
