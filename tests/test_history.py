"""Message ids, the SQLite history store, replay on join and ``since`` resume."""

from __future__ import annotations

import json
import queue
import sqlite3
import tempfile
import threading
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.memory import memory_tcp
from tests.support.tcp import TcpClient, join_with_replay
from tests.support.ws import WsClient, get_text, ws_client
from trio_chat import Config, serve
from trio_chat.history.base import History, Replay, StoredMessage, chat_line
from trio_chat.history.sqlite import SqliteHistory, SqliteStore, open_history
from trio_chat.history.writer import StoreError, running
from trio_chat.server.delivery import LocalDelivery
from trio_chat.server.rooms import Rooms

CONFIG = Config(tcp_port=0, ws_port=0, rate_limit=0)


async def say(client: TcpClient, name: str, *texts: str) -> list[int]:
    """Send chats and wait for their echoes; return their ids."""
    for text in texts:
        await client.send({"type": "chat", "text": text})
    ids = []
    for text in texts:
        echo = await client.recv_until(type="chat", user=name, text=text)
        assert "history" not in echo
        ids.append(echo["id"])
    return ids


async def rendered(history: History, replay: Replay) -> list[str]:
    """A replay as the lines a client gets, ``history_end`` last."""
    messages, end = await history.collect(replay)
    return [chat_line(m, history=True) for m in messages] + [end]


async def test_ids_increase_across_restart(tmp_path: Path) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"))
    for run, texts in enumerate([("one", "two"), ("three",)]):
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve, config)
            async with await TcpClient.connect(bound.tcp_port) as bob:
                earlier, end = await join_with_replay(bob, "Bob")
                assert [m["text"] for m in earlier] == ["one", "two"][: 2 * run]
                ids = await say(bob, "Bob", *texts)
            nursery.cancel_scope.cancel()
        assert ids == sorted(ids) and ids[0] == end["last_id"] + 1
    assert ids == [3]
    rows = sqlite3.connect(config.db).execute("SELECT id, user, text FROM messages").fetchall()
    assert rows == [(1, "Bob", "one"), (2, "Bob", "two"), (3, "Bob", "three")]


async def test_replay_count_and_order(nursery: trio.Nursery) -> None:
    config = replace(CONFIG, history_replay=3)
    bound = await nursery.start(serve, config)
    async with await TcpClient.connect(bound.tcp_port) as bob, \
            await TcpClient.connect(bound.tcp_port) as ann:
        chats, end = await join_with_replay(bob, "Bob")
        assert chats == [] and end == {"type": "history_end", "room": "#lobby", "last_id": 0}
        await say(bob, "Bob", *"abcde")
        chats, end = await join_with_replay(ann, "Ann")
        assert [(m["id"], m["user"], m["text"]) for m in chats] == [
            (3, "Bob", "c"), (4, "Bob", "d"), (5, "Bob", "e"),
        ]
        assert end == {"type": "history_end", "room": "#lobby", "last_id": 5}
        # Live messages after the replay carry no history mark; renames replay nothing.
        await ann.send({"type": "join", "user": "Anna"})
        await ann.recv_until(type="welcome")
        assert (await ann.recv())["event"] == "rename"
        assert await say(ann, "Anna", "f") == [6]


async def test_since_resumes_after_the_last_seen_id(nursery: trio.Nursery) -> None:
    bound = await nursery.start(serve, CONFIG)
    async with await TcpClient.connect(bound.tcp_port) as bob:
        await join_with_replay(bob, "Bob")
        await say(bob, "Bob", *"abcde")
        for since, expected in [(2, "cde"), (0, "abcde"), (5, ""), (99, "")]:
            async with await TcpClient.connect(bound.tcp_port) as ann:
                chats, end = await join_with_replay(ann, "Ann", since=since)
                assert "".join(m["text"] for m in chats) == expected
                assert end == {"type": "history_end", "room": "#lobby", "last_id": 5}
                await ann.send({"type": "leave"})  # the name is free again at once
                await ann.eof()


async def test_websocket_clients_get_the_same_replay_in_batched_frames(
    nursery: trio.Nursery
) -> None:
    bound = await nursery.start(serve, CONFIG)
    async with await TcpClient.connect(bound.tcp_port) as bob, \
            ws_client(bound.ws_port) as conn:
        await join_with_replay(bob, "Bob")
        await say(bob, "Bob", "a", "b\nc", "d")
        await conn.send_message('{"type":"join","user":"Ann","since":1,"batch":true}')
        frame = await conn.get_message()  # welcome
        assert '"type":"welcome"' in frame
        frame = await get_text(conn)  # the whole replay in one batched frame
        lines = [json.loads(line) for line in frame.split("\n")]
        assert [(m["type"], m.get("id"), m.get("text")) for m in lines[:3]] == [
            ("chat", 2, "b\nc"), ("chat", 3, "d"), ("history_end", None, None)
        ]
        ann = WsClient(conn)
        await ann.send({"type": "chat", "text": "e"})
        assert (await ann.recv_until(type="chat", text="e"))["id"] == 4


