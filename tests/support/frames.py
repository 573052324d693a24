"""WebSocket bytes written by hand, as a client sends them (RFC 6455): for peers that
misbehave where a client library would not let a test (never answer a ping, close
and stop reading), and for checking the server's own pre-built frames.

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

TEXT: Final = 0x1
CLOSE: Final = 0x8


def masked_frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """One final frame as a client must send it: masked with ``mask``."""
    assert len(mask) == 4
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


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
