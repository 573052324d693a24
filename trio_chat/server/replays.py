"""Replays are written in chunks bounded in bytes, under a server-wide budget.

A join with ``"since": 0`` on a full history is 10,000 messages of up to ~25 KB of
JSON each (4,096 characters that JSON escapes to six bytes apiece). Rendered 512
messages at a time and held for the whole ``--send-timeout`` by a client that never
reads, that was ~35 MB per client (issue 13: 30 such clients, +1 GB). So a replay is
rendered one chunk at a time, each at most :data:`CHUNK_BYTES` (or one message), and
only when the server's :class:`ReplayBudget` has room for it: all replays together
hold at most :data:`BUDGET_CHUNKS` chunks, rendered and not yet written. A replay
that finds no room waits, within the same ``--send-timeout`` as the write it is
waiting to make (past it the client is a slow consumer, as for any write). The bytes
of the chunks held are the server's ``replay_bytes_in_flight`` metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import trio

from ..history.base import Shown, chat_line

#: Bytes of replay rendered at a time for one client, at most (plus one message).
CHUNK_BYTES: Final = 64 * 1024
#: Replay chunks the whole server may hold at once: 256 x 64 KiB is 16 MiB of text,
#: about 32 MiB with each chunk's wire bytes.
BUDGET_CHUNKS: Final = 256
#: Messages read from the store at a time for a resume older than the in-memory ring.
REPLAY_PAGE: Final = 64
#: Characters of live messages handed to one write, at most (plus one message): 64 KiB
#: of JSON that is ASCII, as most is; at most four times that in UTF-8.
WRITE_BYTES: Final = 64 * 1024


def utf8_size(line: str) -> int:
    """The UTF-8 length of ``line`` (its length when it is ASCII, as most JSON is)."""
    return len(line) if line.isascii() else len(line.encode("utf-8"))


def render_chunk(
    messages: Sequence[Shown], start: int, limit: int
) -> tuple[list[str], int, int]:
    """Replay lines for ``messages[start:]`` up to ``limit`` bytes (at least one
    message), where the next chunk starts, and the lines' size in bytes on the wire
    (NDJSON: newlines included)."""
    lines: list[str] = []
    size = 0
    index = start
    while index < len(messages) and size < limit:
        line = chat_line(messages[index], history=True)
        lines.append(line)
        size += utf8_size(line) + 1
        index += 1
    return lines, index, size


class ReplayBudget:
    """How many replay chunks the server holds at once (rendered, not yet written).

    A FIFO semaphore: a replay takes a slot before it renders a chunk and gives it back
    once the chunk is written (or the write failed), so waiting replays go in turn.
    """

    def __init__(self, chunks: int = BUDGET_CHUNKS) -> None:
        self.chunks = chunks
        self._slots = trio.Semaphore(chunks)

    def slot(self) -> trio.Semaphore:
        """``async with budget.slot():`` around rendering and writing one chunk."""
        return self._slots

    @property
    def in_use(self) -> int:
        """Chunks held now."""
        return self.chunks - self._slots.value
