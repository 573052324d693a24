"""The loader: processes running Trio that hold the benchmark's clients.

Loaders are separate processes (``multiprocessing``, spawned), each holding a share of
the clients and driven by the parent over a pipe (:class:`Loaders` is the parent's side,
:func:`loader_main` the process's entry point). They are built to be cheap per
delivery, since they share the machine with the server:

- a receiver only counts deliveries: ``bytes.count`` of a marker in whatever
  arrived, with no JSON parsing and no WebSocket frame parsing (server frames are
  unmasked, so a message's text appears verbatim in the byte stream);
- probes (every ``probe_every``-th client) also read each delivery's send time with
  one regular expression over the chunk, for latency;
- a sender counts its own marker to know how many of its messages came back
  (closed loop: at most ``window`` in flight), or sends at a fixed rate;
- WebSocket client frames use an all-zero mask key (valid; the XOR is a no-op);
- a gRPC client (``grpc://``: a trio-chat ``Session`` stream, on grpcio's asyncio
  client in a thread of the loader, :class:`GrpcStream`) reads each ``ServerEvent``
  as bytes and counts the marker in them the same way (Protobuf keeps a string's
  bytes as they are); only until its welcome does it decode them.

A chat text is ``bench#<sender>#<seq>#<monotonic ns>#``. ``time.monotonic_ns`` is
CLOCK_MONOTONIC, shared by all processes on the machine, so latency is send to
receive on the loaders' clock.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import multiprocessing
import re
import resource
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import trio

from .targets import Settings, Target, parse_url

if TYPE_CHECKING:
    from ..transports.grpc.bridge import Bridge

MARK = b"bench#"
MESSAGE = re.compile(rb"bench#(\d+)#(\d+)#(\d+)#")
WELCOME = b'"type":"welcome"'
HANDSHAKE_END = b"\r\n\r\n"
RECEIVE_SIZE = 256 * 1024


def node_of(cid: int, senders: Sequence[int], processes: int) -> int:
    """Which process client ``cid`` joins in cluster mode: senders round-robin among
    themselves (``senders`` sorted), the other clients likewise, so every process gets
    its share of both whatever the senders' spacing."""
    i = bisect.bisect_left(senders, cid)
    if i < len(senders) and senders[i] == cid:
        return i % processes
    return (cid - i) % processes  # cid - i: this client's rank among the non-senders


def raise_nofile(wanted: int) -> None:
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


class GrpcStream(trio.abc.AsyncResource):
    """A ``Session`` stream as a loader client uses a socket: messages out, bytes in.
    Errors are trio's stream errors, so the client's own handling applies."""

    def __init__(self, bridge: Bridge, channel: Any, call: Any, joined: trio.Event) -> None:
        self._bridge = bridge
        self._channel = channel
        self._call = call
        self._joined = joined

    async def send_messages(self, messages: list[bytes]) -> None:
        call = self._call

        async def write() -> None:
            for message in messages:
                await call.write(message)

        try:
            await self._bridge.run(write())
        except Exception as exc:  # grpcio's AioRpcError, or the call is over
            raise trio.BrokenResourceError from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        call = self._call

        async def read() -> object:
            return await call.read()

        try:
            data = await self._bridge.run(read())
        except Exception as exc:
            raise trio.BrokenResourceError from exc
        if not isinstance(data, bytes):
            return b""  # the end of the stream
        if not self._joined.is_set():
            from ..transports.grpc.events import json_objects

            if any(obj["type"] == "welcome" for obj in json_objects(data)):
                self._joined.set()
        return data

    async def aclose(self) -> None:
        self._bridge.to_loop(self._call.cancel)
        await self._bridge.run(self._channel.close(None))


async def _open_grpc(client: Client, bridge: Bridge, host: str, port: int) -> None:
    """A channel of its own (a connection, as a separate program would have) and a
    ``Session`` call on it, bytes in and out."""
    import grpc

    async def open_call() -> tuple[Any, Any]:
        channel = grpc.aio.insecure_channel(
            f"{host}:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        method = channel.stream_stream(
            "/trio_chat.v1.Chat/Session", request_serializer=None, response_deserializer=None
        )
        return channel, method(None)

    channel, call = await bridge.run(open_call())
    client.stream = GrpcStream(bridge, channel, call, client.joined)


class Window:
    """What the current run measures, shared by a loader's clients."""

    def __init__(self) -> None:
        self.sending = False
        self.lat_from = 1 << 62  # ns: record latencies received in [lat_from, lat_to]
        self.lat_to = 0
        self.window = 0
        self.latencies: list[int] = []


