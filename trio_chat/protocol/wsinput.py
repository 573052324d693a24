"""WebSocket frames as the server reads them, checked before wsproto sees them (sans I/O).

Two things in trio-websocket 0.12.2 (on wsproto) make this necessary:

- it counts only payload bytes against its message size limit, and keeps each
  fragment of a message in a list: five million empty continuation frames grow memory
  without bound and never reach the limit;
- when wsproto finds a protocol violation, trio-websocket drops the connection
  without a close frame, and the server could only log "closed by peer".

So every byte a client sends after its opening handshake goes through a
:class:`FrameChecker` first. It reads each frame header (cheap: the payload is only
looked at where the protocol needs it: text must be UTF-8, a close frame's code and
reason must be valid), enforces RFC 6455's rules (masking, reserved bits and opcodes,
control frames, continuation order, minimal lengths) and trio-chat's bounds on one
message (:data:`MAX_FRAMES` frames, ``max_message`` bytes of payload, and those plus
:data:`WIRE_ALLOWANCE` bytes on the wire), and says how many bytes are sound, where
the control frames (pings, pongs) in them ended, and the first violation with its
close code. It is a superset of wsproto's own checks, so wsproto never meets a
violation itself.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass, field
from typing import Final

#: Frames one message may span: its fragments, and control frames sent between them.
MAX_FRAMES: Final = 128
#: Bytes a message may take on the wire beyond its payload limit: frame headers (2-14
#: bytes each) and control frames between its fragments. With :data:`MAX_FRAMES` it
#: bounds what one message costs however it is cut up.
WIRE_ALLOWANCE: Final = 16 * 1024

#: Close codes (RFC 6455, 7.4.1): every violation is a protocol error, but size.
PROTOCOL_ERROR: Final = 1002
MESSAGE_TOO_BIG: Final = 1009

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA: Final = frozenset({CONTINUATION, TEXT, BINARY})
_CONTROL: Final = frozenset({CLOSE, PING, PONG})
#: Close codes a peer may send below 3000 (RFC 6455 7.4.1, and 1012/1013 from the IANA
#: registry): the ones wsproto accepts. 1005, 1006 and 1015 are local-only.
_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
_MAX_CONTROL: Final = 125


@dataclass(frozen=True)
class Violation:
    """What the client did wrong, and the close code it gets."""

    code: int
    what: str


@dataclass
class Checked:
    """What :meth:`FrameChecker.feed` found in one chunk of bytes."""

    #: Bytes at the start of the chunk that may be handed on (all of it, unless a
    #: violation was found: then the bytes before the frame that broke the rules).
    sound: int
    #: For each ping or pong that ended in the chunk, where it began (0 if in an
    #: earlier chunk): flood control counts them, and may stop before one.
    controls: list[int] = field(default_factory=list)
    violation: Violation | None = None


class FrameChecker:
    """Checks a client's frames as the bytes arrive (a chunk at a time)."""

    __slots__ = (
        "_control", "_fin", "_frames", "_header", "_in_payload", "_mask", "_mask_offset",
        "_message", "_opcode", "_payload", "_remaining", "_text", "_wire", "closed",
        "max_frames", "max_message",
    )

    def __init__(self, max_message: int, max_frames: int = MAX_FRAMES) -> None:
        self.max_message = max_message
        self.max_frames = max_frames
        self._header = bytearray()  # the frame header read so far
        self._in_payload = False
        self._remaining = 0  # payload bytes of the current frame still to come
        self._opcode = 0
        self._fin = False
        self._mask = b""
        self._mask_offset = 0
        self._control = bytearray()  # a close frame's payload, to check when complete
        # The message being received (from its first frame to its last):
        self._message: int | None = None  # its opcode (TEXT or BINARY)
        self._frames = 0
        self._payload = 0
        self._wire = 0
        self._text: codecs.IncrementalDecoder | None = None
        #: The peer's close frame has come: nothing after it is looked at.
        self.closed = False

    def feed(self, data: bytes | bytearray) -> Checked:
        """Check the next bytes; stop at the first violation (feed nothing after it)."""
        checked = Checked(len(data))
        i, n = 0, len(data)
        start = 0  # where the current frame began in this chunk (0: in an earlier one)
        while i < n and not self.closed:
            if not self._in_payload:
                if not self._header:
                    start = i
                i, violation = self._read_header(data, i)
                if violation is not None:
                    return self._fail(checked, start, violation)
                if not self._in_payload:
                    break  # the rest of the header is still to come
                if self._remaining:
                    continue
            else:
                take = min(self._remaining, n - i)
                violation = self._read_payload(data[i : i + take])
                if violation is not None:
                    return self._fail(checked, start, violation)
                i += take
                self._remaining -= take
                if self._remaining:
                    break
            violation = self._end_frame(checked, start)
            if violation is not None:
                return self._fail(checked, start, violation)
        return checked

    # ------------------------------------------------------------ the parts of a frame

    def _read_header(self, data: bytes | bytearray, i: int) -> tuple[int, Violation | None]:
        """Take header bytes from ``data[i:]``; on a complete header, start the frame."""
        header = self._header
        if not header and len(data) - i >= 2:
            # The usual case, a whole header in this chunk: no byte-by-byte loop.
            short = data[i + 1] & 0x7F
            size = 2 + (2 if short == 126 else 8 if short == 127 else 0) + 4
            if len(data) - i >= size:
                header += data[i : i + size]
                violation = self._check_start(header[0], header[1]) or self._check_length()
                return i + size, violation if violation is not None else self._start_frame()
        while i < len(data):
            header.append(data[i])
            i += 1
            # Each rule as soon as its bytes are in (wsproto checks them no later), so
            # the bytes of a header handed on before its end never break a rule.
            size = len(header)
            violation = None
            if size == 2:
                violation = self._check_start(header[0], header[1])
            elif size in (4, 10):
                violation = self._check_length()
            if violation is not None:
                return i, violation
            if size >= 2 and size == self._header_size():
                return i, self._start_frame()
        return i, None

    def _header_size(self) -> int:
        length = self._header[1] & 0x7F
        return 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4

    def _check_start(self, b0: int, b1: int) -> Violation | None:
        """The rules the first two bytes of a header decide."""
        opcode = b0 & 0x0F
        if b0 & 0x70:
            return Violation(PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
        if opcode not in _DATA and opcode not in _CONTROL:
            return Violation(PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if not b1 & 0x80:
            return Violation(PROTOCOL_ERROR, "client frame not masked")
        if opcode in _CONTROL:
            if not b0 & 0x80:
                return Violation(PROTOCOL_ERROR, "fragmented control frame")
            if b1 & 0x7F > _MAX_CONTROL:
                return Violation(PROTOCOL_ERROR, "control frame over 125 bytes")
        elif opcode == CONTINUATION and self._message is None:
            return Violation(PROTOCOL_ERROR, "continuation frame outside a message")
        elif opcode != CONTINUATION and self._message is not None:
            return Violation(PROTOCOL_ERROR, "new message before the last one ended")
        return None

    def _check_length(self) -> Violation | None:
        """An extended length, once its bytes are in: minimal, and under 2**63."""
        header = self._header
        short = header[1] & 0x7F
        if short == 126 and len(header) >= 4:
            if struct.unpack_from("!H", header, 2)[0] < 126:
                return Violation(PROTOCOL_ERROR, "frame length not minimally encoded")
        elif short == 127 and len(header) >= 10:
            (length,) = struct.unpack_from("!Q", header, 2)
            if length >> 63:
                return Violation(PROTOCOL_ERROR, "frame length with its top bit set")
            if length < 1 << 16:
                return Violation(PROTOCOL_ERROR, "frame length not minimally encoded")
        return None

    def _start_frame(self) -> Violation | None:
        header = self._header
        b0, b1 = header[0], header[1]
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack_from("!H", header, 2)
        elif length == 127:
            (length,) = struct.unpack_from("!Q", header, 2)
        self._opcode, self._fin = b0 & 0x0F, bool(b0 & 0x80)
        self._mask, self._mask_offset = bytes(header[-4:]), 0
        wire = len(header) + length
        self._header.clear()
        if self._opcode in _DATA:
            if self._opcode != CONTINUATION:
                self._message, self._frames, self._payload, self._wire = self._opcode, 0, 0, 0
                text = self._opcode == TEXT
                self._text = codecs.getincrementaldecoder("utf-8")() if text else None
            self._payload += length
            if self._payload > self.max_message:
                return Violation(MESSAGE_TOO_BIG, f"message over {self.max_message} bytes")
        if self._message is not None:  # control frames between fragments count too
            self._frames += 1
            self._wire += wire
            if self._frames > self.max_frames:
                return Violation(PROTOCOL_ERROR, f"message in over {self.max_frames} frames")
            if self._wire > self.max_message + WIRE_ALLOWANCE:
                return Violation(
                    MESSAGE_TOO_BIG,
                    f"message over {self.max_message + WIRE_ALLOWANCE} bytes with its frames",
                )
        self._in_payload = True
        self._remaining = length
        return None

    def _read_payload(self, chunk: bytes | bytearray) -> Violation | None:
        if self._opcode == CLOSE:
            self._control += self._unmask(chunk)
        elif self._opcode in _DATA and self._text is not None:
            try:
                self._text.decode(self._unmask(chunk))
            except UnicodeDecodeError:
                return Violation(PROTOCOL_ERROR, "text message is not valid UTF-8")
        return None

    def _end_frame(self, checked: Checked, start: int) -> Violation | None:
        """A frame is complete: count it, or check what only its end can tell."""
        self._in_payload = False
        opcode = self._opcode
        if opcode in (PING, PONG):
            checked.controls.append(start)
        elif opcode == CLOSE:
            payload, self._control = bytes(self._control), bytearray()
            violation = _check_close(payload)
            if violation is None:
                self.closed = True
            return violation
        elif self._fin:  # the last frame of a data message
            if self._text is not None:
                try:
                    self._text.decode(b"", final=True)
                except UnicodeDecodeError:
                    return Violation(PROTOCOL_ERROR, "text message is not valid UTF-8")
            self._message = self._text = None
        return None

    def _unmask(self, chunk: bytes | bytearray) -> bytes:
        size = len(chunk)
        if not size:
            return b""
        offset = self._mask_offset
        key = (self._mask[offset:] + self._mask[:offset]) * (size // 4 + 1)
        self._mask_offset = (offset + size) % 4
        plain = int.from_bytes(chunk, "big") ^ int.from_bytes(key[:size], "big")
        return plain.to_bytes(size, "big")

    def _fail(self, checked: Checked, sound: int, violation: Violation) -> Checked:
        checked.sound = sound
        checked.controls = [c for c in checked.controls if c < sound]
        checked.violation = violation
        return checked


def _check_close(payload: bytes) -> Violation | None:
    """A close frame's code and reason, as RFC 6455 (5.5.1, 7.4) and wsproto want them."""
    if not payload:
        return None
    if len(payload) == 1:
        return Violation(PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = struct.unpack_from("!H", payload)
    if not (3000 <= code <= 4999 or code in _CLOSE_CODES):
        return Violation(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return Violation(PROTOCOL_ERROR, "close reason is not valid UTF-8")
    return None
