"""The chat page, served on the WebSocket port by a small HTTP/1.1 server on h11.

trio-websocket alone answers a plain GET with 400, so every connection on the
WebSocket port starts here: the request head is read with h11, capped in size
(past :data:`MAX_HEAD` bytes: 431) and, by the caller, in time. A WebSocket upgrade
is handed back as a stream that replays the bytes already read, for
``trio_websocket.wrap_server_stream``; any other request gets one response (the
page, 404, 405) and the connection is closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from importlib import resources
from typing import Final

import h11
import trio

from ..config import Config
from ..protocol import WRONG_PORT, ProtocolError
from . import origin
from .net import Ports, local_host, say_and_close

log = logging.getLogger(__name__)

#: Largest request head read, in bytes; past it the client gets 431 (h11's default cap).
MAX_HEAD: Final = 16 * 1024
#: Bytes read and thrown away after an answer, so the client sees it instead of a reset.
MAX_DRAIN: Final = 4 * MAX_HEAD

#: URL path -> file under ``trio_chat/transports/web/``. Nothing else is served.
PAGES: Final = {
    "/": "index.html",
    "/index.html": "index.html",
    "/app.js": "app.js",
    "/style.css": "style.css",
}
CONTENT_TYPES: Final = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
ALLOW: Final = "GET, HEAD"
#: The page needs nothing from other origins; a script injected into it could not run.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS: Final = [
    ("server", "trio-chat"),
    ("connection", "close"),
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
]
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(frozen=True)
class Reply:
    """One HTTP response: status, extra headers, body (sent without it for HEAD)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@cache
def asset(name: str) -> bytes:
    """The bytes of a file of the page (package data, read once)."""
    return resources.files("trio_chat.transports").joinpath("web", name).read_bytes()


def _text(status: int, text: str, *headers: tuple[str, str]) -> Reply:
    return Reply(
        status, (("content-type", "text/plain; charset=utf-8"), *headers), f"{text}\n".encode()
    )


def route(method: bytes, target: bytes) -> Reply:
    """Decide the answer to a plain (not upgrade) request; pure, so tests call it directly."""
    if method not in (b"GET", b"HEAD"):
        return _text(405, "405 method not allowed: only GET and HEAD", ("allow", ALLOW))
    path = target.split(b"?", 1)[0].decode("ascii", "replace")
    name = PAGES.get(path)
    if name is None:
        return _text(404, "404 not found: the chat page is at /")
    content_type = CONTENT_TYPES[name.rsplit(".", 1)[1]]
    headers = [("content-type", content_type)]
    if name.endswith(".html"):
        headers.append(("content-security-policy", CSP))
    return Reply(200, tuple(headers), asset(name))


def is_websocket_upgrade(request: h11.Request) -> bool:
    """A GET asking to switch to WebSocket (``Upgrade: websocket``)."""
    if request.method != b"GET":
        return False
    return any(
        name == b"upgrade" and b"websocket" in (t.strip().lower() for t in value.split(b","))
        for name, value in request.headers
    )


def _host(request: h11.Request) -> str | None:
    for name, value in request.headers:  # h11 lower-cases names
        if name == b"host":
            return value.decode("ascii", "replace")
    return None


def origin_allowed(request: h11.Request, config: Config, *, secure: bool) -> bool:
    """The Origin check (trio_chat.origin) for a WebSocket upgrade request."""
    policy = origin.policy(config.allowed_origins)
    return policy.allows_headers(request.headers, _host(request), secure=secure)


