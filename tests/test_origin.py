"""The Origin check on the WebSocket upgrade (--allowed-origin)."""

from __future__ import annotations

import dataclasses
import ssl
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

from tests.support.config import TEST_CONFIG
from tests.support.tcp import TcpClient
from tests.support.tls import TlsFiles
from tests.support.ws import WsClient, wrap_client
from trio_chat import Bound, Config, serve
from trio_chat.cli import main
from trio_chat.cli import serve as serve_command
from trio_chat.transports.origin import OriginPolicy, parse_origin


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed"),
    [
        (None, "127.0.0.1:8765", False, True),  # no Origin: not a browser
        ("http://127.0.0.1:8765", "127.0.0.1:8765", False, True),  # the page's own
        ("HTTP://LOCALHOST:8765", "localhost:8765", False, True),
        ("http://chat.example", "chat.example:80", False, True),  # default ports
        ("https://chat.example:443", "chat.example", True, True),
        ("http://[::1]:8765", "[::1]:8765", False, True),
        ("https://127.0.0.1:8765", "127.0.0.1:8765", False, False),  # scheme mismatch
        ("http://127.0.0.1:8765", "127.0.0.1:8765", True, False),
        ("http://localhost:8765", "127.0.0.1:8765", False, False),  # other host
        ("http://127.0.0.1:8766", "127.0.0.1:8765", False, False),  # other port
        ("https://evil.example", "127.0.0.1:8765", False, False),
        ("null", "127.0.0.1:8765", False, False),  # sandboxed or file:// pages
        ("", "127.0.0.1:8765", False, False),
        ("http://127.0.0.1:8765/path", "127.0.0.1:8765", False, False),
        ("http://127.0.0.1:99999", "127.0.0.1:99999", False, False),  # bad port
        ("ws://127.0.0.1:8765", "127.0.0.1:8765", False, False),
        ("http://127.0.0.1:8765", None, False, False),  # no Host to compare with
        ("http://127.0.0.1:8765", "127.0.0.1:8765/x", False, False),
    ],
)
def test_default_policy(origin: str, host: str | None, secure: bool, allowed: bool) -> None:
    assert OriginPolicy().allows(origin, host, secure=secure) is allowed


def test_allowed_origins() -> None:
    policy = OriginPolicy(["https://chat.example", "http://LOCALHOST:3000/"])
    assert policy.allows("https://chat.example:443", "127.0.0.1:8765", secure=False)
    assert policy.allows("http://localhost:3000", "127.0.0.1:8765", secure=False)
    assert not policy.allows("http://chat.example", "127.0.0.1:8765", secure=False)
    assert not policy.allows("https://chat.example.evil", "127.0.0.1:8765", secure=False)
    assert OriginPolicy(["*"]).allows("https://anything.example", None, secure=True)
    assert OriginPolicy(["*"]).allows("null", None, secure=True)


@pytest.mark.parametrize("bad", ["chat.example", "ftp://x", "https://", "null", "https://a/b"])
def test_allowed_origin_must_be_an_origin(bad: str) -> None:
    with pytest.raises(ValueError):
        OriginPolicy([bad])
    assert parse_origin(bad) is None


def test_raw_headers() -> None:
    policy = OriginPolicy()
    own = (b"Origin", b"http://h:1")
    assert policy.allows_headers([own], "h:1", secure=False)
    assert policy.allows_headers([(b"ORIGIN", b"http://h:1")], "h:1", secure=False)
    assert policy.allows_headers([], "h:1", secure=False)
    assert not policy.allows_headers([own, own], "h:1", secure=False)  # ambiguous
    assert not policy.allows_headers([(b"Origin", b"http://h\xff:1")], "h:1", secure=False)


# ---------------------------------------------------------------- end to end


def connect(
    port: int, origin: str | None = None, scheme: str = "ws", **kwargs: Any
) -> AbstractAsyncContextManager[WebSocketConnection]:
    headers = [(b"Origin", origin.encode())] if origin is not None else None
    return open_websocket_url(
        f"{scheme}://127.0.0.1:{port}/", extra_headers=headers, **kwargs
    )


