"""TLS for both listeners (one server context; :func:`.net.open_listeners` wraps them
in ``trio.SSLListener``), a handshake bounded in time, and the client's context.

``SSLListener.accept`` does not handshake (the first read does), so a peer that opens
a socket and never speaks TLS holds only its own task; :func:`handshake` bounds even
that, and drops plain-text clients that connect to a TLS port.
"""

from __future__ import annotations

import logging
import ssl

import trio

log = logging.getLogger(__name__)


def server_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """A server-side context with the standard library's defaults (TLS 1.2+, no
    compression). ``key`` may be omitted when ``cert`` holds the private key too.

    Raises ``OSError`` or ``ssl.SSLError`` for a missing or unusable certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])  # the WebSocket port speaks HTTP/1.1
    return context


async def handshake(stream: trio.abc.Stream, timeout: float, peer: str) -> bool:
    """Finish a TLS stream's handshake within ``timeout`` seconds; False (logged) when
    the peer is too slow or does not speak TLS. Plain streams pass at once."""
    if not isinstance(stream, trio.SSLStream):
        return True
    with trio.move_on_after(timeout):
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason = exc.__cause__ or exc
            log.info("tls handshake with %s failed: %s", peer, reason)
            return False
        return True
    log.info("tls handshake with %s timed out after %gs", peer, timeout)
    return False


def client_context(ca: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server: against ``ca`` (a PEM file, e.g. a
    self-signed or private CA certificate) when given, else the system's trust store."""
    return ssl.create_default_context(cafile=ca)
