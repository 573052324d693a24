"""``trio-chat status``: a running server's ``/metrics`` and ``/readyz``, in a few lines.

Rates (messages per second) and the p99 latencies are taken over the interval between
two scrapes, so the summary says what the server is doing now rather than since it
started; a histogram with no new observations in the interval falls back to its
whole life. Quantiles are estimated from the buckets as Prometheus's
``histogram_quantile`` does (linear within the bucket).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

#: Seconds one request may take.
TIMEOUT = 5.0

Labels = tuple[tuple[str, str], ...]


class Unreachable(Exception):
    """The admin listener did not answer."""


@dataclass
class Snapshot:
    """One scrape: every sample by name and labels, and what ``/readyz`` said."""

    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)
    ready: bool = False
    reasons: list[str] = field(default_factory=list)

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def total(self, name: str, **match: str) -> float:
        """The sum over every series of ``name`` whose labels include ``match``."""
        return sum(value for labels, value in self.samples.get(name, {}).items()
                   if set(match.items()) <= set(labels))

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, {}).items():
            out[dict(labels).get(label, "")] += value
        return dict(out)

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """A histogram's cumulative buckets, (upper bound, count), in order."""
        found = [(float(dict(labels)["le"]), value)
                 for labels, value in self.samples.get(f"{name}_bucket", {}).items()]
        return sorted(found)


def parse(text: str) -> dict[str, dict[Labels, float]]:
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return dict(samples)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(f"cannot reach {url}: {reason}") from None


def fetch(base: str) -> Snapshot:
    """Scrape ``base`` + ``metrics`` and ``readyz`` (``base`` ends with ``/``)."""
    status, body = _get(base + "metrics")
    if status != 200:
        raise Unreachable(f"{base}metrics answered {status}")
    snapshot = Snapshot(parse(body.decode("utf-8", "replace")))
    status, body = _get(base + "readyz")
    snapshot.ready = status == 200
    if not snapshot.ready:
        try:
            snapshot.reasons = list(json.loads(body)["reasons"])
        except (ValueError, KeyError, TypeError):
            snapshot.reasons = [f"readyz answered {status}"]
    return snapshot


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative buckets; None if empty."""
    buckets = list(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # past the last finite bucket: its bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _window(before: Snapshot | None, after: Snapshot, name: str) -> list[tuple[float, float]]:
    """A histogram's buckets over the interval; its whole life if nothing was new."""
    now = after.buckets(name)
    if before is None:
        return now
    then = dict(before.buckets(name))
    delta = [(bound, count - then.get(bound, 0.0)) for bound, count in now]
    return delta if delta and delta[-1][1] > 0 else now


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.0f} s"


def _rate(before: Snapshot | None, after: Snapshot, elapsed: float, name: str,
          **match: str) -> str:
    if before is None or elapsed <= 0:
        return f"{after.total(name, **match):,.0f} in all"
    return f"{(after.total(name, **match) - before.total(name, **match)) / elapsed:,.1f}/s"


def summarize(url: str, before: Snapshot | None, after: Snapshot, elapsed: float) -> list[str]:
    """The human summary of a scrape (rates against ``before``, ``elapsed`` s earlier)."""
    lines = [f"trio-chat at {url}: " + ("ready" if after.ready else
                                        "NOT READY (" + "; ".join(after.reasons) + ")")]
    connections = after.by("trio_chat_connections", "transport")
    joined = after.total("trio_chat_connections", state="joined")
    members, everyone = after.get("trio_chat_members"), after.get("trio_chat_cluster_members")
    per = ", ".join(f"{kind} {count:.0f}" for kind, count in sorted(connections.items()))
    online = f"{members:.0f} members"
    if everyone != members:
        online += f" here, {everyone:.0f} on every server"
    lines.append(f"online    {online}; {sum(connections.values()):.0f} connections "
                 f"({per}), {joined:.0f} joined")
    lines.append(f"rooms     {after.get('trio_chat_rooms'):.0f}")
    lines.append(
        "messages  " + _rate(before, after, elapsed, "trio_chat_messages_received_total")
        + " received, " + _rate(before, after, elapsed, "trio_chat_messages_broadcast_total",
                                type="chat")
        + " broadcast, " + _rate(before, after, elapsed, "trio_chat_deliveries_total")
        + " deliveries"
    )
    loop = quantile(0.99, _window(before, after, "trio_chat_event_loop_lag_seconds"))
    lag = f"p99 lag   event loop {_ms(loop)}"
    if "trio_chat_publish_lag_seconds_bucket" in after.samples:
        publish = quantile(0.99, _window(before, after, "trio_chat_publish_lag_seconds"))
        lag += f", publish to delivery {_ms(publish)}"
    lines.append(lag)
    if "trio_chat_redis_up" in after.samples:
        state = next((dict(labels)["state"] for labels, value
                      in after.samples.get("trio_chat_redis_link_state", {}).items()
                      if value), "?")
        resyncs = after.by("trio_chat_redis_resyncs_total", "cause")
        causes = ", ".join(f"{cause} {n:.0f}" for cause, n in sorted(resyncs.items()) if n)
        lines.append(f"redis     {state}; linked {after.get('trio_chat_redis_links_total'):.0f}"
                     f" times; re-synced: {causes or 'never'}")
    else:
        lines.append("redis     not used (one server, SQLite history)")
    commit = quantile(0.99, _window(before, after, "trio_chat_history_commit_seconds"))
    lines.append(f"history   {after.get('trio_chat_history_pending'):.0f} pending; "
                 f"commit p99 {_ms(commit)}")
    errors = [f"{code} {n:.0f}" for code, n
              in sorted(after.by("trio_chat_errors_total", "code").items()) if n]
    lines.append("errors    " + (", ".join(errors) if errors else "none"))
    dropped = [f"{why} {n:.0f}" for why, n
               in sorted(after.by("trio_chat_disconnects_total", "reason").items())
               if n and why not in ("leave", "closed by peer")]
    lines.append("dropped   " + (", ".join(dropped) if dropped else "none"))
    rss = after.get("process_resident_memory_bytes") / 2**20
    lines.append(f"process   {rss:.0f} MB RSS, {after.get('process_open_fds'):.0f} fds, "
                 f"{after.get('process_cpu_seconds_total'):.1f} s CPU")
    return lines
