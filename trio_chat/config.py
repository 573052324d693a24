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
    #: PEM certificate chain: with it both ports speak TLS (tls:// and wss://).
    tls_cert: str | None = None
    #: PEM private key, when it is not in ``tls_cert``.
    tls_key: str | None = None
    #: Origins (``scheme://host[:port]``, or ``*``) whose pages may open a WebSocket,
    #: besides the page's own origin and clients that send no Origin (trio_chat.origin).
    allowed_origins: tuple[str, ...] = ()
