"""Cluster soak: three real servers on one real Redis, under load and faults.

Thirty chatters (TCP and WebSocket) spread over three ``trio-chat serve --redis``
processes each send a numbered message every SEND_EVERY seconds, all at the same
ticks, so that each fault lands while a burst is on its way through Redis. Redis
crashes and comes back empty, Redis drops every client connection (``CLIENT KILL``),
one server is SIGKILLed (its chatters rejoin another server with ``since``), and
Redis crashes empty again before the others have given the dead server up (its
chatters rejoin during that outage). At the end every chatter resumes with ``since``
= the highest id it saw, on another server, and docs/protocol.md's contract for
several servers is checked:

- the history is one sequence: no id twice, no message under two ids, each sender's
  messages in its order; every server holds the same one;
- every acknowledged message (its sender got it back with an id) is in it, under
  that id, and so is every message delivered during an outage (without an id) on a
  server that survived;
- every message sent to a surviving server is in it;
- every chatter saw every message of the history exactly once (live, with or without
  an id, or in a replay), each sender's in order; the one documented repeat: an
  outage copy replayed again with its id by a resume from below that id, with the
  same user, text and timestamp;
- every server's RSS stayed bounded, and the survivors stop on SIGTERM with status 0.

``make soak`` runs it; ``TRIO_CHAT_SOAK_SECONDS`` shortens it (as for test_soak.py).
Only 127.0.0.1 is used, and it stops by itself.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.processes import ServerProcess, rss_mb, server_process
from tests.support.redis import RedisServer
from tests.support.tcp import TcpClient, read_lines
from tests.support.ws import LeanWs

DURATION = float(os.environ.get("TRIO_CHAT_SOAK_SECONDS", "40"))
SERVERS = 3
CHATTERS = 30  # 10 per server; odd ones on WebSocket (half of those batched)
#: Seconds between one chatter's messages: 60 messages/s in the room, 1,800
#: deliveries/s over the three servers (the machine has two cores for all of it).
#: Everyone sends at the same ticks (within SPREAD): bursts, so that a fault can
#: land while messages are on their way through Redis (FAULT_OFFSET after a tick).
SEND_EVERY = 0.5
SPREAD, FAULT_OFFSET = 0.01, 0.015
TTL = 2.0  # --presence-ttl: the killed server's names are free within 1.25 x TTL
#: When the faults happen, as fractions of DURATION. Redis crashes empty again at the
#: first tick SECOND_CRASH seconds after the server is killed: the others have not
#: given it up yet (they wait for it, in vain), and its clients, who rejoin them
#: REJOIN_AFTER seconds after they lost it (a client's backoff), do so during that
#: outage, after a tick of messages delivered without ids.
REDIS_CRASH_AT, CLIENT_KILL_AT, SERVER_KILL_AT = 0.2, 0.35, 0.5
SECOND_CRASH, REJOIN_AFTER = 0.2, 1.2
#: Seconds Redis stays down before it comes back empty.
OUTAGE = 2.0
KILLED = SERVERS - 1  # the server that is SIGKILLed
#: Server RSS bound (each): ~40 MB at start; everything is bounded (history ring of
#: --history-keep messages, queues, outbox), so this leaves room without hiding a leak.
RSS_BOUND_MB = 128
#: Once everyone has sent its last message, how long it may take to arrive.
SETTLE = 60
#: A directory: the servers' logs and every chatter's lines are written there.
TRACE = os.environ.get("TRIO_CHAT_CLUSTER_SOAK_LOG")

pytestmark = [pytest.mark.soak, pytest.mark.timeout(DURATION + SETTLE + 180)]

STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
Key = tuple[str, int]  # (sender, its message number)


@dataclass(eq=False)
class Chatter:
    name: str
    index: int
    server: int  # where it is connected now (or was last)
    tcp: bool
    batch: bool
    names: frozenset[str]
    sent: int = 0
    final: int | None = None  # the number of its last message
    max_id: int = 0
    #: Every copy of every message it saw: key -> [id, or None for an outage delivery].
    copies: dict[Key, list[int | None]] = field(default_factory=lambda: defaultdict(list))
    last_seq: dict[str, int] = field(default_factory=dict)  # per sender, in arrival order
    sent_to: dict[int, int] = field(default_factory=dict)  # its own number -> server
    acked: dict[int, int] = field(default_factory=dict)  # its own number -> id
    #: Its own messages it saw without an id: number -> the server it was on.
    local_own: dict[int, int] = field(default_factory=dict)
    #: Messages it saw without an id: key -> timestamp.
    local_ts: dict[Key, str] = field(default_factory=dict)
    #: Of those, the ones a resume replayed again (with their id), as documented.
    repeats: dict[Key, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    reconnects: int = 0
    pending_replays: int = 0  # replayed without an id (joined during an outage)
    since: int | None = None  # of the current session
    welcomed: trio.Event = field(default_factory=trio.Event)
    replayed: trio.Event = field(default_factory=trio.Event)  # history_end came
    gone: trio.Event = field(default_factory=trio.Event)  # the connection dropped
    id_times: list[float] = field(default_factory=list)  # arrivals with an id
    rejoined_at: float | None = None  # after its server was killed
    trace: list[str] = field(default_factory=list)  # with TRACE: every line, timed

    def on_line(self, line: str) -> None:
        if TRACE:
            self.trace.append(f"{trio.current_time():.3f} s{self.server} {line}")
        msg = json.loads(line)
        kind = msg["type"]
        if kind == "chat":
            self.on_chat(msg)
        elif kind == "welcome":
            self.welcomed.set()
        elif kind == "history_end":
            self.replayed.set()
        elif kind == "error" and msg.get("code") != "name_taken":
            self.problems.append(f"on server {self.server}: {line}")

    def on_chat(self, msg: dict[str, Any]) -> None:
        sender, _, number = msg["text"].rpartition(":")
        if sender != msg["user"] or sender not in self.names:
            self.problems.append(f"a stranger's message: {msg}")
            return
        seq = int(number)
        ident = msg.get("id")
        history = msg.get("history", False)
        # A replay without an id: delivered on that server during an outage, not yet
        # back from Redis (docs/protocol.md).
        if history and ident is not None and (self.since is None or ident <= self.since):
            self.problems.append(f"replayed {msg} for since={self.since}")
        self.pending_replays += history and ident is None
        if not history and ident is not None and ident <= self.max_id:
            self.problems.append(f"live {msg} after id {self.max_id}: out of id order")
        key = (sender, seq)
        if history and ident is not None and key in self.local_ts:
            # docs/protocol.md: a resume from below the id an outage message got later
            # replays it; the same user, text and timestamp tell it is the same one.
            if msg["timestamp"] != self.local_ts[key] or key in self.repeats:
                self.problems.append(f"{msg} replayed after an outage copy {self.copies[key]}")
            self.repeats[key] = ident
            self.max_id = max(self.max_id, ident)
            return
        self.copies[key].append(ident)
        if ident is None:
            self.local_ts[key] = msg["timestamp"]
        if seq <= self.last_seq.get(sender, -1):
            self.problems.append(
                f"{sender}:{seq} ({'replay' if history else 'live'}, id {ident}) after"
                f" {sender}:{self.last_seq[sender]}"
            )
        self.last_seq[sender] = max(seq, self.last_seq.get(sender, -1))
        if ident is not None:
            self.max_id = max(self.max_id, ident)
            self.id_times.append(trio.current_time())
            if sender == self.name:
                self.acked[seq] = ident
        elif sender == self.name:
            self.local_own[seq] = self.server


class Conn:
    """One chat connection, TCP or WebSocket, read by a task that feeds on_line."""

    def __init__(self, send: Callable[[str], Awaitable[None]]) -> None:
        self.send = send


@asynccontextmanager
async def connect(chatter: Chatter, port_of: Callable[[int, bool], int]) -> AsyncIterator[Conn]:
    """Connect ``chatter`` to its server; lines go to ``on_line`` until the
    connection drops (then ``gone`` is set)."""
    chatter.gone = trio.Event()
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(chatter.server, chatter.tcp))
    async with stream, trio.open_nursery() as nursery:
        if chatter.tcp:

            def on_lines(lines: list[str]) -> None:
                for line in lines:
                    chatter.on_line(line)

            async def read_tcp() -> None:
                await read_lines(stream, on_lines)
                chatter.gone.set()

            nursery.start_soon(read_tcp)
            conn = Conn(lambda line: stream.send_all(line.encode() + b"\n"))
        else:
            ws = await LeanWs.connect(stream)

            def on_message(message: str) -> None:
                for line in message.split("\n"):
                    chatter.on_line(line)

            async def read_ws() -> None:
                await ws.read(on_message)
                chatter.gone.set()

            nursery.start_soon(read_ws)
            conn = Conn(ws.send)
        try:
            yield conn
        finally:
            nursery.cancel_scope.cancel()


class ClusterSoak:
    def __init__(self, redis: RedisServer, servers: list[ServerProcess]) -> None:
        self.redis = redis
        self.servers = servers
        self.alive = [True] * SERVERS
        names = frozenset(f"c{i}" for i in range(CHATTERS))
        self.chatters = [
            Chatter(f"c{i}", i, i % SERVERS, tcp=i % 2 == 0, batch=i % 4 == 1, names=names)
            for i in range(CHATTERS)
        ]
        self.start = trio.Event()
        self.began = self.deadline = 0.0
        self.ready = 0
        self.all_ready = trio.Event()
        self.resume = trio.Event()  # sending is over and settled: the final resumes
        self.resumed = 0
        self.all_resumed = trio.Event()
        self.times: dict[str, float] = {}

    def port(self, server: int, tcp: bool) -> int:
        process = self.servers[server]
        return process.tcp_port if tcp else process.ws_port

    def tick(self, after: float | None = None) -> float:
        """The first sending tick after ``after`` (now by default)."""
        moment = trio.current_time() if after is None else after
        return self.began + (math.floor((moment - self.began) / SEND_EVERY) + 1) * SEND_EVERY

    def survivors(self) -> list[int]:
        return [i for i in range(SERVERS) if self.alive[i]]

    async def send(self, conn: Conn, chatter: Chatter) -> None:
        chatter.sent_to[chatter.sent] = chatter.server
        chatter.sent += 1
        await conn.send(json.dumps({"type": "chat", "text": f"{chatter.name}:{chatter.sent - 1}"}))

    # ------------------------------------------------------------ one chatter

    async def session(self, chatter: Chatter, since: int | None, *, final: bool = False) -> None:
        """One connection: join (retrying while the name is still held elsewhere),
        then chat until told to stop or the connection drops."""
        chatter.since = since
        chatter.welcomed = trio.Event()
        chatter.replayed = trio.Event()
        async with connect(chatter, self.port) as conn:
            join: dict[str, Any] = {"type": "join", "user": chatter.name, "batch": chatter.batch}
            if since is not None:
                join["since"] = since
            while not chatter.welcomed.is_set():
                await conn.send(json.dumps(join))
                with trio.move_on_after(0.5):
                    await chatter.welcomed.wait()
                if chatter.gone.is_set():
                    return
            with trio.fail_after(30):
                await chatter.replayed.wait()
            if chatter.reconnects and chatter.rejoined_at is None:
                chatter.rejoined_at = trio.current_time()
            if final:
                return
            if not self.start.is_set():
                self.ready += 1
                if self.ready == CHATTERS:
                    self.all_ready.set()
            await self.start.wait()
            async with trio.open_nursery() as nursery:

                async def dropped() -> None:
                    await chatter.gone.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(dropped)
                try:
                    while True:
                        await trio.sleep_until(self.tick() + random.uniform(0, SPREAD))
                        if trio.current_time() >= self.deadline:
                            break
                        await self.send(conn, chatter)
                    if chatter.final is None:
                        chatter.final = chatter.sent
                        await self.send(conn, chatter)
                except STREAM_ERRORS:
                    await trio.sleep_forever()  # until dropped() notices
                await self.resume.wait()
                nursery.cancel_scope.cancel()

    async def chatter_life(self, chatter: Chatter) -> None:
        await self.session(chatter, since=0)
        while not self.resume.is_set():
            # The connection dropped: its server was killed. Rejoin another with since.
            if self.alive[chatter.server]:
                chatter.problems.append(f"dropped by live server {chatter.server}")
            chatter.reconnects += 1
            survivors = self.survivors()
            chatter.server = survivors[chatter.index % len(survivors)]
            await trio.sleep(REJOIN_AFTER)
            await self.session(chatter, since=chatter.max_id)
        # The end: resume on another surviving server, from the highest id seen.
        survivors = self.survivors()
        chatter.server = survivors[(survivors.index(chatter.server) + 1) % len(survivors)]
        await self.session(chatter, since=chatter.max_id, final=True)
        self.resumed += 1
        if self.resumed == CHATTERS:
            self.all_resumed.set()

    # ------------------------------------------------------------ the faults

    async def faults(self) -> None:
        began = self.began

        async def crash_redis(n: int, at: float) -> None:
            await trio.sleep_until(self.tick(at) + FAULT_OFFSET)
            await trio.to_thread.run_sync(self.redis.kill)
            self.times[f"redis down {n}"] = trio.current_time()
            await trio.sleep(OUTAGE)
            await trio.to_thread.run_sync(self.redis.start)
            self.times[f"redis up {n}"] = trio.current_time()

        await crash_redis(0, began + REDIS_CRASH_AT * DURATION)
        await trio.sleep_until(self.tick(began + CLIENT_KILL_AT * DURATION) + FAULT_OFFSET)
        killed = await trio.to_thread.run_sync(
            self.redis.command, "CLIENT", "KILL", "TYPE", "normal"
        )
        self.times["client kill"] = trio.current_time()
        self.times["client kill count"] = killed
        await trio.sleep_until(self.tick(began + SERVER_KILL_AT * DURATION) + FAULT_OFFSET)
        self.alive[KILLED] = False
        self.servers[KILLED].signal(signal.SIGKILL)
        self.times["server kill"] = trio.current_time()
        await crash_redis(1, self.times["server kill"] + SECOND_CRASH)

    def recovery(self, moment: str) -> float:
        """Seconds from ``moment`` until every chatter had a message with an id again."""
        t = self.times.get(moment)
        if t is None:
            return float("nan")
        firsts = [next((x for x in c.id_times if x >= t), float("inf")) for c in self.chatters]
        return max(firsts) - t


async def read_history(port: int, name: str) -> list[dict[str, Any]]:
    """Everything a server holds: a fresh client resuming from 0."""
    async with await TcpClient.connect(port) as client:
        await client.send({"type": "join", "user": name, "since": 0})
        history = []
        while True:
            msg = await client.recv()
            if msg["type"] == "chat":
                history.append(msg)
            elif msg["type"] == "history_end":
                assert msg.get("complete", True), msg
                return history


async def test_cluster_soak() -> None:
    from tests.support.redis import redis_server_or_skip
    from trio_chat.server.process import raise_nofile_limit

    raise_nofile_limit()
    with redis_server_or_skip() as redis:
        args = ("--redis", redis.url, "--presence-ttl", str(TTL), "--rate-limit", "0",
                "--history-keep", "100000", "--max-per-ip", "1000", "--connect-rate", "0")
        async with AsyncExitStack() as stack:
            servers = [await stack.enter_async_context(server_process(*args))
                       for _ in range(SERVERS)]
            await run(ClusterSoak(redis, servers))


async def run(soak: ClusterSoak) -> None:
    servers = soak.servers
    peak = [rss_mb(s.pid) for s in servers]
    baseline = list(peak)

    async with trio.open_nursery() as nursery:

        rss_watch = trio.CancelScope()

        async def watch_rss() -> None:
            with rss_watch:
                while True:
                    for i, server in enumerate(servers):
                        if soak.alive[i]:
                            peak[i] = max(peak[i], rss_mb(server.pid))
                    await trio.sleep(0.25)

        nursery.start_soon(watch_rss)
        for chatter in soak.chatters:
            nursery.start_soon(soak.chatter_life, chatter)
        with trio.fail_after(60):
            await soak.all_ready.wait()
        began = soak.began = trio.current_time()
        soak.deadline = began + DURATION
        soak.start.set()
        nursery.start_soon(soak.faults)

        # Everyone sends until the deadline, then one last message; wait until every
        # chatter has every chatter's last message.
        await trio.sleep_until(soak.deadline)
        settled = False
        with trio.move_on_after(SETTLE):
            while not settled:
                await trio.sleep(0.2)
                finals = [(c.name, c.final) for c in soak.chatters]
                settled = all(f is not None for _, f in finals) and all(
                    (name, final) in c.copies for c in soak.chatters for name, final in finals
                )
        settle_time = trio.current_time() - soak.deadline
        soak.resume.set()
        with trio.fail_after(60):
            await soak.all_resumed.wait()

        histories = [await read_history(servers[i].tcp_port, f"audit{i}")
                     for i in soak.survivors()]
        logs = {i: list(servers[i].log) for i in range(SERVERS)}

        # The survivors stop cleanly. (Their RSS is no longer read: an exited, not yet
        # reaped server has none.)
        rss_watch.cancel()
        for i in soak.survivors():
            servers[i].signal(signal.SIGTERM)
        codes = {}
        with trio.fail_after(30):
            for i in soak.survivors():
                codes[i] = await servers[i].process.wait()
        nursery.cancel_scope.cancel()

    if TRACE:
        for i, lines in logs.items():
            (Path(TRACE) / f"server{i}.log").write_text("\n".join(lines))
        for c in soak.chatters:
            (Path(TRACE) / f"{c.name}.log").write_text("\n".join(c.trace))
        for name, t in soak.times.items():
            print(f"{name}: {t:.3f}")
    report(soak, histories, logs, codes, baseline, peak, settled, settle_time)


def report(
    soak: ClusterSoak,
    histories: list[list[dict[str, Any]]],
    logs: dict[int, list[str]],
    codes: dict[int, int],
    baseline: list[float],
    peak: list[float],
    settled: bool,
    settle_time: float,
) -> None:
    chatters = soak.chatters
    history = histories[0]
    failures: list[str] = []

    def fail(text: str) -> None:
        failures.append(text)

    # One history, the same on every surviving server.
    for other in histories[1:]:
        if other != history:
            a = {(m["id"], m["text"]) for m in history}
            b = {(m["id"], m["text"]) for m in other}
            fail(f"servers' histories differ: {sorted(a - b)[:5]} vs {sorted(b - a)[:5]}")
    ids = [m["id"] for m in history]
    if ids != sorted(set(ids)):
        fail("history ids not strictly increasing")
    by_key: dict[Key, int] = {}
    for m in history:
        sender, _, number = m["text"].rpartition(":")
        key = (sender, int(number))
        if key in by_key:
            fail(f"{m['text']} under two ids: {by_key[key]} and {m['id']}")
        by_key[key] = m["id"]
    per_sender: dict[str, list[int]] = defaultdict(list)
    for sender, seq in by_key:  # in id order
        per_sender[sender].append(seq)
    for sender, seqs in per_sender.items():
        if seqs != sorted(seqs):
            fail(f"{sender}'s messages out of order in the history: {seqs[:20]}")

    # Every message sent to a surviving server is in it; every acknowledged one under
    # its id, and every one delivered during an outage.
    acked = lost_outage = outage_messages = lost_sent = 0
    for c in chatters:
        for seq, server in c.sent_to.items():
            if (c.name, seq) not in by_key:
                if server == KILLED:
                    lost_sent += 1
                else:
                    fail(f"{c.name}:{seq}, sent to live server {server}, is not in the history")
        for seq, ident in c.acked.items():
            acked += 1
            if by_key.get((c.name, seq)) != ident:
                fail(f"acknowledged {c.name}:{seq} (id {ident}) is"
                     f" {by_key.get((c.name, seq), 'missing')}")
        for seq, server in c.local_own.items():
            outage_messages += 1
            if (c.name, seq) not in by_key:
                if server == KILLED:
                    lost_outage += 1
                else:
                    fail(f"outage message {c.name}:{seq} on live server {server} never got an id")

    # Every chatter saw every message of the history exactly once, each sender's in
    # order (checked on arrival), and nothing the history does not have.
    for c in chatters:
        for problem in c.problems[:5]:
            fail(f"{c.name}: {problem}")
        missing = [k for k in by_key if k not in c.copies]
        if missing:
            fail(f"{c.name} (server {c.server}, {c.reconnects} reconnections) never saw"
                 f" {len(missing)} messages, e.g. {missing[:5]}")
        for key, seen in c.copies.items():
            if len(seen) != 1:
                fail(f"{c.name} saw {key} {len(seen)} times: ids {seen}")
            elif seen[0] is not None and by_key.get(key) != seen[0]:
                fail(f"{c.name} saw {key} as id {seen[0]}; the history has {by_key.get(key)}")
            elif key not in by_key and seen[0] is not None:
                fail(f"{c.name} saw {key} (id {seen[0]}), which is not in the history")
        for key, ident in c.repeats.items():
            if by_key.get(key) != ident:
                fail(f"{c.name} was replayed {key} as id {ident}; the history has"
                     f" {by_key.get(key)}")

    if not settled:
        fail(f"not every chatter got every last message within {SETTLE} s")
    for i, code in codes.items():
        if code != 0:
            fail(f"server {i} exited with {code} on SIGTERM")
    noise = 0
    for i, lines in logs.items():
        logger, traced = "", False
        for line in lines:
            if line[:4].isdigit():  # a record: "date time LEVEL logger: message"
                logger, traced = line.split()[3].rstrip(":"), False
            elif "Traceback" in line and not traced:
                traced = True
                # coredis logs one (at ERROR) when a connection attempt is cancelled
                # because the link went down meanwhile: noise, not a failure.
                if logger != "coredis":
                    fail(f"server {i} logged a traceback in a {logger!r} record")
                noise += 1
    for i in range(SERVERS):
        if peak[i] >= RSS_BOUND_MB:
            fail(f"server {i} RSS peaked at {peak[i]:.0f} MB")

    killed_chatters = [c for c in chatters if c.reconnects]
    rejoin = max((c.rejoined_at or float("inf")) for c in killed_chatters) if killed_chatters \
        else float("nan")
    waits = sum("did not come back" in line for lines in logs.values() for line in lines)
    repeats = sum(len(c.repeats) for c in chatters)
    outages = sum("lost Redis" in line for lines in logs.values() for line in lines)
    restores = sum("without its data" in line for lines in logs.values() for line in lines)
    times = soak.times
    print(
        f"\ncluster soak: {CHATTERS} chatters on {SERVERS} servers sent"
        f" {sum(c.sent for c in chatters)} messages; history {len(history)};"
        f" {acked} acknowledged; {outage_messages} delivered without an id during"
        f" outages ({lost_outage} lost with the killed server);"
        f" {lost_sent} sent to the killed server never got anywhere;"
        f" {repeats} outage copies replayed again by the final resumes;"
        f" {sum(c.pending_replays for c in chatters)} replayed without an id to joiners;"
        f"\n  {outages} Redis losses logged ({restores} found Redis empty,"
        f" {waits} gave up waiting for a server; {noise} coredis tracebacks);"
        f" CLIENT KILL closed {times.get('client kill count')} connections;"
        f" {sum(c.reconnects for c in chatters)} reconnections after the SIGKILL;"
        f"\n  every chatter had ids again {soak.recovery('redis up 0'):.1f} and"
        f" {soak.recovery('redis up 1'):.1f} s after Redis came back empty (twice),"
        f" {soak.recovery('client kill'):.1f} s after CLIENT KILL; the killed server's"
        f" chatters rejoined within {rejoin - times.get('server kill', 0):.1f} s;"
        f"\n  settled {settle_time:.1f} s after the last send;"
        f" RSS MB start/peak {[f'{b:.0f}/{p:.0f}' for b, p in zip(baseline, peak, strict=True)]};"
        f" exit codes {codes}"
    )
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
