"""NDJSON line clients: :class:`TcpClient` (Trio, any stream) and
:func:`join_with_replay`, :class:`BlockingTcpClient` (a plain socket, for threads that
are not Trio's), :func:`read_lines` (for load), and :func:`free_port` (a port where
nobody listens)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import trio

from trio_chat.protocol import LineBuffer

from .waits import WAIT

#: Whatever the server sends a client is decoded into one of these.
Message = dict[str, Any]
#: The start of the greeting a TCP connection quiet for a moment gets (for a person at
#: nc; tests/test_first_contact.py checks it on raw sockets): the clients here skip
#: it, as every client ignores message types it does not use.
HELLO = b'{"type":"hello",'


def matches(message: Message, match: dict[str, Any]) -> bool:
    """``message`` has every key/value in ``match``."""
    return all(message.get(key) == value for key, value in match.items())


def free_port() -> int:
    """A loopback port nothing listens on right now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TcpClient:
    """A chat client on any Trio stream (a socket, TLS, or one end of a memory pair):
    JSON in, one object per line out; each wait bounded by ``wait`` seconds."""

    def __init__(self, stream: trio.abc.Stream, wait: float = WAIT) -> None:
        self.stream = stream
        self.wait = wait
        self._buffer = LineBuffer(1 << 20)
        self._lines: list[bytes] = []

    @classmethod
    async def connect(cls, port: int) -> TcpClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, obj: Any) -> None:
        await self.send_raw(json.dumps(obj).encode() + b"\n")

    async def line(self) -> bytes | None:
        """Next line (the greeting skipped), or None at EOF."""
        with trio.fail_after(self.wait):
            while not self._lines:
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self._lines.extend(
                    line for line in self._buffer.feed(data) if not line.startswith(HELLO)
                )
        return self._lines.pop(0)

    async def recv(self) -> Message:
        line = await self.line()
        assert line is not None, "connection closed"
        obj: Message = json.loads(line)
        return obj

    async def recv_until(self, **match: Any) -> Message:
        """Skip messages until one has every key/value in ``match``."""
        while True:
            msg = await self.recv()
            if matches(msg, match):
                return msg

    async def recv_all(self) -> list[Message]:
        """Every message up to the server's EOF, which is answered (see :meth:`eof`).
        Blank lines are skipped: the server starts a fresh line before its last word to
        a peer whose write it cut off (slow_consumer)."""
        messages = []
        while (line := await self.line()) is not None:
            if line:
                messages.append(json.loads(line))
        await self._answer_eof()
        return messages

    async def send_eof(self) -> None:
        """Half-close: this client has nothing more to say."""
        assert isinstance(self.stream, trio.abc.HalfCloseableStream)
        await self.stream.send_eof()

    async def join(self, name: str) -> Message:
        await self.send({"type": "join", "user": name})
        welcome = await self.recv_until(type="welcome")
        await self.recv_until(type="system", event="join", name=name)
        return welcome

    async def eof(self) -> bool:
        """True if the server closed the connection (after any remaining lines).

        Answers the server's FIN with ours, as a real client does: the server lingers
        on a closing connection until the peer's end closes too."""
        while await self.line() is not None:
            pass
        await self._answer_eof()
        return True

    async def _answer_eof(self) -> None:
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> TcpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def join_with_replay(
    client: TcpClient, name: str, **extra: Any
) -> tuple[list[Message], Message]:
    """Join; return the replayed chats and the ``history_end`` that follows welcome."""
    await client.send({"type": "join", "user": name, **extra})
    await client.recv_until(type="welcome")
    chats = []
    while (msg := await client.recv())["type"] != "history_end":
        assert msg["type"] == "chat" and msg["history"] is True, msg
        chats.append(msg)
    joined = await client.recv()
    assert joined["type"] == "system" and joined["event"] == "join", joined
    return chats, msg


class BlockingTcpClient:
    """The same protocol on a blocking socket, for a thread that is not Trio's (the
    browser tests drive Playwright's sync API from the main thread)."""

    def __init__(self, port: int, wait: float = WAIT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
        self._buffer = LineBuffer(1 << 20)
        self._lines: list[bytes] = []

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def recv(self) -> Message:
        while not self._lines:
            chunk = self.sock.recv(65536)
            assert chunk, "server closed the connection"
            self._lines.extend(
                line for line in self._buffer.feed(chunk) if not line.startswith(HELLO)
            )
        message: Message = json.loads(self._lines.pop(0))
        return message

    def recv_until(self, **match: Any) -> Message:
        while True:
            message = self.recv()
            if matches(message, match):
                return message

    def __enter__(self) -> BlockingTcpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


async def read_lines(
    stream: trio.abc.ReceiveStream, on_lines: Callable[[list[str]], object]
) -> None:
    """Call ``on_lines`` with the lines of each read until the connection ends (EOF or
    a reset): the load tests' reader, with no per-line await among hundreds of clients."""
    buffer = LineBuffer(1 << 20)
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await stream.receive_some(1 << 16):
            on_lines([line.decode() for line in buffer.feed(data)])
