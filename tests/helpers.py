"""Small clients for end-to-end tests: a TCP line client and a WebSocket client."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import trio
import trustme
from trio_websocket import WebSocketConnection, wrap_client_stream

from trio_chat.protocol import LineBuffer

WAIT = 10  # seconds any single expected message may take (a bound, never slept)


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



class TcpClient:
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
        """Next line, or None at EOF."""
        with trio.fail_after(self.wait):
            while not self._lines:
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self._lines.extend(self._buffer.feed(data))
        return self._lines.pop(0)

    async def recv(self) -> dict[str, Any]:
        line = await self.line()
        assert line is not None, "connection closed"
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def recv_until(self, **match: Any) -> dict[str, Any]:
        """Skip messages until one has every key/value in ``match``."""
        while True:
            msg = await self.recv()
            if all(msg.get(k) == v for k, v in match.items()):
                return msg

    async def join(self, name: str) -> dict[str, Any]:
        await self.send({"type": "join", "user": name})
        welcome = await self.recv_until(type="welcome")
        await self.recv_until(type="system", event="join", name=name)
        return welcome

    async def eof(self) -> bool:
        """True if the server closed the connection (after any remaining lines).

        Answers the server's FIN with ours, as a real client does: the server lingers
        on a closing connection until the peer's end closes too."""
        while True:
            if await self.line() is None:
                if isinstance(self.stream, trio.abc.HalfCloseableStream):
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.stream.send_eof()
                return True

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> TcpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class WsClient:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._pending: list[dict[str, Any]] = []

    async def send(self, obj: Any) -> None:
        await self.ws.send_message(json.dumps(obj))

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while not self._pending:
                message = await self.ws.get_message()
                assert isinstance(message, str)
                self._pending.extend(json.loads(part) for part in message.split("\n"))
        return self._pending.pop(0)

    async def recv_until(self, **match: Any) -> dict[str, Any]:
        while True:
            msg = await self.recv()
            if all(msg.get(k) == v for k, v in match.items()):
                return msg

    async def join(self, name: str, **extra: Any) -> dict[str, Any]:
        await self.send({"type": "join", "user": name, **extra})
        welcome = await self.recv_until(type="welcome")
        await self.recv_until(type="system", event="join", name=name)
        return welcome


@asynccontextmanager
async def ws_client(
    port: int, path: str = "/", **kwargs: Any
) -> AsyncIterator[WebSocketConnection]:
    """``async with ws_client(port) as ws:`` yields a raw trio-websocket connection.

    We own the socket so it is closed however the server ended the connection
    (trio-websocket's client leaves it to the garbage collector after a 1009 close).
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with ws_over(stream, "127.0.0.1", path, **kwargs) as ws:
        yield ws


@asynccontextmanager
async def ws_over(
    stream: Any, host: str, path: str, **kwargs: Any
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket on a stream we own, closed (socket included) on the way out."""
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, host, path, **kwargs)
        try:
            yield ws
        finally:
            with trio.move_on_after(WAIT) as scope:
                scope.shield = True
                await ws.aclose()
            nursery.cancel_scope.cancel()


class TlsFiles:
    """A throwaway CA (trustme) and a server certificate for 127.0.0.1/localhost,
    written as PEM files the way ``--tls-cert``/``--tls-key``/``--ca`` take them."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        issued = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        self.ca_pem = directory / "ca.pem"
        issued.cert_chain_pems[0].write_to_path(str(self.cert))
        for blob in issued.cert_chain_pems[1:]:
            blob.write_to_path(str(self.cert), append=True)
        issued.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issued.configure_cert(self.server_context)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    async def tcp_client(self, port: int) -> TcpClient:
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port, ssl_context=self.client_context()
        )
        return TcpClient(stream)

    @asynccontextmanager
    async def ws_client(
        self, port: int, path: str = "/", **kwargs: Any
    ) -> AsyncIterator[WebSocketConnection]:
        """Like :func:`ws_client`, over wss:// (we own the socket here too)."""
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port, ssl_context=self.client_context(), https_compatible=True
        )
        async with ws_over(stream, f"127.0.0.1:{port}", path, **kwargs) as ws:
            yield ws
