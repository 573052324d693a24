"""The ``trio-chat`` command: click turns options into a Config, then calls the library."""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import server, tls
from .config import Config
from .origin import OriginPolicy

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


def _check_origins(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        OriginPolicy(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


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
@option("--handshake-timeout", type=click.FloatRange(0, min_open=True),
        default=DEFAULTS.handshake_timeout,
        help="Seconds a new connection has for its TLS handshake and a WebSocket for "
        "its opening handshake (each).")
@option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
        help="PEM certificate chain: serve TLS on the TCP port and wss:// on the WebSocket port.")
@option("--tls-key", type=click.Path(exists=True, dir_okay=False),
        help="PEM private key for --tls-cert (if the key is not in that file).")
@option("--allowed-origin", "allowed_origins", multiple=True, callback=_check_origins,
        help="An origin (scheme://host[:port], or *) whose web pages may open a WebSocket; "
        "repeatable (space-separated in the environment variable). Besides it, the page's "
        "own origin and clients without an Origin header are allowed; others get 403.")
def serve(**options: Any) -> None:
    """Run the chat server."""
    config = Config(**options)
    if config.tls_key and not config.tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    if config.tls_cert:
        try:
            tls.server_context(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise click.BadParameter(f"cannot load certificate/key: {exc}",
                                     param_hint="'--tls-cert' / '--tls-key'") from None
    setup_logging(config.log_level)
    sys.exit(server.run(config))
