"""Client settings: one frozen object built by the CLI (or a test)."""

from __future__ import annotations

from dataclasses import dataclass

from ..transports.net import url_host
from .rooms import LOBBY


@dataclass(frozen=True)
class ClientConfig:
    #: Name to join under; ``None`` makes the interactive client ask for one.
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8764
    #: ``ws://host:port/``: connect over WebSocket instead of TCP (``wss://``: with TLS).
    url: str | None = None
    #: Rooms to enter (``--room``), the first one current; checked names.
    rooms: tuple[str, ...] = (LOBBY,)
    #: ``host:port`` of a gRPC port (``--grpc``): connect with gRPC instead (TLS with
    #: ``tls``).
    grpc: str | None = None
    #: TLS on the TCP (or gRPC) connection (``--tls``); a ``wss://`` URL implies it.
    tls: bool = False
    #: PEM file of the CA certificate(s) to trust instead of the system's (``--ca``).
    ca: str | None = None
    #: Rejoin after the server goes away (``False``: exit with status 1 instead).
    reconnect: bool = True
    #: First wait before reconnecting, in seconds; doubles per failed attempt.
    backoff_initial: float = 0.5
    #: Longest wait between reconnection attempts, in seconds.
    backoff_max: float = 30.0
    #: Seconds to open a connection, and again to be welcomed after ``join``.
    connect_timeout: float = 10.0
    #: Seconds to wait for the server to close after ``leave``.
    leave_timeout: float = 5.0
    #: Longest line / message accepted from the server, in bytes.
    max_line: int = 1 << 20
    #: Where the login token is kept between runs (``--token-file``); None: in memory.
    token_file: str | None = None
    #: Messages typed but not yet sent (while reconnecting, say) before typing blocks.
    outbox_size: int = 256

    @property
    def address(self) -> str:
        """Where the client connects, as shown to the user."""
        if self.url is not None:
            return self.url
        if self.grpc is not None:
            return f"grpc{'s' if self.tls else ''}://{self.grpc}"
        return f"{'tls://' if self.tls else ''}{url_host(self.host)}:{self.port}"
