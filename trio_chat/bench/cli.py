"""``trio-chat bench``: the fan-out benchmark's command (loaded only when run)."""

from __future__ import annotations

import shutil
from typing import Any

import click

from .report import report, to_json
from .runner import Result, run_bench
from .servers import find_py_spy
from .targets import (
    MODES,
    Settings,
    Target,
    cluster_targets,
    our_targets,
    peer_target,
    scale_target,
)


@click.command()
@click.option("--mode", "modes", multiple=True, type=click.Choice(MODES),
              help="trio-chat modes to measure (repeatable) [default: all].")
@click.option("--peer", "peers", multiple=True, nargs=3, metavar="NAME URL COMMAND",
              help="A peer server: its name, its ws:// URL and the command that starts "
                   "it (repeatable).")
@click.option("--clients", type=click.IntRange(1), default=100, show_default=True,
              help="Connections joined to the room; each receives every message.")
@click.option("--senders", type=click.IntRange(0), default=10, show_default=True,
              help="Of the clients, how many send (spread over the join order).")
@click.option("--window", type=click.IntRange(1), default=4, show_default=True,
              help="Messages each sender keeps in flight (closed loop).")
@click.option("--rate", type=click.FloatRange(0), default=0, show_default=True,
              help="Fixed total deliveries/s instead of the closed loop (0: closed loop).")
@click.option("--duration", type=click.FloatRange(0.5), default=8.0, show_default=True,
              help="Seconds measured, after the warm-up.")
@click.option("--warmup", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Seconds of load before the measurement starts (not counted).")
@click.option("--loaders", type=click.IntRange(1), default=1, show_default=True,
              help="Loader processes sharing the clients.")
@click.option("--probe-every", type=click.IntRange(0), default=10, show_default=True,
              help="Every Nth client records the latency of each delivery.")
@click.option("--runs", type=click.IntRange(1), default=1, show_default=True,
              help="Measure every server this many times, in turn.")
@click.option("--scale", is_flag=True,
              help="Instead: hold --clients idle joined connections (trio-chat: half TCP, "
                   "half WebSocket); report join time and RSS per connection.")
@click.option("--profile-dir", default="", metavar="DIR",
              help="Record a py-spy profile of each Python server into DIR "
                   "(--cluster: of each row's first process).")
@click.option("--cluster", type=click.IntRange(1), default=None, metavar="N",
              help="Instead: 1, 2, ... N 'trio-chat serve --redis' processes sharing the "
                   "room through one redis-server (and 1 without Redis), clients spread "
                   "over them [default mode: tcp].")
@click.option("--redis-wait", type=click.IntRange(0), default=0, metavar="N",
              help="With --cluster: also measure each row with N replicas of its Redis, "
                   "and with them and 'serve --redis-wait N'.")
@click.option("--rooms", type=click.IntRange(2), default=None, metavar="N",
              help="Also measure each mode with the clients spread over N rooms (a "
                   "message reaches its room's members only; the senders are dealt over "
                   "the rooms: use --senders N for one per room), in the same runs.")
@click.option("--baseline", default=None, metavar="PYTHON",
              help="Also measure each mode (one room) as run by this Python: an older "
                   "checkout's virtualenv, for before/after figures in the same runs "
                   "(rows 'baseline MODE').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench(modes: tuple[str, ...], peers: tuple[tuple[str, str, str], ...], runs: int,
          scale: bool, cluster: int | None, redis_wait: int, rooms: int | None,
          baseline: str | None, as_json: bool, **settings: Any) -> None:
    """Fan-out benchmark: trio-chat against peer servers, in one run."""
    config = Settings(**settings)
    targets: list[Target]
    if (rooms and (scale or cluster)) or (baseline and scale):
        raise click.UsageError("--rooms goes with the fan-out benchmark only, --baseline "
                               "with it or --cluster")
    if cluster:
        if scale or peers:
            raise click.UsageError("--cluster measures trio-chat alone: no --scale, no --peer")
        if shutil.which("redis-server") is None:
            raise click.ClickException(
                "--cluster needs redis-server on PATH (Debian package redis-server)"
            )
        targets = cluster_targets(cluster, modes or ("tcp",), redis_wait=redis_wait)
        if baseline:
            targets += cluster_targets(cluster, modes or ("tcp",), python=baseline,
                                       redis_wait=redis_wait, label="baseline")
    elif redis_wait:
        raise click.UsageError("--redis-wait goes with --cluster")
    elif scale:
        targets = [scale_target()] if not modes else []
    else:
        targets = []
        for mode in modes or MODES:  # each mode's rows side by side, in every run
            targets += our_targets([mode])
            if baseline:
                targets += our_targets([mode], python=baseline, label="baseline")
            if rooms:
                targets += our_targets([mode], rooms=rooms)

    for name, url, command in peers:
        try:
            targets.append(peer_target(name, url, command))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--peer") from None

    def progress(result: Result) -> None:
        if not as_json:
            figure = (f"{result.connected} connected" if scale
                      else f"{result.deliveries_per_s:,.0f} deliveries/s")
            click.echo(f"  run {result.run + 1}: {result.target}: {figure}"
                       + (f" ({result.error})" if result.error else ""), err=True)

    def starting(run: int, target: Target) -> None:
        if not as_json:
            what = (f"{config.clients} idle connections" if scale else
                    f"{config.clients} clients, {config.warmup:g} s warm-up + "
                    f"{config.duration:g} s")
            click.echo(f"  run {run + 1}: {target.name}: starting ({what})...", err=True)

    _check_tools(config)
    if not as_json:
        click.echo(f"measuring {len(targets)} server(s), {runs} run(s) each", err=True)
    results = run_bench(targets, config, runs, scale, progress, starting)
    if as_json:
        click.echo(to_json(results, config))
    else:
        click.echo(report(results, scale))


def _check_tools(config: Settings) -> None:
    """What the measurement needs beyond trio-chat's own dependencies (the ``bench``
    extra), checked before any server starts rather than failing in the middle."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "trio-chat bench needs psutil: pip install 'trio-chat[bench]'"
        ) from None
    if config.profile_dir and find_py_spy() is None:
        raise click.ClickException("--profile-dir needs py-spy: pip install 'trio-chat[bench]'")
