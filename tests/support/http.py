"""Plain HTTP/1.1 as raw bytes (the page on the WebSocket port, the admin listener): a
request exactly as a test writes it (malformed ones too), the answer parsed by hand."""

from __future__ import annotations

import trio

from .waits import WAIT


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes, read the whole answer (the server closes after it)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(raw)
        data = bytearray()
        with trio.fail_after(WAIT):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return parse_response(bytes(data))


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers, body
