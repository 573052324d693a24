"""History per room (issue 16): the SQLite schema version 2 and its migration from a
real version 1 file, retention per room, the server-wide bounds in bytes (stored, and
in memory), rooms and topics across restarts, direct messages' ids, and expiry.

``tests/data/history-v1*.db`` were made by trio-chat before rooms (see
``tests/data/make_history_v1.py``): 30 messages from Ann with ``--history-keep 25``.
"""

from __future__ import annotations

import gc
import shutil
import sqlite3
import tracemalloc
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.support.clients import enter
from tests.support.seats import Seat
from tests.support.tcp import TcpClient
from trio_chat import Config, serve
from trio_chat.history.base import StoredMessage
from trio_chat.history.sqlite import SqliteHistory, SqliteStore, open_history
from trio_chat.history.writer import RoomChange, StoreError, running
from trio_chat.protocol import LOBBY
from trio_chat.server.delivery import LocalDelivery
from trio_chat.server.rooms import Rooms

DATA = Path(__file__).parent / "data"
CONFIG = Config(tcp_port=0, ws_port=0, rate_limit=0, connect_rate=0, room_create_rate=0)
V1_TEXTS = [f"message {n}" for n in range(1, 31)]
V1_TEXTS[5] = "héllo wörld 👋"
V1_TEXTS[6] = "line one\nline two"


def v1_copy(tmp_path: Path, name: str = "history-v1.db") -> Path:
    db = tmp_path / "chat.db"
    shutil.copy(DATA / name, db)
    return db


def schema(db: Path) -> tuple[int, dict[str, list[str]]]:
    with closing(sqlite3.connect(db)) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return version, {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
                         for t in tables}


async def test_a_version_1_file_is_migrated_its_messages_in_the_lobby(tmp_path: Path) -> None:
    db = v1_copy(tmp_path)
    assert schema(db)[0] == 1
    config = replace(CONFIG, db=str(db))
    async with open_history(config) as history:
        assert history.last_id == 30
        rooms = Rooms(LocalDelivery(history), config=config)
        assert [r.name for r in rooms.all] == [LOBBY]
        messages, end = await history.collect(history.replay(0))
        assert [(m.id, m.room, m.user, m.text) for m in messages] == [
            (n, LOBBY, "Ann", V1_TEXTS[n - 1]) for n in range(6, 31)
        ]
        # 1-5 were pruned by the old server: a resume from before them says so.
        assert end == '{"type":"history_end","room":"#lobby","last_id":30,"complete":false}'
        messages, end = await history.collect(history.replay(5))
        assert len(messages) == 25 and '"complete"' not in end
        assert history.stored_bytes is not None and 4096 < history.stored_bytes < 10**6
    version, tables = schema(db)
    assert version == 2
    assert tables["messages"] == ["id", "user", "text", "ts", "room"]
    assert tables["rooms"] == ["key", "name", "topic", "active", "pruned_through"]
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT DISTINCT room FROM messages").fetchall() == [("#lobby",)]
        assert conn.execute("SELECT key, name, pruned_through FROM rooms").fetchall() == [
            ("#lobby", "#lobby", 5)
        ]
    # Opened again: version 2 as it is, ids continue.
    async with open_history(config) as history:
        assert history.last_id == 30
        assert history.record("Bob", "after", "T").id == 31


async def test_a_migrated_file_serves_its_history_to_a_client(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = replace(CONFIG, db=str(v1_copy(tmp_path)), history_replay=3)
    bound = await nursery.start(serve, config)
    async with await TcpClient.connect(bound.tcp_port) as bob:
        _, chats, end = await enter(bob, LOBBY, user="Bob", since=25)
        assert [(c["id"], c["text"]) for c in chats] == [(n, f"message {n}")
                                                        for n in range(26, 31)]
        assert end == {"type": "history_end", "room": "#lobby", "last_id": 30}
        _, chats, _ = await enter(bob, "#new")
        assert chats == []
        await bob.send({"type": "chat", "room": "#new", "text": "first in #new"})
        assert (await bob.recv_until(type="chat"))["id"] == 31


async def test_a_version_1_file_of_a_killed_server_keeps_its_lost_window(
    tmp_path: Path,
) -> None:
    db = v1_copy(tmp_path, "history-v1-running.db")
    async with open_history(replace(CONFIG, db=str(db))) as history:
        # Up to the old window (25) may have been broadcast and lost: skipped.
        assert history.last_id == 30 + 25
        _, end = await history.collect(history.replay(30))
        assert end == '{"type":"history_end","room":"#lobby","last_id":55,"complete":false}'


async def test_a_damaged_version_1_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    db = v1_copy(tmp_path)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'window'")
        conn.commit()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="meta row 'window' is missing"):
        async with open_history(replace(CONFIG, db=str(db))):
            pass
    assert db.read_bytes() == before and schema(db)[0] == 1


