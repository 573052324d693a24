"""Fan-out benchmark: trio-chat against peer servers, measured in one run.

The parent process (synchronous) starts each server in turn (trio-chat in several
modes, then every peer given as a command and a URL), starts loader processes, and
measures the server with psutil. Loaders are separate processes running Trio; each
holds a share of the clients. They are built to be cheap per delivery, since they
share the machine with the server:

- a receiver only counts deliveries: ``bytes.count`` of a marker in whatever
  arrived, with no JSON parsing and no WebSocket frame parsing (server frames are
  unmasked, so a message's text appears verbatim in the byte stream);
- probes (every ``probe_every``-th client) also read each delivery's send time with
  one regular expression over the chunk, for latency;
- a sender counts its own marker to know how many of its messages came back
  (closed loop: at most ``window`` in flight), or sends at a fixed rate;
- WebSocket client frames use an all-zero mask key (valid; the XOR is a no-op).

Cluster mode (``--cluster N``) runs the same load against 1, 2, ... N ``trio-chat
serve --redis URL`` processes sharing one room through one redis-server started for
each measurement; the clients (senders and the others alike) are spread round-robin
over the processes, so most deliveries cross Redis.

A chat text is ``bench#<sender>#<seq>#<monotonic ns>#``. ``time.monotonic_ns`` is
CLOCK_MONOTONIC, shared by all processes on the machine, so latency is send to
receive on the loaders' clock.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import multiprocessing
import os
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import trio

from .redis_server import RedisServer, free_port

MARK = b"bench#"
MESSAGE = re.compile(rb"bench#(\d+)#(\d+)#(\d+)#")
WELCOME = b'"type":"welcome"'
HANDSHAKE_END = b"\r\n\r\n"
RECEIVE_SIZE = 256 * 1024
#: A loader above this share of one core was the bottleneck, not the server.
SATURATED = 0.90
MODES = ("tcp", "ws", "ws-batch")
#: trio-chat as the peers run: no flood control (senders send as fast as the window
#: allows), no per-IP cap or connection rate limit (every client is 127.0.0.1), no
#: connection cap, history kept in memory (no disk, and the user's database is left
#: alone).
SERVE_OPTIONS = ("--rate-limit", "0", "--max-per-ip", "0", "--max-clients", "0",
                 "--connect-rate", "0", "--db", ":memory:")


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Target:
    """One server to measure: trio-chat in a mode (command None), or a peer."""

    name: str
    url: str  # tcp://host:port or ws://host:port/path
    command: tuple[str, ...] | None = None
    batch: bool = False  # join with "batch": true (trio-chat only)
    ours: bool = False  # speaks trio-chat's join; peers get seed-style chats
    mixed_url: str | None = None  # scale mode: a second (WebSocket) URL, half the clients
    nodes: tuple[Target, ...] = ()  # cluster mode: the other processes sharing the room
    redis_port: int | None = None  # cluster mode: start a redis-server here for each run

    @property
    def processes(self) -> int:
        return 1 + len(self.nodes)


@dataclass(frozen=True)
class Settings:
    clients: int = 100
    senders: int = 10
    window: int = 4
    rate: float = 0.0  # deliveries/s in total; 0 = closed loop with ``window``
    duration: float = 8.0
    warmup: float = 1.0
    drain: float = 5.0
    loaders: int = 1
    probe_every: int = 10
    connect_concurrency: int = 64
    profile_dir: str = ""  # py-spy profiles of each server, when set


@dataclass
class Result:
    target: str
    run: int
    clients: int
    connected: int = 0
    deliveries_per_s: float = 0.0
    messages_sent: int = 0
    lost: int = 0
    disconnected: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_cpu: float = 0.0  # share of one core during the measurement (sum over processes)
    per_cpu_s: float = 0.0  # deliveries per second of server CPU: steadier on a busy machine
    server_peak_rss_mb: float = 0.0
    loader_cpu: list[float] = field(default_factory=list)
    loader_saturated: bool = False
    error: str | None = None
    processes: int = 1
    redis: bool = False
    server_cpu_each: list[float] = field(default_factory=list)  # cluster: per process
    redis_cpu: float | None = None  # share of one core used by redis-server
    extra: dict[str, Any] = field(default_factory=dict)


def node_of(cid: int, senders: Sequence[int], processes: int) -> int:
    """Which process client ``cid`` joins in cluster mode: senders round-robin among
    themselves (``senders`` sorted), the other clients likewise, so every process gets
    its share of both whatever the senders' spacing."""
    i = bisect.bisect_left(senders, cid)
    if i < len(senders) and senders[i] == cid:
        return i % processes
    return (cid - i) % processes  # cid - i: this client's rank among the non-senders


