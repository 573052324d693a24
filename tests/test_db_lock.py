"""One server per history database, and a start that fails leaves the database alone.

Real ``trio-chat serve`` processes on one ``--db`` (different ports): the second is
refused with one line and exit 2 while the first keeps every message it acknowledged;
a SIGKILLed holder's lock goes with its process; admin tools still read and write the
database beside a running server; and whatever makes a start fail (the lock, a port in
use, a TLS file, Redis, a damaged or foreign database), the database's files are byte
for byte what they were.
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import sys
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.processes import ServerProcess, server_process
from tests.support.tcp import TcpClient
from tests.support.waits import until
from trio_chat import Config
from trio_chat.history.lock import lock_path
from trio_chat.history.sqlite import SqliteStore, open_history
from trio_chat.history.writer import StoreError, running

pytestmark = pytest.mark.slow

CONFIG = Config(tcp_port=0, ws_port=0, rate_limit=0)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
            *args]


async def failed_start(*args: str, cwd: Path | None = None) -> tuple[int, list[str]]:
    """Run ``serve`` to its end; its exit status and its log lines."""
    with trio.fail_after(30):
        result: Any = await trio.run_process(
            serve_command(*args), capture_stdout=True, capture_stderr=True, check=False,
            cwd=cwd,
        )
    return result.returncode, result.stderr.decode().splitlines()


def one_error(log: list[str]) -> str:
    """The one ERROR line of a start that failed (and no traceback)."""
    assert not any("Traceback" in line for line in log), "\n".join(log)
    errors = [line for line in log if " ERROR " in line or " WARNING " in line]
    assert len(errors) == 1, log
    return errors[0].split(": ", 1)[1]


def fingerprint(db: Path) -> dict[str, str]:
    """SHA-256 of the database and its -wal and -shm files, those that exist."""
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}


async def say(port: int, name: str, texts: list[str]) -> dict[int, str]:
    """Send ``texts`` and wait for each echo: the acknowledged messages, by id."""
    acked = {}
    async with await TcpClient.connect(port) as client:
        await client.join(name)
        for text in texts:
            await client.send({"type": "chat", "text": text})
        for text in texts:
            echo = await client.recv_until(type="chat", user=name, text=text)
            acked[echo["id"]] = text
    return acked


def stored(db: Path) -> dict[int, str]:
    with closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT id, text FROM messages").fetchall())


async def committed(db: Path, count: int) -> None:
    """Wait (bounded) until ``count`` messages are committed: the writer gathers a
    commit for up to 20 ms after the echo."""
    # Another process's commits: nothing to wait on but the file.
    await until(lambda: len(stored(db)) >= count, wait=30)


async def stop(server: ServerProcess) -> None:
    server.signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await server.process.wait() == 0


async def test_a_second_server_on_one_db_is_refused_and_the_first_loses_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "chat.db"
    async with server_process("--db", str(db), "--rate-limit", "0") as first:
        acked = await say(first.tcp_port, "Ann", [f"before {n}" for n in range(300)])

        status, log = await failed_start("--db", str(db))
        assert status == 2
        assert one_error(log) == (
            f"history database {db} is in use by another trio-chat (pid {first.pid})"
        )
        assert not any("listening" in line for line in log)

        # The first goes on giving out ids as if nothing had happened.
        acked |= await say(first.tcp_port, "Bob", [f"after {n}" for n in range(300)])
        assert sorted(acked) == list(range(1, 601))
        await stop(first)
    assert stored(db) == acked
    assert not any("did not stop cleanly" in line for line in first.log)


async def test_every_name_of_one_database_finds_its_lock(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    (tmp_path / "link.db").symlink_to(db)
    async with server_process("--db", str(db)) as first:
        status, log = await failed_start("--db", str(tmp_path / "link.db"))
        assert status == 2
        assert f"(pid {first.pid})" in one_error(log)
        (tmp_path / "sub").mkdir()
        status, log = await failed_start("--db", "../chat.db", cwd=tmp_path / "sub")
        assert status == 2 and f"(pid {first.pid})" in one_error(log)
        await stop(first)


async def test_a_killed_server_does_not_keep_the_database(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    async with server_process("--db", str(db)) as first:
        acked = await say(first.tcp_port, "Ann", ["one", "two"])
        await committed(db, 2)
        first.signal(signal.SIGKILL)
        with trio.fail_after(30):
            assert await first.process.wait() == -signal.SIGKILL
    assert await trio.Path(lock_path(str(db))).exists()  # left behind; nobody holds it
    async with server_process("--db", str(db)) as second:
        assert any("did not stop cleanly" in line for line in second.log)
        more = await say(second.tcp_port, "Bob", ["three"])
        assert min(more) > max(acked)
        await stop(second)
    assert set(stored(db).values()) >= {"one", "two", "three"}


async def test_admin_tools_read_and_write_beside_a_running_server(tmp_path: Path) -> None:
    """The lock is on a file of its own, not SQLite's exclusive mode."""
    db = tmp_path / "chat.db"
    async with server_process("--db", str(db)) as server:
        acked = await say(server.tcp_port, "Ann", ["hello", "spam"])
        spam = next(i for i, text in acked.items() if text == "spam")
        await committed(db, 2)
        with closing(sqlite3.connect(db, timeout=10)) as admin:
            assert admin.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 2
            with admin:
                admin.execute("DELETE FROM messages WHERE id = ?", (spam,))
        acked |= await say(server.tcp_port, "Bob", ["after"])
        await stop(server)
    assert stored(db) == {i: t for i, t in acked.items() if t != "spam"}


