"""A history database someone edited: every refusal at start is one line and exit 2,
and nothing a damaged row or a full id space does at run time stops the server.

Real SQLite files, made by the store and then tampered with the ``sqlite3`` module.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.tcp import TcpClient
from trio_chat import Config, serve
from trio_chat.history.base import StoredMessage
from trio_chat.history.sqlite import SqliteStore, open_history
from trio_chat.history.writer import StoreError
from trio_chat.protocol import MAX_ID

CONFIG = Config(tcp_port=0, ws_port=0, rate_limit=0)
TS = "2026-11-26T18:00:00.000Z"


async def make_db(db: Path, *texts: str) -> None:
    """A database as a clean stop leaves it, holding ``texts`` from Ann."""
    async with open_history(replace(CONFIG, db=str(db))) as history:
        for text in texts:
            await history.store.wait_writable()
            history.record("Ann", text, TS)


def tamper(db: Path, script: str) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(script)


META_DAMAGE = {
    "no id_floor": ("DELETE FROM meta WHERE key = 'id_floor'", "meta row 'id_floor' is missing"),
    "no clean": ("DELETE FROM meta WHERE key = 'clean'", "meta row 'clean' is missing"),
    "no window": ("DELETE FROM meta WHERE key = 'window'", "meta row 'window' is missing"),
    "no pruned_through": (
        "DELETE FROM meta WHERE key = 'pruned_through'", "meta row 'pruned_through' is missing"
    ),
    "id_floor abc": (
        "UPDATE meta SET value = 'abc' WHERE key = 'id_floor'",
        "meta 'id_floor' is 'abc', not an integer from 0 to",
    ),
    "id_floor real": (
        "UPDATE meta SET value = 1.5 WHERE key = 'id_floor'", "meta 'id_floor' is 1.5, not"
    ),
    "id_floor blob": (
        "UPDATE meta SET value = x'00ff' WHERE key = 'id_floor'", "meta 'id_floor' is b'\\x00"
    ),
    "id_floor negative": (
        "UPDATE meta SET value = -5 WHERE key = 'id_floor'", "meta 'id_floor' is -5, not"
    ),
    "id_floor 2**63-1": (
        f"UPDATE meta SET value = {2**63 - 1} WHERE key = 'id_floor'",
        f"meta 'id_floor' is {2**63 - 1}, not an integer from 0 to {MAX_ID}",
    ),
    "id_floor past 2**63": (
        f"UPDATE meta SET value = {2**63} WHERE key = 'id_floor'",  # stored as a REAL
        "meta 'id_floor' is 9.223372036854776e+18, not",
    ),
    "clean 7": ("UPDATE meta SET value = 7 WHERE key = 'clean'", "meta 'clean' is 7, not"),
    "a long value": (
        "UPDATE meta SET value = 'x' || hex(zeroblob(500)) WHERE key = 'window'",
        "meta 'window' is 'x" + "0" * 35 + "..., not an integer",
    ),
    "no messages table": ("DROP TABLE messages", "is damaged: no table messages"),
    "no meta table": ("DROP TABLE meta", "is damaged: no table meta"),
    "messages without ts": (
        "ALTER TABLE messages DROP COLUMN ts", "is damaged: no column messages.ts TEXT"
    ),
    "id not the key": (
        "ALTER TABLE messages RENAME TO old; CREATE TABLE messages (id INTEGER, user TEXT,"
        " text TEXT, ts TEXT)",
        "is damaged: no column messages.id INTEGER PRIMARY KEY",
    ),
    "ids used up": (
        f"UPDATE meta SET value = {MAX_ID} WHERE key = 'id_floor'",
        f"has no message ids left (ids continue after {MAX_ID}; the largest is {MAX_ID})",
    ),
    "a message id at the end": (
        f"INSERT INTO messages VALUES ({MAX_ID + 5}, 'x', 'y', 'z', '#lobby')",
        f"has no message ids left (ids continue after {MAX_ID + 5}",
    ),
    "a crash window past the end": (
        f"UPDATE meta SET value = CASE key WHEN 'clean' THEN 0 WHEN 'window' THEN {MAX_ID}"
        " ELSE value END",
        "has no message ids left",
    ),
}


@pytest.mark.parametrize("damage", list(META_DAMAGE))
async def test_a_tampered_database_is_refused_with_one_line(tmp_path: Path, damage: Any) -> None:
    db = tmp_path / "chat.db"
    await make_db(db, "one")
    script, says = META_DAMAGE[damage]
    tamper(db, script)
    with pytest.raises(StoreError) as refused:
        async with open_history(replace(CONFIG, db=str(db))):
            pass
    assert str(refused.value).startswith(f"history database {db} ")
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)
    assert refused.value.exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage", ["no id_floor", "id_floor abc", "id_floor 2**63-1", "no messages table"]
)
async def test_serve_refuses_a_tampered_database_with_one_line_and_exit_2(
    tmp_path: Path, damage: Any,
) -> None:
    db = tmp_path / "chat.db"
    await make_db(db, "one")
    script, says = META_DAMAGE[damage]
    tamper(db, script)
    command = [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
               "--db", str(db)]
    with trio.fail_after(30):
        result: Any = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    log = result.stderr.decode()
    assert result.returncode == 2, log
    assert "Traceback" not in log
    (error,) = [line for line in log.splitlines() if " ERROR " in line]
    assert error.endswith(says) or says in error


async def test_damaged_rows_are_replayed_as_text(tmp_path: Path) -> None:
    """A row holding a BLOB or bytes that are not UTF-8 where text belongs is replayed
    as text (U+FFFD for what cannot be decoded), live and from the disk."""
    db = tmp_path / "chat.db"
    await make_db(db, *(f"filler {n}" for n in range(3000)))  # past the in-memory ring
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE messages SET text = x'ff61fe' WHERE id = 1")
        conn.execute("UPDATE messages SET user = CAST(x'416e6e' AS BLOB) WHERE id = 2")
        conn.execute("UPDATE messages SET text = CAST(x'62c3' AS TEXT) WHERE id = 2999")
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, replace(CONFIG, db=str(db)))
        async with await TcpClient.connect(bound.tcp_port) as bob:
            await bob.send({"type": "join", "user": "Bob", "since": 0})
            replayed = {}
            while (msg := await bob.recv())["type"] != "history_end":
                if msg["type"] == "chat":
                    replayed[msg["id"]] = (msg["user"], msg["text"])
            assert len(replayed) == 3000
            assert replayed[1] == ("Ann", "\ufffda\ufffd")
            assert replayed[2] == ("Ann", "filler 1")
            assert replayed[2999] == ("Ann", "b\ufffd")
            await bob.send({"type": "chat", "text": "still here"})
            assert (await bob.recv_until(type="chat", text="still here"))["id"] == 3001
        nursery.cancel_scope.cancel()


async def test_the_last_ids_are_used_then_messages_go_without_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Ids never pass MAX_ID (2**53 - 1): at the end the room goes on without them
    (one error line), and the next start refuses the database."""
    db = tmp_path / "chat.db"
    await make_db(db, "one")
    tamper(db, f"UPDATE meta SET value = {MAX_ID - 2} WHERE key = 'id_floor'")
    config = replace(CONFIG, db=str(db))
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, config)
        async with (
            await TcpClient.connect(bound.tcp_port) as ann,
            await TcpClient.connect(bound.tcp_port) as bob,
        ):
            await ann.join("Ann")
            await bob.join("Bob")
            for n in range(4):
                await ann.send({"type": "chat", "text": f"m{n}"})
            ids = [(await bob.recv_until(type="chat", text=f"m{n}")).get("id") for n in range(4)]
            assert ids == [MAX_ID - 1, MAX_ID, None, None]
            await bob.send({"type": "who"})
            assert (await bob.recv_until(type="users"))["clients_count"] == 2
        nursery.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "every message id up to" in errors[0]
    with closing(sqlite3.connect(db)) as conn:
        texts = [row[0] for row in conn.execute("SELECT text FROM messages ORDER BY id")]
    assert texts == ["one", "m0", "m1"]
    with pytest.raises(StoreError, match="has no message ids left"):
        async with open_history(config):
            pass


class OverflowingStore(SqliteStore):
    """A real store whose driver raises what is not an ``sqlite3.Error`` while set."""

    error: Exception | None = None

    def _write_sync(self, batch: list[StoredMessage]) -> int:
        if self.error is not None:
            raise self.error
        return super()._write_sync(batch)


@pytest.mark.parametrize(
    "error",
    [OverflowError("Python int too large to convert to SQLite INTEGER"),
     ValueError("embedded null character"), MemoryError()],
)
async def test_a_batch_that_fails_any_way_costs_its_messages_not_the_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Any,
) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"))
    store = OverflowingStore(config.db, keep=100)
    async with open_history(config, store) as history:
        for text, failing in [("kept", None), ("lost", error), ("kept again", None)]:
            store.error = failing
            await history.store.wait_writable()
            history.record("Bob", text, TS)
            await store.flush()
        messages, _ = await store.read(0, 99)
        assert [m.text for m in messages] == ["kept", "kept again"]
    assert f"could not store 1 messages (ids 2-2): {error!r}" in caplog.text
