"""``serve(config)``: both listeners in one nursery, around one room and its history."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from . import tls
from .cluster import open_cluster
from .config import Config
from .history import open_history
from .limits import RESERVED_FDS, Gate, raise_nofile_limit
from .room import Room
from .session import Session
from .startup import StartupError, find_startup_error, url_host
from .tcp import serve_tcp_chat
from .ws import serve_ws_chat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bound:
    """Where the server actually listens (ports given as 0 are resolved)."""

    host: str
    tcp_port: int
    ws_port: int
    #: Both ports speak TLS (``--tls-cert``): tls:// and wss://.
    tls: bool = False

    @property
    def tcp_url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{url_host(self.host)}:{self.tcp_port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{url_host(self.host)}:{self.ws_port}/"

    @property
    def page_url(self) -> str:
        """The chat page, for a browser on this machine (a wildcard host becomes loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"{'https' if self.tls else 'http'}://{url_host(host)}:{self.ws_port}/"


async def serve(
    config: Config,
    *,
    room: Room | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the chat server; reports a :class:`Bound` when listening.

    When ``stop`` is set, shuts down gracefully and returns: stop accepting, send
    every client the ``shutdown`` notice, give queues up to ``shutdown_grace``
    seconds to drain (WebSockets close with 1001), then run the teardown steps.
    Cancelling ``serve`` instead stops it at once.

    Without a ``room``, opens the history store named by ``config.db`` for this run
    (and closes it on the way out). However ``serve`` stops, cancelled included, every
    chat message broadcast has been committed to the room's store when it returns.
    """
    context = None
    if config.tls_cert:
        try:
            context = tls.server_context(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load TLS certificate/key: {exc}") from None
    stop = stop if stop is not None else trio.Event()
    async with AsyncExitStack() as stack:
        if room is None:
            room = await stack.enter_async_context(open_room(config))
        try:
            await _serve_connections(config, room, stop, context, task_status)
        finally:
            # Teardown, after every connection is gone, also when cancelled: whatever
            # the room handed to the history store is committed.
            if room.history is not None:
                with trio.CancelScope(shield=True):
                    await room.history.flush()
        log.info("trio-chat stopped")


@asynccontextmanager
async def open_room(config: Config) -> AsyncIterator[Room]:
    """The room for ``config``: shared through Redis (``config.redis``), or this
    server's own with its SQLite history (``config.db``)."""
    if config.redis:
        async with open_cluster(config) as cluster:
            yield cluster.room
    else:
        async with open_history(config) as history:
            yield Room(history=history)


async def _serve_connections(
    config: Config,
    room: Room,
    stop: trio.Event,
    context: ssl.SSLContext | None,
    task_status: trio.TaskStatus[Bound],
) -> None:
    gate = Gate[Session](config.max_clients, config.max_per_ip)
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as listeners:
            await listeners.start(room.run_notices)
            for_tcp = partial(serve_tcp_chat, gate=gate, ssl_context=context)
            for_ws = partial(serve_ws_chat, gate=gate, ssl_context=context)
            tcp = await listeners.start(for_tcp, room, config, connections)
            ws = await listeners.start(for_ws, room, config, connections)
            bound = Bound(
                config.host,
                tls.listener_port(tcp[0]),
                tls.listener_port(ws[0]),
                tls=context is not None,
            )
            log.info("trio-chat listening: %s %s", bound.tcp_url, bound.ws_url)
            log.info("chat page: %s", bound.page_url)
            task_status.started(bound)
            await stop.wait()
            listeners.cancel_scope.cancel()  # stop accepting: the listening sockets close
        log.info(
            "shutting down: %d connections, up to %gs to drain",
            gate.total,
            config.shutdown_grace,
        )
        shut_down(room, gate)
        # Leaving this block waits for every connection's handler, but no longer than
        # the grace period; then the rest are cancelled (closed at once).
        connections.cancel_scope.deadline = trio.current_time() + config.shutdown_grace
    if connections.cancel_scope.cancelled_caught:
        log.info("shutdown grace ran out; remaining connections closed")


def shut_down(room: Room, gate: Gate[Session]) -> None:
    """Close the room and tell every live session to say goodbye and drain."""
    gate.closing = True
    room.close()
    for session in list(gate.live):
        session.shutdown()


async def serve_until_signal(config: Config) -> bool:
    """Serve until SIGINT or SIGTERM, then stop gracefully; a second signal stops at
    once. Returns True if the stop was graceful."""
    stop = trio.Event()
    graceful = True
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal graceful
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not stop.is_set():
                        log.info("%s received; stopping (again to stop at once)", name)
                        stop.set()
                    else:
                        log.warning("%s received again; stopping at once", name)
                        graceful = False
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch)
            await serve(config, stop=stop)
            nursery.cancel_scope.cancel()  # the signal watcher
    return graceful


#: Allocations between young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic GC cheap for a server holding many connections.

    Every connection keeps hundreds of long-lived Trio objects, and every join
    allocates lists as long as the room; with CPython's defaults a 4,000-client join
    storm spent 10 of its 31 s in collections (1,637 young, 149 middle and 13 full
    ones). A 50,000-allocation young generation made it 0.5 s (and the joins 2x
    faster) for a few MB of garbage waiting a little longer; ``gc.freeze`` takes the
    objects alive at startup (modules, classes) out of every later full collection.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 10)


#: glibc's M_MMAP_THRESHOLD: allocations at least this big get their own mapping.
MMAP_THRESHOLD = 64 * 1024


def tune_malloc() -> None:
    """Keep big short-lived buffers out of glibc's heap.

    A ``welcome`` lists every member: 120 KB of text (and its bytes and frame) per
    join in a room of 10,000, freed at once. glibc raises its mmap threshold after
    such frees and then carves them from the heap between long-lived connection
    objects, which fragments it: RSS per idle connection measured 59 KB after a
    10,000-client join storm, 42 KB with the threshold pinned at 64 KB (what
    ``MALLOC_MMAP_THRESHOLD_=65536`` does). Elsewhere (not glibc) this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD in <malloc.h>


def run(config: Config) -> int:
    """Run the server in this process until a signal; returns the exit status: 0
    after a graceful stop, 1 when a second signal cut the drain short, or a startup
    error's code (port in use...)."""
    tune_gc()
    tune_malloc()
    limit = raise_nofile_limit()
    room_for = max(0, limit - RESERVED_FDS)
    log.info("open-file limit %d: room for about %d connections", limit, room_for)
    if config.max_clients == 0 or config.max_clients > room_for:
        log.warning(
            "the open-file limit allows fewer connections than --max-clients (%s)",
            config.max_clients or "no cap",
        )
    try:
        graceful = trio.run(serve_until_signal, config)
    except (StartupError, BaseExceptionGroup) as error:
        startup = find_startup_error(error)
        if startup is None:
            raise
        log.error("%s", startup)
        return startup.exit_code
    return 0 if graceful else 1