def _parse(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "ws") or parts.hostname is None or parts.port is None:
        raise ValueError(f"expected tcp://HOST:PORT or ws://HOST:PORT/PATH, got {url!r}")
    return parts.scheme, parts.hostname, parts.port, parts.path or "/"


# ---------------------------------------------------------------- the loader


def _raise_nofile(wanted: int) -> None:
    """Each client is a socket: lift the soft fd limit as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, wanted))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def ws_client_frame(payload: bytes) -> bytes:
    """A masked text frame with an all-zero key: valid, and no XOR to compute."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


class Window:
    """What the current run measures, shared by a loader's clients."""

    def __init__(self) -> None:
        self.sending = False
        self.lat_from = 1 << 62  # ns: record latencies received in [lat_from, lat_to]
        self.lat_to = 0
        self.window = 0
        self.latencies: list[int] = []


class Client:
    __slots__ = (
        "acked",
        "cid",
        "closed",
        "count",
        "frame",
        "joined",
        "name",
        "own",
        "probe",
        "sender",
        "sending",
        "seq",
        "stream",
        "tail",
        "w",
    )

    def __init__(self, cid: int, *, frame: bool, probe: bool, sender: bool, w: Window) -> None:
        self.cid = cid
        self.name = f"c{cid}"
        self.frame = frame  # WebSocket: wrap what we send in client frames
        self.probe = probe
        self.sender = sender
        self.own = b"bench#%d#" % cid
        self.w = w
        self.stream: trio.SocketStream | None = None
        self.count = 0  # bench messages received
        self.seq = 0  # bench messages sent
        self.acked = 0  # own messages received back
        self.tail = b""
        self.joined = trio.Event()
        self.closed = False
        self.sending = False  # a send_bench is writing: a second writer would be an error

    async def send_json(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        assert self.stream is not None
        await self.stream.send_all(ws_client_frame(data) if self.frame else data + b"\n")

    async def top_up(self, n: int, ours: bool) -> None:
        """Closed loop: send ``n`` more, unless a write is under way already (the run's
        first burst and the read loop can both ask); the next echo asks again."""
        if self.sending:
            return
        self.sending = True
        try:
            await self.send_bench(n, ours)
        finally:
            self.sending = False

    async def send_bench(self, n: int, ours: bool) -> None:
        """Send ``n`` chat messages in one write."""
        now = time.monotonic_ns()
        parts = []
        user = "" if ours else f'"user":"{self.name}",'
        for _ in range(n):
            self.seq += 1
            raw = b'{"type":"chat",%s"text":"bench#%d#%d#%d#"}' % (
                user.encode(), self.cid, self.seq, now
            )
            parts.append(ws_client_frame(raw) if self.frame else raw + b"\n")
        assert self.stream is not None
        await self.stream.send_all(b"".join(parts))

    def feed(self, data: bytes) -> int:
        """Account for received bytes; returns how many more messages a sender may send."""
        chunk = self.tail + data if self.tail else data
        if not self.joined.is_set() and WELCOME in chunk:
            self.joined.set()
        if self.probe:
            now = time.monotonic_ns()
            last = chunk.rfind(MARK)
            if last >= 0 and MESSAGE.match(chunk, last) is None:
                chunk, self.tail = chunk[:last], chunk[last:]  # a message cut in two
            else:
                self.tail = chunk[-(len(MARK) - 1) :]
            w = self.w
            found = MESSAGE.findall(chunk)
            self.count += len(found)
            if w.lat_from <= now <= w.lat_to:
                w.latencies.extend(now - int(t) for _, _, t in found)
        else:
            self.count += chunk.count(MARK)
            self.tail = chunk[-(len(MARK) - 1) :]
        if self.sender:
            self.acked += chunk.count(self.own)
            if self.w.sending and self.w.window:
                return self.w.window - (self.seq - self.acked)
        return 0

    async def read_loop(self, ours: bool) -> None:
        assert self.stream is not None
        stream = self.stream
        try:
            while True:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                more = self.feed(data)
                if more > 0:
                    await self.top_up(more, ours)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.closed = True


async def _open(client: Client, host: str, port: int, path: str, ws: bool) -> bytes:
    """Connect (and do the WebSocket handshake); returns bytes read past it."""
    stream = await trio.open_tcp_stream(host, port)
    client.stream = stream
    if not ws:
        return b""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode())
    buf = b""
    while HANDSHAKE_END not in buf:
        data = await stream.receive_some(4096)
        if not data or len(buf) > 16384:
            raise OSError("WebSocket handshake failed")
        buf += data
    head, _, rest = buf.partition(HANDSHAKE_END)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise OSError(f"WebSocket handshake refused: {head[:80]!r}")
    return rest


