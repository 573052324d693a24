"""How many chat messages per second trio-chat persists (a benchmark, not a test).

Two measurements, each against a peer measured in the same run:

* ``store``: messages pushed through ``SqliteHistory.record`` (the call the room makes,
  with its backpressure wait) into a real SQLite file, timed until all are committed.
  Peer: the same store committing one message per transaction (``max_pending=1``).
* ``server``: a real ``trio-chat serve`` subprocess with a file database; several TCP
  clients send as fast as the server takes them; timed from the first send until a
  separate SQLite reader sees the last message committed. Peer: the same run with
  ``--db :memory:``. Both are also timed until the first client has every echo.

Run: ``.venv/bin/python -m trio_chat.bench.store`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from trio_chat.history.sqlite import SqliteHistory, SqliteStore
from trio_chat.history.writer import running

SENDERS = 4
TS = "2026-11-26T19:00:00.000Z"
READ = 256  # lines per socket read: ~64 KiB of such chat lines arrive in one read
LISTENING = re.compile(rb"trio-chat listening: tcp://127\.0\.0\.1:(\d+)")


async def store_rate(path: str, messages: int, keep: int, max_pending: int) -> float:
    """Like SENDERS sessions' readers: each takes READ lines per socket read (yielding
    between reads) and hands each to the store as ``Room.say`` does."""
    store = SqliteStore(path, keep=keep, max_pending=max_pending)
    async with running(store, 0) as snapshot:
        history = SqliteHistory(store, snapshot, replay=50)

        async def sender(k: int, count: int) -> None:
            for start in range(0, count, READ):
                await trio.lowlevel.checkpoint()  # the socket read
                for n in range(start, min(start + READ, count)):
                    await store.wait_writable()
                    history.record(f"sender{k}", f"message {n} " + "x" * 50, TS)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(SENDERS):
                nursery.start_soon(sender, k, messages // SENDERS)
        await store.flush()
        elapsed = time.perf_counter() - start
    return messages // SENDERS * SENDERS / elapsed


async def server_rate(db: str, clients: int, per_client: int) -> float:
    """Messages/s from the first send until the first client has every echo and (for a
    file) a separate reader sees the last message committed."""
    command = [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
               "--db", db, "--queue-size", "1000000", "--rate-limit", "0"]
    process = await trio.lowlevel.open_process(command, stderr=-1)
    assert process.stderr is not None
    seen = b""
    while not (match := LISTENING.search(seen)):
        chunk = await process.stderr.receive_some()
        if not chunk:
            raise SystemExit(f"server did not start: {seen.decode()}")
        seen += chunk
    port = int(match.group(1))
    total = clients * per_client
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr)
            streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(clients)]
            for k, stream in enumerate(streams):
                await stream.send_all(json.dumps({"type": "join", "user": f"b{k}"}).encode()
                                      + b"\n")
            payload = [
                b"".join(json.dumps({"type": "chat", "text": f"b{k}-{n} " + "x" * 50}).encode()
                         + b"\n" for n in range(per_client))
                for k in range(clients)
            ]
            seen_by_first = trio.Event()
            start = time.perf_counter()
            for k, stream in enumerate(streams):
                nursery.start_soon(stream.send_all, payload[k])
                nursery.start_soon(_read, stream, total if k == 0 else None, seen_by_first)
            await seen_by_first.wait()
            if db != ":memory:":
                await trio.to_thread.run_sync(_wait_committed, db, total)
            elapsed = time.perf_counter() - start
            for stream in streams:
                await stream.aclose()
            nursery.cancel_scope.cancel()
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
    return total / elapsed


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


async def _read(stream: trio.SocketStream, total: int | None, event: trio.Event) -> None:
    count = 0
    partial = b""
    try:
        while data := await stream.receive_some(1 << 16):
            *lines, partial = (partial + data).split(b"\n")
            count += sum(line.startswith(b'{"type":"chat"') for line in lines)
            if total is not None and count >= total:
                event.set()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _wait_committed(db: str, total: int) -> None:
    """Poll from another connection, as a separate reader would (WAL)."""
    conn = sqlite3.connect(db)
    try:
        while True:
            try:
                (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
            except sqlite3.OperationalError:
                last = 0  # not created yet
            if last >= total:
                return
            time.sleep(0.005)
    finally:
        conn.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        grouped = await store_rate(db, args.messages, args.keep, 1024)
        single = await store_rate(str(Path(tmp) / "single.db"), args.single, args.keep, 1)
        print(f"store  group commit (batches <= 1024): {grouped:10,.0f} messages/s persisted"
              f"  ({args.messages:,} messages, keep {args.keep:,})")
        print(f"store  one commit per message (peer):  {single:10,.0f} messages/s persisted"
              f"  ({args.single:,} messages)  -> group commit x{grouped / single:.1f}")
        if args.clients:
            per = args.server_messages // args.clients
            on_disk = await server_rate(str(Path(tmp) / "server.db"), args.clients, per)
            in_memory = await server_rate(":memory:", args.clients, per)
            print(f"server {args.clients} TCP senders, file db:        {on_disk:10,.0f}"
                  f" messages/s persisted  ({per * args.clients:,} messages)")
            print(f"server same, --db :memory: (peer):    {in_memory:10,.0f}"
                  f" messages/s delivered  -> file db at {on_disk / in_memory:.0%} of it")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The sizes, each large enough to give a figure (so no rate divides by zero)."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.bench.store", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--messages", type=int, default=200_000,
                        help=f"messages for the group-commit store (at least {SENDERS})")
    parser.add_argument("--single", type=int, default=5_000,
                        help="messages for the one-commit-per-message peer")
    parser.add_argument("--keep", type=int, default=10_000, help="rows the store keeps")
    parser.add_argument("--clients", type=int, default=4, help="0 skips the server part")
    parser.add_argument("--server-messages", type=int, default=40_000,
                        help="messages sent to the server, shared by the clients")
    args = parser.parse_args(argv)
    if args.messages < SENDERS:
        parser.error(f"--messages must be at least {SENDERS} (one per simulated sender)")
    if args.single < 1 or args.keep < 1 or args.clients < 0:
        parser.error("--single and --keep must be at least 1, --clients at least 0")
    if args.clients and args.server_messages < args.clients:
        parser.error("--server-messages must be at least --clients (one per client)")
    return args


if __name__ == "__main__":
    trio.run(main, parse_args())
