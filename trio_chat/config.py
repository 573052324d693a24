"""Server settings: one frozen object built by the CLI (or a test) and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from . import protocol

#: ``--redis`` URL schemes: one Redis, or the primary Redis Sentinel names.
REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
#: Sentinel's usual port, when a sentinel's address has none.
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``:
    the sentinels to ask, the service (master) name they monitor, and the database
    and credentials of the Redis they name (the sentinels themselves are asked
    without)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a ``redis+sentinel://`` URL; ``ValueError`` saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    sentinels = []
    for item in hosts.split(","):
        host, port = item, SENTINEL_PORT
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            if rest:
                port = _port(rest.removeprefix(":"))
        elif item.count(":") == 1:
            host, port_text = item.split(":")
            port = _port(port_text)
        if not host:
            raise ValueError("a sentinel address is empty")
        sentinels.append((host, port))
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ValueError("no service name: redis+sentinel://host:26379/SERVICE")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    return SentinelURL(tuple(sentinels), unquote(service), int(db or 0), username, password)


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and error lines."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{path}"


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r} is not a port number")
    return int(text)


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    tcp_port: int = 8764
    ws_port: int = 8765
    log_level: str = "info"
    #: Longest chat text, in characters (error ``too_long``, connection stays).
    max_text: int = protocol.MAX_TEXT
    #: Longest TCP line / WebSocket message, in bytes (error ``too_long``, then close).
    max_line: int = protocol.MAX_LINE
    #: Messages queued for one client before it is evicted as a slow consumer.
    queue_size: int = 1024
    #: Seconds one write to a client may take before it is evicted as a slow consumer.
    send_timeout: float = 10.0
    #: Seconds a new connection has for its TLS handshake; then, on the WebSocket port,
    #: to send its request head and finish the WebSocket handshake (a half-sent head is
    #: dropped after it).
    handshake_timeout: float = 10.0
    #: Seconds spent telling an evicted or closing client why, before dropping it.
    goodbye_timeout: float = 1.0
    #: History database (SQLite file). The library default keeps it in memory; the
    #: CLI's default is ``trio-chat.db`` in the user data directory.
    db: str = ":memory:"
    #: Chat messages kept in each room's history; older ones are pruned.
    history_keep: int = 10000
    #: Messages of a room replayed to a joiner that does not send ``since``.
    history_replay: int = 50
    #: Megabytes the history database may use (its pages in use) at most; past it the
    #: oldest messages of any room are pruned.
    history_max_mb: int = 1024
    #: Megabytes of history the server keeps in memory for replays (every room's
    #: newest messages; the store answers the rest).
    history_memory_mb: int = 64
    #: Rooms on this server at once (``#lobby`` included); one more: ``too_many_rooms``.
    max_rooms: int = 10_000
    #: Rooms one connection may be in at once; one more: ``too_many_rooms``.
    max_rooms_per_connection: int = 50
    #: Seconds a room stays with no members and no new message before it is removed
    #: (``#lobby`` never is).
    room_expiry: float = 7 * 24 * 3600.0
    #: Rooms one address may create per minute (0: no limit) ...
    room_create_rate: float = 1.0
    #: ... and at once, before that rate applies.
    room_create_burst: int = 10
    #: Log lines as ``text`` or ``json`` (one object per line).
    log_format: str = "text"
    #: Flood control: messages per second per connection (0 turns it off) ...
    rate_limit: float = 5.0
    #: ... with bursts of this many at once; over the limit, messages are delayed.
    rate_burst: int = 10
    #: Messages in a row delayed by the limit before error ``rate_limited`` and close.
    rate_ceiling: int = 50
    #: Seconds a TCP connection may stay without joining (error ``idle_timeout``).
    idle_timeout: float = 30.0
    #: Seconds between WebSocket pings (0 turns them off) ...
    ping_interval: float = 20.0
    #: ... and how long the pong may take before the peer is dropped as dead.
    ping_timeout: float = 20.0
    #: Connections at once (0: no cap); one more gets ``server_full`` / close 1013.
    max_clients: int = 10000
    #: Connections at once from one IP address (0: no cap).
    max_per_ip: int = 100
    #: New connections per second from one address (0 turns the limit off) ...
    connect_rate: float = 2.0
    #: ... with bursts of this many; over it a connection is refused (``rate_limited``).
    connect_burst: int = 20
    #: Seconds a stopping server waits for queued messages to reach the clients.
    shutdown_grace: float = 5.0
    #: Seconds a new TCP connection may stay quiet before it is greeted with ``hello``
    #: (a person at nc; a program has spoken by then). None: never greeted.
    greet_after: float | None = 0.25
    #: Seconds a new WebSocket may stay quiet after its handshake before it becomes a
    #: listener (the seed's client listens without asking). None: never.
    listen_after: float | None = 1.0
    #: Seconds a member whose connection was lost keeps its seat (its name, its place
    #: in ``who``) for a join that brings back its ``resume`` token: a page reload or a
    #: reconnection is not announced as a leave and a join. 0: no tokens, no seats held.
    resume_grace: float = 5.0
    #: PEM certificate chain: with it both ports speak TLS (tls:// and wss://).
    tls_cert: str | None = None
    #: PEM private key, when it is not in ``tls_cert``.
    tls_key: str | None = None
    #: Origins (``scheme://host[:port]``, or ``*``) whose pages may open a WebSocket,
    #: besides the page's own origin and clients that send no Origin (trio_chat.origin).
    allowed_origins: tuple[str, ...] = ()
    #: ``Host`` names (``name``, ``name:port`` or ``*``) the WebSocket port answers;
    #: none: loopback names on a loopback bind, any name otherwise (trio_chat.origin).
    allowed_hosts: tuple[str, ...] = ()
    #: Redis URL (``redis://host:6379/0``, or ``redis+sentinel://host:26379/service``
    #: to follow the primary Redis Sentinel names): with it, every server on that Redis
    #: shares one room, its history (a Redis stream) and its presence (trio_chat.cluster).
    redis: str | None = None
    #: Seconds a server's presence outlives its last heartbeat in Redis: the users of a
    #: server that died leave everyone's ``who`` within this.
    presence_ttl: float = 10.0
    #: With ``redis``: a message is delivered (acknowledged) only once this many Redis
    #: replicas have it (Redis ``WAIT``), so a failover cannot lose it. 0: do not wait.
    redis_wait: int = 0
    #: The admin HTTP listener (``/metrics``, ``/healthz``, ``/readyz``): off when None;
    #: 0 picks a free port.
    admin_port: int | None = None
    #: Address of the admin listener (loopback unless said otherwise: it is not for
    #: the public).
    admin_host: str = "127.0.0.1"
    #: The gRPC port (proto/trio_chat/v1/chat.proto), on ``host``: off when None; 0
    #: picks a free port.
    grpc_port: int | None = None
