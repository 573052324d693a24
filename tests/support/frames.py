"""WebSocket bytes written by hand, as a client sends them (RFC 6455): for peers that
misbehave where a client library would not let a test (never answer a ping, close
and stop reading, break the framing rules), and for reading the server's frames.

The server's frames are built by :mod:`trio_chat.protocol.wsframes`; the benchmark has
its own masked-frame writer (trio_chat/bench), which is not a test helper.
"""

from __future__ import annotations

import struct
from typing import Final

import trio

from .waits import WAIT

#: A WebSocket upgrade request for ``/`` (the RFC's sample key).
UPGRADE_REQUEST: Final = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    length: int | None = None,
    wide: int = 0,
) -> bytes:
    """A client frame, right or wrong: masked with ``mask`` as a client must (None: not
    masked); ``length`` overrides the declared length, ``wide`` forces a 2- or 8-byte
    length field."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    masked = 0x80 if mask is not None else 0
    if wide == 8 or size >= 1 << 16:
        header = bytes((first, masked | 127)) + struct.pack("!Q", size)
    elif wide == 2 or size >= 126:
        header = bytes((first, masked | 126)) + struct.pack("!H", size)
    else:
        header = bytes((first, masked | size))
    if mask is None:
        return header + payload
    assert len(mask) == 4
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(
    value: str | bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
    wide: int = 0,
) -> bytes:
    """A masked text frame (or the first fragment of a message, ``fin=False``); the
    options as for :func:`frame`."""
    data = value.encode() if isinstance(value, str) else value
    return frame(TEXT, data, fin=fin, rsv=rsv, length=length, wide=wide)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each unmasked server frame in ``data``."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, size = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, i)
            i += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, i)
            i += 8
        frames.append((opcode, data[i : i + size]))
        i += size
    return frames


def close_of(frames: list[tuple[int, bytes]]) -> tuple[int, str]:
    """The code and reason of the one close frame among ``frames``."""
    closes = [payload for opcode, payload in frames if opcode == CLOSE]
    assert len(closes) == 1, frames
    (code,) = struct.unpack_from("!H", closes[0])
    return code, closes[0][2:].decode()


async def upgrade(stream: trio.abc.Stream) -> bytes:
    """Send :data:`UPGRADE_REQUEST`; return the server's response head (a 101 is
    checked), leaving ``stream`` at the first WebSocket frame."""
    await stream.send_all(UPGRADE_REQUEST)
    response = b""
    with trio.fail_after(WAIT):
        while b"\r\n\r\n" not in response:
            chunk = await stream.receive_some()
            assert chunk, f"closed during the handshake: {response!r}"
            response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert not rest, "the server sent a frame before the client did"
    return head
