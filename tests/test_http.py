"""The page on the WebSocket port: routing, limits, and the WebSocket hand-off."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import h11
import pytest
import trio
import trio.testing

from tests.support.http import exchange, parse_response
from tests.support.waits import WAIT
from tests.support.ws import WsClient, ws_client
from trio_chat import Bound, Config, serve
from trio_chat.server.rooms import Rooms
from trio_chat.transports.admission import Admission
from trio_chat.transports.http import MAX_DRAIN, MAX_HEAD, ReplayStream, is_websocket_upgrade, route
from trio_chat.transports.ws import handle_ws

# ---------------------------------------------------------------- helpers


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


# ---------------------------------------------------------------- routing, no I/O


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        (b"/", "text/html", b'<script src="app.js"'),
        (b"/index.html", "text/html", b"<title>trio-chat</title>"),
        (b"/app.js", "text/javascript", b"new WebSocket("),
        (b"/style.css", "text/css", b".messages"),
        (b"/?name=alice", "text/html", b"<!doctype html>"),
    ],
)
def test_route_serves_the_page_files(path: bytes, content_type: str, marker: bytes) -> None:
    reply = route(b"GET", path)
    headers = dict(reply.headers)
    assert reply.status == 200
    assert headers["content-type"].startswith(content_type)
    assert "charset=utf-8" in headers["content-type"]
    assert marker in reply.body


def test_route_html_forbids_inline_scripts() -> None:
    csp = dict(route(b"GET", b"/").headers)["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp


@pytest.mark.parametrize(
    "path", [b"/missing", b"/web/app.js", b"/../pyproject.toml", b"/app.js/", b"//app.js", b"*"]
)
def test_route_unknown_paths_are_404(path: bytes) -> None:
    assert route(b"GET", path).status == 404


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"])
def test_route_other_methods_are_405(method: bytes) -> None:
    reply = route(method, b"/")
    assert reply.status == 405
    assert dict(reply.headers)["allow"] == "GET, HEAD"


def request(*headers: tuple[bytes, bytes], method: bytes = b"GET") -> h11.Request:
    return h11.Request(method=method, target=b"/", headers=[(b"host", b"x"), *headers])


def test_websocket_upgrade_detection() -> None:
    assert is_websocket_upgrade(request((b"upgrade", b"websocket"), (b"connection", b"Upgrade")))
    assert is_websocket_upgrade(request((b"Upgrade", b"WebSocket")))
    assert is_websocket_upgrade(request((b"upgrade", b"foo, websocket")))
    assert not is_websocket_upgrade(request())
    assert not is_websocket_upgrade(request((b"upgrade", b"h2c")))
    assert not is_websocket_upgrade(request((b"upgrade", b"websocket"), method=b"POST"))


async def test_replay_stream_gives_back_the_prefix_first() -> None:
    left, right = trio.testing.memory_stream_pair()
    replay = ReplayStream(right, b"abcdef")
    await left.send_all(b"ghi")
    assert await replay.receive_some(4) == b"abcd"
    assert await replay.receive_some() == b"ef"
    assert await replay.receive_some() == b"ghi"
    await replay.send_all(b"out")
    assert await left.receive_some() == b"out"
    await replay.aclose()
    assert await left.receive_some() == b""


# ---------------------------------------------------------------- over a real socket


async def test_get_root_returns_the_page(server: Bound) -> None:
    status, headers, body = await exchange(server.ws_port, get("/"))
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert b"<title>trio-chat</title>" in body and b'src="app.js"' in body


async def test_page_assets_are_served(server: Bound) -> None:
    for path, content_type in [("/app.js", "text/javascript"), ("/style.css", "text/css")]:
        status, headers, body = await exchange(server.ws_port, get(path))
        assert status == 200, path
        assert headers["content-type"].startswith(content_type)
        assert len(body) == int(headers["content-length"]) > 100


async def test_head_has_the_headers_and_no_body(server: Bound) -> None:
    _, get_headers, get_body = await exchange(server.ws_port, get("/"))
    status, headers, body = await exchange(server.ws_port, get("/", "HEAD"))
    assert status == 200
    assert body == b""
    assert headers["content-type"] == get_headers["content-type"]
    assert int(headers["content-length"]) == len(get_body)


async def test_unknown_path_is_404(server: Bound) -> None:
    status, headers, body = await exchange(server.ws_port, get("/missing"))
    assert status == 404
    assert headers["content-type"].startswith("text/plain")
    assert b"not found" in body


async def test_post_is_405(server: Bound) -> None:
    raw = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
    status, headers, _ = await exchange(server.ws_port, raw)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "raw",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", b"\x16\x03\x01\x02"
     b"\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"],
)
async def test_malformed_head_is_400(server: Bound, raw: bytes) -> None:
    status, _, _ = await exchange(server.ws_port, raw)
    assert status == 400


async def test_head_over_the_limit_is_431(server: Bound) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    status, _, body = await exchange(server.ws_port, raw)
    assert status == 431
    assert b"too large" in body


async def test_blank_lines_instead_of_a_request_line_are_400(server: Bound) -> None:
    status, _, _ = await exchange(server.ws_port, b"\r\n" * MAX_HEAD)
    assert status == 400


async def test_head_just_under_the_limit_is_served(server: Bound) -> None:
    prefix = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: "
    raw = prefix + b"a" * (MAX_HEAD - len(prefix) - 8) + b"\r\n\r\n"
    status, _, _ = await exchange(server.ws_port, raw)
    assert status == 200


async def test_upgrade_on_the_same_port_still_chats(server: Bound) -> None:
    status, _, _ = await exchange(server.ws_port, get("/"))
    assert status == 200
    async with ws_client(server.ws_port) as conn:
        alice = WsClient(conn)
        welcome = await alice.join("Alice")
        assert welcome["users"] == ["Alice"]
        await alice.send({"type": "chat", "text": "still here"})
        assert (await alice.recv_until(type="chat"))["text"] == "still here"


async def test_page_requests_do_not_disturb_the_room(server: Bound) -> None:
    async with ws_client(server.ws_port) as conn:
        alice = WsClient(conn)
        await alice.join("Alice")
        for raw in (get("/"), get("/nope"), b"garbage\r\n\r\n"):
            await exchange(server.ws_port, raw)
        await alice.send({"type": "who"})
        assert (await alice.recv_until(type="users"))["users"] == ["Alice"]


async def test_serve_logs_the_page_url(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat.server")
    bound: Bound = await nursery.start(serve, Config(tcp_port=0, ws_port=0))
    assert bound.page_url == f"http://127.0.0.1:{bound.ws_port}/"
    assert f"chat page: http://127.0.0.1:{bound.ws_port}/" in caplog.text


def test_page_url_of_wildcard_and_ipv6_hosts() -> None:
    assert Bound("0.0.0.0", 1, 8765).page_url == "http://127.0.0.1:8765/"
    assert Bound("::", 1, 8765).page_url == "http://[::1]:8765/"
    assert Bound("::1", 1, 8765).page_url == "http://[::1]:8765/"
    assert Bound("chat.example", 1, 80).page_url == "http://chat.example:80/"


# ---------------------------------------------------------------- limits in time and size


async def test_half_sent_head_is_dropped_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(handshake_timeout=5)
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_ws, Admission(Rooms(), config), server_side)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
        start = trio.current_time()
        assert await client.receive_some() == b""  # closed, no answer
        assert trio.current_time() - start == pytest.approx(5, abs=0.1)


async def test_silent_connection_is_dropped_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock
) -> None:
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_ws, Admission(Rooms(), Config(handshake_timeout=3)), server_side)
        start = trio.current_time()
        assert await client.receive_some() == b""
        assert trio.current_time() - start == pytest.approx(3, abs=0.1)


class EndlessHead(trio.abc.Stream):
    """A client sending a 10 MB request head, lazily; counts what the server reads."""

    def __init__(self, size: int = 10 * 1024 * 1024) -> None:
        self._chunks = self._generate(size)
        self.read = 0
        self.sent = bytearray()
        self.closed = False

    @staticmethod
    def _generate(size: int) -> Iterator[bytes]:
        yield b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
        for _ in range(size // 4096):
            yield b"a" * 4096

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        chunk = next(self._chunks, b"")[: max_bytes or None]
        self.read += len(chunk)
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def test_ten_megabyte_head_is_refused_after_reading_a_bounded_amount() -> None:
    stream = EndlessHead()
    with trio.fail_after(WAIT):
        await handle_ws(Admission(Rooms(), Config()), stream)
    status, _, _ = parse_response(bytes(stream.sent))
    assert status == 431
    assert stream.closed
    # The head is cut at MAX_HEAD + 1 bytes; a bounded drain follows the answer.
    assert stream.read <= MAX_HEAD + 1 + MAX_DRAIN + 4096


class BrokenStream(trio.abc.Stream):
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("connection reset")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("connection reset")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_reset_during_the_head_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    await handle_ws(Admission(Rooms(), Config()), BrokenStream())
    assert "failed" not in caplog.text
