"""The Prometheus view of a running server, built on each scrape.

:class:`ServerCollector` is a ``prometheus_client`` custom collector: nothing here runs
until ``/metrics`` is asked for. It reads the plain counters of
:class:`trio_chat.server.metrics.Metrics`, walks the live sessions once (their own
per-connection counts, their state, their queue depth), and asks the rooms' delivery
about the history and Redis. Names follow Prometheus's conventions: ``trio_chat_``
first, the unit in the name, counters ending in ``_total``.

Rooms: their number, how many have members, and the members of ``#lobby`` and of the
:data:`LABELLED_ROOMS` largest rooms with a ``room`` label (a server may have ten
thousand rooms: one series each would cost every scrape, and Prometheus, more than
they tell). What each scrape computes over the rooms is one pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..protocol import ERROR_CODES, IDLE_TIMEOUT, RATE_LIMITED, SERVER_FULL, SLOW_CONSUMER, TOO_LONG
from ..server.limits import CONNECT_RATE
from ..server.metrics import Histogram
from ..server.room import RESUMED
from ..server.session import GONE, PING_TIMEOUT, PROTOCOL_ERROR, SHUTDOWN
from .health import readiness

if TYPE_CHECKING:
    from ..server.app import Running

#: Connection states (``trio_chat_connections{state}``): accepted but no session yet (a
#: TLS or HTTP handshake, or a request for the page), a session neither joined nor
#: listening (a page before its name is chosen, ``nc`` before ``/nick``), a listener
#: (it gets the room's traffic without a name), a member.
STATES = ("handshake", "waiting", "listening", "joined")
#: Transports always reported, even with no connection yet (a dashboard's legend).
TRANSPORTS = ("tcp", "ws")
LINK_STATES = ("down", "restoring", "up")
#: Rooms whose members are a labelled series (``trio_chat_room_members{room}``):
#: ``#lobby`` and the largest others.
LABELLED_ROOMS: Final = 20
#: Disconnect reasons always reported (0 until they happen: a rate() needs the series).
#: Others (``error``...) appear when they first happen.
REASONS = (
    "leave", "closed by peer", GONE, SHUTDOWN, SLOW_CONSUMER, RATE_LIMITED, IDLE_TIMEOUT,
    PING_TIMEOUT, TOO_LONG, PROTOCOL_ERROR, SERVER_FULL, CONNECT_RATE, RESUMED,
)  # fmt: skip


def registry_for(running: Running) -> CollectorRegistry:
    """A registry of its own per server (several run in one process in the tests):
    trio-chat's metrics, and the process's CPU, memory, file descriptors and GC."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(running))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def histogram(name: str, doc: str, data: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=data.cumulative(), sum_value=data.sum)


