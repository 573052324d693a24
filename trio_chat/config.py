"""Server settings: one frozen object built by the CLI (or a test) and passed down."""

from __future__ import annotations

from dataclasses import dataclass

from . import protocol


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
    #: Chat messages kept in the history; older ones are pruned.
    history_keep: int = 10000
    #: Messages replayed to a joiner that does not send ``since``.
    history_replay: int = 50
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
    #: PEM certificate chain: with it both ports speak TLS (tls:// and wss://).
    tls_cert: str | None = None
    #: PEM private key, when it is not in ``tls_cert``.
    tls_key: str | None = None
    #: Origins (``scheme://host[:port]``, or ``*``) whose pages may open a WebSocket,
    #: besides the page's own origin and clients that send no Origin (trio_chat.origin).
    allowed_origins: tuple[str, ...] = ()
    #: Redis URL (``redis://host:6379/0``): with it, every server on that Redis shares
    #: one room, its history (a Redis stream) and its presence (trio_chat.cluster).
    redis: str | None = None
    #: Seconds a server's presence outlives its last heartbeat in Redis: the users of a
    #: server that died leave everyone's ``who`` within this.
    presence_ttl: float = 10.0