class Loader:
    """One loader process's clients, driven by commands from the parent."""

    def __init__(self, target: Target, settings: Settings) -> None:
        self.target = target
        self.settings = settings
        self.w = Window()
        self.clients: list[Client] = []

    async def connect(
        self, nursery: trio.Nursery, ids: Sequence[int], senders: set[int]
    ) -> dict[str, Any]:
        """Connect and join ``ids``; returns the time it took and the failures."""
        target, settings = self.target, self.settings
        started = time.monotonic()
        limit = trio.CapacityLimiter(settings.connect_concurrency)
        failures: list[str] = []
        urls = [target.url, *(node.url for node in target.nodes)]
        ordered = sorted(senders)

        async def one(cid: int) -> None:
            url = target.url
            if target.mixed_url is not None and cid % 2:
                url = target.mixed_url
            elif target.nodes:
                url = urls[node_of(cid, ordered, len(urls))]
            scheme, host, port, path = _parse(url)
            client = Client(
                cid,
                frame=scheme == "ws",
                probe=settings.probe_every > 0 and cid % settings.probe_every == 1,
                sender=cid in senders,
                w=self.w,
            )
            async with limit:
                try:
                    rest = await _open(client, host, port, path, scheme == "ws")
                    if rest:
                        client.feed(rest)
                    nursery.start_soon(client.read_loop, target.ours)
                    if target.ours:
                        join: dict[str, Any] = {"type": "join", "user": client.name}
                        if target.batch:
                            join["batch"] = True
                        await client.send_json(join)
                        with trio.fail_after(60):
                            await client.joined.wait()
                    else:
                        client.joined.set()
                except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    if client.stream is not None:
                        await trio.aclose_forcefully(client.stream)
                    return
            self.clients.append(client)

        async with trio.open_nursery() as connecting:
            for cid in ids:
                connecting.start_soon(one, cid)
        return {
            "seconds": time.monotonic() - started,
            "connected": len(ids) - len(failures),
            "failures": failures[:5],
        }

    async def run(self, t0: float, senders_rate: float) -> dict[str, Any]:
        """One measurement: senders start at ``t0`` (monotonic seconds)."""
        s, w, ours = self.settings, self.w, self.target.ours
        senders = [c for c in self.clients if c.sender]
        measure_from = t0 + s.warmup
        measure_to = measure_from + s.duration
        await trio.sleep(max(0.0, t0 - time.monotonic()))
        w.sending = True
        w.window = 0 if senders_rate else s.window
        async with trio.open_nursery() as nursery:
            for c in senders:
                if c.stream is None or c.closed:
                    continue
                if senders_rate:
                    nursery.start_soon(self._paced, c, senders_rate, measure_to, ours)
                else:
                    nursery.start_soon(c.top_up, s.window, ours)
            await trio.sleep(max(0.0, measure_from - time.monotonic()))
            w.lat_from, w.lat_to = int(measure_from * 1e9), int(measure_to * 1e9)
            counts0 = sum(c.count for c in self.clients)
            cpu0 = time.process_time()
            await trio.sleep(max(0.0, measure_to - time.monotonic()))
            counts1 = sum(c.count for c in self.clients)
            cpu1 = time.process_time()
            w.sending = False
        # Drain: wait until nothing more arrives for a second (or the drain limit).
        last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + s.drain
        while time.monotonic() < deadline:
            total = sum(c.count for c in self.clients)
            if total != last:
                last, quiet_since = total, time.monotonic()
            elif time.monotonic() - quiet_since >= 1.0:
                break
            await trio.sleep(0.1)
        latencies, w.latencies = w.latencies, []
        return {
            "delivered": counts1 - counts0,
            "sent": sum(c.seq for c in senders),
            "received": [c.count for c in self.clients],
            "disconnected": sum(c.closed for c in self.clients),
            "latencies": latencies,
            "loader_cpu": (cpu1 - cpu0) / s.duration,
        }

    async def _paced(self, c: Client, rate: float, until: float, ours: bool) -> None:
        """Fixed rate: one message every 1/rate s, catching up in one write if late."""
        interval = 1.0 / rate
        due = time.monotonic()
        while due < until:
            now = time.monotonic()
            late = int((now - due) / interval) + 1
            await c.send_bench(late, ours)
            due += late * interval
            await trio.sleep(max(0.0, due - time.monotonic()))

    async def serve(self, conn: Connection) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                command, *args = await trio.to_thread.run_sync(conn.recv)
                if command == "connect":
                    reply = await self.connect(nursery, *args)
                elif command == "run":
                    reply = await self.run(*args)
                else:
                    break
                conn.send(reply)
            for c in self.clients:
                if c.stream is not None:
                    await trio.aclose_forcefully(c.stream)
            nursery.cancel_scope.cancel()
        conn.send("stopped")


