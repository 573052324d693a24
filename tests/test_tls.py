"""TLS on both ports (--tls-cert/--tls-key), with certificates from trustme."""

from __future__ import annotations

import dataclasses
import re
import signal
from pathlib import Path

import h11
import pytest
import trio
import trio.testing
from click.testing import CliRunner

from tests.support.config import TEST_CONFIG
from tests.support.memory import Handler, memory_tcp
from tests.support.processes import TRIO_CHAT_SCRIPT, server_process
from tests.support.tcp import TcpClient
from tests.support.tls import TlsFiles
from tests.support.ws import WsClient
from trio_chat import Bound, Config, serve
from trio_chat.cli import default_db_path, main
from trio_chat.errors import StartupError
from trio_chat.server.rooms import Rooms
from trio_chat.transports.admission import Admission
from trio_chat.transports.tcp import handle_tcp
from trio_chat.transports.tls import client_context
from trio_chat.transports.ws import handle_ws


@pytest.fixture
def config(tls: TlsFiles) -> Config:
    """The ``server`` fixture's: TLS on both ports."""
    return tls.server_config(TEST_CONFIG)


async def plain_peer_is_dropped(port: int, data: bytes) -> None:
    """A client that speaks plain text to a TLS port gets the connection closed."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        with trio.fail_after(10):
            try:
                while await stream.receive_some(4096):
                    pass  # a TLS alert, at most
            except trio.BrokenResourceError:
                pass  # reset: also dropped


async def test_bound_tells_the_scheme(server: Bound) -> None:
    assert server.tls
    assert server.tcp_url == f"tls://127.0.0.1:{server.tcp_port}"
    assert server.ws_url == f"wss://127.0.0.1:{server.ws_port}/"
    assert server.page_url == f"https://127.0.0.1:{server.ws_port}/"


async def test_tcp_and_wss_share_a_room_over_tls(server: Bound, tls: TlsFiles) -> None:
    async with await tls.tcp_client(server.tcp_port) as bob, tls.ws_client(server.ws_port) as ws:
        await bob.join("Bob")
        alice = WsClient(ws)
        await alice.join("Alice")
        await bob.send({"type": "chat", "text": "over tls"})
        assert (await alice.recv_until(type="chat"))["text"] == "over tls"
        await alice.send({"type": "chat", "text": "over wss"})
        assert (await bob.recv_until(type="chat", user="Alice"))["text"] == "over wss"


async def test_plain_clients_on_tls_ports_are_dropped_without_disturbing_others(
    server: Bound, tls: TlsFiles
) -> None:
    async with await tls.tcp_client(server.tcp_port) as bob:
        await bob.join("Bob")
        await plain_peer_is_dropped(server.tcp_port, b"/nick Eve\nhello\n")
        await plain_peer_is_dropped(
            server.ws_port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n"
        )
        await bob.send({"type": "chat", "text": "still fine"})
        msg = await bob.recv()  # nothing from Eve came in between
        assert msg["type"] == "chat" and msg["text"] == "still fine"


async def test_silent_peer_does_not_block_accepting(server: Bound, tls: TlsFiles) -> None:
    """The handshake runs in the connection's own task, not in the accept loop."""
    silent = await trio.open_tcp_stream("127.0.0.1", server.tcp_port)
    async with silent, await tls.tcp_client(server.tcp_port) as bob:
        await bob.join("Bob")


async def test_plain_server_still_speaks_plain(tls: TlsFiles) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, TEST_CONFIG)
        assert not bound.tls and bound.ws_url.startswith("ws://")
        async with await TcpClient.connect(bound.tcp_port) as bob:
            await bob.join("Bob")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("handler", [handle_tcp, handle_ws])
async def test_tls_handshake_is_time_bounded(
    autojump_clock: trio.testing.MockClock, tls: TlsFiles, handler: Handler
) -> None:
    """A peer that opens the connection and never says anything is dropped after
    ``handshake_timeout`` (memory streams, so the clock can jump)."""
    config = dataclasses.replace(TEST_CONFIG, handshake_timeout=7.0)
    client, server = trio.testing.memory_stream_pair()
    stream = trio.SSLStream(server, tls.server_context, server_side=True)
    start = trio.current_time()
    with trio.fail_after(60):
        await handler(Admission(Rooms(), config), stream)
    assert trio.current_time() - start == pytest.approx(7.0)
    assert await client.receive_some() == b""  # closed


