"""What a benchmark run measures: the servers (:class:`Target`) and the load (:class:`Settings`).

Both are frozen and picklable: the parent builds them, and each loader process gets its
own copy at spawn. A target is trio-chat in one of :data:`MODES` (started from this
Python, on free ports), or a peer given by a URL and the command that starts it.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from .redis_server import free_port

#: grpc: a Session stream per client (--grpc-port), one ServerEvent per message;
#: grpc-batch: joined with batch, one ServerEvent holding everything queued.
MODES = ("tcp", "ws", "ws-batch", "grpc", "grpc-batch")
#: trio-chat as the peers run: no flood control (senders send as fast as the window
#: allows), no per-IP cap or connection rate limit (every client is 127.0.0.1), no
#: connection cap, history kept in memory (no disk, and the user's database is left
#: alone).
SERVE_OPTIONS = ("--rate-limit", "0", "--max-per-ip", "0", "--max-clients", "0",
                 "--connect-rate", "0", "--db", ":memory:")


@dataclass(frozen=True)
class Target:
    """One server to measure: trio-chat in a mode (command None), or a peer."""

    name: str
    url: str  # tcp://host:port, ws://host:port/path or grpc://host:port (ours only)
    command: tuple[str, ...] | None = None
    batch: bool = False  # join with "batch": true (trio-chat only)
    ours: bool = False  # speaks trio-chat's join; peers get seed-style chats
    mixed_url: str | None = None  # scale mode: a second (WebSocket) URL, half the clients
    nodes: tuple[Target, ...] = ()  # cluster mode: the other processes sharing the room
    redis_port: int | None = None  # cluster mode: start a redis-server here for each run
    redis_replicas: int = 0  # ... with this many replicas of it
    rooms: int = 1  # the clients are spread over this many rooms (trio-chat only)

    @property
    def processes(self) -> int:
        return 1 + len(self.nodes)


@dataclass(frozen=True)
class Settings:
    """The load, the same for every target of a run (``trio-chat bench`` options)."""

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


def parse_url(url: str) -> tuple[str, str, int, str]:
    """``tcp://HOST:PORT``, ``ws://HOST:PORT/PATH`` or ``grpc://HOST:PORT`` (a
    trio-chat ``Session`` stream) as (scheme, host, port, path)."""
    parts = urlsplit(url)
    schemes = ("tcp", "ws", "grpc")
    if parts.scheme not in schemes or parts.hostname is None or parts.port is None:
        raise ValueError(f"expected tcp://HOST:PORT or ws://HOST:PORT/PATH, got {url!r}")
    return parts.scheme, parts.hostname, parts.port, parts.path or "/"


def our_targets(
    modes: Sequence[str], python: str = sys.executable, redis_port: int | None = None,
    extra: tuple[str, ...] = (), rooms: int = 1, label: str = "trio-chat",
) -> list[Target]:
    """trio-chat, one server per mode, on free ports (on the Redis at ``redis_port``
    when given; the clients spread over ``rooms`` rooms when more than one). Another
    ``python`` (an older checkout's) runs in isolated mode, so the working directory's
    code cannot stand in for its own."""
    targets = []
    for mode in modes:
        tcp, ws = free_port(), free_port()
        cluster = () if redis_port is None else ("--redis", f"redis://127.0.0.1:{redis_port}/0")
        grpc: tuple[str, ...] = ()
        if mode.startswith("grpc"):
            grpc_port = free_port()
            grpc = ("--grpc-port", str(grpc_port))
            url = f"grpc://127.0.0.1:{grpc_port}"
        elif mode == "tcp":
            url = f"tcp://127.0.0.1:{tcp}"
        else:
            url = f"ws://127.0.0.1:{ws}/"
        # Every client creates or joins its room at once, from one address.
        spread = ("--room-create-rate", "0") if rooms > 1 else ()
        isolated = ("-I",) if python != sys.executable else ()
        command = (
            python, *isolated, "-m", "trio_chat", "serve", "--log-level", "warning",
            "--tcp-port", str(tcp), "--ws-port", str(ws), *grpc, *SERVE_OPTIONS, *cluster,
            *spread, *extra,
        )  # fmt: skip
        name = f"{label} {mode}" + (f" x{rooms} rooms" if rooms > 1 else "")
        target = Target(
            name, url, command, batch=mode.endswith("-batch"), ours=True,
            redis_port=redis_port, rooms=rooms,
        )  # fmt: skip
        targets.append(target)
    return targets


def cluster_targets(
    processes: int, modes: Sequence[str] = ("tcp",), python: str = sys.executable,
    redis_wait: int = 0, label: str = "trio-chat",
) -> list[Target]:
    """Per mode: one process without Redis (the baseline), then 1, 2, ... ``processes``
    processes on one Redis (a fresh redis-server on one free port, for each run). With
    ``redis_wait`` N, each process count is also measured with N replicas of that Redis
    (what replication costs), and with them and ``--redis-wait N`` (what waiting costs).
    ``python`` and ``label``: another checkout's rows (``--baseline``), on a Redis of
    their own."""
    redis_port = free_port()
    targets = []
    for mode in modes:
        (alone,) = our_targets([mode], python, label=label)
        targets.append(replace(alone, name=f"{alone.name} x1 no redis"))
        for n in range(1, processes + 1):
            variants: list[tuple[str, int, tuple[str, ...]]] = [("", 0, ())]
            if redis_wait:
                replicas = f", {redis_wait} replica{'s' if redis_wait > 1 else ''}"
                variants += [(replicas, redis_wait, ()),
                             (f"{replicas}, wait {redis_wait}", redis_wait,
                              ("--redis-wait", str(redis_wait)))]
            for suffix, count, extra in variants:
                first, *others = (
                    our_targets([mode], python, redis_port, extra, label=label)[0]
                    for _ in range(n)
                )
                name = f"{first.name} x{n} redis{suffix}"
                targets.append(replace(first, name=name, nodes=tuple(others),
                                       redis_replicas=count))
    return targets


def scale_target(python: str = sys.executable) -> Target:
    """trio-chat with half the clients on TCP and half on WebSocket."""
    (target,) = our_targets(["tcp"], python)
    assert target.command is not None
    ws_port = target.command[target.command.index("--ws-port") + 1]
    return replace(target, name="trio-chat tcp+ws", mixed_url=f"ws://127.0.0.1:{ws_port}/")


def peer_target(name: str, url: str, command: str) -> Target:
    """A peer: ``command`` (split like a shell would, but run without one, so the pid
    measured is the server's own) starts a server that listens on ``url``."""
    if parse_url(url)[0] == "grpc":
        raise ValueError(f"a peer speaks tcp:// or ws://, not {url!r}")
    return Target(name, url, tuple(shlex.split(command)))
