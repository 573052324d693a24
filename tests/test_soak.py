"""Soak: 500 clients for 30 s against a server in a child process, on 127.0.0.1.

Well-behaved chatters (TCP and WebSocket), flooders, clients that never read and
clients that connect and drop, all at once. At the end every chatter must have
received every other chatter's messages, complete and in per-sender order; every
flooder must have been told ``rate_limited`` and cut off; the server's RSS (read
from /proc, so it is the server's alone) must have stayed under RSS_BOUND_MB; and
SIGTERM must still stop it cleanly. ``make soak`` runs it (``.ci/run`` does);
``TRIO_CHAT_SOAK_SECONDS`` shortens it for a quick look.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from tests.support.admin import NAMED, Scrape, scrape
from tests.support.processes import ServerProcess, cpu_seconds, rss_mb, server_process
from tests.support.tcp import read_lines
from tests.support.ws import LeanWs
from trio_chat.protocol import RATE_LIMITED
from trio_chat.server.process import raise_nofile_limit

DURATION = float(os.environ.get("TRIO_CHAT_SOAK_SECONDS", "30"))
TCP_CHATTERS, WS_CHATTERS = 200, 100
FLOODERS = 10  # 3 of 4 on TCP, each starting at a random moment
MUTES = 80  # 60 TCP, 20 WebSocket: join, then never read
CHURNERS = 100  # connect and drop, over and over
#: Seconds between one chatter's messages: well under --rate-limit. Every message fans
#: out to ~400 clients, and the server and these 500 clients share two cores.
SEND_EVERY = 5.0
#: Server RSS bound: ~30 MB at start; queues are bounded (80 mute clients x 1024
#: lines is the largest term), so 128 MB leaves room without hiding a leak.
RSS_BOUND_MB = 128
#: Once everyone has sent, how long the last messages may take to arrive.
SETTLE = 120

pytestmark = [pytest.mark.soak, pytest.mark.timeout(DURATION + SETTLE + 180)]

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(eq=False)
class Chatter:
    name: str
    names: frozenset[str]  # every chatter, to pick their messages out
    sent: int = 0
    last: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    joined: trio.Event = field(default_factory=trio.Event)
    #: Set once it has everything from everyone (or has been cut off).
    done: trio.Event = field(default_factory=trio.Event)

    def on_line(self, line: str) -> None:
        if '"type":"chat"' in line:
            msg = json.loads(line)
            if msg["user"] in self.names:
                sender, _, seq_text = msg["text"].rpartition(":")
                seq = int(seq_text)
                expected = self.last.get(sender, -1) + 1
                if sender != msg["user"] or seq != expected:
                    self.problems.append(f"{msg['text']} from {msg['user']}, wanted {expected}")
                self.last[sender] = seq
        elif '"type":"welcome"' in line:
            self.joined.set()
        elif '"type":"error"' in line or '"event":"shutdown"' in line:
            self.problems.append(line)

    def missing(self, totals: dict[str, int]) -> int:
        return sum(total - 1 - self.last.get(name, -1) for name, total in totals.items())

    def check(self, totals: dict[str, int], all_sent: bool) -> None:
        if all_sent and not self.missing(totals):
            self.done.set()

    def cut_off(self, why: str) -> None:
        self.problems.append(why)
        self.done.set()


class Soak:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.start = trio.Event()
        self.deadline = 0.0
        self.totals: dict[str, int] = {}
        tcp = [f"T{i}" for i in range(TCP_CHATTERS)]
        ws = [f"W{i}" for i in range(WS_CHATTERS)]
        names = frozenset(tcp + ws)
        self.tcp_chatters = [Chatter(n, names) for n in tcp]
        self.ws_chatters = [Chatter(n, names) for n in ws]
        self.chatters = self.tcp_chatters + self.ws_chatters
        self.flooders_told: dict[str, bool] = {}
        self.flooders_out = trio.Event()  # set when every flooder has been cut off
        self.flooders_gone = 0
        self.closed = trio.Event()  # set when the test is over: clients close
        self.connects = 0
        self.connect_limit = trio.CapacityLimiter(50)
        self.ready = 0
        self.steady = len(self.chatters) + FLOODERS + MUTES
        self.all_ready = trio.Event()
        self.all_sent = trio.Event()
        self.all_sent_at = 0.0

    def mark_ready(self) -> None:
        self.ready += 1
        if self.ready == self.steady:
            self.all_ready.set()

    # ------------------------------------------------------------ connections

    async def tcp(self) -> trio.SocketStream:
        async with self.connect_limit:
            self.connects += 1
            return await trio.open_tcp_stream("127.0.0.1", self.server.tcp_port)

    async def ws(self, nursery: trio.Nursery, stream: trio.SocketStream) -> WebSocketConnection:
        return await wrap_client_stream(nursery, stream, "127.0.0.1", "/")

    async def ws_stream(self) -> trio.SocketStream:
        async with self.connect_limit:
            self.connects += 1
            return await trio.open_tcp_stream("127.0.0.1", self.server.ws_port)

    # ------------------------------------------------------------ chatters

    async def send_paced(self, chatter: Chatter, send: Callable[[str], Awaitable[None]]) -> None:
        await self.start.wait()
        # On a schedule, not a sleep after each send: a send that waits (a loaded
        # machine) must not push every later one back and cost the chatter a message.
        due = trio.current_time() + random.uniform(0, SEND_EVERY)
        while due < self.deadline:
            await trio.sleep_until(due)
            await send(json.dumps({"type": "chat", "text": f"{chatter.name}:{chatter.sent}"}))
            chatter.sent += 1
            due += SEND_EVERY
        self.totals[chatter.name] = chatter.sent
        if len(self.totals) == len(self.chatters):
            self.all_sent_at = trio.current_time()
            self.all_sent.set()
            for each in self.chatters:
                each.check(self.totals, True)

    async def tcp_chatter(self, chatter: Chatter) -> None:
        async with await self.tcp() as stream:

            def on_lines(lines: list[str]) -> None:
                for line in lines:
                    chatter.on_line(line)
                chatter.check(self.totals, self.all_sent.is_set())

            async def read() -> None:
                await read_lines(stream, on_lines)
                chatter.cut_off("disconnected")
                nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                join = {"type": "join", "user": chatter.name}
                await stream.send_all(json.dumps(join).encode() + b"\n")
                await chatter.joined.wait()
                self.mark_ready()
                await self.send_paced(chatter, lambda line: stream.send_all(line.encode() + b"\n"))
                await self.closed.wait()
                nursery.cancel_scope.cancel()

    async def ws_chatter(self, chatter: Chatter, batch: bool) -> None:
        async with await self.ws_stream() as stream, trio.open_nursery() as nursery:
            ws = await LeanWs.connect(stream)

            def on_message(message: str) -> None:
                for line in message.split("\n"):
                    chatter.on_line(line)
                chatter.check(self.totals, self.all_sent.is_set())

            async def read() -> None:
                await ws.read(on_message)
                chatter.cut_off(f"disconnected ({ws.close_code})")
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            await ws.send(json.dumps({"type": "join", "user": chatter.name, "batch": batch}))
            await chatter.joined.wait()
            self.mark_ready()
            await self.send_paced(chatter, ws.send)
            await self.closed.wait()
            nursery.cancel_scope.cancel()

    # ------------------------------------------------------------ misbehaving

    async def tcp_flooder(self, name: str) -> None:
        self.flooders_told[name] = False
        async with await self.tcp() as stream:
            await stream.send_all(json.dumps({"type": "join", "user": name}).encode() + b"\n")
            block = b"".join(
                json.dumps({"type": "chat", "text": f"flood {i}"}).encode() + b"\n"
                for i in range(500)
            )

            async def flood() -> None:
                await self.start.wait()
                await trio.sleep(random.uniform(0, DURATION / 2))
                with suppress(*_STREAM_ERRORS):
                    while True:
                        await stream.send_all(block)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                self.mark_ready()

                def on_lines(lines: list[str]) -> None:
                    if any('"error"' in line and RATE_LIMITED in line for line in lines):
                        self.flooders_told[name] = True

                with suppress(*_STREAM_ERRORS):
                    await read_lines(stream, on_lines)
                nursery.cancel_scope.cancel()
        self.flooder_out()

    async def ws_flooder(self, name: str) -> None:
        self.flooders_told[name] = False
        async with await self.ws_stream() as stream, trio.open_nursery() as nursery:
            ws = await LeanWs.connect(stream)
            await ws.send(json.dumps({"type": "join", "user": name}))

            async def flood() -> None:
                await self.start.wait()
                await trio.sleep(random.uniform(0, DURATION / 2))
                with suppress(*_STREAM_ERRORS):
                    for i in range(10**9):
                        await ws.send(json.dumps({"type": "chat", "text": f"flood {i}"}))

            nursery.start_soon(flood)
            self.mark_ready()
            told = []
            await ws.read(lambda m: told.append(True) if RATE_LIMITED in m else None)
            self.flooders_told[name] = bool(told) and ws.close_code == 4029
            nursery.cancel_scope.cancel()
        self.flooder_out()

    def flooder_out(self) -> None:
        self.flooders_gone += 1
        if self.flooders_gone == FLOODERS:
            self.flooders_out.set()

    async def tcp_mute(self, name: str) -> None:
        async with await self.tcp() as stream:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await stream.send_all(json.dumps({"type": "join", "user": name}).encode() + b"\n")
            self.mark_ready()
            await self.closed.wait()

    async def ws_mute(self, name: str) -> None:
        async with await self.ws_stream() as stream, trio.open_nursery() as nursery:
            ws = await self.ws(nursery, stream)  # its reader stops once its queue is full
            await ws.send_message(json.dumps({"type": "join", "user": name}))
            self.mark_ready()
            await self.closed.wait()
            nursery.cancel_scope.cancel()

    async def churner(self, index: int) -> None:
        await self.start.wait()
        rounds = 0
        while trio.current_time() < self.deadline:
            rounds += 1
            kind = random.random()
            with suppress(*_STREAM_ERRORS, ConnectionClosed):
                if index % 2:
                    stream = await self.tcp()
                    async with stream:
                        if kind < 0.1:
                            await stream.send_all(
                                json.dumps({"type": "join", "user": f"C{index}x{rounds}"}).encode()
                                + b"\n"
                            )
                        elif kind < 0.5:
                            await stream.send_all(b'{"type":"chat","te')  # and drop mid-line
                else:
                    stream = await self.ws_stream()
                    async with stream, trio.open_nursery() as nursery:
                        if kind < 0.5:  # else drop before the handshake
                            ws = await self.ws(nursery, stream)
                            if kind < 0.1:
                                await ws.send_message(
                                    json.dumps({"type": "join", "user": f"C{index}x{rounds}"})
                                )
                        nursery.cancel_scope.cancel()  # drop without a close handshake
            await trio.sleep(random.uniform(0.2, 1.0))


async def test_soak_500_clients() -> None:
    raise_nofile_limit()
    # 500 clients on one address, 100 of them reconnecting all the time: no connection
    # rate limit (it is tested on its own, tests/test_connect_rate.py).
    async with server_process(
        "--max-per-ip", "1000", "--connect-rate", "0", "--admin-port", "0"
    ) as server:
        await run_soak(server)
        log = "\n".join(await server.rest_of_log())
    assert "Traceback" not in log and " failed" not in log
    slow = sum(" disconnect " in line and "(slow_consumer)" in line for line in server.log)
    print(f"soak: {slow} clients that never read were dropped as slow consumers")


def check_metrics(middle: Scrape, end: Scrape, sent: int, chatters: int) -> None:
    """The soak's traffic, as /metrics saw it: every named metric present, counters
    only growing, and what is known of the traffic counted."""
    for name, kind in NAMED.items():
        assert end.families[name].type == kind, name
    for name in ("trio_chat_deliveries", "trio_chat_connections_accepted",
                 "trio_chat_messages_broadcast", "trio_chat_sent_bytes",
                 "trio_chat_event_loop_lag_seconds_count", "process_cpu_seconds"):
        for sample in end.families[name.removesuffix("_count")].samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            before = next((s.value for s in middle.families[
                name.removesuffix("_count")].samples
                if s.name == sample.name and s.labels == sample.labels), 0.0)
            assert sample.value >= before, (sample, before)
    received = sum(s.value for s in end.families["trio_chat_messages_received"].samples
                   if s.name.endswith("_total"))
    assert received >= sent  # the chatters', and the flooders' and churners'
    assert end.value("trio_chat_deliveries") > middle.value("trio_chat_deliveries")
    assert end.value("trio_chat_members") >= chatters
    assert end.value("trio_chat_disconnects", reason="rate_limited") >= FLOODERS
    assert end.value("trio_chat_errors", code="rate_limited") >= FLOODERS
    assert end.value("trio_chat_disconnects", reason="slow_consumer") >= 1  # the mutes
    # The mutes' queues filled (up to --queue-size; some were cut by --send-timeout first).
    assert 1 < end.value("trio_chat_queue_depth_high_water") <= 1024
    assert end.value("trio_chat_rate_limit_delays") >= FLOODERS
    assert end.value("trio_chat_event_loop_lag_seconds_count") > 0
    print(f"soak: /metrics counted {received:.0f} chat messages received, "
          f"{end.value('trio_chat_deliveries'):.0f} deliveries, "
          f"{end.value('trio_chat_disconnects', reason='slow_consumer'):.0f} slow consumers")


async def run_soak(server: ServerProcess) -> None:
    async with trio.open_nursery() as nursery:
        soak = Soak(server)
        baseline = rss_mb(server.pid)
        peak = [baseline]

        rss_watch = trio.CancelScope()

        async def watch_rss() -> None:
            with rss_watch:
                while True:
                    peak[0] = max(peak[0], rss_mb(server.pid))
                    await trio.sleep(0.25)

        nursery.start_soon(watch_rss)
        for chatter in soak.tcp_chatters:
            nursery.start_soon(soak.tcp_chatter, chatter)
        for i, chatter in enumerate(soak.ws_chatters):
            nursery.start_soon(soak.ws_chatter, chatter, i % 2 == 0)
        for i in range(FLOODERS):
            nursery.start_soon(soak.tcp_flooder if i % 4 else soak.ws_flooder, f"F{i}")
        for i in range(MUTES):
            nursery.start_soon(soak.tcp_mute if i % 4 else soak.ws_mute, f"M{i}")
        with trio.fail_after(120):
            await soak.all_ready.wait()
        for i in range(CHURNERS):
            nursery.start_soon(soak.churner, i)
        began = trio.current_time()
        soak.deadline = began + DURATION
        soak.start.set()

        assert server.admin_port is not None
        await trio.sleep(DURATION / 2)
        middle = await scrape(server.admin_port)  # a real scrape half-way through the load
        with trio.move_on_after(DURATION + SETTLE):
            for chatter in soak.chatters:
                await chatter.done.wait()
        if os.environ.get("TRIO_CHAT_SOAK_LOG"):  # the server's log, for a post-mortem
            await trio.Path(os.environ["TRIO_CHAT_SOAK_LOG"]).write_text("\n".join(server.log))
        missing = {c.name: c.missing(soak.totals) for c in soak.chatters if c.missing(soak.totals)}
        problems = {c.name: c.problems[:3] for c in soak.chatters if c.problems}
        assert not problems, f"{len(problems)} chatters had problems: {problems}"
        assert len(soak.totals) == len(soak.chatters), "some chatters never finished sending"
        assert not missing, f"{len(missing)} chatters are missing messages: {missing}"
        settled = trio.current_time() - soak.all_sent_at
        cpu = cpu_seconds(server.pid)
        assert server.process.returncode is None, "the server died"

        sent = sum(soak.totals.values())
        print(
            f"\nsoak: {len(soak.chatters)} chatters sent {sent} messages, each received by"
            f" all {len(soak.chatters)} within {settled:.1f}s of the last send;"
            f" {soak.connects} connections in all;"
            f" server RSS {baseline:.0f} MB at start, peak {peak[0]:.0f} MB;"
            f" server CPU {cpu:.1f}s over {trio.current_time() - began:.1f}s"
        )
        assert all(total >= DURATION // SEND_EVERY - 1 for total in soak.totals.values())
        with trio.move_on_after(60):  # the last flooder started by DURATION / 2
            await soak.flooders_out.wait()
        assert soak.flooders_told == {f"F{i}": True for i in range(FLOODERS)}
        assert peak[0] < RSS_BOUND_MB
        check_metrics(middle, await scrape(server.admin_port), sent, len(soak.chatters))

        # Everyone well-behaved is still here; the server still stops cleanly. (Its
        # RSS is no longer read: an exited, not yet reaped server has none.)
        rss_watch.cancel()
        server.signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await server.process.wait() == 0
        soak.closed.set()
        nursery.cancel_scope.cancel()