async def test_a_replay_longer_than_the_queue_is_not_a_slow_consumer(nursery: trio.Nursery) -> None:
    config = replace(CONFIG, queue_size=8)
    async with open_history(config) as history:
        for n in range(1, 1201):  # more than the queue, and than one write (MAX_BATCH)
            await history.store.wait_writable()
            history.record("Bob", f"m{n}", "T")
        bound = await nursery.start(partial(serve, config, rooms=Rooms(LocalDelivery(history))))
        async with await TcpClient.connect(bound.tcp_port) as ann:
            chats, end = await join_with_replay(ann, "Ann", since=0)
            assert [m["id"] for m in chats] == list(range(1, 1201))
            assert end == {"type": "history_end", "room": "#lobby", "last_id": 1200}
            await ann.send({"type": "ping"})
            assert await ann.recv() == {"type": "pong"}  # still connected
        nursery.cancel_scope.cancel()


async def test_since_past_the_retention_says_incomplete(nursery: trio.Nursery) -> None:
    config = replace(CONFIG, history_keep=3)
    async with open_history(config) as history:
        bound = await nursery.start(partial(serve, config, rooms=Rooms(LocalDelivery(history))))
        async with await TcpClient.connect(bound.tcp_port) as bob:
            await join_with_replay(bob, "Bob")
            await say(bob, "Bob", *"abcdef")
            await history.store.flush()  # the pruning is done by the writer, in order
            assert history.store.pruned_through == 3
            for since, expected, complete in [
                (1, "def", False), (2, "def", False), (3, "def", True), (5, "f", True)
            ]:
                async with await TcpClient.connect(bound.tcp_port) as ann:
                    chats, end = await join_with_replay(ann, "Ann", since=since)
                    assert "".join(m["text"] for m in chats) == expected
                    assert end.get("complete", True) is complete
                    assert end["last_id"] == 6
        nursery.cancel_scope.cancel()


async def test_deep_resume_reads_the_store_past_the_ring(tmp_path: Path) -> None:
    """A ``since`` older than the in-memory ring is completed from the database."""
    store = SqliteStore(str(tmp_path / "chat.db"), keep=8, max_pending=4)
    async with running(store, 4) as snapshot:
        history = SqliteHistory(store, snapshot, replay=2, ring=4)
        for n in range(1, 13):
            await history.store.wait_writable()
            history.record("Bob", f"m{n}", "T")
        await store.flush()
        assert store.pruned_through == 4

        async def texts(since: int | None) -> tuple[list[str], str]:
            *chats, end = await rendered(history, history.replay(since))
            return [line.split('"text":"')[1].split('"')[0] for line in chats], end

        end = '{"type":"history_end","room":"#lobby","last_id":12}'
        assert await texts(None) == (["m11", "m12"], end)
        assert await texts(6) == (
            [f"m{n}" for n in range(7, 13)], '{"type":"history_end","room":"#lobby","last_id":12}'
        )
        assert await texts(2) == (
            [f"m{n}" for n in range(5, 13)],
            '{"type":"history_end","room":"#lobby","last_id":12,"complete":false}',
        )


async def test_ids_skip_the_window_after_an_unclean_stop(tmp_path: Path) -> None:
    """A killed server may have broadcast ids it never committed: never reuse them."""
    running_db = str(tmp_path / "running.db")
    path = str(tmp_path / "chat.db")
    store = SqliteStore(running_db, keep=100, max_pending=16)
    await store.open(10)
    for n in range(1, 4):
        store.put_nowait(StoredMessage(n, "Bob", "x", "T"))
    await store.flush()  # no writer task: flush commits itself
    # The file as a kill would leave it now (not marked clean): a copy taken by a
    # separate connection while the store is still open.
    with closing(sqlite3.connect(running_db)) as live, closing(sqlite3.connect(path)) as copy:
        live.backup(copy)
    await store.aclose()

    async with open_history(replace(CONFIG, db=path)) as history:
        assert history.last_id == 3 + 16
        # A client that saw id 3 may have missed lost messages 4..19; one that saw 19
        # (the last id it could have seen) has missed nothing.
        *_, end = await rendered(history, history.replay(3))
        assert end == '{"type":"history_end","room":"#lobby","last_id":19,"complete":false}'
        *_, end = await rendered(history, history.replay(19))
        assert end == '{"type":"history_end","room":"#lobby","last_id":19}'
        assert chat_line(history.record("Bob", "y", "T")).startswith(
            '{"type":"chat","room":"#lobby","id":20,'
        )
    async with open_history(replace(CONFIG, db=path)) as history:
        assert history.last_id == 20  # that stop was clean


