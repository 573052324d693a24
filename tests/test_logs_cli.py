"""Logs (INFO lifecycle lines, text only at DEBUG, JSON format) and the CLI options."""

from __future__ import annotations

import json
import logging
import sys
from functools import partial

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from tests.support.memory import memory_tcp
from trio_chat import cli
from trio_chat.cli import default_db_path
from trio_chat.config import Config
from trio_chat.logs import JsonFormatter, setup_logging
from trio_chat.server import app
from trio_chat.server.rooms import Rooms


async def test_lifecycle_is_logged_at_info_and_message_text_only_at_debug(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_chat")
    room, config = Rooms(), Config()
    ann = memory_tcp(nursery, room, config)
    await ann.join("Ann")
    await ann.send({"type": "chat", "text": "secret words"})
    await ann.recv_until(type="chat")
    await ann.send({"type": "leave"})
    assert await ann.eof()
    await trio.testing.wait_all_tasks_blocked()  # the handler logs after closing
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [m.split()[0] for m in info] == ["connect", "join", "leave", "disconnect"]
    assert info[0] == "connect tcp memory"
    assert info[-1] == "disconnect tcp memory (leave)"
    assert not any("secret words" in m for m in info)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("secret words" in m for m in debug)


async def test_disconnect_line_says_why(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    room = Rooms()
    bob = memory_tcp(nursery, room, Config())
    await bob.join("Bob")
    await bob.send_raw(b"x" * 70000)  # over the line limit: too_long, closes
    assert await bob.eof()
    await trio.testing.wait_all_tasks_blocked()
    assert caplog.records[-1].getMessage() == "disconnect tcp memory (too_long)"


def test_json_formatter_writes_one_object_per_record() -> None:
    record = logging.LogRecord("trio_chat.room", logging.INFO, "x", 1, "join %s", ("Ann",), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "info" and entry["logger"] == "trio_chat.room"
    assert entry["message"] == "join Ann" and entry["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_setup_logging_json_installs_the_formatter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("warning", "json")
        assert root.level == logging.WARNING
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def run_recorded(seen: list[Config], config: Config) -> int:
    """In place of the server: remember the Config, exit 0."""
    seen.append(config)
    return 0


def test_cli_passes_every_hardening_option_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []
    monkeypatch.setattr(app, "run", partial(run_recorded, seen))
    monkeypatch.setattr(cli, "setup_logging", lambda *args: None)
    result = CliRunner().invoke(
        cli.main,
        [
            "serve",
            "--rate-limit",
            "0",
            "--rate-burst",
            "3",
            "--rate-ceiling",
            "7",
            "--idle-timeout",
            "9",
            "--ping-interval",
            "11",
            "--ping-timeout",
            "4",
            "--max-clients",
            "50",
            "--shutdown-grace",
            "2",
            "--log-format",
            "json",
        ],
        env={"TRIO_CHAT_MAX_PER_IP": "5"},
    )
    assert result.exit_code == 0, result.output
    assert seen == [
        Config(
            rate_limit=0,
            rate_burst=3,
            rate_ceiling=7,
            idle_timeout=9,
            ping_interval=11,
            ping_timeout=4,
            max_clients=50,
            max_per_ip=5,
            shutdown_grace=2,
            log_format="json",
            db=default_db_path(),
        )
    ]


def test_cli_defaults_match_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []
    monkeypatch.setattr(app, "run", partial(run_recorded, seen))
    monkeypatch.setattr(cli, "setup_logging", lambda *args: None)
    result = CliRunner().invoke(cli.main, ["serve"], env={})
    assert result.exit_code == 0, result.output
    assert seen == [Config(db=default_db_path())]  # the CLI keeps history on disk