def _loader_main(conn: Connection, target: Target, settings: Settings, fds: int) -> None:
    _raise_nofile(fds)
    trio.run(Loader(target, settings).serve, conn)


# ---------------------------------------------------------------- the parent


def our_targets(
    modes: Sequence[str], python: str = sys.executable, redis_port: int | None = None
) -> list[Target]:
    """trio-chat, one server per mode, on free ports (on the Redis at ``redis_port``
    when given)."""
    targets = []
    for mode in modes:
        tcp, ws = free_port(), free_port()
        cluster = () if redis_port is None else ("--redis", f"redis://127.0.0.1:{redis_port}/0")
        command = (
            python, "-m", "trio_chat", "serve", "--log-level", "warning",
            "--tcp-port", str(tcp), "--ws-port", str(ws), *SERVE_OPTIONS, *cluster,
        )  # fmt: skip
        url = f"tcp://127.0.0.1:{tcp}" if mode == "tcp" else f"ws://127.0.0.1:{ws}/"
        target = Target(
            f"trio-chat {mode}", url, command, batch=mode == "ws-batch", ours=True,
            redis_port=redis_port,
        )  # fmt: skip
        targets.append(target)
    return targets


def cluster_targets(
    processes: int, modes: Sequence[str] = ("tcp",), python: str = sys.executable
) -> list[Target]:
    """Per mode: one process without Redis (the baseline), then 1, 2, ... ``processes``
    processes on one Redis (a fresh redis-server on one free port, for each run)."""
    redis_port = free_port()
    targets = []
    for mode in modes:
        (alone,) = our_targets([mode], python)
        targets.append(replace(alone, name=f"{alone.name} x1 no redis"))
        for n in range(1, processes + 1):
            first, *others = (our_targets([mode], python, redis_port)[0] for _ in range(n))
            name = f"{first.name} x{n} redis"
            targets.append(replace(first, name=name, nodes=tuple(others)))
    return targets


def scale_target(python: str = sys.executable) -> Target:
    """trio-chat with half the clients on TCP and half on WebSocket."""
    (target,) = our_targets(["tcp"], python)
    assert target.command is not None
    ws_port = target.command[target.command.index("--ws-port") + 1]
    return replace(target, name="trio-chat tcp+ws", mixed_url=f"ws://127.0.0.1:{ws_port}/")


def peer_target(name: str, url: str, command: str) -> Target:
    _parse(url)
    return Target(name, url, tuple(shlex.split(command)))