class GatedStore(SqliteStore):
    """A real SQLite store whose commits wait until the test opens the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def _write_sync(self, batch: list[StoredMessage]) -> int:
        assert self.gate.wait(30), "test never opened the gate"
        return super()._write_sync(batch)


def committed_ids(db: str) -> list[int]:
    """The message ids in the file, as a separate reader sees them: what is committed."""
    with closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY id")]


async def test_a_stalled_writer_holds_back_the_sender_not_the_room(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    db = str(tmp_path / "chat.db")
    store = GatedStore(db, keep=100, max_pending=8)
    try:
        async with open_history(CONFIG, store) as history:
            bound = await nursery.start(partial(serve, CONFIG, rooms=Rooms(LocalDelivery(history))))
            async with await TcpClient.connect(bound.tcp_port) as bob, \
                    await TcpClient.connect(bound.tcp_port) as ann:
                await join_with_replay(bob, "Bob")
                await join_with_replay(ann, "Ann")
                for n in range(1, 12):
                    await bob.send({"type": "chat", "text": f"m{n}"})
                # Nothing is committed yet, and the room still delivers all it took.
                for n in range(1, 9):
                    assert (await ann.recv_until(type="chat"))["id"] == n
                assert store.full and committed_ids(db) == []
                await ann.send({"type": "ping"})
                assert await ann.recv() == {"type": "pong"}  # m9 is not ahead of it
                store.gate.set()
                for n in range(9, 12):
                    assert (await ann.recv_until(type="chat"))["text"] == f"m{n}"
                await store.flush()
                assert committed_ids(db) == list(range(1, 12))
            nursery.cancel_scope.cancel()
    finally:
        store.gate.set()


class FailingStore(SqliteStore):
    """A real SQLite store whose disk 'fails' while ``failing`` is set."""

    failing = False

    def _write_sync(self, batch: list[StoredMessage]) -> int:
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        return super()._write_sync(batch)


async def test_a_failed_write_is_logged_and_its_ids_are_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"))
    store = FailingStore(config.db, keep=100)
    async with open_history(config, store) as history:
        for text in ["kept", "lost", "kept again", "lost at the end"]:
            await history.store.wait_writable()
            history.record("Bob", text, "T")
            await store.flush()
            store.failing = not store.failing
        stored, pruned = await store.read(0, 99)  # what a deep resume would read
        assert [m.text for m in stored] == ["kept", "kept again"]
        assert pruned == 2  # written with the next good batch; 4 is not written yet
        assert store.pruned_through == 4
    assert "could not store 1 messages (ids 2-2): disk I/O error" in caplog.text
    async with open_history(config) as history:
        assert history.last_id == 4  # a clean stop: no window skipped, none reused
        messages, end = await history.collect(history.replay(0))
        assert [m.text for m in messages] == ["kept", "kept again"]
        assert end == '{"type":"history_end","room":"#lobby","last_id":4,"complete":false}'
        assert history.store.pruned_through == 4  # written at the clean stop
        messages, end = await history.collect(history.replay(4))
        assert end == '{"type":"history_end","room":"#lobby","last_id":4}'


async def test_store_refuses_a_database_it_does_not_own(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    blocked = tmp_path / "file" / "chat.db"
    blocked.parent.write_text("a file where a directory should be")
    for path, says in [
        (garbage, "not a database"),
        (foreign, "not trio-chat's"),
        (newer, "schema version 99"),
        (blocked, "cannot use history database"),
    ]:
        with pytest.raises(StoreError, match=says):
            async with open_history(replace(CONFIG, db=str(path))):
                pass


say_ops = st.tuples(st.just("say"), st.integers(1, 30))
check_ops = st.tuples(st.just("check"), st.integers(0, 120) | st.none())
other_ops = st.tuples(st.sampled_from(["flush", "yield"]), st.just(0))


@settings(max_examples=60, deadline=None)
@given(
    keep=st.integers(1, 40),
    max_pending=st.integers(1, 16),
    ring=st.integers(1, 24),
    replay=st.integers(0, 10),
    ops=st.lists(st.one_of(say_ops, check_ops, other_ops), max_size=25),
)
def test_replays_match_a_model(
    keep: int, max_pending: int, ring: int, replay: int, ops: list[tuple[str, int | None]]
) -> None:
    """Whatever has been committed or pruned, a replay is the newest messages after
    ``since``, without gaps; ``complete`` only when none is missing; never fewer than
    the retention promises."""

    async def scenario(path: str) -> None:
        store = SqliteStore(path, keep=keep, max_pending=max_pending)
        async with running(store, SqliteHistory.ring_size(store, replay, ring)) as snapshot:
            history = SqliteHistory(store, snapshot, replay=replay, ring=ring)
            n = 0
            for op, arg in ops:
                if op == "say":
                    assert arg is not None
                    for _ in range(arg):
                        await history.store.wait_writable()
                        n += 1
                        assert f'"id":{n},' in chat_line(history.record("u", f"m{n}", "T"))
                elif op == "flush":
                    await store.flush()
                elif op == "yield":
                    await trio.lowlevel.checkpoint()
                else:
                    messages, end = await history.collect(history.replay(arg))
                    ids = [m.id for m in messages]
                    assert all(m.text == f"m{m.id}" for m in messages)
                    if arg is None:
                        assert ids == list(range(n - min(n, replay, keep) + 1, n + 1))
                        assert end == f'{{"type":"history_end","room":"#lobby","last_id":{n}}}'
                        continue
                    wanted = list(range(arg + 1, n + 1))
                    assert ids == wanted[len(wanted) - len(ids):]  # a gapless suffix
                    assert len(ids) >= min(len(wanted), keep)
                    complete = '"complete":false' not in end
                    assert complete == (ids == wanted), (ids, wanted, end)

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(scenario, str(Path(tmp) / "chat.db"))


class CountingReads(SqliteStore):
    """Records how many messages each store read returned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[int] = []

    def _read_sync(self, *args: Any) -> tuple[list[StoredMessage], int]:
        messages, pruned = super()._read_sync(*args)
        self.reads.append(len(messages))
        return messages, pruned


