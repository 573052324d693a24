"""Allowed hosts (issue 13): the WebSocket port answers only the Host names it is
meant to have, so a page on a domain that re-resolves to the server (DNS rebinding)
can neither load the page nor open a WebSocket; others get 421."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import trio
from click.testing import CliRunner

from tests.support.config import TEST_CONFIG
from tests.support.http import exchange, parse_response
from tests.support.tcp import TcpClient
from trio_chat import Config, serve
from trio_chat.cli import main
from trio_chat.cli import serve as serve_command
from trio_chat.transports.origin import HostPolicy, is_loopback

REBIND = "rebind.attacker.example"


def upgrade(host: str, origin: str | None = None) -> bytes:
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def page(host: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# ---------------------------------------------------------------- the policy, no I/O


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("", False), ("192.0.2.7", False), ("::", False)],
)
def test_loopback_binds(bind: str, loopback: bool) -> None:
    assert is_loopback(bind) is loopback


def test_a_loopback_server_answers_only_loopback_names() -> None:
    policy = HostPolicy((), "127.0.0.1")
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765", "LOCALHOST", "127.0.0.1"):
        assert policy.allows(host), host
    for host in (f"{REBIND}:8765", "localhost.attacker.example", "127.0.0.2:8765", "",
                 "[::1", "a b", "user@localhost"):
        assert not policy.allows(host), host
    assert policy.allows(None)  # HTTP/1.0 without Host: not a browser
    assert not policy.unprotected


def test_a_server_on_another_address_answers_any_name_unless_told() -> None:
    assert HostPolicy((), "0.0.0.0").allows(f"{REBIND}:80")
    assert HostPolicy((), "0.0.0.0").unprotected
    listed = HostPolicy(("chat.example", "other.example:8443"), "0.0.0.0")
    assert listed.allows("chat.example:8765") and listed.allows("CHAT.example")
    assert listed.allows("other.example:8443") and not listed.allows("other.example:80")
    assert not listed.allows("localhost:8765") and not listed.unprotected
    assert HostPolicy(("*",), "127.0.0.1").allows(REBIND)


@pytest.mark.parametrize("bad", ["http://chat.example", "chat.example/path", "a:b:c:d", ""])
def test_malformed_entries_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        HostPolicy((bad,), "127.0.0.1")


# ---------------------------------------------------------------- over the wire


async def test_dns_rebinding_gets_421_for_page_and_websocket(nursery: trio.Nursery) -> None:
    bound = await nursery.start(serve, TEST_CONFIG)
    port = bound.ws_port
    async with await TcpClient.connect(bound.tcp_port) as bob:
        await bob.join("Bob")
        rebinder = f"{REBIND}:{port}"
        for raw in (page(rebinder), upgrade(rebinder, f"http://{rebinder}")):
            status, _, body = await exchange(port, raw)
            assert status == 421
            assert b"--allowed-host" in body
        # The names it is meant to have still get the page and an upgrade.
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            status, _, body = await exchange(port, page(host))
            assert status == 200 and b"<title>trio-chat</title>" in body
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(upgrade(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"))
            data = await stream.receive_some(4096)
            assert data.startswith(b"HTTP/1.1 101 ")
        await bob.send({"type": "chat", "text": "undisturbed"})
        assert (await bob.recv_until(type="chat"))["text"] == "undisturbed"


async def test_allowed_host_lists_the_names_a_proxy_sends(nursery: trio.Nursery) -> None:
    config = dataclasses.replace(TEST_CONFIG, allowed_hosts=("chat.example",))
    bound = await nursery.start(serve, config)
    status, _, _ = await exchange(bound.ws_port, page("chat.example"))
    assert status == 200
    status, _, _ = await exchange(bound.ws_port, page(f"localhost:{bound.ws_port}"))
    assert status == 421


async def test_an_unprotected_bind_says_so_once_at_start(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    config = dataclasses.replace(TEST_CONFIG, host="0.0.0.0")
    bound = await nursery.start(serve, config)
    warnings = [r.getMessage() for r in caplog.records if "--allowed-host" in r.getMessage()]
    assert len(warnings) == 1
    status, _, _ = await exchange(bound.ws_port, page(f"{REBIND}:{bound.ws_port}"))
    assert status == 200


def test_cli_allowed_host_repeatable_from_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = serve_command.make_context(
        "serve", ["--allowed-host", "chat.example", "--allowed-host", "b.example:8443"]
    ).params
    assert Config(**params).allowed_hosts == ("chat.example", "b.example:8443")
    monkeypatch.setenv("TRIO_CHAT_ALLOWED_HOST", "a.example b.example")
    assert serve_command.make_context("serve", []).params["allowed_hosts"] == (
        "a.example", "b.example",
    )
    result = CliRunner().invoke(main, ["serve", "--allowed-host", "http://x.example"])
    assert result.exit_code == 2 and "not a host name" in result.output


def test_parse_response_is_shared() -> None:
    assert parse_response(b"HTTP/1.1 421 Misdirected Request\r\n\r\n")[0] == 421
