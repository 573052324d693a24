"""The admin listener: ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP/1.1 on h11.

It reuses the page server's request reading and answering
(:mod:`trio_chat.transports.http`): the request head is capped in bytes
(``MAX_HEAD``: 431 past it) and in time (``--handshake-timeout``), one request per
connection, ``Connection: close``. At most :data:`MAX_CONNECTIONS` are served at once;
more are closed at once. On a loopback address only loopback ``Host`` names are
answered (421 otherwise), so a web page cannot read it through DNS rebinding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..transports import origin
from ..transports.http import MAX_HEAD, Reply, _read_head, _send_reply, _text
from ..transports.net import peer_name
from .collector import registry_for
from .health import readiness, watch_event_loop

if TYPE_CHECKING:
    from ..server.app import Running

log = logging.getLogger(__name__)

#: Admin requests served at once; a scraper and a few probes need far fewer.
MAX_CONNECTIONS: Final = 32
PATHS: Final = ("/metrics", "/healthz", "/readyz")
ALLOW: Final = "GET, HEAD"


def _json(status: int, body: dict[str, object]) -> Reply:
    data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    return Reply(status, (("content-type", "application/json"),), data)


def route(running: Running, registry: CollectorRegistry, method: bytes, target: bytes) -> Reply:
    """The answer to one admin request."""
    if method not in (b"GET", b"HEAD"):
        return _text(405, "405 method not allowed: only GET and HEAD", ("allow", ALLOW))
    path = target.split(b"?", 1)[0].decode("ascii", "replace")
    if path == "/metrics":
        return Reply(200, (("content-type", CONTENT_TYPE_LATEST),), generate_latest(registry))
    if path == "/healthz":
        return _json(200, {"status": "ok"})
    if path == "/readyz":
        reasons = readiness(running)
        if reasons:
            return _json(503, {"status": "not ready", "reasons": reasons})
        return _json(200, {"status": "ready"})
    return _text(404, f"404 not found: the admin listener serves {', '.join(PATHS)}")


async def serve_admin(
    running: Running,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin listener until cancelled, and measure the event loop's lag."""
    registry = registry_for(running)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    policy = origin.host_policy((), running.config.admin_host)

    async def handle(stream: trio.abc.Stream) -> None:
        async with stream:
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                return  # closed at once: too many admin connections
            try:
                with trio.move_on_after(running.config.handshake_timeout):
                    await _answer(stream, running, registry, policy)
            finally:
                limiter.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_event_loop, running.rooms.metrics.event_loop_lag)
        await nursery.start(trio.serve_listeners, handle, list(listeners))
        task_status.started()


async def _answer(
    stream: trio.abc.Stream,
    running: Running,
    registry: CollectorRegistry,
    policy: origin.HostPolicy,
) -> None:
    config = running.config
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        head = await _read_head(stream, conn)
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        await _send_reply(stream, conn, _text(status, f"{status} bad request"), config,
                          head=False)
        return
    if head is None:
        return
    request, _ = head
    host = next((v.decode("ascii", "replace") for k, v in request.headers if k == b"host"), None)
    if not policy.allows(host):
        log.info("admin %s: host %r not answered: 421", peer_name(stream), host)
        reply = _text(421, f"421 misdirected request: host {host!r} is not answered here")
    else:
        reply = route(running, registry, request.method, request.target)
        if 400 <= reply.status < 500:  # (not 503: a probe would fill the log)
            log.info("admin %s %s %s %d", peer_name(stream), request.method.decode(),
                     request.target.decode("ascii", "backslashreplace"), reply.status)
    await _send_reply(stream, conn, reply, config, head=request.method == b"HEAD")