class ServerCollector(Collector):
    """``trio_chat_*`` metrics, read from the server when scraped (see the module doc)."""

    def __init__(self, running: Running) -> None:
        self.running = running

    def collect(self) -> Iterator[Metric]:
        running = self.running
        rooms, metrics = running.rooms, running.rooms.metrics
        delivery = rooms.delivery

        # ---- connections, and what the live ones did so far
        kinds = sorted({*TRANSPORTS, *metrics.transports})
        states = {(kind, state): 0 for kind in kinds for state in STATES}
        messages_in = dict.fromkeys(kinds, 0)
        messages_out = dict.fromkeys(kinds, 0)
        bytes_out = dict.fromkeys(kinds, 0)
        deepest = 0
        for session in list(running.gate.live):
            transport = session.transport
            kind = transport.kind
            if kind not in messages_in:  # a transport added since (no totals yet)
                kinds.append(kind)
                messages_in[kind] = messages_out[kind] = bytes_out[kind] = 0
                states.update({(kind, state): 0 for state in STATES})
            member = session.member
            state = "joined" if member.joined else "listening" if member.listening else "waiting"
            states[kind, state] += 1
            messages_in[kind] += session.messages_in
            messages_out[kind] += transport.messages_out
            bytes_out[kind] += transport.bytes_out
            deepest = max(deepest, session.queued)
        connections = GaugeMetricFamily(
            "trio_chat_connections",
            "Connections open now, by transport and state (handshake: accepted, no "
            "session yet; waiting: neither joined nor listening; listening: receiving "
            "without a name; joined: a member).",
            labels=["transport", "state"],
        )
        accepted = CounterMetricFamily(
            "trio_chat_connections_accepted", "Connections accepted (refused ones too).",
            labels=["transport"],
        )
        received = CounterMetricFamily(
            "trio_chat_messages_received", "Chat messages taken from clients on this server.",
            labels=["transport"],
        )
        sent = CounterMetricFamily(
            "trio_chat_messages_sent", "Messages written to clients (every kind).",
            labels=["transport"],
        )
        sent_bytes = CounterMetricFamily(
            "trio_chat_sent_bytes", "Bytes written to clients (framing included).",
            labels=["transport"],
        )
        for kind in kinds:
            totals = metrics.transport(kind)
            live = states[kind, "waiting"] + states[kind, "listening"] + states[kind, "joined"]
            states[kind, "handshake"] = max(0, totals.open - live)
            for state in STATES:
                connections.add_metric([kind, state], states[kind, state])
            accepted.add_metric([kind], totals.accepted)
            received.add_metric([kind], totals.messages_in + messages_in[kind])
            sent.add_metric([kind], totals.messages_out + messages_out[kind])
            sent_bytes.add_metric([kind], totals.bytes_out + bytes_out[kind])
        yield from (connections, accepted, received, sent, sent_bytes)

        # ---- the rooms
        every = rooms.all
        occupied = [room for room in every if len(room)]
        yield GaugeMetricFamily("trio_chat_rooms", "Rooms on this server.", value=len(every))
        yield GaugeMetricFamily(
            "trio_chat_rooms_occupied", "Rooms with at least one member on this server.",
            value=len(occupied),
        )
        yield GaugeMetricFamily(
            "trio_chat_members", "Members (connections joined under a name) on this server.",
            value=len(rooms),
        )
        yield GaugeMetricFamily(
            "trio_chat_room_memberships",
            "Members of rooms, summed over the rooms (a member of three rooms counts 3).",
            value=sum(len(room) for room in occupied),
        )
        per_room = GaugeMetricFamily(
            "trio_chat_room_members",
            f"Members of #lobby and of the {LABELLED_ROOMS} largest other rooms (every "
            "server's in #lobby with --redis).",
            labels=["room"],
        )
        largest = heapq.nlargest(
            LABELLED_ROOMS, (room for room in occupied if not room.lobby), key=len
        )
        for room in [rooms.lobby, *largest]:
            per_room.add_metric([room.name], room.count)
        yield per_room
        yield GaugeMetricFamily(
            "trio_chat_held_seats",
            "Members whose connection was lost, their seat kept for a resume "
            "(--resume-grace); counted in trio_chat_members too.",
            value=len(rooms.seats.held()),
        )
        yield GaugeMetricFamily(
            "trio_chat_cluster_members",
            "Members of #lobby on every server sharing it (this server's without --redis).",
            value=rooms.count,
        )
        yield CounterMetricFamily(
            "trio_chat_direct_messages", "Direct messages sent by this server's users.",
            value=metrics.direct_messages,
        )
        broadcast = CounterMetricFamily(
            "trio_chat_messages_broadcast",
            "Messages put in every member's queue: chat, and system notices.",
            labels=["type"],
        )
        broadcast.add_metric(["chat"], metrics.broadcasts - metrics.notices)
        broadcast.add_metric(["system"], metrics.notices)
        yield broadcast
        yield CounterMetricFamily(
            "trio_chat_deliveries", "Queue entries made by broadcasts (one per member reached).",
            value=metrics.deliveries,
        )
        errors = CounterMetricFamily(
            "trio_chat_errors", "Error messages sent to clients, by code.", labels=["code"]
        )
        for code in sorted({*ERROR_CODES, *metrics.errors}):
            errors.add_metric([code], metrics.errors[code])
        yield errors
        disconnects = CounterMetricFamily(
            "trio_chat_disconnects",
            "Sessions ended (and connections refused), by reason.",
            labels=["reason"],
        )
        for reason in sorted({*REASONS, *metrics.disconnects}):
            disconnects.add_metric([reason], metrics.disconnects[reason])
        yield disconnects
        yield CounterMetricFamily(
            "trio_chat_rate_limit_delays", "Messages flood control delayed.",
            value=metrics.rate_limit_delays,
        )
        yield CounterMetricFamily(
            "trio_chat_rate_limit_delay_seconds", "Seconds of delay flood control imposed.",
            value=metrics.rate_limit_delay_seconds,
        )
        yield GaugeMetricFamily(
            "trio_chat_queue_depth_high_water",
            "Most entries ever waiting in one member's queue (since start).",
            value=metrics.queue_high_water,
        )
        yield GaugeMetricFamily(
            "trio_chat_queue_depth_max", "Entries waiting in the fullest member queue now.",
            value=deepest,
        )
        yield GaugeMetricFamily(
            "trio_chat_queue_capacity",
            "Entries a member's queue holds before it is evicted (--queue-size).",
            value=running.config.queue_size,
        )
        yield GaugeMetricFamily(
            "trio_chat_replay_bytes_in_flight", "Bytes of replayed history being written now.",
            value=metrics.replay_bytes_in_flight,
        )

        # ---- the history (SQLite, or Redis)
        yield GaugeMetricFamily(
            "trio_chat_history_pending",
            "Chat messages taken and not yet stored (SQLite writer, or Redis).",
            value=delivery.pending,
        )
        history = rooms.history
        if history is not None:
            if history.memory_bytes is not None:
                yield GaugeMetricFamily(
                    "trio_chat_history_memory_bytes",
                    "Bytes of the rooms' newest messages held in memory for replays "
                    "(bounded by --history-memory-mb).",
                    value=history.memory_bytes,
                )
            if history.stored_bytes is not None:
                yield GaugeMetricFamily(
                    "trio_chat_history_stored_bytes",
                    "Bytes of the history database's pages in use (indexes included, not "
                    "the WAL): what --history-max-mb bounds.",
                    value=history.stored_bytes,
                )
        yield histogram(
            "trio_chat_history_commit_seconds",
            "Seconds per batch to reach the history: an SQLite commit, or the Redis "
            "publish script.",
            delivery.commit_seconds,
        )

        # ---- Redis
        if running.config.redis:
            yield from self._redis()

        # ---- the process's health
        yield histogram(
            "trio_chat_event_loop_lag_seconds",
            "How late a task sleeping a fixed interval woke: time the event loop was busy.",
            metrics.event_loop_lag,
        )
        yield GaugeMetricFamily(
            "trio_chat_ready", "1 when /readyz answers 200.", value=int(not readiness(running))
        )

    def _redis(self) -> Iterator[Metric]:
        running = self.running
        metrics = running.rooms.metrics
        state, links = running.rooms.delivery.link or ("down", 0)
        yield GaugeMetricFamily(
            "trio_chat_redis_up", "1 while the link to Redis is up.", value=int(state == "up")
        )
        link = GaugeMetricFamily(
            "trio_chat_redis_link_state", "The link to Redis: 1 for its state.",
            labels=["state"],
        )
        for name in LINK_STATES:
            link.add_metric([name], int(state == name))
        yield link
        yield CounterMetricFamily(
            "trio_chat_redis_links", "Times the link to Redis came up (reconnections + 1).",
            value=links,
        )
        resyncs = CounterMetricFamily(
            "trio_chat_redis_resyncs",
            "Times this server re-synced its history with Redis, by cause: wiped (Redis "
            "came back empty or was flushed), failover (a new primary), lost_writes "
            "(Redis was behind what this server had read: restored from memory).",
            labels=["cause"],
        )
        for cause in ("wiped", "failover", "lost_writes"):
            resyncs.add_metric([cause], metrics.redis_resyncs[cause])
        yield resyncs
        reads = CounterMetricFamily(
            "trio_chat_redis_entries_read",
            "Redis stream entries this server read, by stream: lobby (#lobby's messages), "
            "rooms (other rooms' messages: only those of rooms it has members in), inbox "
            "(direct messages to its members), events (presence and topics).",
            labels=["stream"],
        )
        for stream in ("lobby", "rooms", "inbox", "events"):
            reads.add_metric([stream], metrics.cluster_reads[stream])
        yield reads
        yield GaugeMetricFamily(
            "trio_chat_redis_streams_read",
            "Message streams this server reads (#lobby's, and one per other room it has "
            "members in).", value=metrics.cluster_streams,
        )
        yield histogram(
            "trio_chat_publish_lag_seconds",
            "Redis's clock at publish (the id) to this server's broadcast, per message.",
            metrics.publish_lag,
        )
