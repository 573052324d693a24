"""The history store under a real ``trio-chat serve`` process: SIGTERM mid-burst, bad --db."""

from __future__ import annotations

import json
import signal
import sqlite3
from contextlib import AbstractAsyncContextManager, closing, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.processes import TRIO_CHAT, JoinProcess, ServerProcess, server_process
from tests.support.tcp import TcpClient
from trio_chat import Config, serve

pytestmark = pytest.mark.slow

CLIENTS = 5
PER_CLIENT = 1000  # 5000 messages in all


def history_server(db: str, *args: str) -> AbstractAsyncContextManager[ServerProcess]:
    """A real server keeping its history in ``db``, flood control off."""
    return server_process("--rate-limit", "0", "--db", db, *args)


async def burst_until(db: str, signum: int) -> tuple[dict[int, tuple[str, str]], int]:
    """Clients send 5000 messages; a third of the way in, ``signum`` hits the server.

    Returns every chat message any client received, by id, and the exit status.
    """
    received: dict[int, tuple[str, str]] = {}
    counts = [0] * CLIENTS
    enough = trio.Event()

    async def client(k: int, port: int) -> None:
        async with await TcpClient.connect(port) as c:
            await c.join(f"c{k}")

            async def send_burst() -> None:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    for start in range(0, PER_CLIENT, 50):
                        await c.send_raw(b"".join(
                            json.dumps({"type": "chat", "text": f"c{k}-{n}"}).encode() + b"\n"
                            for n in range(start, start + 50)
                        ))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_burst)
                with suppress(trio.BrokenResourceError):  # reset by a killed server
                    while (line := await c.line()) is not None:
                        msg = json.loads(line)
                        if msg["type"] == "chat":
                            seen = received.setdefault(msg["id"], (msg["user"], msg["text"]))
                            assert seen == (msg["user"], msg["text"]), "one id, two messages"
                            counts[k] += 1
                            if counts[k] == CLIENTS * PER_CLIENT // 3:
                                enough.set()

    async with history_server(db, "--queue-size", "100000") as server:
        async with trio.open_nursery() as nursery:
            for k in range(CLIENTS):
                nursery.start_soon(client, k, server.tcp_port)
            await enough.wait()
            server.signal(signum)  # mid-burst: clients are still sending
        with trio.fail_after(30):
            status = await server.process.wait()
    assert len(received) >= CLIENTS * PER_CLIENT // 3
    return received, status


def stored_messages(db: str) -> dict[int, tuple[str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, user, text FROM messages").fetchall()
    stored = {row[0]: (row[1], row[2]) for row in rows}
    texts = [text for _, text in stored.values()]
    assert len(texts) == len(set(texts)), "a message was stored twice"
    return stored


async def test_sigterm_during_a_burst_keeps_every_broadcast_message(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    received, status = await burst_until(db, signal.SIGTERM)
    assert status == 0
    stored = stored_messages(db)
    missing = {i: m for i, m in received.items() if stored.get(i) != m}
    assert not missing, f"{len(missing)} broadcast messages not stored"
    assert sorted(stored) == list(range(1, len(stored) + 1))

    # Restarted: the conversation is replayed, each message once, and ids go on.
    async with history_server(db) as server:
        async with await TcpClient.connect(server.tcp_port) as ann:
            await ann.send({"type": "join", "user": "Ann", "since": 0})
            replayed = []
            while (msg := await ann.recv())["type"] != "history_end":
                if msg["type"] == "chat":
                    replayed.append((msg["id"], (msg["user"], msg["text"])))
            assert dict(replayed) == stored and len(replayed) == len(stored)
            assert msg == {"type": "history_end", "room": "#lobby", "last_id": max(stored)}
            await ann.send({"type": "chat", "text": "after"})
            echo = await ann.recv_until(type="chat", text="after")
            assert echo["id"] == max(stored) + 1
        server.signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await server.process.wait() == 0


async def test_sigkill_loses_at_most_one_batch_and_never_reuses_an_id(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    received, status = await burst_until(db, signal.SIGKILL)
    assert status == -signal.SIGKILL
    stored = stored_messages(db)
    assert all(received[i] == m for i, m in stored.items() if i in received)
    lost = set(received) - set(stored)
    assert len(lost) <= 1024, "more than one batch was lost"
    async with history_server(db) as server:
        async with await TcpClient.connect(server.tcp_port) as ann:
            await ann.send({"type": "join", "user": "Ann", "since": max(received)})
            end = await ann.recv_until(type="history_end")
            assert end["last_id"] >= max(received)  # ids the dead server used are skipped
            await ann.send({"type": "chat", "text": "after"})
            echo = await ann.recv_until(type="chat", text="after")
            assert echo["id"] > max(received)
            assert "history" not in echo
        server.signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await server.process.wait() == 0


@pytest.mark.parametrize("kind", ["corrupt", "unwritable", "directory"])
async def test_a_bad_db_path_is_one_error_line_and_exit_code_2(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "chat.db"
    if kind == "corrupt":
        path.write_bytes(b"\x00garbage, not SQLite\n" * 512)
    elif kind == "unwritable":  # root ignores permissions; a file where a dir must be
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "chat.db"
    else:
        path.mkdir()
    result: Any = await trio.run_process(
        [*TRIO_CHAT, "serve", "--tcp-port", "0", "--ws-port", "0", "--db", str(path)],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    log = result.stderr.decode()
    assert result.returncode == 2
    assert "Traceback" not in log
    (error,) = [line for line in log.splitlines() if " ERROR " in line]
    assert "cannot use history database" in error and str(path) in error


async def test_join_client_resumes_without_gaps_across_a_server_restart(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """``trio-chat join`` sends ``since`` when it rejoins: it gets what it missed, once."""
    config = Config(tcp_port=0, ws_port=0, rate_limit=0, db=str(tmp_path / "chat.db"))

    async def ann_says(port: int, *texts: str) -> None:
        async with await TcpClient.connect(port) as ann:
            await ann.join("Ann")
            for text in texts:
                await ann.send({"type": "chat", "text": text})
                await ann.recv_until(type="chat", text=text)
            await ann.send({"type": "leave"})  # the name is free again at once
            await ann.eof()

    async with trio.open_nursery() as servers:
        bound = await servers.start(serve, config)
        await ann_says(bound.tcp_port, "one", "two")
        bot = await JoinProcess.start(
            nursery, "--name", "bot", "--port", bound.tcp_port, "--max-backoff", "0.2"
        )
        assert (await bot.wait_for("Ann: two")).startswith("(earlier) ")
        await ann_says(bound.tcp_port, "three")
        await bot.wait_for("Ann: three")
        servers.cancel_scope.cancel()
    # Restarted where the bot cannot rejoin yet: it misses these.
    async with trio.open_nursery() as servers:
        elsewhere = await servers.start(serve, config)
        await ann_says(elsewhere.tcp_port, "four", "five")
        servers.cancel_scope.cancel()
    async with trio.open_nursery() as servers:
        await servers.start(serve, replace(config, tcp_port=bound.tcp_port))
        assert (await bot.wait_for("Ann: five")).startswith("(earlier) ")
        await bot.close_stdin()
        assert await bot.exit_code() == 0
        servers.cancel_scope.cancel()
    said = [line.split("] ", 1)[1] for line in bot.seen if "] #lobby Ann: " in line]
    assert said == [f"#lobby Ann: {n}" for n in ("one", "two", "three", "four", "five")]