async def test_tls_handshake_over_memory_streams_then_chat(tls: TlsFiles) -> None:
    """The same handler serves a client that does handshake."""
    client, server = trio.testing.memory_stream_pair()
    stream = trio.SSLStream(server, tls.server_context, server_side=True)
    tls_client = trio.SSLStream(client, tls.client_context(), server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        bob = memory_tcp(nursery, Rooms(), TEST_CONFIG, ends=(tls_client, stream))
        await bob.send({"type": "ping"})
        assert await bob.recv() == {"type": "pong"}
        await bob.send({"type": "leave"})
        assert await bob.eof()


def test_cli_refuses_a_key_without_a_certificate(tls: TlsFiles) -> None:
    result = CliRunner().invoke(main, ["serve", "--tls-key", str(tls.key)])
    assert result.exit_code == 2
    assert "--tls-key needs --tls-cert" in result.output


def test_cli_refuses_an_unusable_certificate(tmp_path: Path, tls: TlsFiles) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    result = CliRunner().invoke(main, ["serve", "--tls-cert", str(bogus)])
    assert result.exit_code == 2
    assert "cannot load certificate/key" in result.output
    # A certificate without its key is refused the same way.
    result = CliRunner().invoke(main, ["serve", "--tls-cert", str(tls.cert)])
    assert result.exit_code == 2 and "cannot load certificate/key" in result.output


def test_cli_options_reach_the_config(tls: TlsFiles) -> None:
    from trio_chat.cli import serve as serve_command

    args = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--handshake-timeout", "3"]
    config = Config(**serve_command.make_context("serve", args).params)
    assert config.tls_cert == str(tls.cert) and config.tls_key == str(tls.key)
    assert config.handshake_timeout == 3.0
    # The CLI's one default that differs from the library's: history goes to disk.
    assert Config(**serve_command.make_context("serve", []).params) == Config(
        db=default_db_path()
    )


async def test_serve_reports_an_unusable_certificate_as_a_startup_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    config = dataclasses.replace(TEST_CONFIG, tls_cert=str(bogus))
    with pytest.raises(StartupError, match="cannot load TLS certificate/key"):
        await serve(config)


async def test_client_context_trusts_the_given_ca(server: Bound, tls: TlsFiles) -> None:
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", server.tcp_port, ssl_context=client_context(str(tls.ca_pem))
    )
    async with TcpClient(stream) as bob:
        await bob.join("Bob")
    # Without the CA, the server's certificate is not trusted.
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", server.tcp_port, ssl_context=client_context()
    )
    async with stream:
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()


async def test_caps_apply_to_tls_connections_too(
    nursery: trio.Nursery, tls: TlsFiles, config: Config
) -> None:
    """Over --max-per-ip, a TLS client is still told why (inside TLS) and closed."""
    bound = await nursery.start(serve, dataclasses.replace(config, max_per_ip=1))
    async with await tls.tcp_client(bound.tcp_port) as bob:
        await bob.join("Bob")
        async with await tls.tcp_client(bound.tcp_port) as eve:
            error = await eve.recv()
            assert error["type"] == "error" and error["code"] == "server_full"
            assert await eve.eof()
        await bob.send({"type": "chat", "text": "still here"})
        assert (await bob.recv_until(type="chat"))["text"] == "still here"


@pytest.mark.slow
async def test_real_server_process_with_tls(tls: TlsFiles) -> None:
    """`trio-chat serve --tls-cert --tls-key` as a process: its log says tls:// and wss://
    and https://, and both ports speak TLS."""
    async with server_process(
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        program=TRIO_CHAT_SCRIPT, wait=20,
    ) as server:
        assert re.search(r"tls://127\.0\.0\.1:(\d+) wss://127\.0\.0\.1:(\d+)/", server.listening)
        with trio.fail_after(20):
            await server.wait_log("chat page: https://127.0.0.1:")
        async with (
            await tls.tcp_client(server.tcp_port) as bob,
            tls.ws_client(server.ws_port) as conn,
        ):
            await bob.join("Bob")
            await WsClient(conn).join("Alice")
            await bob.recv_until(type="system", event="join", name="Alice")
        server.signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await server.process.wait() == 0


async def test_the_page_is_served_over_https(server: Bound, tls: TlsFiles) -> None:
    """Read as a browser does: the response ends where its length says. (TLS has no
    half-close: reading on to EOF would wait out the server's goodbye_timeout.)"""
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", server.ws_port, ssl_context=tls.client_context(), https_compatible=True
    )
    http = h11.Connection(h11.CLIENT)
    async with stream:
        request = h11.Request(method="GET", target="/", headers=[("Host", "127.0.0.1")])
        await stream.send_all((http.send(request) or b"") + (http.send(h11.EndOfMessage()) or b""))
        data = b""
        with trio.fail_after(10):
            while not isinstance(event := http.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    chunk = await stream.receive_some()
                    assert chunk, f"closed before the end of the response: {data[:200]!r}"
                    data += chunk
                    http.receive_data(bytes(chunk))
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"<!doctype html>" in data.lower()
