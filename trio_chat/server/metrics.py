"""What the server counts, in plain integers: the one place the hot paths bump.

A Prometheus client's ``Counter.inc()`` per delivery would take a lock and a few
attribute lookups for every message to every member; here a delivery costs
``metrics.deliveries += n`` once per broadcast, and what is per connection (bytes and
messages written, chats read) is an attribute of the connection itself, folded in
here when it closes. ``trio_chat.admin.collector`` turns all of it into Prometheus
metrics when ``/metrics`` is scraped, and only then; nothing here imports
``prometheus_client``.

Every server's :class:`~trio_chat.server.rooms.Rooms` has one :class:`Metrics`
(``rooms.metrics``): several servers in one process (the tests) count apart.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from typing import Final

#: Bucket upper bounds, in seconds, for latencies measured in milliseconds to seconds:
#: event-loop lag, history commits, publish-to-delivery lag.
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Observations counted by bucket, with their sum and count: what a Prometheus
    histogram holds, kept without a Prometheus client (and without a lock: one event
    loop bumps it)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        #: Per bucket (not cumulative); the last one is past every bound (+Inf).
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at most that) per bucket, ``+Inf`` last: the
        Prometheus exposition's ``_bucket`` series."""
        out, total = [], 0
        for bound, count in zip([*map(repr, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class TransportTotals:
    """What the connections of one transport did, summed when each one closes (the
    live ones carry their own counts until then)."""

    __slots__ = ("accepted", "bytes_out", "messages_in", "messages_out", "open")

    def __init__(self) -> None:
        #: Connections accepted, ever (refused ones included).
        self.accepted = 0
        #: Connections open now, from accept (handshakes and page requests included).
        self.open = 0
        #: Of the closed connections: chat messages taken, messages and bytes written.
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_out = 0


class Metrics:
    """The server's counters and high-water marks (see the module docstring)."""

    def __init__(self) -> None:
        #: By transport kind (``tcp``, ``ws``); created on first use.
        self.transports: dict[str, TransportTotals] = {}
        #: Messages put in every member's queue (chat messages and notices) ...
        self.broadcasts = 0
        #: ... of which notices (join, leave, rename, summary): the rest are chat.
        self.notices = 0
        #: Queue entries those broadcasts made (one per member reached).
        self.deliveries = 0
        #: Direct messages sent (each reaches its recipient and echoes to its sender).
        self.direct_messages = 0
        #: Error messages sent to clients, by code (protocol.md's codes).
        self.errors: Counter[str] = Counter()
        #: Sessions ended, by reason (an error code, ``leave``, ``closed by peer``,
        #: ``shutdown``...), and connections refused (``server_full``).
        self.disconnects: Counter[str] = Counter()
        #: Messages flood control delayed, and the seconds of delay in all.
        self.rate_limit_delays = 0
        self.rate_limit_delay_seconds = 0.0
        #: Most entries ever waiting in one member's queue.
        self.queue_high_water = 0
        #: Bytes of replay being written to clients now.
        self.replay_bytes_in_flight = 0
        #: How late a task that sleeps a fixed interval wakes (trio_chat.admin.health).
        self.event_loop_lag = Histogram()
        #: Cluster mode: Redis's clock at publish (the message id) to this server's
        #: broadcast of it, per message read back.
        self.publish_lag = Histogram()
        #: Cluster mode: times this server re-synced its history with Redis, by cause:
        #: ``wiped`` (Redis came back empty or was flushed), ``failover`` (a new
        #: primary), ``lost_writes`` (Redis's last id was behind what this server had
        #: read or published: a failover to a replica that lacked the newest writes).
        self.redis_resyncs: Counter[str] = Counter()
        #: Cluster mode: Redis stream entries this server read, by stream: ``lobby``
        #: (#lobby's messages), ``rooms`` (other rooms' messages: only the rooms it has
        #: members in), ``inbox`` (direct messages to its members), ``events``.
        self.cluster_reads: Counter[str] = Counter()
        #: Cluster mode: message streams this server reads now (#lobby's included).
        self.cluster_streams = 0

    def transport(self, kind: str) -> TransportTotals:
        totals = self.transports.get(kind)
        if totals is None:
            totals = self.transports[kind] = TransportTotals()
        return totals

    def queue_depth(self, depth: int) -> None:
        """A writer found ``depth`` entries queued at once (called only when that is
        over the high-water mark, so almost never once it has settled)."""
        self.queue_high_water = max(self.queue_high_water, depth)
