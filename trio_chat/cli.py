"""The ``trio-chat`` command: click turns options into a Config, then calls the library."""

from __future__ import annotations

import importlib
import ssl
import sys
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import click

from . import client, protocol
from .client import ClientConfig, ClientError
from .client.display import clean
from .config import REDIS_SCHEMES, SENTINEL_SCHEME, Config, parse_sentinel_url
from .logs import FORMATS, setup_logging
from .transports import tls
from .transports.origin import HostPolicy, OriginPolicy

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Config()
LOG_LEVELS = ["debug", "info", "warning", "error"]


def default_db_path() -> str:
    """``trio-chat.db`` in the platform's user data directory."""
    import platformdirs

    return str(platformdirs.user_data_path("trio-chat") / "trio-chat.db")


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """A click option that can also be set from ``TRIO_CHAT_<NAME>``."""
    name = decls[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    attrs.setdefault("show_default", True)
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, envvar=f"TRIO_CHAT_{name}", **attrs)


def _check_origins(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        OriginPolicy(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_hosts(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        HostPolicy(value, "0.0.0.0")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_redis(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    scheme = urlsplit(value).scheme
    if scheme == SENTINEL_SCHEME:
        try:
            parse_sentinel_url(value)
        except ValueError as exc:
            raise click.BadParameter(
                f"{exc} (expected redis+sentinel://host:26379[,host:port...]/service[/db])"
            ) from None
    elif scheme not in REDIS_SCHEMES:
        raise click.BadParameter(
            "expected redis://host[:port][/db] (or rediss://, unix://, "
            "redis+sentinel://host:26379[,host:port...]/service)"
        )
    return value


class Duration(click.ParamType[float, Any]):
    """Seconds, or a number with a unit: ``90s``, ``30m``, ``12h``, ``7d``."""

    name = "duration"
    UNITS: ClassVar[dict[str, float]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        scale = self.UNITS.get(text[-1:], 0)
        try:
            seconds = float(text[:-1] if scale else text) * (scale or 1)
        except ValueError:
            seconds = -1
        if not 0 < seconds < float("inf"):
            self.fail(f"{value!r} is not a duration (seconds, or 90m, 12h, 7d)", param, ctx)
        return seconds


class LazyGroup(click.Group):
    """A group whose optional commands are imported only when run (click's documented
    pattern): ``trio-chat bench`` lives in :mod:`trio_chat.bench`, which ``serve`` and
    ``join`` never import."""

    LAZY: ClassVar[dict[str, str]] = {
        "bench": "trio_chat.bench.cli", "admin": "trio_chat.admin.commands",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module = importlib.import_module(self.LAZY[cmd_name])
            command: click.Command = getattr(module, cmd_name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
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
        default=DEFAULTS.log_level,
        help="Least severe log lines written (debug also logs message text).")
@option("--max-text", type=click.IntRange(1), default=DEFAULTS.max_text,
        help="Longest chat message, in characters.")
@option("--max-line", type=click.IntRange(256), default=DEFAULTS.max_line,
        help="Longest TCP line / WebSocket message, in bytes.")
@option("--queue-size", type=click.IntRange(1), default=DEFAULTS.queue_size,
        help="Messages queued per client before it is dropped as a slow consumer.")
@option("--send-timeout", type=click.FloatRange(0, min_open=True),
        default=DEFAULTS.send_timeout,
        help="Seconds a write to one client may take before it is dropped.")
@option("--db", default=default_db_path(),
        help="History database (SQLite file, created if missing); ':memory:' keeps "
        "nothing on disk.")
@option("--history-keep", type=click.IntRange(1), default=DEFAULTS.history_keep,
        help="Chat messages kept per room; older ones are pruned.")
@option("--history-replay", type=click.IntRange(0), default=DEFAULTS.history_replay,
        help="Messages of a room replayed to a client that joins it without 'since'.")
@option("--history-max-mb", type=click.IntRange(1), default=DEFAULTS.history_max_mb,
        help="Megabytes the history database may use (its pages in use, every room's "
        "messages); past it the oldest messages of any room are pruned.")
@option("--history-memory-mb", type=click.IntRange(1), default=DEFAULTS.history_memory_mb,
        help="Megabytes of the rooms' newest messages kept in memory for replays (the "
        "database answers the rest).")
@option("--max-rooms", type=click.IntRange(1), default=DEFAULTS.max_rooms,
        help="Rooms on this server at once, #lobby included.")
@option("--max-rooms-per-connection", type=click.IntRange(1),
        default=DEFAULTS.max_rooms_per_connection,
        help="Rooms one connection may be in at once.")
@option("--room-expiry", type=Duration(), default=DEFAULTS.room_expiry,
        help="How long a room with no members and no new message is kept (seconds, or "
        "with a unit: 90m, 12h, 7d); #lobby is never removed.")
@option("--room-create-rate", type=click.FloatRange(0), default=DEFAULTS.room_create_rate,
        help="Rooms one address (an IPv6 /64) may create per minute, after the burst "
        "(0: no limit).")
@option("--room-create-burst", type=click.IntRange(1), default=DEFAULTS.room_create_burst,
        help="Rooms one address may create at once before --room-create-rate applies.")
@option("--log-format", type=click.Choice(FORMATS), default=DEFAULTS.log_format,
        help="Log lines as text, or as one JSON object per line.")
@option("--rate-limit", type=click.FloatRange(0), default=DEFAULTS.rate_limit,
        help="Messages per second per connection; over it they are delayed (0: off).")
@option("--rate-burst", type=click.IntRange(1), default=DEFAULTS.rate_burst,
        help="Messages a connection may send at once before the rate limit applies.")
@option("--rate-ceiling", type=click.IntRange(1), default=DEFAULTS.rate_ceiling,
        help="Messages in a row delayed by the limit before the client is cut off.")
@option("--idle-timeout", type=click.FloatRange(0, min_open=True),
        default=DEFAULTS.idle_timeout,
        help="Seconds a TCP connection may stay without joining.")
@option("--ping-interval", type=click.FloatRange(0), default=DEFAULTS.ping_interval,
        help="Seconds between WebSocket pings (0: off).")
@option("--ping-timeout", type=click.FloatRange(0, min_open=True),
        default=DEFAULTS.ping_timeout,
        help="Seconds a WebSocket pong may take before the peer is dropped.")
@option("--max-clients", type=click.IntRange(0), default=DEFAULTS.max_clients,
        help="Connections at once (0: no cap).")
@option("--max-per-ip", type=click.IntRange(0), default=DEFAULTS.max_per_ip,
        help="Connections at once from one IP address (0: no cap).")
@option("--connect-rate", type=click.FloatRange(0), default=DEFAULTS.connect_rate,
        help="New connections per second from one address (an IPv6 /64), after the "
        "burst; over it a connection is refused with rate_limited (0: off).")
@option("--connect-burst", type=click.IntRange(1), default=DEFAULTS.connect_burst,
        help="New connections one address may open at once before --connect-rate applies.")
@option("--shutdown-grace", type=click.FloatRange(0), default=DEFAULTS.shutdown_grace,
        help="Seconds a stopping server waits for queued messages to go out.")
@option("--resume-grace", type=click.FloatRange(0), default=DEFAULTS.resume_grace,
        help="Seconds a user whose connection was lost keeps their seat for a client that "
        "reconnects with its resume token (a page reload): no left/joined notices (0: off).")
@option("--handshake-timeout", type=click.FloatRange(0, min_open=True),
        default=DEFAULTS.handshake_timeout,
        help="Seconds a new connection has for its TLS handshake, and then on the "
        "WebSocket port for its HTTP request head and WebSocket handshake.")
@option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
        help="PEM certificate chain: serve TLS on the TCP port, and wss:// and the page "
        "over https:// on the WebSocket port.")
@option("--tls-key", type=click.Path(exists=True, dir_okay=False),
        help="PEM private key for --tls-cert (if the key is not in that file).")
@option("--allowed-origin", "allowed_origins", multiple=True, callback=_check_origins,
        help="An origin (scheme://host[:port], or *) whose web pages may open a WebSocket; "
        "repeatable (space-separated in the environment variable). Besides it, the page's "
        "own origin and clients without an Origin header are allowed; others get 403.")
@option("--allowed-host", "allowed_hosts", multiple=True, callback=_check_hosts,
        help="A Host name (name, name:port, or *) the WebSocket port answers, for the "
        "page and WebSockets (repeatable; space-separated in the environment variable). "
        "Without it, a server on a loopback address answers only localhost, 127.0.0.1 "
        "and [::1], against DNS rebinding; other requests get 421.")
@option("--redis", show_default=False, callback=_check_redis,
        help="Redis URL (redis://host:6379/0, or redis+sentinel://host:26379,host2/mymaster "
        "to follow a failover): share one room, its history and presence with every "
        "server on that Redis (history then lives in Redis, not --db).")
@option("--presence-ttl", type=click.FloatRange(1), default=DEFAULTS.presence_ttl,
        help="With --redis: seconds after which the users of a server that stopped "
        "heartbeating leave everyone's 'who'.")
@option("--redis-wait", type=click.IntRange(0), default=DEFAULTS.redis_wait,
        help="With --redis: deliver (acknowledge) a message only once this many Redis "
        "replicas have it (Redis WAIT), so a failover cannot lose it (0: do not wait).")
@option("--admin-port", type=click.IntRange(0, 65535), default=None, show_default=False,
        help="Serve /metrics (Prometheus), /healthz and /readyz on this port (0: any free "
        "port). Off by default.")
@option("--admin-host", default=DEFAULTS.admin_host,
        help="Address of the admin listener (keep it private: it is not for clients).")
@option("--grpc-port", type=click.IntRange(0, 65535), default=None, show_default=False,
        help="Serve the gRPC API (proto/trio_chat/v1/chat.proto) on this port, into the "
        "same room, with TLS too under --tls-cert (0: any free port). Off by default.")
@option("--registration", type=click.Choice(["open", "closed", "invite"]),
        default=DEFAULTS.registration,
        help="Who may create an account: anyone, nobody, or whoever has a code from "
        "'trio-chat admin invite'.")
@option("--secret", default=None, show_default=False,
        help="Key that signs login tokens (servers sharing it accept each other's); "
        "without it, a key is generated and kept beside --db (DB.secret), or with --redis "
        "kept in Redis for every server of the cluster.")
@option("--require-tls-for-login", is_flag=True,
        help="Refuse passwords and tokens over a connection without TLS (tls_required).")
@option("--admin", "admins", multiple=True, metavar="NAME",
        help="Make this account a server admin (now, or when it registers); repeatable.")
def serve(**options: Any) -> None:
    """Run the chat server."""
    config = Config(**options)

    if config.tls_key and not config.tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    if config.redis_wait and not config.redis:
        raise click.UsageError("--redis-wait needs --redis")
    if config.tls_cert:
        try:
            tls.server_context(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise click.BadParameter(f"cannot load certificate/key: {exc}",
                                     param_hint="'--tls-cert' / '--tls-key'") from None
    setup_logging(config.log_level, config.log_format)
    from .server.app import run  # the server's modules, for this command only

    sys.exit(run(config))


#: Where ``trio-chat status`` looks by default (the docs' examples run
#: ``serve --admin-port 8766``).
STATUS_URL = "http://127.0.0.1:8766/"


@main.command()
@click.option("--url", default=STATUS_URL, envvar="TRIO_CHAT_ADMIN_URL", show_envvar=True,
              show_default=True,
              help="The server's admin listener (trio-chat serve --admin-port PORT).")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@option("--interval", type=click.FloatRange(0.1), default=2.0,
        help="Seconds between the two scrapes rates are taken over (and between refreshes).")
def status(url: str, watch: bool, interval: float) -> None:
    """Summarize a running server: online, rooms, messages/s, p99 lag, Redis, history.

    Exit status: 0 ready, 1 not ready (/readyz said 503), 2 unreachable.
    """
    import time

    from .admin.status import Unreachable, fetch, summarize

    base = url if url.endswith("/") else url + "/"
    before = None
    taken = time.monotonic()
    try:
        while True:
            try:
                if before is None:
                    before, taken = fetch(base), time.monotonic()
                    time.sleep(interval)
                after, now = fetch(base), time.monotonic()
            except Unreachable as exc:
                if not watch:
                    click.echo(str(exc), err=True)
                    sys.exit(2)
                click.clear()
                click.echo(f"{exc}; trying again every {interval:g} s")
                before = None
                time.sleep(interval)
                continue
            lines = summarize(base, before, after, now - taken)
            if not watch:
                click.echo("\n".join(lines))
                sys.exit(0 if after.ready else 1)
            click.clear()
            click.echo("\n".join([*lines, "", f"every {interval:g} s; Ctrl-C to stop"]))
            before, taken = after, now
            time.sleep(interval)
    except KeyboardInterrupt:
        sys.exit(130)


CLIENT_DEFAULTS = ClientConfig()


def _check_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return protocol.validate_name(value)
    except protocol.ProtocolError as exc:
        raise click.BadParameter(exc.text) from None


def _check_rooms(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Room names as given (``dev`` means ``#dev``), each once, at most MAX_ROOMS."""
    from .client.rooms import MAX_ROOMS, ROOM_RULE, parse_room, room_key

    rooms: dict[str, str] = {}
    for raw in value:
        room = parse_room(raw)
        if room is None:
            raise click.BadParameter(f"{raw!r}: {ROOM_RULE}")
        rooms.setdefault(room_key(room), room)
    if len(rooms) > MAX_ROOMS:
        raise click.BadParameter(f"at most {MAX_ROOMS} rooms")
    return tuple(rooms.values())


@main.command()
@option("--name", callback=_check_name, show_default=False,
        help="Name to join under (asked for when missing).")
@option("--host", default=CLIENT_DEFAULTS.host, help="Server address (TCP).")
@option("--port", type=click.IntRange(1, 65535), default=CLIENT_DEFAULTS.port,
        help="Server NDJSON-over-TCP port.")
@option("--url", show_default=False,
        help="Connect over WebSocket instead, e.g. ws://127.0.0.1:8765/.")
@option("--grpc", "grpc_target", show_default=False, metavar="HOST:PORT",
        help="Connect over gRPC instead, to a server's --grpc-port, e.g. 127.0.0.1:8767.")
@option("--tls", "use_tls", is_flag=True,
        help="TLS to the TCP (or gRPC) port (a server run with --tls-cert); wss:// URLs "
        "imply it.")
@option("--ca", type=click.Path(exists=True, dir_okay=False), show_default=False,
        help="PEM file of the CA certificate(s) to trust for TLS instead of the system's "
        "(e.g. a self-signed server's certificate).")
@option("--room", "rooms", multiple=True, callback=_check_rooms, metavar="#ROOM",
        help="A room to enter (repeatable; the first is the current one, where line mode "
        "sends) [default: #lobby].")
@option("--plain", is_flag=True, help="Line mode even on a terminal.")
@option("--json", "json_output", is_flag=True,
        help="Line mode, printing the server's raw JSON lines.")
@option("--reconnect/--no-reconnect", default=CLIENT_DEFAULTS.reconnect,
        help="Rejoin when the server goes away (--no-reconnect: exit 1).")
@option("--max-backoff", type=click.FloatRange(0, min_open=True),
        default=CLIENT_DEFAULTS.backoff_max,
        help="Longest wait between reconnection attempts, in seconds.")
@option("--token-file", type=click.Path(dir_okay=False), show_default=False,
        help="Keep the login token here (mode 0600): the next run logs in to the account "
        "without asking for its password.")
def join(
    name: str | None,
    host: str,
    port: int,
    url: str | None,
    grpc_target: str | None,
    use_tls: bool,
    ca: str | None,
    rooms: tuple[str, ...],
    plain: bool,
    json_output: bool,
    reconnect: bool,
    max_backoff: float,
    token_file: str | None,
) -> None:
    """Join the chat: full-screen on a terminal, line by line on pipes.

    A registered name asks for its password (on a terminal); --token-file keeps the
    login for the next runs.

    Line mode (stdin or stdout not a terminal, --plain or --json) sends each stdin
    line as a message, prints each message as one line and leaves at EOF.
    """
    secure_url = url is not None and url.lower().startswith("wss:")
    if grpc_target is not None and url is not None:
        raise click.UsageError("--grpc and --url are two ways to connect: give one")
    if grpc_target is not None and not grpc_target.rpartition(":")[2].isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="'--grpc'")
    if use_tls and url is not None and not secure_url:
        raise click.UsageError("--tls goes with TCP or a wss:// URL, not " + url)
    if ca is not None and not (use_tls or secure_url):
        raise click.UsageError("--ca needs --tls or a wss:// URL")
    if ca is not None:
        try:
            tls.client_context(ca)
        except (OSError, ssl.SSLError) as exc:
            raise click.BadParameter(f"cannot load {ca}: {exc}", param_hint="'--ca'") from None
    interactive = not (plain or json_output) and sys.stdin.isatty() and sys.stdout.isatty()
    if name is None and not interactive:
        if not sys.stdin.isatty():
            raise click.UsageError("--name is required when stdin is not a terminal")
        name = click.prompt("name", err=True, value_proc=_prompted_name)
    config = ClientConfig(
        name=name,
        host=host,
        port=port,
        url=url,
        grpc=grpc_target,
        tls=use_tls or secure_url,
        ca=ca,
        rooms=rooms or CLIENT_DEFAULTS.rooms,
        reconnect=reconnect,
        backoff_initial=min(CLIENT_DEFAULTS.backoff_initial, max_backoff),
        backoff_max=max_backoff,
        token_file=token_file,
    )
    try:
        client.run(config, interactive=interactive, json_output=json_output)
    except ClientError as exc:
        click.echo(clean(str(exc)), err=True)  # it may quote the server
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _prompted_name(value: str) -> str:
    try:
        return protocol.validate_name(value)
    except protocol.ProtocolError as exc:
        raise click.BadParameter(exc.text) from None
