"""The CLI: options and env vars become a Config; a real `trio-chat serve` process."""

import signal
import subprocess

import click
import pytest
import trio
from click.testing import CliRunner

from tests.support.processes import TRIO_CHAT_SCRIPT, server_process
from tests.support.tcp import TcpClient
from tests.support.ws import WsClient, ws_client
from trio_chat import cli
from trio_chat.cli import default_db_path
from trio_chat.config import Config
from trio_chat.server import app


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replace the server call: the CLI's job ends at building the Config."""
    configs: list[Config] = []
    monkeypatch.setattr(app, "run", configs.append)
    monkeypatch.setattr(cli, "setup_logging", lambda *args: None)
    return configs


def test_serve_defaults(captured: list[Config]) -> None:
    result = CliRunner().invoke(cli.main, ["serve"], env={})
    assert result.exit_code == 0, result.output
    # The one CLI default that differs from the library's: history goes to disk.
    assert captured == [Config(db=default_db_path())]
    assert default_db_path().endswith("trio-chat/trio-chat.db")


def test_serve_options(captured: list[Config]) -> None:
    result = CliRunner().invoke(cli.main, [
        "serve", "--host", "0.0.0.0", "--tcp-port", "0", "--ws-port", "9000",
        "--log-level", "DEBUG", "--max-text", "100", "--queue-size", "8",
    ])
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert (config.host, config.tcp_port, config.ws_port) == ("0.0.0.0", 0, 9000)
    assert (config.max_text, config.queue_size, config.log_level) == (100, 8, "debug")


def test_serve_history_options_and_env_vars(captured: list[Config]) -> None:
    result = CliRunner().invoke(cli.main, [
        "serve", "--db", "/tmp/x.db", "--history-keep", "7", "--history-replay", "0",
    ])
    assert result.exit_code == 0, result.output
    assert (captured[0].db, captured[0].history_keep, captured[0].history_replay) == (
        "/tmp/x.db", 7, 0,
    )
    env = {"TRIO_CHAT_DB": ":memory:", "TRIO_CHAT_HISTORY_KEEP": "9",
           "TRIO_CHAT_HISTORY_REPLAY": "3"}
    result = CliRunner().invoke(cli.main, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    assert (captured[1].db, captured[1].history_keep, captured[1].history_replay) == (
        ":memory:", 9, 3,
    )


def test_serve_reads_trio_chat_env_vars(captured: list[Config]) -> None:
    env = {"TRIO_CHAT_TCP_PORT": "7000", "TRIO_CHAT_WS_PORT": "7001", "TRIO_CHAT_HOST": "::1"}
    result = CliRunner().invoke(cli.main, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    assert (captured[0].tcp_port, captured[0].ws_port, captured[0].host) == (7000, 7001, "::1")


def test_serve_cluster_options_and_env_vars(captured: list[Config]) -> None:
    result = CliRunner().invoke(cli.main, [
        "serve", "--redis", "redis://10.0.0.5:6380/2", "--presence-ttl", "3",
    ])
    assert result.exit_code == 0, result.output
    assert (captured[0].redis, captured[0].presence_ttl) == ("redis://10.0.0.5:6380/2", 3.0)
    env = {"TRIO_CHAT_REDIS": "redis://r/0", "TRIO_CHAT_PRESENCE_TTL": "4.5"}
    result = CliRunner().invoke(cli.main, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    assert (captured[1].redis, captured[1].presence_ttl) == ("redis://r/0", 4.5)
    assert captured[2:] == [] and Config().redis is None  # the default: no cluster


@pytest.mark.parametrize("args", [["--tcp-port", "70000"], ["--tcp-port", "x"],
                                  ["--log-level", "loud"], ["--queue-size", "0"],
                                  ["--history-keep", "0"], ["--history-replay", "-1"],
                                  ["--redis", "http://127.0.0.1:6379"],
                                  ["--presence-ttl", "0.5"]])
def test_serve_rejects_bad_options(captured: list[Config], args: list[str]) -> None:
    result = CliRunner().invoke(cli.main, ["serve", *args])
    assert result.exit_code == 2 and "Error" in result.output
    assert captured == []


def test_help_lists_env_vars() -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--help"])
    assert result.exit_code == 0
    assert "TRIO_CHAT_TCP_PORT" in result.output


@pytest.mark.parametrize("command", ["serve", "join", "status", "bench"])
def test_every_option_says_what_it_does(command: str) -> None:
    group = cli.main
    found = group.get_command(click.Context(group), command)
    assert found is not None
    silent = [p.name for p in found.params if isinstance(p, click.Option) and not p.help]
    assert silent == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_real_server_process_chats_and_stops_cleanly(signum: int) -> None:
    async with server_process(program=TRIO_CHAT_SCRIPT, wait=20) as server:
        async with (
            await TcpClient.connect(server.tcp_port) as bob,
            ws_client(server.ws_port) as conn,
        ):
            await bob.join("Bob")
            alice = WsClient(conn)
            await alice.join("Alice")
            await bob.send_raw(b"hello from nc\n")
            assert (await alice.recv_until(type="chat"))["text"] == "hello from nc"
        server.signal(signum)
        with trio.fail_after(20):
            log = await server.rest_of_log()
            code = await server.process.wait()
        assert code == 0, log
        assert not any("Traceback" in line for line in log)
        assert any(signal.Signals(signum).name in line for line in log)


def test_port_in_use_is_one_clear_line_and_exit_1() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*TRIO_CHAT_SCRIPT, "serve", "--tcp-port", str(port), "--ws-port", "0",
             "--db", ":memory:"],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr
