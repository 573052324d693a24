"""The benchmark's reports: a table per kind of run (fan-out, scale, cluster), with the
ratios of trio-chat's rows to each peer's, or everything as JSON.

Each table shows the median of the runs with the min-max. A ratio divides two rows'
medians, followed by the spread of the per-run ratios: a run measures every target in
turn, so a run's ratio compares servers measured under nearly the same conditions, and
the spread shows how far the machine's noise moves it.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass

from .runner import Result
from .targets import Settings


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
    wide = max(18, *map(len, names))
    lines.append(
        f"{'server':<{wide}} {'deliveries/s (min-max)':>24} {'per CPU-s':>9} {'p50 ms':>7} "
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
            f"{name:<{wide}} {rate[name]:>11,.0f} {row.spread:>12} {per_cpu[name]:>9,.0f} "
            f"{_fmt(row.p50):>7} {_fmt(row.p99):>7} {_fmt(row.worst):>7} {row.lost:>5} "
            f"{_median([r.server_cpu for r in rows]):>7.0%} "
            f"{max(r.server_peak_rss_mb for r in rows):>7.1f} "
            f"{row.loader:>6.0%}{row.flag}" + row.errors
        )
    ours = [n for n in names if n.startswith("trio-chat")]
    peers = [n for n in names if n not in ours]
    # Each of our rows against each peer; a baseline (this code before a change) and a
    # several-rooms row against their own mode's one-room row only.
    pairs = [
        (n, p) for n in ours for p in peers
        if not p.startswith("baseline ") or n == "trio-chat " + p.removeprefix("baseline ")
    ]
    pairs += [(n, n.split(" x", 1)[0]) for n in ours
              if n.endswith(" rooms") and n.split(" x", 1)[0] in rate]
    if pairs:
        lines.append("ratios (median of runs; per-run spread; per server CPU-second):")
    for n, p in pairs:
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
    for name in names:  # --baseline: each row against the other checkout's
        ours = "trio-chat " + name.removeprefix("baseline ")
        if name.startswith("baseline ") and ours in rate:
            lines.append(
                f"  {ours} / {name}: {_ratio(rate[ours], rate[name])}; "
                f"{_ratio(per_cpu[ours], per_cpu[name])} per CPU-s"
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


def to_json(results: list[Result], settings: Settings) -> str:
    """The settings and every result, field by field (``--json``)."""
    return json.dumps(
        {"settings": asdict(settings), "results": [asdict(r) for r in results]}, indent=2
    )