class Client:
    """One benchmark connection: counts what it receives, and sends if it is a sender."""

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
        "room",
        "room_field",
        "sender",
        "sending",
        "seq",
        "stream",
        "tail",
        "w",
    )

    def __init__(
        self, cid: int, *, frame: bool, probe: bool, sender: bool, w: Window, room: int = 0,
        rooms: int = 1,
    ) -> None:
        self.cid = cid
        self.name = f"c{cid}"
        #: Its room's index, and (over several rooms) the chat field that names it.
        self.room = room
        self.room_field = b'"room":"#r%d",' % room if rooms > 1 else b""
        self.frame = frame  # WebSocket: wrap what we send in client frames
        self.probe = probe
        self.sender = sender
        self.own = b"bench#%d#" % cid
        self.w = w
        self.stream: trio.SocketStream | GrpcStream | None = None
        self.count = 0  # bench messages received
        self.seq = 0  # bench messages sent
        self.acked = 0  # own messages received back
        self.tail = b""
        self.joined = trio.Event()
        self.closed = False
        self.sending = False  # a send_bench is writing: a second writer would be an error

    async def send_json(self, obj: dict[str, Any]) -> None:
        stream = self.stream
        assert stream is not None
        if isinstance(stream, GrpcStream):
            from ..transports.grpc.events import client_message

            await stream.send_messages([client_message(obj)])
            return
        data = json.dumps(obj, separators=(",", ":")).encode()
        await stream.send_all(ws_client_frame(data) if self.frame else data + b"\n")

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
        stream = self.stream
        assert stream is not None
        if isinstance(stream, GrpcStream):
            for _ in range(n):
                self.seq += 1
                text = b"bench#%d#%d#%d#" % (self.cid, self.seq, now)
                # ClientEvent{chat: ChatRequest{text}}: two length-delimited fields.
                chat = b"\x0a" + _varint(len(text)) + text
                parts.append(b"\x12" + _varint(len(chat)) + chat)
            await stream.send_messages(parts)
            return
        user = ("" if ours else f'"user":"{self.name}",').encode() + self.room_field
        for _ in range(n):
            self.seq += 1
            raw = b'{"type":"chat",%s"text":"bench#%d#%d#%d#"}' % (
                user, self.cid, self.seq, now
            )
            parts.append(ws_client_frame(raw) if self.frame else raw + b"\n")
        assert isinstance(stream, trio.SocketStream)
        await stream.send_all(b"".join(parts))

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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Loader:
    """One loader process's clients, driven by commands from the parent."""

    def __init__(self, target: Target, settings: Settings) -> None:
        self.target = target
        self.settings = settings
        self.w = Window()
        self.clients: list[Client] = []
        self.bridge: Bridge | None = None  # grpcio's loop, for grpc:// clients

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
            scheme, host, port, path = parse_url(url)
            client = Client(
                cid,
                frame=scheme == "ws",
                probe=settings.probe_every > 0 and cid % settings.probe_every == 1,
                sender=cid in senders,
                w=self.w,
                room=cid % target.rooms,
                rooms=target.rooms,
            )
            async with limit:
                try:
                    if scheme == "grpc":
                        await _open_grpc(client, self._bridge(), host, port)
                        rest = b""
                    else:
                        rest = await _open(client, host, port, path, scheme == "ws")
                    if rest:
                        client.feed(rest)
                    nursery.start_soon(client.read_loop, target.ours)
                    if target.ours:
                        join: dict[str, Any] = {"type": "join", "user": client.name}
                        if target.rooms > 1:  # that room instead of #lobby
                            join["room"] = f"#r{client.room}"
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

    def _bridge(self) -> Bridge:
        if self.bridge is None:
            from ..transports.grpc.bridge import Bridge

            self.bridge = Bridge()
            self.bridge.start()
        return self.bridge

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
        # Drain: wait until nothing more arrives for a second (or the drain limit). A
        # lone loader holds every sender, so it knows when everything has arrived.
        sent_in: dict[int, int] = {}
        for c in senders:
            sent_in[c.room] = sent_in.get(c.room, 0) + c.seq
        last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + s.drain
        while time.monotonic() < deadline:
            if s.loaders == 1 and all(c.count >= sent_in.get(c.room, 0) for c in self.clients):
                break
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
            "sent_in": sorted(sent_in.items()),
            "received": [(c.room, c.count) for c in self.clients],
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
        if self.bridge is not None:
            await self.bridge.aclose()
        conn.send("stopped")


def loader_main(conn: Connection, target: Target, settings: Settings, fds: int) -> None:
    """A loader process: its own fd limit, then commands from ``conn`` until "stop"."""
    raise_nofile(fds)
    trio.run(Loader(target, settings).serve, conn)


class Loaders:
    """The loader processes for one server, and a way to send each a command."""

    def __init__(self, target: Target, settings: Settings, clients: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        fds = clients // settings.loaders + 256
        for _ in range(settings.loaders):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=loader_main, args=(child, target, settings, fds))
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def tell(self, command: tuple[Any, ...]) -> None:
        """Send every loader the same command without waiting; :meth:`ask` with no
        commands collects the replies."""
        for pipe in self.pipes:
            pipe.send(command)

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
        """Stop every loader (its clients' connections close with it)."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()