async def test_a_deep_resume_reads_the_store_a_page_at_a_time(tmp_path: Path) -> None:
    """A ``since`` far back is read and written a page at a time: a connection never
    holds the whole retained history (10,000 messages of up to 4,096 characters) in
    memory while it trickles out at the client's pace."""
    from trio_chat.server.session import MAX_BATCH

    config = replace(CONFIG, db=str(tmp_path / "chat.db"))
    store = CountingReads(config.db, keep=10_000)
    async with open_history(config, store) as history:
        for n in range(1, 5001):
            await history.store.wait_writable()
            history.record("Bob", f"m{n}", "T")
        await history.store.flush()
        room = Rooms(LocalDelivery(history))
        async with trio.open_nursery() as nursery, memory_tcp(nursery, room, config) as ann:
            chats, end = await join_with_replay(ann, "Ann", since=0)
        assert [c["id"] for c in chats] == list(range(1, 5001))
        assert end == {"type": "history_end", "room": "#lobby", "last_id": 5000}
        assert store.reads and max(store.reads) <= MAX_BATCH


class CountingStore(SqliteStore):
    """Records the ids of every batch the writer thread commits; ``committed`` gets
    each batch's ids once it is committed (a test thread may wait on it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[int]] = []
        self.committed: queue.SimpleQueue[list[int]] = queue.SimpleQueue()

    def _write_sync(self, batch: list[StoredMessage]) -> int:
        ids = [m.id for m in batch]
        self.batches.append(ids)
        pruned = super()._write_sync(batch)
        self.committed.put(ids)
        return pruned


async def test_commits_gather_messages_until_the_interval_or_half_the_window(
    tmp_path: Path,
) -> None:
    """A message after a quiet spell commits at once; the next ones wait for the commit
    interval (here: forever) unless half of max_pending waits, or a flush asks."""
    db = str(tmp_path / "chat.db")
    store = CountingStore(db, keep=100, max_pending=8, commit_interval=1e9)
    async with running(store, 10):
        store.put_nowait(StoredMessage(1, "u", "m1", "T"))
        await store.flush()
        assert store.batches == [[1]] and store.committed.get_nowait() == [1]
        for i in (2, 3, 4):
            store.put_nowait(StoredMessage(i, "u", f"m{i}", "T"))
            for _ in range(10):
                await trio.lowlevel.checkpoint()
        assert store.batches == [[1]]  # gathering: still within the interval
        assert committed_ids(db) == [1]
        store.put_nowait(StoredMessage(5, "u", "m5", "T"))  # half the window: commit now
        # Real seconds; the commit starts now, not in 1e9 s.
        assert await trio.to_thread.run_sync(partial(store.committed.get, timeout=10)) == [
            2, 3, 4, 5
        ]
        assert committed_ids(db) == [1, 2, 3, 4, 5]
        assert store.batches == [[1], [2, 3, 4, 5]]
        store.put_nowait(StoredMessage(6, "u", "m6", "T"))
        await store.flush()  # a flush does not wait for the interval
        assert store.batches == [[1], [2, 3, 4, 5], [6]]
