"""Sockets, whatever the protocol on them: binding listeners (TLS-wrapped or not),
naming peers, and TCP keepalive."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

import trio

from ..errors import StartupError

#: TCP keepalive: first probe after this many idle seconds, then every
#: KEEPALIVE_INTERVAL, giving up after KEEPALIVE_COUNT unanswered probes, so a peer
#: whose machine vanished is noticed in about 90 s even if we never write to it.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def url_host(host: str) -> str:
    """A host as it appears in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


async def open_listeners(
    host: str,
    port: int,
    context: ssl.SSLContext | None = None,
    *,
    https_compatible: bool = False,
) -> Sequence[trio.abc.Listener[trio.abc.Stream]]:
    """TCP listeners on ``host:port``, speaking TLS when ``context`` is given; the usual
    failures (port in use, no such address) become a :class:`StartupError`.

    ``https_compatible`` (for the WebSocket/HTTP port) neither sends nor expects the
    ``close_notify`` that browsers skip.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(f"cannot listen on {url_host(host)}:{port}: {reason}") from None
    if context is None:
        return listeners
    return [
        trio.SSLListener(listener, context, https_compatible=https_compatible)
        for listener in listeners
    ]


def listener_port(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    """The local port of a (possibly TLS-wrapped) socket listener."""
    while isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    assert isinstance(listener, trio.SocketListener), listener
    port: int = listener.socket.getsockname()[1]
    return port


def _socket_stream(stream: trio.abc.Stream) -> trio.SocketStream | None:
    """The socket under ``stream`` (unwrapping TLS), or None (a memory stream)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream if isinstance(stream, trio.SocketStream) else None


def peer_name(stream: trio.abc.Stream) -> str:
    """``host:port`` of a socket stream's peer, for logs and per-address accounting."""
    sock = _socket_stream(stream)
    if sock is None:
        return "memory"
    try:
        host, port, *_ = sock.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"


def peer_host(peer: str) -> str:
    """The address part of :func:`peer_name`'s ``host:port`` (what per-address caps count)."""
    return peer.rpartition(":")[0] or peer


def set_keepalive(stream: trio.abc.Stream) -> None:
    """Turn on TCP keepalive for a socket stream, or the socket under a TLS stream
    (a no-op for other streams)."""
    sock = _socket_stream(stream)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass  # the peer may already be gone; the session will notice
