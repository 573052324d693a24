"""Opening a connection to the server: the one place that knows TCP from WebSocket
(and from gRPC, whose connection is :mod:`.grpcconn`'s).

Both kinds look the same from above: :meth:`ServerConnection.receive` returns the
server's messages as dicts, :meth:`ServerConnection.send` writes one message, and a
broken or closed connection raises :class:`Disconnected`. Options that change how a
connection is opened (TLS, say) belong in :func:`open_connection` alone.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from .. import protocol
from ..protocol import LineBuffer, ProtocolError
from ..transports import tls
from ..transports.net import url_host
from .config import ClientConfig
from .incoming import Reporter

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
#: Seconds to finish a WebSocket closing handshake before dropping the socket.
WS_CLOSE_TIMEOUT = 2.0
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


class ClientError(Exception):
    """A failure the user is told about in one line (``str()``), without a traceback."""


class ConnectError(ClientError):
    """The server could not be reached."""


class WrongPort(ClientError):
    """The server is trio-chat, at the other port: the one line says which option
    reaches it (it is never retried)."""


#: In the body of the HTTP 400 trio-chat's TCP port answers an HTTP request with.
_TCP_PORT_SAYS = b"this is trio-chat's TCP port"
_WS_URL = re.compile(rb"(wss?://\S+/)")
#: In the ``wrong_port`` error trio-chat's WebSocket port answers a line with.
_TCP_PORT = re.compile(r"port (\d+)")


def wrong_ws_port(config: ClientConfig, body: bytes) -> WrongPort:
    """``--url`` names trio-chat's TCP port (it answered the WebSocket handshake with
    its HTTP 400, ``body``)."""
    url = _WS_URL.search(body)
    parts = urlsplit(config.url or "")
    port = f" --port {parts.port}" if parts.port else ""
    tls = " --tls" if parts.scheme == "wss" else ""
    other = f", or --url {url.group(1).decode()}" if url else ""
    return WrongPort(
        f"{config.address} is trio-chat's TCP port: use --host {parts.hostname}{port}{tls} "
        f"instead of --url{other}"
    )


def wrong_tcp_port(config: ClientConfig, text: str) -> WrongPort:
    """``--port`` names trio-chat's WebSocket port (it answered our join with its
    ``wrong_port`` error, whose ``text`` names the TCP port)."""
    scheme = "wss" if config.tls else "ws"
    port = _TCP_PORT.search(text)
    other = f", or --port {port.group(1)} for its TCP port" if port else ""
    return WrongPort(
        f"{config.address} is trio-chat's WebSocket port: use "
        f"--url {scheme}://{url_host(config.host)}:{config.port}/{other}"
    )


class Disconnected(Exception):
    """The connection ended (closed by the server, reset, or unusable); says why.
    ``banned``: the server closed it for a server-wide ban (trying again is no use)."""

    def __init__(self, text: str, *, banned: bool = False) -> None:
        super().__init__(text)
        self.banned = banned


#: The WebSocket close code of a server-wide ban (docs/protocol.md).
BANNED_CLOSE = 4003


class ServerConnection(Protocol):
    async def receive(self) -> list[dict[str, Any]]:
        """Wait for the next message(s) from the server; raise Disconnected at the end."""

    async def send(self, message: Mapping[str, Any]) -> None:
        """Write one message; raise Disconnected if the connection is gone."""


#: Deepest nesting of arrays and objects taken from a server (the protocol has 2).
MAX_DEPTH = 32


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _shallow(text: str, obj: object) -> bool:
    """False for a value nested deeper than MAX_DEPTH: ``json.loads`` takes up to about
    a thousand levels, but printing it again (``--json``) from deeper in the stack
    would hit the recursion limit. Only text with that many brackets is walked."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return True
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        children: Iterable[object]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def parse_messages(
    texts: Iterable[str | bytes], report: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Decode server messages, one JSON object per item; skip anything else.

    The server only sends JSON objects, but a client that crashed on a stray line (or
    on a message type a newer server added) would be worse than one that ignores it.
    Bytes must be UTF-8 (``json.loads`` would guess UTF-16 or -32 from the first
    bytes); ``NaN`` and ``Infinity`` are not JSON. What each field must be is checked
    above (:mod:`.incoming`). Problems go to ``report`` (each kind once, say).
    """
    report = report or _log_problem
    messages: list[dict[str, Any]] = []
    for text in texts:
        if not text.strip():
            continue
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            obj = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            # ValueError: not JSON, not UTF-8 (UnicodeDecodeError), or an integer
            # with more digits than Python parses; RecursionError: nested too deeply.
            report("a line that is not JSON")
            continue
        if not isinstance(obj, dict):
            report("a message that is not a JSON object")
        elif not _shallow(text, obj):
            report(f"a message nested deeper than {MAX_DEPTH} levels")
        else:
            messages.append(obj)
    return messages


def _log_problem(problem: str) -> None:
    log.warning("ignoring %s from the server", problem)


class TcpConnection:
    """NDJSON over a trio Stream (a TCP socket, or TLS over one).

    A line over ``max_line`` bytes is skipped (never held whole: the bytes up to its
    newline are dropped as they come), and the lines after it are read as usual.
    """

    def __init__(self, stream: trio.abc.Stream, max_line: int) -> None:
        self.stream = stream
        self._lines = LineBuffer(max_line)
        self._skipping = False  # inside a line over the limit: drop up to its newline
        self._report = Reporter()

    async def receive(self) -> list[dict[str, Any]]:
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except _STREAM_ERRORS as exc:
            raise Disconnected("connection lost") from exc
        if not data:
            raise Disconnected("server closed the connection")
        return parse_messages(self._split(data), self._report)

    def _split(self, data: bytes | bytearray) -> list[bytes]:
        lines: list[bytes] = []
        while data:
            end = data.find(b"\n")
            if self._skipping:
                if end < 0:
                    return lines
                data, self._skipping = data[end + 1 :], False
                continue
            # Fed up to one newline at a time, so that a line over the limit costs only
            # itself: the LineBuffer drops what it holds when it refuses one.
            piece, data = (data, b"") if end < 0 else (data[: end + 1], data[end + 1 :])
            try:
                lines += self._lines.feed(piece)
            except ProtocolError:
                lines += self._lines.before_error
                self._skipping = end < 0  # its newline is still to come
                self._report(f"lines over {self._lines.max_line} bytes")
        return lines

    async def send(self, message: Mapping[str, Any]) -> None:
        try:
            await self.stream.send_all((protocol.encode(message) + "\n").encode())
        except _STREAM_ERRORS as exc:
            raise Disconnected("connection lost") from exc


class WsConnection:
    """JSON text frames over trio-websocket; a frame may hold several lines (``batch``)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._report = Reporter()

    async def receive(self) -> list[dict[str, Any]]:
        try:
            message = await self.ws.get_message()
        except ConnectionClosed as exc:
            banned = exc.reason is not None and exc.reason.code == BANNED_CLOSE
            raise Disconnected(_close_text(exc), banned=banned) from None
        if isinstance(message, bytes):
            self._report("a binary frame")
            return []
        return parse_messages(message.split("\n"), self._report)

    async def send(self, message: Mapping[str, Any]) -> None:
        try:
            await self.ws.send_message(protocol.encode(message))
        except ConnectionClosed as exc:
            banned = exc.reason is not None and exc.reason.code == BANNED_CLOSE
            raise Disconnected(_close_text(exc), banned=banned) from None


def _close_text(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None or reason.code in (1000, 1001):
        return "server closed the connection"
    if reason.code == 1006:
        return "connection lost"
    why = reason.reason or reason.name
    return f"server closed the connection ({reason.code} {why})"


@asynccontextmanager
async def open_connection(config: ClientConfig) -> AsyncIterator[ServerConnection]:
    """Connect to the server ``config`` names; raise :class:`ConnectError` if we cannot."""
    if config.grpc is not None:
        from .grpcconn import open_grpc_session  # grpcio: only for --grpc

        async with open_grpc_session(config) as connection:
            yield connection
        return
    if config.url is None:
        try:
            with trio.fail_after(config.connect_timeout):
                stream = await _open_stream(config.host, config.port, config, secure=config.tls)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise ConnectError(f"cannot connect to {config.address}: {describe(exc)}") from None
        async with stream:
            yield TcpConnection(stream, config.max_line)
        return
    async with _open_websocket(config, config.url) as ws:
        yield WsConnection(ws)


@asynccontextmanager
async def _open_websocket(config: ClientConfig, url: str) -> AsyncIterator[WebSocketConnection]:
    """trio-websocket over a stream we open and close ourselves.

    trio-websocket's own client (``open_websocket_url``) waits out its whole connect
    timeout when the TLS handshake fails, then says only "timed out", and leaves its
    socket to the garbage collector after some closes. Here a refused certificate is
    a ConnectError at once, and the socket is always closed.
    """
    _check_url(url)
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    default_port = 443 if secure else 80
    port = parts.port or default_port
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = url_host(host) if port == default_port else f"{url_host(host)}:{port}"
    try:
        with trio.fail_after(config.connect_timeout):
            stream = await _open_stream(host, port, config, secure=secure)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise ConnectError(f"cannot connect to {config.address}: {describe(exc)}") from None
    async with stream:
        opened = False
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(config.connect_timeout):
                    ws = await wrap_client_stream(
                        nursery, stream, host_header, resource, max_message_size=config.max_line
                    )
                opened = True
                try:
                    yield ws
                except BaseException as exc:
                    # Raised again below, outside the nursery: the caller gets its own
                    # error, not an ExceptionGroup.
                    body_error = exc
                finally:
                    # A closing handshake needs the reader task, which a cancellation
                    # around us has cancelled too: then the socket is just closed.
                    if not isinstance(body_error, trio.Cancelled):
                        with trio.move_on_after(WS_CLOSE_TIMEOUT) as scope:
                            scope.shield = True
                            await ws.aclose()
                    nursery.cancel_scope.cancel()  # the library's reader task
        except BaseExceptionGroup as group:
            cause = _root_cause(group)
            if (not opened and isinstance(cause, ConnectionRejected)
                    and cause.status_code == 400 and _TCP_PORT_SAYS in (cause.body or b"")):
                raise wrong_ws_port(config, cause.body or b"") from None
            if not opened:  # refused (ConnectionRejected), timed out, or reset
                raise ConnectError(
                    f"cannot connect to {config.address}: {describe(group)}"
                ) from None
            if body_error is None or isinstance(body_error, trio.Cancelled):
                # The library's reader task failed, which cancelled the body.
                raise Disconnected("connection lost") from None
        if body_error is not None:
            raise body_error


def _tls_context(config: ClientConfig) -> ssl.SSLContext:
    try:
        return tls.client_context(config.ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"cannot use --ca {config.ca}: {exc}") from None


async def _open_stream(
    host: str, port: int, config: ClientConfig, *, secure: bool
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """A TCP stream; with ``secure``, TLS over it, already handshaken (so a certificate
    the client does not trust fails here, as a connection error)."""
    context = _tls_context(config) if secure else None
    stream = await trio.open_tcp_stream(host, port)
    if context is None:
        return stream
    tls_stream = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
    try:
        await tls_stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls_stream


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConnectError(f"cannot connect to {url}: not a ws:// or wss:// URL")


def describe(exc: BaseException) -> str:
    """Why a connection attempt failed, in a few lower-case words."""
    cause = _root_cause(exc)
    if isinstance(cause, ConnectionRejected):
        return f"server refused the WebSocket handshake (HTTP {cause.status_code})"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({cause.verify_message}); see --ca"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed ({cause.reason or cause})"
    if isinstance(cause, trio.TooSlowError | ConnectionTimeout | TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return f"unknown host ({cause.strerror or cause})"
    if isinstance(cause, OSError) and cause.errno is not None:
        if cause.errno == errno.ECONNREFUSED:
            return "connection refused"
        return os.strerror(cause.errno).lower()
    return str(cause) or type(cause).__name__


def _root_cause(exc: BaseException) -> BaseException:
    """The most specific error behind ``exc``: trio's "all attempts failed" and
    trio-websocket's HandshakeError wrap the real one."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[-1]
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        elif isinstance(exc, HandshakeError) and exc.__context__ is not None:
            exc = exc.__context__
        else:
            break
    return exc
