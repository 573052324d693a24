"""``trio-chat join`` and accounts: the session asks for the password of a registered
name, logs in, keeps the token in ``--token-file`` and logs in with it next time;
a revoked token is dropped. Against a real server and SQLite file."""

from __future__ import annotations

import io
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.config import TEST_CONFIG
from tests.support.tcp import TcpClient
from tests.support.waits import until
from trio_chat import Bound, Config
from trio_chat.client import ClientConfig, JoinRefused
from trio_chat.client.line import run_line
from trio_chat.client.session import ChatSession, State, Status

PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return replace(TEST_CONFIG, db=str(tmp_path / "chat.db"))


class Person:
    """A front end that types passwords from a list (an empty list: gives up)."""

    def __init__(self, passwords: list[str]) -> None:
        self.passwords = passwords
        self.asked: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self.welcomed = trio.Event()

    def message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message.get("type") == "welcome":
            self.welcomed.set()

    def status(self, status: Status) -> None:
        pass

    async def choose_name(self, refused: str | None, reason: str | None) -> str:
        raise JoinRefused(reason or "no name")

    async def ask_password(self, name: str, reason: str) -> str | None:
        self.asked.append(reason)
        if not self.passwords:
            raise JoinRefused(reason)
        return self.passwords.pop(0)


async def register(server: Bound, name: str) -> None:
    async with await TcpClient.connect(server.tcp_port) as client:
        await client.send({"type": "register", "user": name, "password": PASSWORD})
        await client.recv_until(type="token")


async def run_until_welcome(config: ClientConfig, person: Person) -> ChatSession:
    """Run a session until it is welcomed and has its login token (it follows the
    welcome), kept in its token file."""
    session = ChatSession(config, person)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        with trio.fail_after(20):
            await person.welcomed.wait()
        assert session.state is State.CONNECTED
        path = Path(config.token_file) if config.token_file else None
        # No message tells the front end the token was kept.
        await until(lambda: session.token is not None and (path is None or path.exists()))
        session.stop()
    return session


async def test_a_registered_name_asks_for_its_password_then_the_token_is_kept(
    server: Bound, tmp_path: Path
) -> None:
    await register(server, "Ann")
    token_file = tmp_path / "ann.token"
    client = ClientConfig(name="Ann", port=server.tcp_port, token_file=str(token_file))
    person = Person(["wrong password", PASSWORD])
    await run_until_welcome(client, person)
    assert len(person.asked) == 2  # name_registered, then login_failed
    assert "registered" in person.asked[0] and "wrong" in person.asked[1]
    welcome = next(m for m in person.messages if m["type"] == "welcome")
    assert welcome["account"] == "Ann"
    assert not any(m["type"] == "token" for m in person.messages)  # kept, not shown
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    # The next run logs in with the token: no question.
    again = Person([])
    await run_until_welcome(client, again)
    assert again.asked == []


async def test_a_revoked_token_is_dropped_and_the_password_asked_again(
    server: Bound, tmp_path: Path
) -> None:
    await register(server, "Ann")
    token_file = tmp_path / "ann.token"
    client = ClientConfig(name="Ann", port=server.tcp_port, token_file=str(token_file))
    await run_until_welcome(client, Person([PASSWORD]))
    async with await TcpClient.connect(server.tcp_port) as other:
        await other.send({"type": "login", "user": "Ann", "password": PASSWORD})
        await other.recv_until(type="token")
        await other.send({"type": "logout"})  # revokes every token of Ann
        await other.recv_until(type="system", event="logout")
    person = Person([PASSWORD])
    await run_until_welcome(client, person)
    assert len(person.asked) == 1
    assert token_file.exists()  # a fresh one


async def test_giving_up_on_the_password_ends_the_join(server: Bound) -> None:
    await register(server, "Ann")
    session = ChatSession(ClientConfig(name="Ann", port=server.tcp_port), Person([]))
    with pytest.raises(JoinRefused, match="registered"):
        await session.run()


async def test_line_mode_from_a_pipe_says_to_use_a_token_file(server: Bound) -> None:
    await register(server, "Ann")
    read_fd, write_fd = os.pipe()
    out, err = io.StringIO(), io.StringIO()
    try:
        with pytest.raises(JoinRefused, match="--token-file"):
            await run_line(ClientConfig(name="Ann", port=server.tcp_port),
                           stdin_fd=read_fd, out=out, err=err)
    finally:
        os.close(read_fd)
        os.close(write_fd)
