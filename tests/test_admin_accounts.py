"""``trio-chat admin grant/revoke/invite`` on a stopped and on a running server's
database (a real SQLite file: the server's lock does not stop them)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio
from click.testing import CliRunner

from tests.support.config import TEST_CONFIG
from tests.support.tcp import TcpClient
from trio_chat import Bound, serve
from trio_chat.accounts.store import AccountsDB
from trio_chat.cli import main

PASSWORD = "correct horse battery"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["admin", *args])
    return result.exit_code, result.stdout, result.stderr


async def test_admin_commands_on_a_running_and_a_stopped_server(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    # A new database: an invite makes it trio-chat's, and the server takes it.
    code, out, _ = await trio.to_thread.run_sync(run, "invite", "--db", db)
    assert code == 0
    invite = out.strip()
    config = replace(TEST_CONFIG, db=db, registration="invite")
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        async with await TcpClient.connect(server.tcp_port) as ann:
            await ann.send({"type": "register", "user": "Ann", "password": PASSWORD,
                            "invite": invite})
            assert (await ann.recv_until(type="welcome"))["account"] == "Ann"
        # Beside the running server (which holds the database's lock).
        code, out, _ = await trio.to_thread.run_sync(run, "grant", "ann", "--db", db)
        assert (code, out.strip()) == (0, "Ann is a server admin")
        code, _, err = await trio.to_thread.run_sync(run, "grant", "Nobody", "--db", db)
        assert code == 1 and "no account 'Nobody'" in err
        nursery.cancel_scope.cancel()
    accounts = AccountsDB(db)
    assert accounts.admins() == ["Ann"]
    accounts.close()
    code, out, _ = await trio.to_thread.run_sync(run, "revoke", "Ann", "--db", db)
    assert (code, out.strip()) == (0, "Ann is no longer a server admin")
    accounts = AccountsDB(db)
    assert accounts.admins() == []
    accounts.close()


def test_grant_needs_a_trio_chat_database(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    code, _, err = run("grant", "Ann", "--db", str(db))
    assert code == 1 and "no trio-chat database" in err
    assert not db.exists()
    other = tmp_path / "other.db"
    other.write_text("not sqlite at all")
    code, _, err = run("invite", "--db", str(other))
    assert code == 1 and "not a trio-chat database" in err


async def test_serve_admin_grants_at_start_or_at_registration(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    config = replace(TEST_CONFIG, db=db, admins=("Ann",))
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        async with await TcpClient.connect(server.tcp_port) as ann:
            await ann.send({"type": "register", "user": "Ann", "password": PASSWORD})
            await ann.recv_until(type="token")
        nursery.cancel_scope.cancel()
    accounts = AccountsDB(db)
    assert accounts.admins() == ["Ann"]
    accounts.close()
