"""``trio-chat join``'s options become a ClientConfig (the client itself patched out)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from trio_chat import cli, client
from trio_chat.client import ClientConfig, ConnectError


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ClientConfig, dict[str, Any]]]:
    calls: list[tuple[ClientConfig, dict[str, Any]]] = []
    monkeypatch.setattr(client, "run", lambda config, **kw: calls.append((config, kw)))
    return calls


def test_join_defaults_to_tcp_on_localhost_in_line_mode_off_a_terminal(
    runs: list[tuple[ClientConfig, dict[str, Any]]]
) -> None:
    result = CliRunner().invoke(cli.main, ["join", "--name", "  Bob "], env={})
    assert result.exit_code == 0, result.output
    ((config, kw),) = runs
    assert config == ClientConfig(name="Bob")  # trimmed, like the server does
    assert kw == {"interactive": False, "json_output": False}


def test_join_options_and_env_vars(runs: list[tuple[ClientConfig, dict[str, Any]]]) -> None:
    env = {"TRIO_CHAT_NAME": "bot", "TRIO_CHAT_RECONNECT": "false", "TRIO_CHAT_PORT": "9000"}
    result = CliRunner().invoke(
        cli.main,
        ["join", "--url", "ws://example:8765/", "--json", "--max-backoff", "0.2"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    ((config, kw),) = runs
    assert (config.name, config.port, config.url, config.reconnect) == (
        "bot", 9000, "ws://example:8765/", False,
    )
    assert (config.backoff_initial, config.backoff_max) == (0.2, 0.2)
    assert kw["json_output"] is True


def test_join_takes_rooms_each_once_the_first_current(
    runs: list[tuple[ClientConfig, dict[str, Any]]],
) -> None:
    result = CliRunner().invoke(
        cli.main,
        ["join", "--name", "bot", "--room", "dev", "--room", "#Lobby", "--room", "#DEV"],
        env={},
    )
    assert result.exit_code == 0, result.output
    ((config, _),) = runs
    assert config.rooms == ("#dev", "#Lobby")  # "dev" means #dev; #DEV is the same room
    CliRunner().invoke(cli.main, ["join", "--name", "bot"], env={})
    assert runs[-1][0].rooms == ("#lobby",)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--name", ""], "name must be 1-32 characters"),
        (["--name", "system"], "reserved"),
        (["--name", "x", "--port", "0"], "--port"),
        (["--name", "x", "--max-backoff", "0"], "--max-backoff"),
        ([], "--name is required when stdin is not a terminal"),
        (["--name", "x", "--room", "not a room"], "a room name is # and 1-32"),
        (["--name", "x", "--room", "#" + "x" * 33], "a room name is # and 1-32"),
    ],
)
def test_join_rejects_bad_options(
    runs: list[tuple[ClientConfig, dict[str, Any]]], args: list[str], error: str
) -> None:
    result = CliRunner().invoke(cli.main, ["join", *args], env={})
    assert result.exit_code == 2 and error in result.output
    assert runs == []


def test_client_errors_are_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(config: ClientConfig, **kw: Any) -> None:
        raise ConnectError("cannot connect to 127.0.0.1:8764: connection refused")

    monkeypatch.setattr(client, "run", refuse)
    result = CliRunner().invoke(cli.main, ["join", "--name", "x"], env={})
    assert result.exit_code == 1
    assert result.output == "cannot connect to 127.0.0.1:8764: connection refused\n"