async def rejected(
    port: int, origin: str, ssl_context: ssl.SSLContext | None = None
) -> ConnectionRejected:
    """The server's refusal of an upgrade from ``origin``. (Over our own stream:
    open_websocket_url leaves its socket unclosed when the upgrade is rejected.)"""
    if ssl_context is None:
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    else:
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port, ssl_context=ssl_context, https_compatible=True
        )
    caught: list[ConnectionRejected] = []
    async with stream:
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    headers = [(b"Origin", origin.encode())]
                    await wrap_client(
                        nursery, stream, f"127.0.0.1:{port}", "/", extra_headers=headers
                    )
                    raise AssertionError(f"origin {origin} was accepted")
        except* ConnectionRejected as group:
            caught.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
    assert len(caught) == 1
    return caught[0]


async def test_own_origin_and_no_origin_are_accepted(server: Bound) -> None:
    for origin in (None, f"http://127.0.0.1:{server.ws_port}"):
        async with connect(server.ws_port, origin) as ws:
            client = WsClient(ws)
            await client.send({"type": "ping"})
            assert await client.recv() == {"type": "pong"}


async def test_foreign_origins_get_403_and_nobody_notices(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        for origin in (
            "https://evil.example",
            "null",
            f"http://localhost:{server.ws_port}",  # Host says 127.0.0.1
            f"https://127.0.0.1:{server.ws_port}",  # a plain port serves no https page
        ):
            error = await rejected(server.ws_port, origin)
            assert error.status_code == 403
            assert error.body == b"403 forbidden: origin not allowed\n"
        await bob.send({"type": "chat", "text": "undisturbed"})
        msg = await bob.recv()
        assert msg["type"] == "chat" and msg["text"] == "undisturbed"


async def test_allowed_origin_option(nursery: trio.Nursery) -> None:
    config = dataclasses.replace(TEST_CONFIG, allowed_origins=("https://chat.example",))
    bound = await nursery.start(serve, config)
    async with connect(bound.ws_port, "https://chat.example") as ws:
        await WsClient(ws).join("Alice")
    assert (await rejected(bound.ws_port, "http://chat.example")).status_code == 403
    # The page's own origin stays allowed next to the listed ones.
    async with connect(bound.ws_port, f"http://127.0.0.1:{bound.ws_port}"):
        pass


async def test_wildcard_allows_every_origin(nursery: trio.Nursery) -> None:
    bound = await nursery.start(serve, dataclasses.replace(TEST_CONFIG, allowed_origins=("*",)))
    async with connect(bound.ws_port, "https://evil.example"):
        pass


async def test_own_origin_over_tls_is_https(nursery: trio.Nursery, tls: TlsFiles) -> None:
    bound = await nursery.start(serve, tls.server_config(TEST_CONFIG))
    context = tls.client_context()
    own = f"https://127.0.0.1:{bound.ws_port}"
    async with connect(bound.ws_port, own, scheme="wss", ssl_context=context):
        pass
    plain = f"http://127.0.0.1:{bound.ws_port}"
    error = await rejected(bound.ws_port, plain, ssl_context=context)
    assert error.status_code == 403


def test_cli_allowed_origin_repeatable_and_from_environment(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--allowed-origin", "https://a.example", "--allowed-origin", "*"]
    params = serve_command.make_context("serve", args).params
    assert Config(**params).allowed_origins == ("https://a.example", "*")
    assert serve_command.make_context("serve", []).params["allowed_origins"] == ()
    monkeypatch.setenv("TRIO_CHAT_ALLOWED_ORIGIN", "https://a.example http://b.example:8080")
    params = serve_command.make_context("serve", []).params
    assert params["allowed_origins"] == ("https://a.example", "http://b.example:8080")


def test_cli_refuses_a_bad_origin() -> None:
    result = CliRunner().invoke(main, ["serve", "--allowed-origin", "chat.example"])
    assert result.exit_code == 2
    assert "not an origin" in result.output
