"""WebSocket frames as a server writes them, sans I/O (RFC 6455 section 5.2).

trio-websocket (on wsproto) encodes each message for each connection. A broadcast
sends the same bytes to every member, so the server builds each message's frame once
(:attr:`.messages.Encoded.frame`) and the WebSocket transport writes frames straight
to the connection (:mod:`trio_chat.transports.wsconn`). Server frames are final,
unmasked and uncompressed: the server negotiates no extensions.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

#: Most bytes in one batched WebSocket frame (the documented message limit): a backlog
#: of long messages in one frame would exceed what clients accept (trio-websocket's
#: default is 1 MiB) and be refused with 1009, again on every reconnect.
MAX_BATCH_FRAME: Final = 64 * 1024


def frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame carrying ``length`` bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame."""
    return frame_header(len(payload)) + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to fit the 125-byte limit of a
    control frame, never inside a character)."""
    data = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    payload = struct.pack("!H", code) + data
    return bytes((0x88, len(payload))) + payload


def batch_frames(lines: Iterable[bytes]) -> bytes:
    """Several NDJSON lines (each ending in ``\\n``) in text frames, newline-separated
    (``batch``): as few frames as :data:`MAX_BATCH_FRAME` allows (a longer message is a
    frame of its own)."""
    frames: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for data in lines:
        if group and size + len(data) - 1 > MAX_BATCH_FRAME:
            frames.append(text_frame(b"".join(group)[:-1]))
            group, size = [], 0
        group.append(data)
        size += len(data)
    frames.append(text_frame(b"".join(group)[:-1]))
    return b"".join(frames)
