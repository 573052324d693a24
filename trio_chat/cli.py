"""The ``trio-chat`` command: click turns options into a Config, then calls the library."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import bench as bench_mod
from . import server
from .config import Config

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Config()
LOG_LEVELS = ["debug", "info", "warning", "error"]


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """A click option that can also be set from ``TRIO_CHAT_<NAME>``."""
    name = decls[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    attrs.setdefault("show_default", True)
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, envvar=f"TRIO_CHAT_{name}", **attrs)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.version_option(package_name="trio-chat")
def main() -> None:
    """trio-chat: one chat room for raw-TCP (nc) and WebSocket clients."""


@main.command()
@option("--host", default=DEFAULTS.host, help="Address to listen on.")
@option("--tcp-port", type=click.IntRange(0, 65535), default=DEFAULTS.tcp_port,
        help="NDJSON-over-TCP port (0: any free port).")
@option("--ws-port", type=click.IntRange(0, 65535), default=DEFAULTS.ws_port,
        help="WebSocket port (0: any free port).")
@option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=DEFAULTS.log_level)
@option("--max-text", type=click.IntRange(1), default=DEFAULTS.max_text,
        help="Longest chat message, in characters.")
@option("--max-line", type=click.IntRange(256), default=DEFAULTS.max_line,
        help="Longest TCP line / WebSocket message, in bytes.")
@option("--queue-size", type=click.IntRange(1), default=DEFAULTS.queue_size,
        help="Messages queued per client before it is dropped as a slow consumer.")
@option("--send-timeout", type=click.FloatRange(0, min_open=True),
        default=DEFAULTS.send_timeout,
        help="Seconds a write to one client may take before it is dropped.")
def serve(**options: Any) -> None:
    """Run the chat server."""
    config = Config(**options)
    setup_logging(config.log_level)
    server.run(config)


@main.command()
@click.option("--mode", "modes", multiple=True, type=click.Choice(bench_mod.MODES),
              help="trio-chat modes to measure (repeatable) [default: all three].")
@click.option("--peer", "peers", multiple=True, nargs=3, metavar="NAME URL COMMAND",
              help="A peer server: its name, its ws:// URL and the command that starts "
                   "it (repeatable).")
@click.option("--clients", type=click.IntRange(1), default=100, show_default=True)
@click.option("--senders", type=click.IntRange(0), default=10, show_default=True)
@click.option("--window", type=click.IntRange(1), default=4, show_default=True,
              help="Messages each sender keeps in flight (closed loop).")
@click.option("--rate", type=click.FloatRange(0), default=0, show_default=True,
              help="Fixed total deliveries/s instead of the closed loop (0: closed loop).")
@click.option("--duration", type=click.FloatRange(0.5), default=8.0, show_default=True,
              help="Seconds measured, after the warm-up.")
@click.option("--warmup", type=click.FloatRange(0), default=1.0, show_default=True)
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
              help="Record a py-spy profile of each Python server into DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench(modes: tuple[str, ...], peers: tuple[tuple[str, str, str], ...], runs: int,
          scale: bool, as_json: bool, **settings: Any) -> None:
    """Fan-out benchmark: trio-chat against peer servers, in one run."""
    config = bench_mod.Settings(**settings)
    if scale:
        targets = [bench_mod.scale_target()] if not modes else []
    else:
        targets = bench_mod.our_targets(modes or bench_mod.MODES)
    targets += [bench_mod.peer_target(*peer) for peer in peers]

    def progress(result: bench_mod.Result) -> None:
        if not as_json:
            figure = (f"{result.connected} connected" if scale
                      else f"{result.deliveries_per_s:,.0f} deliveries/s")
            click.echo(f"  run {result.run + 1}: {result.target}: {figure}"
                       + (f" ({result.error})" if result.error else ""), err=True)

    results = bench_mod.run_bench(targets, config, runs, scale, progress)
    if as_json:
        click.echo(bench_mod.to_json(results, config))
    else:
        click.echo(bench_mod.report(results, scale))
