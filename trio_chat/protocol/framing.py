"""NDJSON framing: a byte stream cut into lines, with a bound on an unfinished one."""

from __future__ import annotations

from typing import Final

from .errors import TOO_LONG, ProtocolError

MAX_LINE: Final = 64 * 1024


class LineBuffer:
    """Splits a byte stream into lines, never holding more than ``max_line`` bytes
    of an unfinished line (h11's ``max_incomplete_event_size``, for NDJSON).

    Lines come out one at a time (:meth:`pop`), so a reader can stop after a few and
    let others run: one 64 KiB read of ``\\n`` is 65,536 lines, and cutting them all
    at once would be one long stretch without a checkpoint.
    """

    __slots__ = ("_buf", "_scanned", "_start", "before_error", "max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._start = 0  # where the next line starts; bytes before it are consumed
        self._scanned = 0  # bytes of _buf before this hold no newline (past _start)
        #: The lines :meth:`feed` completed before it raised ``too_long``: they came
        #: first, and how the stream was split into reads must not drop them.
        self.before_error: list[bytes] = []

    def push(self, data: bytes | bytearray) -> None:
        """Add bytes; take the lines they finish with :meth:`pop`."""
        if self._start:
            del self._buf[: self._start]
            self._scanned = max(0, self._scanned - self._start)
            self._start = 0
        self._buf += data

    def pop(self) -> bytes | None:
        """The next complete line (without ``\\n`` or ``\\r\\n``), or None if there is
        none yet. Raises ``too_long`` (fatal) once a line passes the limit."""
        end = self._buf.find(b"\n", max(self._start, self._scanned))
        if end < 0:
            self._scanned = len(self._buf)
            # The limit is on the line itself: a trailing "\r" may be half of its "\r\n".
            if self.pending - self._buf.endswith(b"\r") > self.max_line:
                raise self._too_long()
            return None
        line = bytes(self._buf[self._start : end])
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line:
            raise self._too_long()
        self._start = end + 1
        if self._start == len(self._buf):
            # Everything read is taken: hold nothing while the peer is quiet (an idle
            # connection keeps its last read otherwise).
            self._buf.clear()
            self._start = self._scanned = 0
        return line

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add bytes; return every complete line they finish (``\\n`` and ``\\r\\n``).

        Raises ``too_long`` (fatal) once a line passes the limit (see
        :attr:`before_error`).
        """
        self.push(data)
        lines: list[bytes] = []
        try:
            while (line := self.pop()) is not None:
                lines.append(line)
        except ProtocolError:
            self.before_error = lines
            raise
        return lines

    @property
    def pending(self) -> int:
        """Bytes not yet returned as lines (a peer that disconnects mid-line leaves these)."""
        return len(self._buf) - self._start

    def _too_long(self) -> ProtocolError:
        self._buf.clear()
        self._start = self._scanned = 0
        return ProtocolError(
            TOO_LONG, f"line is longer than {self.max_line} bytes", fatal=True
        )
