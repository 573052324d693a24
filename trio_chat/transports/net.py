"""Sockets, whatever the protocol on them: binding listeners (TLS-wrapped or not),
naming peers and the address they reached, TCP keepalive, and closing so that the
last line arrives and ``nc`` notices."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import ssl
import struct
import termios
from collections.abc import Sequence
from dataclasses import dataclass

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


def local_host(stream: trio.abc.Stream, default: str) -> str:
    """The address the peer reached us at (on a wildcard bind, the interface it came
    in on), for telling it where our other port is; ``default`` for a memory stream."""
    sock = _socket_stream(stream)
    if sock is None:
        return default
    try:
        host: str = sock.socket.getsockname()[0]
    except OSError:
        return default
    return host


@dataclass(frozen=True)
class Ports:
    """The server's two ports, as bound, so that a client at the wrong one can be told
    the right one."""

    tcp: int
    ws: int
    tls: bool = False

    def tcp_address(self, host: str) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{url_host(host)}:{self.tcp}"

    def ws_url(self, host: str) -> str:
        return f"{'wss' if self.tls else 'ws'}://{url_host(host)}:{self.ws}/"

    def page_url(self, host: str) -> str:
        return f"{'https' if self.tls else 'http'}://{url_host(host)}:{self.ws}/"


def reset_if_delivered(stream: trio.abc.Stream) -> None:
    """Make the coming close a reset (RST) if the peer's kernel has acknowledged
    everything we sent, our FIN included; else leave it a plain close.

    For a peer that has not closed its side within the goodbye time after our FIN:
    ``nc`` (OpenBSD's, Debian's) keeps waiting for its user's next line after the
    server's FIN, and only an error on its socket, a reset, makes it exit. With nothing
    unacknowledged the last line is in the peer's receive buffer, which Linux keeps
    readable after a reset (``nc`` has printed it long before: it reads as data
    comes). A peer that is not reading (its window full) still has bytes of ours in
    flight: that close stays a FIN, as before. Only on Linux (``SIOCOUTQ``); a TLS
    stream is never reset (its ``close_notify`` is the end)."""
    if isinstance(stream, trio.SSLStream) or not isinstance(stream, trio.SocketStream):
        return
    sock = stream.socket
    try:
        unacknowledged = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, unacknowledged)  # SIOCOUTQ
        if unacknowledged[0] == 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError):
        pass  # not Linux, or the socket is gone: a plain close


_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


async def say_and_close(
    stream: trio.abc.Stream,
    data: bytes,
    *,
    send_timeout: float,
    goodbye_timeout: float,
    max_drain: int,
) -> None:
    """A connection's last words: write ``data`` (within ``send_timeout``), half-close,
    then read and discard what the peer still sends (at most ``max_drain`` bytes,
    within ``goodbye_timeout``) until it closes too, so that it reads our answer rather
    than a reset caused by unread input. A peer still open then is reset, if it has
    everything (:func:`reset_if_delivered`). The caller closes ``stream``."""
    with trio.move_on_after(send_timeout):
        try:
            await stream.send_all(data)
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
        except _STREAM_ERRORS:
            return
    closed = False
    with trio.move_on_after(goodbye_timeout):
        drained = 0
        try:
            while drained < max_drain:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    closed = True
                    break
                drained += len(chunk)
        except _STREAM_ERRORS:
            closed = True
    if not closed:
        reset_if_delivered(stream)


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


def direct_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under a plain :class:`trio.SocketStream`, for :func:`receive_direct`
    and :func:`write_nonblocking`; None for TLS and every other stream."""
    return stream.socket if isinstance(stream, trio.SocketStream) else None


async def receive_direct(sock: trio.socket.SocketType, max_bytes: int) -> bytes:
    """``SocketStream.receive_some`` without its layers: the same checkpoints and
    errors (``ClosedResourceError`` once the socket is closed, also while waiting;
    ``BrokenResourceError`` for a reset), one ``read`` and, only when there is nothing
    to read, a wait on the descriptor.

    Why: an idle connection waits here for its whole life, and every coroutine on that
    wait holds a frame. Trio's stream, its socket wrapper and its error-translating
    context manager cost about 1 KB per idle connection (issue 20, memory per idle
    connection); this is one frame over ``wait_readable``."""
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        data = _read_now(fd, max_bytes)
        if data is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        await trio.lowlevel.wait_readable(fd)


def _read_now(fd: int, max_bytes: int) -> bytes | None:
    """One ``read``; None when it would block. Its own function, so that the
    ``BlockingIOError`` of every wait is raised and caught here: a traceback through
    the coroutine above would give it a frame object (~200 bytes) for its whole life."""
    try:
        return os.read(fd, max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise trio.BrokenResourceError(f"reading the socket failed: {exc}") from None


def write_nonblocking(fd: int, data: bytes) -> int:
    """One ``write`` on a socket Trio keeps non-blocking (the write-through fast path
    of :mod:`trio_chat.server.outbox`): the bytes it took (0 when it would block), or
    -1 when the peer is gone (the writer's next send finds out and ends the session)."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:
        return -1
