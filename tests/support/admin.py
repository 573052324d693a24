"""The admin listener (``--admin-port``) as a scraper sees it: a GET, ``/metrics``
parsed with prometheus_client's own parser, and the metrics every server exports."""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

from .http import exchange
from .waits import WAIT

#: Every metric the issue names, as its family (prometheus_client's parser drops
#: ``_total`` from a counter's name and groups a histogram's series).
NAMED = {
    "trio_chat_connections": "gauge",  # by transport and state (listening, joined)
    "trio_chat_connections_accepted": "counter",
    "trio_chat_members": "gauge",
    "trio_chat_cluster_members": "gauge",
    "trio_chat_rooms": "gauge",
    "trio_chat_rooms_occupied": "gauge",
    "trio_chat_room_members": "gauge",  # by room: #lobby and the largest
    "trio_chat_room_memberships": "gauge",
    "trio_chat_direct_messages": "counter",
    "trio_chat_messages_received": "counter",
    "trio_chat_messages_broadcast": "counter",
    "trio_chat_deliveries": "counter",
    "trio_chat_messages_sent": "counter",
    "trio_chat_sent_bytes": "counter",
    "trio_chat_errors": "counter",
    "trio_chat_disconnects": "counter",
    "trio_chat_rate_limit_delays": "counter",
    "trio_chat_rate_limit_delay_seconds": "counter",
    "trio_chat_queue_depth_high_water": "gauge",
    "trio_chat_queue_depth_max": "gauge",
    "trio_chat_history_commit_seconds": "histogram",
    "trio_chat_history_pending": "gauge",
    "trio_chat_replay_bytes_in_flight": "gauge",
    "trio_chat_event_loop_lag_seconds": "histogram",
    "trio_chat_ready": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
}
#: With --redis, besides.
NAMED_REDIS = {
    "trio_chat_redis_up": "gauge",
    "trio_chat_redis_link_state": "gauge",
    "trio_chat_redis_links": "counter",
    "trio_chat_redis_resyncs": "counter",
    "trio_chat_publish_lag_seconds": "histogram",
}


class Scrape:
    """One parsed ``/metrics`` answer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, name: str, **labels: str) -> float:
        """The one sample called ``name`` (a family's own name, or a histogram's
        ``_count``/``_sum``) with these labels."""
        family = self.families.get(name) or self.families[name.rsplit("_", 1)[0]]
        found = [s.value for s in family.samples
                 if s.name in (name, f"{name}_total") and s.labels == labels]
        assert len(found) == 1, (name, labels, family.samples)
        return found[0]


async def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """``GET path`` on the admin listener at ``port``: status, headers, body."""
    return await exchange(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


async def scrape(port: int) -> Scrape:
    """One scrape of ``/metrics``, checked to be the Prometheus text format."""
    status, headers, body = await get(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    return Scrape(body.decode())


async def scrape_until(port: int, name: str, value: float) -> Scrape:
    """Scrape again until ``name`` has ``value`` (each scrape is a round trip)."""
    with trio.fail_after(WAIT):
        while (got := await scrape(port)).value(name) != value:
            pass
    return got