def _wait_listening(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    _, host, port, _ = _parse(url)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not listening on {host}:{port} after {timeout} s")
        time.sleep(0.1)


def _refuse_busy(url: str) -> None:
    _, host, port, _ = _parse(url)
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        raise RuntimeError(f"{host}:{port} is already in use; stop whatever listens there")


def _peak_rss_mb(pid: int) -> float:
    """VmHWM: the kernel's own high-water mark of the process's RSS."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def _rss_bytes(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


@contextlib.contextmanager
def running_server(target: Target) -> Iterator[subprocess.Popen[bytes]]:
    assert target.command is not None
    _refuse_busy(target.url)
    proc = subprocess.Popen(
        target.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(target.url, proc)
        if target.mixed_url:
            _wait_listening(target.mixed_url, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Running:
    """The processes of one measured target: its servers, and its redis-server if any."""

    servers: list[subprocess.Popen[bytes]]
    redis: RedisServer | None


@contextlib.contextmanager
def running_servers(target: Target) -> Iterator[Running]:
    """Redis first (a cluster server refuses to start without it), then every process."""
    with contextlib.ExitStack() as stack:
        redis = None
        if target.redis_port is not None:
            redis = stack.enter_context(RedisServer(target.redis_port))
        servers = [stack.enter_context(running_server(t)) for t in (target, *target.nodes)]
        yield Running(servers, redis)


def _cpu_s(processes: Sequence[Any]) -> list[float]:
    """User + system CPU seconds of each psutil.Process so far."""
    return [sum(p.cpu_times()[:2]) for p in processes]


class Loaders:
    """The loader processes for one server, and a way to send each a command."""

    def __init__(self, target: Target, settings: Settings, clients: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        fds = clients // settings.loaders + 256
        for _ in range(settings.loaders):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_loader_main, args=(child, target, settings, fds))
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def ask(self, per_loader: Sequence[tuple[Any, ...]], timeout: float) -> list[Any]:
        """Send each loader its command (none: just collect) and wait for every reply."""
        for pipe, command in zip(self.pipes, per_loader, strict=False):
            pipe.send(command)
        replies = []
        deadline = time.monotonic() + timeout
        try:
            for pipe in self.pipes:
                if not pipe.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError("a loader did not answer in time")
                replies.append(pipe.recv())
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"a loader died: {exc!r}") from exc
        return replies

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _start_profile(
    target: Target, s: Settings, pid: int, run: int
) -> tuple[subprocess.Popen[bytes], str] | None:
    """py-spy on the server for the measured seconds (collapsed stacks, one per line)."""
    if not s.profile_dir:
        return None
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(s.profile_dir, exist_ok=True)
    out = os.path.join(s.profile_dir, f"{target.name.replace(' ', '-')}-run{run + 1}.txt")
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(s.duration))),
               "--format", "raw", "--nolineno", "--nonblocking", "--output", out]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def profile_top(path: str, limit: int = 12) -> list[tuple[str, float]]:
    """Functions by share of samples spent in them (self time), from a py-spy raw file."""
    own: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError), open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            leaf = stack.rsplit(";", 1)[-1]
            own[leaf] = own.get(leaf, 0) + int(count)
            total += int(count)
    top = sorted(own.items(), key=lambda item: -item[1])[:limit]
    return [(name, round(n / total, 3)) for name, n in top] if total else []


def _split(ids: Sequence[int], parts: int) -> list[list[int]]:
    return [list(ids[i::parts]) for i in range(parts)]


def _senders(clients: int, senders: int) -> set[int]:
    """Senders spread evenly over the join order."""
    step = max(1, clients // max(1, senders))
    return {i * step for i in range(min(senders, clients))}


def _percentile(ordered: list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def measure_fanout(target: Target, settings: Settings, run: int = 0) -> Result:
    """Start ``target``, connect the clients, run one measurement, stop it all."""
    import psutil

    s = settings
    result = Result(target.name, run, s.clients, processes=target.processes,
                    redis=target.redis_port is not None)  # fmt: skip
    with running_servers(target) as running:
        proc = running.servers[0]
        loaders = Loaders(target, s, s.clients)
        try:
            senders = _senders(s.clients, s.senders)
            ids = _split(range(s.clients), s.loaders)
            replies = loaders.ask([("connect", part, senders) for part in ids], 120)
            result.connected = sum(r["connected"] for r in replies)
            if result.connected < s.clients:
                result.error = f"{s.clients - result.connected} clients failed: " + "; ".join(
                    f for r in replies for f in r["failures"]
                )
            time.sleep(0.5)  # let the join notices settle
            servers = [psutil.Process(p.pid) for p in running.servers]
            redis = None if running.redis is None else psutil.Process(running.redis.pid)
            rate = s.rate / s.clients / max(1, len(senders)) if s.rate else 0.0
            t0 = time.monotonic() + 0.3
            for pipe in loaders.pipes:
                pipe.send(("run", t0, rate))
            time.sleep(max(0.0, t0 + s.warmup - time.monotonic()))
            each0, redis0 = _cpu_s(servers), _cpu_s([redis] if redis else [])
            spy = _start_profile(target, s, proc.pid, run)
            time.sleep(max(0.0, t0 + s.warmup + s.duration - time.monotonic()))
            each1, redis1 = _cpu_s(servers), _cpu_s([redis] if redis else [])
            if spy is not None:
                spy[0].wait(30)
                result.extra["profile"] = spy[1]
                result.extra["profile_top"] = profile_top(spy[1])
            result.server_peak_rss_mb = max(_peak_rss_mb(p.pid) for p in running.servers)
            runs = loaders.ask([], s.drain + 30)  # the run's results, already asked for
        finally:
            loaders.close()
    cpu0, cpu1 = sum(each0), sum(each1)
    result.server_cpu = (cpu1 - cpu0) / s.duration
    if target.nodes:
        result.server_cpu_each = [
            round((b - a) / s.duration, 2) for a, b in zip(each0, each1, strict=True)
        ]
    if redis0:
        result.redis_cpu = (redis1[0] - redis0[0]) / s.duration
    result.messages_sent = sum(r["sent"] for r in runs)
    result.deliveries_per_s = sum(r["delivered"] for r in runs) / s.duration
    if cpu1 > cpu0:
        result.per_cpu_s = sum(r["delivered"] for r in runs) / (cpu1 - cpu0)
    received = [n for r in runs for n in r["received"]]
    result.lost = sum(max(0, result.messages_sent - n) for n in received)
    result.disconnected = sum(r["disconnected"] for r in runs)
    result.loader_cpu = [round(r["loader_cpu"], 2) for r in runs]
    result.loader_saturated = any(c >= SATURATED for c in result.loader_cpu)
    latencies = sorted(n for r in runs for n in r["latencies"])
    if latencies:
        result.p50_ms = _percentile(latencies, 0.50)
        result.p99_ms = _percentile(latencies, 0.99)
        result.max_ms = latencies[-1] / 1e6
    return result


def measure_scale(target: Target, settings: Settings, run: int = 0) -> Result:
    """Hold ``settings.clients`` joined connections: time the first half's joins,
    then RSS per idle joined connection, then one slow broadcast to all of them."""
    s = settings
    result = Result(target.name, run, s.clients)
    with running_server(target) as proc:
        time.sleep(0.5)
        rss0 = _rss_bytes(proc.pid)
        loaders = Loaders(target, s, s.clients)
        try:
            half = s.clients // 2
            first = loaders.ask(
                [("connect", part, set()) for part in _split(range(half), s.loaders)], 600
            )
            second = loaders.ask(
                [
                    ("connect", part, set())
                    for part in _split(range(half, s.clients), s.loaders)
                ],
                600,
            )
            result.connected = sum(r["connected"] for r in first + second)
            time.sleep(2.0)  # idle: notices flushed, queues empty
            rss1 = _rss_bytes(proc.pid)
            result.extra = {
                "join_first_half_s": round(max(r["seconds"] for r in first), 2),
                "join_second_half_s": round(max(r["seconds"] for r in second), 2),
                "rss_idle_mb": round(rss1 / 2**20, 1),
                "rss_per_connection_kb": round((rss1 - rss0) / 1024 / max(1, result.connected), 1),
            }
            failures = [f for r in first + second for f in r["failures"]]
            if failures:
                result.error = f"{len(failures)}+ failures: " + "; ".join(failures[:3])
        finally:
            loaders.close()
        result.server_peak_rss_mb = _peak_rss_mb(proc.pid)
    return result


# ---------------------------------------------------------------- reporting


@dataclass(frozen=True)
class _Summary:
    """One server's runs, as the report's columns show them."""

    spread: str
    p50: float | None
    p99: float | None
    worst: float | None
    lost: int
    loader: float
    flag: str
    errors: str


def _summarize(rows: list[Result]) -> _Summary:
    rates = [r.deliveries_per_s for r in rows]
    p50 = [r.p50_ms for r in rows if r.p50_ms is not None]
    p99 = [r.p99_ms for r in rows if r.p99_ms is not None]
    worst = [r.max_ms for r in rows if r.max_ms is not None]
    errors = "; ".join(sorted({r.error for r in rows if r.error}))
    return _Summary(
        spread=f"({min(rates)/1000:,.0f}k-{max(rates)/1000:,.0f}k)" if len(rows) > 1 else "",
        p50=_median(p50) if p50 else None,
        p99=_median(p99) if p99 else None,
        worst=max(worst) if worst else None,
        lost=sum(r.lost for r in rows),
        loader=max(max(r.loader_cpu, default=0.0) for r in rows),
        flag=" SATURATED" if any(r.loader_saturated for r in rows) else "",
        errors=f"  ERROR {errors}" if errors else "",
    )


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(results: list[Result], scale: bool = False) -> str:
    """A table (median of runs, with min-max) and ratios of our rows to each peer's."""
    if any(r.redis for r in results):
        return report_cluster(results)
    names = list(dict.fromkeys(r.target for r in results))
    lines = []
    if scale:
        lines.append(f"{'server':<18} {'conns':>6} {'join 1st half s':>15} {'2nd half s':>10} "
                     f"{'RSS/conn KB':>11} {'RSS MB':>7} {'peak MB':>7}")  # fmt: skip
        for r in results:
            e = r.extra
            lines.append(
                f"{r.target:<18} {r.connected:>6} {e.get('join_first_half_s', 0):>15} "
                f"{e.get('join_second_half_s', 0):>10} "
                f"{e.get('rss_per_connection_kb', 0):>11} {e.get('rss_idle_mb', 0):>7} "
                f"{r.server_peak_rss_mb:>7.1f}" + (f"  ERROR {r.error}" if r.error else "")
            )
        return "\n".join(lines)
    lines.append(
        f"{'server':<18} {'deliveries/s (min-max)':>24} {'per CPU-s':>9} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'lost':>5} {'srv CPU':>7} {'peak MB':>7} {'loader':>6}"
    )
    rate: dict[str, float] = {}
    per_cpu: dict[str, float] = {}
    for name in names:
        rows = [r for r in results if r.target == name]
        rate[name] = _median([r.deliveries_per_s for r in rows])
        per_cpu[name] = _median([r.per_cpu_s for r in rows])
        row = _summarize(rows)
        lines.append(
            f"{name:<18} {rate[name]:>11,.0f} {row.spread:>12} {per_cpu[name]:>9,.0f} "
            f"{_fmt(row.p50):>7} {_fmt(row.p99):>7} {_fmt(row.worst):>7} {row.lost:>5} "
            f"{_median([r.server_cpu for r in rows]):>7.0%} "
            f"{max(r.server_peak_rss_mb for r in rows):>7.1f} "
            f"{row.loader:>6.0%}{row.flag}" + row.errors
        )
    ours = [n for n in names if n.startswith("trio-chat")]
    peers = [n for n in names if n not in ours]
    if peers:
        lines.append("ratios (median of runs; per-run spread; per server CPU-second):")
    for n in ours:
        for p in peers:
            if rate[p]:
                ratios = [
                    a.deliveries_per_s / b.deliveries_per_s
                    for a in results if a.target == n
                    for b in results if b.target == p and b.run == a.run and b.deliveries_per_s
                ]  # fmt: skip
                spread = f" (runs {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
                cpu = f"; {per_cpu[n] / per_cpu[p]:.2f}x per CPU-s" if per_cpu[p] else ""
                lines.append(f"  {n} / {p}: {rate[n] / rate[p]:.2f}x{spread}{cpu}")
    lines.extend(_profiles(results))
    if any(r.loader_saturated for r in results):
        lines.append(
            "SATURATED: a loader used over 90% of a core; that row measures the loader, "
            "so the server's real figure is at least this."
        )
    return "\n".join(lines)


def _profiles(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        if r.extra.get("profile_top"):
            lines.append(f"py-spy, {r.target} run {r.run + 1}, self time ({r.extra['profile']}):")
            lines.extend(f"  {share:6.1%}  {name}" for name, share in r.extra["profile_top"])
    return lines


def report_cluster(results: list[Result]) -> str:
    """Cluster mode: a row per process count (median of runs), each against one process
    on Redis in the same run, and that one against one process without Redis."""
    names = list(dict.fromkeys(r.target for r in results))
    wide = max(27, *map(len, names))
    lines = [
        f"{'server':<{wide}} {'deliveries/s (min-max)':>24} {'per CPU-s':>9} {'srv CPU':>7} "
        f"{'(per process)':<15} {'p50 ms':>6} {'p99 ms':>6} {'max ms':>6} {'lost':>5} "
        f"{'redis':>5} {'loader':>6} {'vs x1':>6}"
    ]  # fmt: skip
    rate: dict[str, float] = {}
    per_cpu: dict[str, float] = {}
    base: dict[str, str] = {}  # row -> the "x1 redis" row of its mode
    for name in names:
        rows = [r for r in results if r.target == name]
        mode = name.split(" x", 1)[0]
        base[name] = next((n for n in names if n == mode + " x1 redis"), name)
        rate[name] = _median([r.deliveries_per_s for r in rows])
        per_cpu[name] = _median([r.per_cpu_s for r in rows])
    for name in names:
        rows = [r for r in results if r.target == name]
        row = _summarize(rows)
        each = [r.server_cpu_each for r in rows if r.server_cpu_each]
        split = (
            "/".join(f"{_median(list(col)) * 100:.0f}" for col in zip(*each, strict=True)) + "%"
            if each else ""
        )  # fmt: skip
        redis = [r.redis_cpu for r in rows if r.redis_cpu is not None]
        lines.append(
            f"{name:<{wide}} {rate[name]:>11,.0f} {row.spread:>12} {per_cpu[name]:>9,.0f} "
            f"{_median([r.server_cpu for r in rows]):>7.0%} {split:<15} "
            f"{_fmt(row.p50):>6} {_fmt(row.p99):>6} {_fmt(row.worst):>6} {row.lost:>5} "
            f"{format(_median(redis), '.0%') if redis else '-':>5} {row.loader:>6.0%} "
            f"{_ratio(rate[name], rate[base[name]]):>6}{row.flag}" + row.errors
        )
    lines.append("ratios (median of runs; per server CPU-second summed over processes):")
    for name in names:
        if name == base[name]:
            continue
        if name.endswith("no redis"):
            a, b, why = base[name], name, " (what the backplane costs one process)"
        else:
            a, b, why = name, base[name], ""
        lines.append(
            f"  {a} / {b}: {_ratio(rate[a], rate[b])}; "
            f"{_ratio(per_cpu[a], per_cpu[b])} per CPU-s{why}"
        )
    lines.extend(_profiles(results))  # of each row's first process
    if any(r.loader_saturated for r in results):
        lines.append(
            "SATURATED: a loader used over 90% of a core; that row measures the loader, "
            "so the servers' real figure is at least this."
        )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def run_bench(
    targets: list[Target], settings: Settings, runs: int = 1, scale: bool = False,
    progress: Any = None,
) -> list[Result]:  # fmt: skip
    """Each run measures every target in turn, so ratios compare like with like."""
    _raise_nofile(settings.clients + 256)
    results = []
    measure = measure_scale if scale else measure_fanout
    for run in range(runs):
        for target in targets:
            try:
                result = measure(target, settings, run)
            except (RuntimeError, OSError) as exc:
                result = Result(
                    target.name, run, settings.clients, error=str(exc),
                    processes=target.processes, redis=target.redis_port is not None,
                )  # fmt: skip
            results.append(result)
            if progress is not None:
                progress(result)
    return results


def to_json(results: list[Result], settings: Settings) -> str:
    return json.dumps(
        {"settings": asdict(settings), "results": [asdict(r) for r in results]}, indent=2
    )