class ReplayStream(trio.abc.Stream):
    """A stream that first gives back ``prefix`` (bytes already read from ``stream``),
    so trio-websocket sees the whole opening handshake we peeked at. Its first
    ``head`` bytes are the request head; any after it are the client's first frames."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes, head: int | None = None) -> None:
        self.stream = stream
        self._prefix = prefix
        self.head = len(prefix) if head is None else head

    @property
    def replaying(self) -> bool:
        """Bytes peeked at are still to be given back (read through this stream)."""
        return bool(self._prefix)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._prefix:
            return await self.stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._prefix) if max_bytes is None else max_bytes
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


class _NotHttp(Exception):
    """The first bytes on the WebSocket port cannot start an HTTP request."""


async def _read_head(
    stream: trio.abc.Stream, conn: h11.Connection
) -> tuple[h11.Request, bytes] | None:
    """Read until h11 has a request head; None if the peer went away first.

    Raises ``h11.RemoteProtocolError`` for a malformed head or one over the cap, and
    :class:`_NotHttp` as soon as the first non-blank byte is one of :data:`NOT_HTTP`."""
    data = bytearray()
    while True:
        # h11 raises (status hint 431) once it holds over MAX_HEAD bytes without a
        # complete head; reading at most MAX_HEAD + 1 bytes in all makes that the cap.
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event, bytes(data)
        budget = MAX_HEAD + 1 - len(data)
        if budget <= 0:  # whatever h11 skipped (blank lines) still counts
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        try:
            chunk = await stream.receive_some(budget)
        except _STREAM_ERRORS:
            return None
        if not chunk:
            return None  # a half-sent head is dropped without an answer
        data += chunk
        if bytes(data).lstrip()[:1] in NOT_HTTP:
            raise _NotHttp
        conn.receive_data(bytes(chunk))


async def _send_reply(
    stream: trio.abc.Stream, conn: h11.Connection, reply: Reply, config: Config, *, head: bool
) -> None:
    """Write the response (bounded by ``send_timeout``), then close gracefully: stop
    sending and drain what the client still sends, bounded by ``goodbye_timeout``
    and :data:`MAX_DRAIN`, so it reads our answer rather than a connection reset."""
    headers = [*_COMMON_HEADERS, *reply.headers, ("content-length", str(len(reply.body)))]
    response = h11.Response(
        status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase
    )
    data = conn.send(response) or b""
    if not head:
        data += conn.send(h11.Data(data=reply.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await _say_and_close(stream, data, config)


async def _say_and_close(stream: trio.abc.Stream, data: bytes, config: Config) -> None:
    await say_and_close(
        stream, data, send_timeout=config.send_timeout,
        goodbye_timeout=config.goodbye_timeout, max_drain=MAX_DRAIN,
    )


def raw_reply(status: int, text: str) -> bytes:
    """A whole plain-text HTTP/1.1 response, for a request that is not read with h11
    (one arriving on the TCP port)."""
    body = f"{text}\n".encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    for name, value in (
        *_COMMON_HEADERS, ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
    ):
        head.append(f"{name}: {value}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


#: The first bytes of a line that cannot start an HTTP request (whose first line is a
#: method name): JSON, or a ``/command``, sent to the WebSocket port by a line client.
NOT_HTTP: Final = (b"{", b"/")


def wrong_port(ports: Ports, host: str) -> bytes:
    """The NDJSON ``wrong_port`` error a line client gets on the WebSocket port."""
    tcp = ports.tcp_address(host)
    error = ProtocolError(
        WRONG_PORT,
        f"wrong port: this is trio-chat's WebSocket port (and the chat page, "
        f"{ports.page_url(host)}); NDJSON lines go to port {ports.tcp} ({tcp}: "
        f"nc {host} {ports.tcp}, trio-chat join --port {ports.tcp})",
        fatal=True,
    )
    return error.to_message().encode() + b"\n"


async def serve_http(
    stream: trio.abc.Stream, config: Config, peer: str = "?", ports: Ports | None = None
) -> ReplayStream | None:
    """Handle the start of a connection on the WebSocket port.

    Returns a stream for ``wrap_server_stream`` when the client asks for a WebSocket;
    otherwise answers the one request and returns None. A line client at the wrong
    port (its first byte ``{`` or ``/``) gets one NDJSON ``wrong_port`` error naming
    the TCP port (``ports``), at once. The caller bounds the time
    (``handshake_timeout``) and closes ``stream``.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        head = await _read_head(stream, conn)
    except _NotHttp:
        ports = ports or Ports(config.tcp_port, config.ws_port)
        log.info("http %s: a line client on the WebSocket port: wrong_port", peer)
        await _say_and_close(stream, wrong_port(ports, local_host(stream, config.host)), config)
        return None
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        log.info("http %s: bad request head (%s): %d", peer, exc, status)
        reason = "request head too large" if status == 431 else "bad request"
        await _send_reply(stream, conn, _text(status, f"{status} {reason}"), config, head=False)
        return None
    if head is None:
        log.info("http %s: closed before sending a request head", peer)
        return None
    request, data = head
    host = _host(request)
    if not origin.host_policy(config.allowed_hosts, config.host).allows(host):
        log.info("http %s: host %r not answered (--allowed-host): 421", peer, host)
        reply = _text(
            421,
            f"421 misdirected request: this server does not answer for host {host!r}; "
            "its operator can allow it with --allowed-host",
        )
        await _send_reply(stream, conn, reply, config, head=request.method == b"HEAD")
        return None
    if is_websocket_upgrade(request):
        if origin_allowed(request, config, secure=isinstance(stream, trio.SSLStream)):
            return ReplayStream(stream, data, head=len(data) - len(conn.trailing_data[0]))
        log.info(
            "http %s: websocket from origin %s refused (host %s): 403",
            peer,
            origin.origin_header(request.headers),
            _host(request),
        )
        reply = _text(403, "403 forbidden: origin not allowed")
        await _send_reply(stream, conn, reply, config, head=False)
        return None
    reply = route(request.method, request.target)
    target = request.target.decode("ascii", "backslashreplace")  # h11 allows no controls
    log.info("http %s %s %s %d", peer, request.method.decode(), target, reply.status)
    await _send_reply(stream, conn, reply, config, head=request.method == b"HEAD")
    return None
