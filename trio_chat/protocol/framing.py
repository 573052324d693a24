"""NDJSON framing: a byte stream cut into lines, with a bound on an unfinished one."""

from __future__ import annotations

from typing import Final

from .errors import TOO_LONG, ProtocolError

MAX_LINE: Final = 64 * 1024


class LineBuffer:
    """Splits a byte stream into lines, never holding more than ``max_line`` bytes
    of an unfinished line (h11's ``max_incomplete_event_size``, for NDJSON)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        #: The lines :meth:`feed` completed before it raised ``too_long``: they came
        #: first, and how the stream was split into reads must not drop them.
        self.before_error: list[bytes] = []

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add bytes; return the complete lines they finish (``\\n`` and ``\\r\\n``).

        Raises ``too_long`` (fatal) once a line passes the limit (see
        :attr:`before_error`).
        """
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", max(start, self._scanned))
            if end < 0:
                break
            line = bytes(self._buf[start:end])
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                raise self._too_long(lines)
            lines.append(line)
            start = end + 1
        del self._buf[:start]
        self._scanned = len(self._buf)
        # The limit is on the line itself: a trailing "\r" may be half of its "\r\n".
        if len(self._buf) - self._buf.endswith(b"\r") > self.max_line:
            raise self._too_long(lines)
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line (a peer that disconnects mid-line leaves these)."""
        return len(self._buf)

    def _too_long(self, completed: list[bytes]) -> ProtocolError:
        self.before_error = completed
        self._buf.clear()
        self._scanned = 0
        return ProtocolError(
            TOO_LONG, f"line is longer than {self.max_line} bytes", fatal=True
        )