async def test_rooms_topics_and_history_survive_a_restart(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"))
    async with trio.open_nursery() as first:
        bound = await first.start(serve, config)
        async with await TcpClient.connect(bound.tcp_port) as ann:
            await enter(ann, "#Dev", user="Ann")
            await enter(ann, "#empty")
            await ann.send({"type": "topic", "room": "#dev", "topic": "release on Friday"})
            await ann.send({"type": "chat", "room": "#dev", "text": "in dev"})
            await ann.send({"type": "msg", "to": "Ann", "text": "a note"})
            await ann.send({"type": "chat", "room": "#empty", "text": "not empty now"})
            dm = await ann.recv_until(type="msg")
            last = await ann.recv_until(type="chat", text="not empty now")
            assert (dm["id"], last["id"]) == (2, 3)
        first.cancel_scope.cancel()
    bound = await nursery.start(serve, config)
    async with await TcpClient.connect(bound.tcp_port) as bob:
        await bob.send({"type": "rooms"})
        rooms = (await bob.recv_until(type="rooms"))["rooms"]
        assert sorted((r["room"], r["topic"]) for r in rooms) == [
            ("#Dev", "release on Friday"), ("#empty", ""), ("#lobby", "")
        ]
        assert all(r["users"] == 0 for r in rooms)
        welcome, chats, end = await enter(bob, "#dev", user="Bob", since=0)
        assert welcome["room"] == "#Dev" and welcome["topic"] == "release on Friday"
        assert [(c["id"], c["text"]) for c in chats] == [(1, "in dev")]
        assert end["last_id"] == 1
        await bob.send({"type": "msg", "to": "Bob", "text": "after"})
        assert (await bob.recv_until(type="msg"))["id"] == 4  # the DM's id 2 not reused


async def test_direct_message_ids_are_not_reused_after_a_kill(tmp_path: Path) -> None:
    """A direct message's id is never stored, but it is held in the store's window
    like a message's: a killed server's next start skips past it."""
    running_db, path = tmp_path / "running.db", tmp_path / "chat.db"
    store = SqliteStore(str(running_db), keep=100, max_pending=16)
    async with running(store, 10) as snapshot:
        history = SqliteHistory(store, snapshot, replay=5)
        history.record("Ann", "one", "T")
        for _ in range(3):
            history.reserve()
        await store.flush()
        assert history.last_id == 4
        with closing(sqlite3.connect(running_db)) as live, \
                closing(sqlite3.connect(path)) as copy:
            live.backup(copy)  # the file as a kill would leave it now
    async with open_history(replace(CONFIG, db=str(path))) as history:
        assert history.last_id == 4 + 16  # the window after the last id given out
    async with open_history(replace(CONFIG, db=str(running_db))) as history:
        assert history.last_id == 4  # a clean stop: nothing skipped, nothing reused


async def test_history_keep_is_per_room(tmp_path: Path) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"), history_keep=3)
    async with open_history(config) as history:
        rooms = Rooms(LocalDelivery(history), config=config)
        ann = Seat(rooms, "Ann")
        rooms.enter(ann.member, "#quiet")
        rooms.say(ann.member, "q1", "#quiet")  # id 1
        for n in range(2, 12):
            await rooms.wait_writable()
            rooms.say(ann.member, f"l{n}")
        await history.store.flush()
        quiet = rooms.room("#quiet")
        assert quiet is not None and quiet.log is not None
        messages, end = await history.collect(history.replay(0, quiet.log))
        assert [m.text for m in messages] == ["q1"] and '"complete"' not in end
        messages, end = await history.collect(history.replay(0))
        assert [m.text for m in messages] == ["l9", "l10", "l11"]
        assert '"complete":false' in end
    with closing(sqlite3.connect(config.db)) as conn:
        assert conn.execute("SELECT room, COUNT(*) FROM messages GROUP BY room").fetchall() \
            == [("#lobby", 3), ("#quiet", 1)]


async def test_stored_history_is_bounded_in_bytes_across_rooms(tmp_path: Path) -> None:
    """Past the server-wide bound (the database's pages in use), the oldest messages
    of any room go first; each room's replays say what they lost."""
    text = "x" * 2000  # two to a 4 KiB page
    store = SqliteStore(str(tmp_path / "chat.db"), keep=1000, max_bytes=64 * 1024)
    async with running(store, 10) as snapshot:
        history = SqliteHistory(store, snapshot, replay=50)
        a, b = history.log("#a"), history.log("#b")
        for n in range(1, 201):  # ids 1..200, odd ones in #a: 400 KB of text
            await store.wait_writable()
            history.record("Ann", text, "T", a if n % 2 else b)
            if n % 10 == 0:
                await store.flush()
                assert store.stored_bytes <= 64 * 1024
        assert history.stored_bytes == store.stored_bytes
        with closing(sqlite3.connect(store.path)) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM messages ORDER BY id")]
        assert 10 < len(ids) < 40 and ids == list(range(ids[0], 201))  # the newest
        first = ids[0]
        messages, end = await history.collect(history.replay(0, a))
        assert [m.id for m in messages] == [i for i in ids if i % 2]
        assert '"complete":false' in end and '"room":"#a"' in end
        messages, end = await history.collect(history.replay(first - 1, b))
        assert [m.id for m in messages] == [i for i in ids if not i % 2]
        assert '"complete"' not in end


async def test_the_in_memory_history_is_one_budget_for_every_room(tmp_path: Path) -> None:
    """Many rooms' tails share one budget in bytes: the rooms used least recently give
    up theirs, and what memory no longer holds comes from the store (a plain join's
    last N, and a resume)."""
    text = "y" * 1000
    store = SqliteStore(str(tmp_path / "chat.db"), keep=1000)
    async with running(store, 10) as snapshot:
        history = SqliteHistory(store, snapshot, replay=5, memory=30_000)
        logs = [history.log(f"#r{i}") for i in range(40)]
        for round_ in range(10):
            for i, log in enumerate(logs):
                await store.wait_writable()
                history.record("Ann", f"{text} {i} {round_}", "T", log)
        assert history.tails.size == history.memory_bytes and history.tails.size <= 30_000
        assert len(history.tails) < 40  # most rooms hold nothing in memory now
        for i, log in enumerate(logs):
            messages, _ = await history.collect(history.replay(None, log))
            assert [m.text for m in messages] == [f"{text} {i} {r}" for r in range(5, 10)]
            messages, _ = await history.collect(history.replay(log.last_id - 40 * 2, log))
            assert [m.text for m in messages] == [f"{text} {i} {r}" for r in range(8, 10)]
        # The room replayed last is the last to give up its messages: the least
        # recently used room in memory keeps them, the next gives one up instead.
        oldest, second = [log for log in logs if log.messages][:2]
        history.replay(None, oldest)
        kept, before = list(oldest.messages), len(second.messages)
        history.record("Ann", text, "T", logs[-1])
        assert list(oldest.messages) == kept and len(second.messages) < before


async def test_replays_waiting_in_queues_hold_no_messages(tmp_path: Path) -> None:
    """A joiner that never reads, in many rooms: each replay waits in its queue, fixed
    at join time, but holds no message; what the rooms' tails gave up since is freed
    (the writer reads it from the store when, if ever, it renders the replay)."""
    config = replace(CONFIG, db=str(tmp_path / "chat.db"), history_memory_mb=1)
    async with open_history(config) as history:
        rooms = Rooms(LocalDelivery(history), config=config)
        speaker = Seat(rooms, "Speaker")
        lurker = Seat(rooms, "Lurker")  # never reads: everything waits in its queue
        tracemalloc.start()
        try:
            for r in range(30):
                name = f"#r{r}"
                rooms.enter(speaker.member, name)
                for n in range(100):  # 100 x 4 KB: 400 KB a room, 12 MB in all
                    await rooms.wait_writable()
                    rooms.say(speaker.member, f"{n:04d}" + "x" * 4000, name)
                    while True:  # the speaker reads its echoes
                        try:
                            speaker.inbox.receive_nowait()
                        except trio.WouldBlock:
                            break
                rooms.enter(lurker.member, name, since=0)  # owed all 100
                rooms.part(speaker.member, name)
            await history.store.flush()
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert history.memory_bytes is not None and history.memory_bytes <= 2**20
        assert held < 2 * 2**20, held  # the 1 MB of tails, not 12 MB of pinned replays


async def test_an_expired_room_is_removed_with_its_history(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"), room_expiry=3600)
    async with open_history(config) as history, trio.open_nursery() as nursery:
        rooms = Rooms(LocalDelivery(history), config=config)
        await nursery.start(rooms.run_expiry)
        ann = Seat(rooms, "Ann")
        rooms.enter(ann.member, "#old")
        rooms.say(ann.member, "in #old", "#old")
        rooms.part(ann.member, "#old")
        await trio.sleep(3600 + 3600 / 8)
        assert rooms.room("#old") is None
        await history.store.flush()
        with closing(sqlite3.connect(config.db)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
            assert conn.execute("SELECT key FROM rooms").fetchall() == [("#lobby",)]
        # Created again: a new room, no history.
        rooms.enter(ann.member, "#OLD")
        room = rooms.room("#old")
        assert room is not None and room.log is not None
        assert room.name == "#OLD" and room.log.last_id == 0
        nursery.cancel_scope.cancel()


async def test_a_removal_in_the_same_batch_takes_only_what_came_before_it(
    tmp_path: Path,
) -> None:
    """A room removed (then taken again) while its messages still wait for a commit:
    the one batch deletes the old ones and keeps the new room's."""
    store = SqliteStore(str(tmp_path / "chat.db"), keep=100)
    await store.open(10)  # no writer task: flush() commits everything as one batch
    try:
        store.put_nowait(StoredMessage(1, "Ann", "old", "T", "#room"))
        store.save_room(RoomChange("#room", drop=True))
        store.save_room(RoomChange("#room", save=("#Room", "", 0.0)))
        store.put_nowait(StoredMessage(2, "Ann", "new", "T", "#Room"))
        await store.flush()
    finally:
        await store.aclose()
    with closing(sqlite3.connect(tmp_path / "chat.db")) as conn:
        assert conn.execute("SELECT id, text, room FROM messages").fetchall() == [
            (2, "new", "#room")
        ]
        assert conn.execute("SELECT key, name FROM rooms").fetchall() == [("#room", "#Room")]


async def test_expiry_counts_from_before_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = replace(CONFIG, db=str(tmp_path / "chat.db"), room_expiry=3600)
    async with open_history(config) as history:
        rooms = Rooms(LocalDelivery(history), config=config)
        ann = Seat(rooms, "Ann")
        for name in ("#stale", "#fresh"):
            rooms.enter(ann.member, name)
            rooms.part(ann.member, name)
    with closing(sqlite3.connect(config.db)) as conn:  # #stale was last used long ago
        conn.execute("UPDATE rooms SET active = active - 3000 WHERE key = '#stale'")
        conn.commit()
    async with open_history(config) as history, trio.open_nursery() as nursery:
        rooms = Rooms(LocalDelivery(history), config=config)
        assert [r.name for r in rooms.all] == ["#lobby", "#stale", "#fresh"]
        await nursery.start(rooms.run_expiry)
        await trio.sleep(1000)
        assert [r.name for r in rooms.all] == ["#lobby", "#fresh"]
        nursery.cancel_scope.cancel()
