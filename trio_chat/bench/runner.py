"""The fan-out benchmark's measurements: trio-chat against peer servers, in one run.

The parent process (synchronous) starts each server in turn (trio-chat in several
modes, then every peer given as a command and a URL; :mod:`.servers`), starts loader
processes holding the clients (:mod:`.loader`), and measures the server's CPU and
memory while the loaders measure deliveries and latency. :func:`run_bench` measures
every target once per run, in turn, so that ratios compare like with like;
:mod:`.report` prints the results.

Cluster mode (``--cluster N``) runs the same load against 1, 2, ... N ``trio-chat
serve --redis URL`` processes sharing one room through one redis-server started for
each measurement; the clients (senders and the others alike) are spread round-robin
over the processes, so most deliveries cross Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .loader import Loaders, raise_nofile
from .servers import (
    cpu_seconds,
    peak_rss_mb,
    profile_top,
    rss_bytes,
    running_server,
    running_servers,
    start_profile,
)
from .targets import Settings, Target

#: A loader above this share of one core was the bottleneck, not the server.
SATURATED = 0.90


@dataclass
class Result:
    """One target measured once: the figures the report and ``--json`` show."""

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


def split(ids: Sequence[int], parts: int) -> list[list[int]]:
    """Client ids dealt out to the loaders like cards, so each gets every kind."""
    return [list(ids[i::parts]) for i in range(parts)]


def pick_senders(clients: int, senders: int, rooms: int = 1) -> set[int]:
    """Senders spread evenly over the join order; over several rooms, as evenly over
    the rooms (client ``cid`` is in room ``cid % rooms``)."""
    if rooms > 1:
        return set(range(min(senders, clients)))  # the first ones: one per room in turn
    step = max(1, clients // max(1, senders))
    return {i * step for i in range(min(senders, clients))}


def room_of(cid: int, rooms: int) -> int:
    """The room client ``cid`` joins when the clients are spread over ``rooms``."""
    return cid % rooms


def percentile(ordered: list[int], q: float) -> float:
    """The ``q`` quantile of sorted nanoseconds, in milliseconds."""
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
            senders = pick_senders(s.clients, s.senders, target.rooms)
            ids = split(range(s.clients), s.loaders)
            replies = loaders.ask([("connect", part, senders) for part in ids], 120)
            result.connected = sum(r["connected"] for r in replies)
            if result.connected < s.clients:
                result.error = f"{s.clients - result.connected} clients failed: " + "; ".join(
                    f for r in replies for f in r["failures"]
                )
            time.sleep(0.5)  # let the join notices settle
            servers = [psutil.Process(p.pid) for p in running.servers]
            redis = None if running.redis is None else psutil.Process(running.redis.pid)
            # Deliveries per message: the members of its room.
            per_message = s.clients / target.rooms
            rate = s.rate / per_message / max(1, len(senders)) if s.rate else 0.0
            t0 = time.monotonic() + 0.3
            loaders.tell(("run", t0, rate))
            time.sleep(max(0.0, t0 + s.warmup - time.monotonic()))
            each0, redis0 = cpu_seconds(servers), cpu_seconds([redis] if redis else [])
            spy = start_profile(target, s, proc.pid, run)
            time.sleep(max(0.0, t0 + s.warmup + s.duration - time.monotonic()))
            each1, redis1 = cpu_seconds(servers), cpu_seconds([redis] if redis else [])
            if spy is not None:
                spy[0].wait(30)
                result.extra["profile"] = spy[1]
                result.extra["profile_top"] = profile_top(spy[1])
            result.server_peak_rss_mb = max(peak_rss_mb(p.pid) for p in running.servers)
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
    # Each client should have every message sent in its room.
    sent_in: dict[int, int] = {}
    for r in runs:
        for room, n in r["sent_in"]:
            sent_in[room] = sent_in.get(room, 0) + n
    received = [(room, n) for r in runs for room, n in r["received"]]
    result.lost = sum(max(0, sent_in.get(room, 0) - n) for room, n in received)
    result.disconnected = sum(r["disconnected"] for r in runs)
    result.loader_cpu = [round(r["loader_cpu"], 2) for r in runs]
    result.loader_saturated = any(c >= SATURATED for c in result.loader_cpu)
    latencies = sorted(n for r in runs for n in r["latencies"])
    if latencies:
        result.p50_ms = percentile(latencies, 0.50)
        result.p99_ms = percentile(latencies, 0.99)
        result.max_ms = latencies[-1] / 1e6
    return result


def measure_scale(target: Target, settings: Settings, run: int = 0) -> Result:
    """Hold ``settings.clients`` joined connections: time the joins of each half (the
    second half joins a room that is already full), then RSS per idle joined connection."""
    s = settings
    result = Result(target.name, run, s.clients)
    with running_server(target) as proc:
        time.sleep(0.5)
        rss0 = rss_bytes(proc.pid)
        loaders = Loaders(target, s, s.clients)
        try:
            half = s.clients // 2
            first = loaders.ask(
                [("connect", part, set()) for part in split(range(half), s.loaders)], 600
            )
            second = loaders.ask(
                [
                    ("connect", part, set())
                    for part in split(range(half, s.clients), s.loaders)
                ],
                600,
            )
            result.connected = sum(r["connected"] for r in first + second)
            time.sleep(2.0)  # idle: notices flushed, queues empty
            rss1 = rss_bytes(proc.pid)
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
        result.server_peak_rss_mb = peak_rss_mb(proc.pid)
    return result


def run_bench(
    targets: list[Target], settings: Settings, runs: int = 1, scale: bool = False,
    progress: Callable[[Result], None] | None = None,
    starting: Callable[[int, Target], None] | None = None,
) -> list[Result]:  # fmt: skip
    """Each run measures every target in turn, so ratios compare like with like.
    ``starting`` is told of each measurement before it starts (they take seconds),
    ``progress`` of its result."""
    raise_nofile(settings.clients + 256)
    results = []
    measure = measure_scale if scale else measure_fanout
    for run in range(runs):
        for target in targets:
            if starting is not None:
                starting(run, target)
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

