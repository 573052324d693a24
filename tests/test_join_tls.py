"""``trio-chat join`` over TLS: ``--tls``, ``wss://`` URLs and ``--ca``, against a server
run with a trustme certificate."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from trio_websocket import wrap_server_stream

from tests.support.config import TEST_CONFIG
from tests.support.processes import JoinProcess
from tests.support.tls import TlsFiles
from trio_chat import Bound, Config, cli, client
from trio_chat.client import ClientConfig, ConnectError
from trio_chat.client.transport import open_connection


@pytest.fixture
def config(tls: TlsFiles) -> Config:
    """The ``server`` fixture's: TLS on both ports."""
    return tls.server_config(TEST_CONFIG)


# ---------------------------------------------------------------- options


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[ClientConfig]:
    calls: list[ClientConfig] = []
    monkeypatch.setattr(client, "run", lambda config, **kw: calls.append(config))
    return calls


def test_tls_and_ca_options_reach_the_client_config(
    runs: list[ClientConfig], tls: TlsFiles
) -> None:
    result = CliRunner().invoke(
        cli.main, ["join", "--name", "x", "--tls", "--ca", str(tls.ca_pem)], env={}
    )
    assert result.exit_code == 0, result.output
    assert (runs[-1].tls, runs[-1].ca) == (True, str(tls.ca_pem))
    assert runs[-1].address == "tls://127.0.0.1:8764"
    # A wss:// URL implies TLS; so does TRIO_CHAT_TLS.
    result = CliRunner().invoke(
        cli.main, ["join", "--name", "x", "--url", "wss://chat.example/", "--ca", str(tls.ca_pem)]
    )
    assert result.exit_code == 0, result.output
    assert runs[-1].tls and runs[-1].url == "wss://chat.example/"
    result = CliRunner().invoke(cli.main, ["join", "--name", "x"], env={"TRIO_CHAT_TLS": "1"})
    assert result.exit_code == 0 and runs[-1].tls and runs[-1].ca is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--ca", "{ca}"], "--ca needs --tls or a wss:// URL"),
        (["--tls", "--url", "ws://127.0.0.1:8765/"], "--tls goes with TCP or a wss:// URL"),
        (["--tls", "--ca", "{bogus}"], "cannot load"),
        (["--tls", "--ca", "/nonexistent.pem"], "does not exist"),
    ],
)
def test_bad_tls_options_are_usage_errors(
    runs: list[ClientConfig], tls: TlsFiles, tmp_path: Path, args: list[str], error: str
) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    args = [a.format(ca=tls.ca_pem, bogus=bogus) for a in args]
    result = CliRunner().invoke(cli.main, ["join", "--name", "x", *args], env={})
    assert result.exit_code == 2 and error in result.output
    assert runs == []


# ---------------------------------------------------------------- connections


async def ping(config: ClientConfig) -> dict[str, Any]:
    async with open_connection(config) as connection:
        await connection.send({"type": "ping"})
        return (await connection.receive())[0]


async def test_open_connection_over_tls_and_wss(server: Bound, tls: TlsFiles) -> None:
    ca = str(tls.ca_pem)
    assert await ping(ClientConfig(port=server.tcp_port, tls=True, ca=ca)) == {"type": "pong"}
    assert await ping(ClientConfig(url=server.ws_url, tls=True, ca=ca)) == {"type": "pong"}


async def test_an_untrusted_certificate_is_a_clear_connect_error(server: Bound) -> None:
    for config in (ClientConfig(port=server.tcp_port, tls=True), ClientConfig(url=server.ws_url)):
        with pytest.raises(ConnectError, match="TLS certificate not trusted") as info:
            await ping(config)
        assert str(info.value).startswith(f"cannot connect to {config.address}: ")


@pytest.mark.slow
async def test_join_processes_over_tls_and_wss(
    server: Bound, nursery: trio.Nursery, tls: TlsFiles
) -> None:
    ca = str(tls.ca_pem)
    async with await tls.tcp_client(server.tcp_port) as ann:
        await ann.join("Ann")
        tcp_bot = await JoinProcess.start(
            nursery, "--name", "tlsbot", "--port", server.tcp_port, "--tls", "--ca", ca
        )
        ws_bot = await JoinProcess.start(nursery, "--name", "wssbot", "--url", server.ws_url,
                                         "--ca", ca)
        joined: set[str] = set()
        while joined != {"tlsbot", "wssbot"}:  # in either order
            joined.add((await ann.recv_until(type="system", event="join"))["name"])
        await tcp_bot.send_line("hi over tls")
        await ws_bot.send_line("hi over wss")
        texts = {(await ann.recv_until(type="chat"))["text"] for _ in range(2)}
        assert texts == {"hi over tls", "hi over wss"}
        await ann.send({"type": "chat", "text": "hello both"})
        await tcp_bot.wait_for("Ann: hello both")
        await ws_bot.wait_for("Ann: hello both")
        for bot in (tcp_bot, ws_bot):
            await bot.close_stdin()
            assert await bot.exit_code() == 0


@pytest.mark.slow
async def test_join_without_the_ca_says_why_and_exits_1(
    server: Bound, nursery: trio.Nursery
) -> None:
    bot = await JoinProcess.start(nursery, "--name", "bot", "--port", server.tcp_port, "--tls")
    assert await bot.exit_code() == 1
    error = await bot.stderr()
    assert error.startswith(f"cannot connect to tls://127.0.0.1:{server.tcp_port}: ")
    assert "TLS certificate not trusted" in error and "--ca" in error


# ---------------------------------------------------------------- the client's WebSocket


async def test_a_refused_upgrade_is_a_connect_error(nursery: trio.Nursery) -> None:
    """A server that answers the upgrade with 403 (a proxy with an origin policy, say)."""

    async def refuse(stream: trio.SocketStream) -> None:
        async with stream, trio.open_nursery() as handler:
            request = await wrap_server_stream(handler, stream)
            await request.reject(403, body=b"no\n")
            handler.cancel_scope.cancel()

    (listener,) = await nursery.start(partial(trio.serve_tcp, refuse, 0, host="127.0.0.1"))
    port = listener.socket.getsockname()[1]
    config = ClientConfig(url=f"ws://127.0.0.1:{port}/")
    with pytest.raises(ConnectError) as info:
        await ping(config)
    assert str(info.value) == (
        f"cannot connect to {config.address}: server refused the WebSocket handshake (HTTP 403)"
    )


async def test_errors_in_the_body_come_out_as_they_are(server: Bound, tls: TlsFiles) -> None:
    """Not wrapped in an ExceptionGroup by the nursery around the WebSocket."""
    config = ClientConfig(url=server.ws_url, ca=str(tls.ca_pem))
    with pytest.raises(KeyError):
        async with open_connection(config):
            raise KeyError("mine")
    with trio.move_on_after(0.01) as scope:  # outer cancellation passes through too
        async with open_connection(config) as connection:
            await trio.sleep_forever()
    assert scope.cancelled_caught
    async with open_connection(config) as connection:  # and the server is still fine
        await connection.send({"type": "ping"})
        assert await connection.receive() == [{"type": "pong"}]