async def test_two_stores_in_one_process_exclude_each_other_but_memory_is_exempt(
    tmp_path: Path,
) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"))
    async with open_history(config):
        with pytest.raises(StoreError, match=r"is in use by another trio-chat \(pid \d+\)"):
            async with running(SqliteStore(config.db, keep=10), 10):
                pass
    async with open_history(config):  # released on the way out
        pass
    memory = replace(CONFIG, db=":memory:")
    async with open_history(memory), open_history(memory):
        pass


# ---------------------------------------------------------------- failed starts


async def make_db(db: Path) -> None:
    """A database a clean stop left, with a message in it."""
    config = replace(CONFIG, db=str(db))
    async with open_history(config) as history:
        await history.store.wait_writable()
        history.record("Ann", "kept", "2026-11-26T18:00:00.000Z")


async def test_no_failed_start_touches_a_running_servers_database(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    async with server_process("--db", str(db)) as first:
        await say(first.tcp_port, "Ann", ["one", "two"])
        await committed(db, 2)
        before = fingerprint(db)
        assert "chat.db-wal" in before and "chat.db-shm" in before
        bad_cert = tmp_path / "cert.pem"
        bad_cert.write_text("not a certificate")
        for args, code in [
            (("--db", str(db)), 2),  # the lock
            (("--db", str(db), "--tcp-port", str(first.tcp_port)), 1),  # port in use
            (("--db", str(db), "--ws-port", str(first.ws_port)), 1),
            (("--db", str(db), "--tls-cert", str(bad_cert)), 2),  # refused by the CLI
            (("--db", str(db), "--redis", "redis://127.0.0.1:1/0"), 2),  # nothing there
        ]:
            status, log = await failed_start(*args)
            assert status == code, (args, log)
            assert fingerprint(db) == before, args
        await stop(first)


def tamper(db: Path, *statements: str) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        for statement in statements:
            conn.execute(statement)


@pytest.mark.parametrize(
    "damage",
    [
        "DELETE FROM meta WHERE key = 'id_floor'",
        "UPDATE meta SET value = 'abc' WHERE key = 'id_floor'",
        "DROP TABLE messages",
        "PRAGMA user_version = 99",
    ],
)
async def test_a_refused_database_is_left_as_it_was(tmp_path: Path, damage: Any) -> None:
    db = tmp_path / "chat.db"
    await make_db(db)
    tamper(db, "PRAGMA journal_mode=DELETE", damage)  # as an admin tool might leave it
    before = fingerprint(db)
    status, log = await failed_start("--db", str(db))
    assert status == 2
    assert one_error(log).startswith(f"history database {db} ")
    assert fingerprint(db) == before  # not even switched to WAL


async def test_another_programs_database_is_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "theirs.db"
    tamper(db, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")
    before = fingerprint(db)
    status, log = await failed_start("--db", str(db))
    assert status == 2
    assert one_error(log) == f"{db} is an SQLite database, but not trio-chat's"
    assert fingerprint(db) == before


async def test_a_start_that_fails_before_the_store_creates_no_database(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    async with server_process("--db", str(tmp_path / "other.db")) as first:
        status, _ = await failed_start("--db", str(db), "--tcp-port", str(first.tcp_port))
        assert status == 1
        await stop(first)
    assert not await trio.Path(db).exists()
    assert not await trio.Path(lock_path(str(db))).exists()
