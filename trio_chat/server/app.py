"""``serve(config)``: the listeners in one nursery, around the rooms and their delivery.

This is the server's whole import path: the cluster (coredis) is imported only when
``config.redis`` asks for it, gRPC (grpcio) only when ``config.grpc_port`` does.
"""

from __future__ import annotations

import logging
import resource
import signal
import sqlite3
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import trio

from .. import protocol
from ..accounts.service import open_accounts
from ..config import Config
from ..errors import StartupError, find_startup_error
from ..history.sqlite import open_history
from ..history.writer import StoreError
from ..moderation.service import ModerationService, SqliteBackend
from ..moderation.store import ModerationStore
from ..protocol.names import name_key
from ..transports import tls
from ..transports.admission import Admission
from ..transports.net import Ports, listener_port, open_listeners, url_host
from ..transports.origin import host_policy
from ..transports.tcp import handle_tcp
from ..transports.ws import handle_ws
from .addresses import ConnectThrottle, FloodMemory
from .delivery import LocalDelivery
from .limits import Gate
from .moderating import Moderator
from .process import RESERVED_FDS, raise_nofile_limit, tune_gc, tune_malloc
from .rooms import Rooms
from .session import Session

if TYPE_CHECKING:
    from ..transports.grpc.server import GrpcServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bound:
    """Where the server actually listens (ports given as 0 are resolved)."""

    host: str
    tcp_port: int
    ws_port: int
    #: Both ports speak TLS (``--tls-cert``): tls:// and wss://.
    tls: bool = False
    #: The admin listener's port (``/metrics``, ``/healthz``, ``/readyz``), if on.
    admin_port: int | None = None
    admin_host: str = "127.0.0.1"
    #: The gRPC port (``--grpc-port``), if on; it speaks TLS too with ``tls``.
    grpc_port: int | None = None

    @property
    def tcp_url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{url_host(self.host)}:{self.tcp_port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{url_host(self.host)}:{self.ws_port}/"

    @property
    def page_url(self) -> str:
        """The chat page, for a browser on this machine (a wildcard host becomes loopback)."""
        host = _LOCAL.get(self.host, self.host)
        return f"{'https' if self.tls else 'http'}://{url_host(host)}:{self.ws_port}/"

    @property
    def admin_url(self) -> str | None:
        """The admin listener's base URL (``.../metrics``), for this machine; None if off."""
        if self.admin_port is None:
            return None
        host = _LOCAL.get(self.admin_host, self.admin_host)
        return f"http://{url_host(host)}:{self.admin_port}/"

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` of the gRPC port, as a client here dials it; None if off."""
        if self.grpc_port is None:
            return None
        return f"{url_host(_LOCAL.get(self.host, self.host))}:{self.grpc_port}"


#: A wildcard address, as a client on this machine reaches it.
_LOCAL = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass
class Running:
    """What the admin listener reads of a running server (trio_chat.admin)."""

    config: Config
    rooms: Rooms
    gate: Gate[Session]
    bound: Bound
    #: Every listener is accepting connections ...
    accepting: bool = False
    #: ... until a graceful stop began.
    stopping: bool = False


async def serve(
    config: Config,
    *,
    rooms: Rooms | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the chat server; reports a :class:`Bound` when listening.

    When ``stop`` is set, shuts down gracefully and returns: stop accepting, send
    every client the ``shutdown`` notice, give queues up to ``shutdown_grace``
    seconds to drain (WebSockets close with 1001), then run the teardown steps.
    Cancelling ``serve`` instead stops it at once.

    The ports are bound first; only then, without ``rooms``, are the rooms opened for
    this run: the history store named by ``config.db``, or the cluster on
    ``config.redis`` (closed on the way out). So a start that fails to bind touches
    neither. However ``serve`` stops, cancelled included, every chat message
    broadcast has been handed to the rooms' store when it returns.
    """
    context = None
    if config.tls_cert:
        try:
            context = tls.server_context(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load TLS certificate/key: {exc}") from None
    stop = stop if stop is not None else trio.Event()
    async with AsyncExitStack() as stack:
        tcp = await open_listeners(config.host, config.tcp_port, context)
        stack.push_async_callback(_close_all, tcp)
        ws = await open_listeners(config.host, config.ws_port, context, https_compatible=True)
        stack.push_async_callback(_close_all, ws)
        admin: Sequence[trio.abc.Listener[trio.abc.Stream]] = ()
        if config.admin_port is not None:
            admin = await open_listeners(config.admin_host, config.admin_port)
            stack.push_async_callback(_close_all, admin)
        grpc_server = None
        if config.grpc_port is not None:
            from ..transports.grpc.server import open_grpc  # grpcio: only with --grpc-port

            grpc_server = await stack.enter_async_context(open_grpc(config))
        bound = Bound(
            config.host, listener_port(tcp[0]), listener_port(ws[0]), tls=context is not None,
            admin_port=listener_port(admin[0]) if admin else None, admin_host=config.admin_host,
            grpc_port=grpc_server.port if grpc_server is not None else None,
        )
        if rooms is None:
            rooms = await stack.enter_async_context(open_rooms(config))
        try:
            await _serve_connections(config, rooms, stop, {"tcp": tcp, "ws": ws}, bound,
                                     task_status, admin, grpc_server)
        finally:
            # Teardown, after every connection is gone, also when cancelled: whatever
            # the rooms handed to the history store is committed.
            with trio.CancelScope(shield=True):
                await rooms.delivery.flush()
        log.info("trio-chat stopped")


async def _close_all(listeners: Sequence[trio.abc.Listener[trio.abc.Stream]]) -> None:
    for listener in listeners:
        await trio.aclose_forcefully(listener)


@asynccontextmanager
async def open_rooms(config: Config) -> AsyncIterator[Rooms]:
    """The rooms for ``config``: ``#lobby`` shared through Redis (``config.redis``), or
    this server's own with their SQLite history (``config.db``)."""
    if config.redis:
        from ..cluster import open_cluster  # coredis is imported only with --redis

        async with open_cluster(config) as cluster:  # moderation in Redis too
            if not config.secret:
                # Every server must accept the others' tokens: one key, kept in Redis.
                secret = await cluster.shared_token_key()
                if secret is None:
                    log.warning(
                        "cluster: no shared token key from Redis: a login token is "
                        "taken only by the server that issued it (give --secret)"
                    )
                config = replace(config, secret=secret)
            from ..cluster.accounts import RedisAccounts

            # Accounts in Redis too: any server registers, logs in and checks tokens.
            store = RedisAccounts(lambda: cluster.client)
            async with open_accounts(config, store) as accounts:
                cluster.rooms.accounts = accounts
                yield cluster.rooms
    else:
        async with (
            open_history(config) as history,
            open_accounts(config) as accounts,
            open_moderation(config) as service,
        ):
            rooms = Rooms(LocalDelivery(history), config=config)
            rooms.accounts = accounts
            rooms.moderation = Moderator(rooms, service)
            yield rooms


@asynccontextmanager
async def open_moderation(config: Config) -> AsyncIterator[ModerationService]:
    """Bans, mutes, roles and modes in ``config.db`` beside the history (which must
    be open: it makes the file its own first); the admins are ``--admin``'s and the
    accounts the database says are."""
    admins = tuple(name_key(name) for name in config.admins)
    try:
        store = await trio.to_thread.run_sync(ModerationStore, config.db)
    except sqlite3.Error as error:
        raise StoreError(f"cannot use database {config.db} for moderation: {error}") from None
    service = ModerationService(SqliteBackend(store), admins=lambda: admins)
    try:
        yield service
    finally:
        with trio.CancelScope(shield=True):
            await service.aclose()


#: The connection handler of each listener, by name (``Bound``'s ports, in order).
HANDLERS: dict[str, Callable[[Admission, trio.abc.Stream], Awaitable[None]]] = {
    "tcp": handle_tcp,
    "ws": handle_ws,
}


def gate_for(config: Config) -> Gate[Session]:
    """The server's connection gate: the caps, the connection rate per address, and the
    flood state closed connections leave their address (on Trio's clock)."""
    clock = trio.current_time
    return Gate[Session](
        config.max_clients,
        config.max_per_ip,
        throttle=ConnectThrottle(config.connect_rate, config.connect_burst, clock),
        floods=FloodMemory(config.rate_limit, config.rate_burst, config.rate_ceiling, clock),
    )


async def _serve_connections(
    config: Config,
    rooms: Rooms,
    stop: trio.Event,
    listeners: dict[str, Sequence[trio.abc.Listener[trio.abc.Stream]]],
    bound: Bound,
    task_status: trio.TaskStatus[Bound],
    admin: Sequence[trio.abc.Listener[trio.abc.Stream]] = (),
    grpc_server: GrpcServer | None = None,
) -> None:
    gate = gate_for(config)
    running = Running(config, rooms, gate, bound)
    # The admin listener answers from before the first connection until after the last
    # (readiness says 503 meanwhile), so a load balancer sees the whole life.
    async with trio.open_nursery() as operations:
        if admin:
            from ..admin import serve_admin  # prometheus_client: only with --admin-port

            await operations.start(serve_admin, running, admin)
            log.info("admin listener: %s (metrics, healthz, readyz)", bound.admin_url)
        await _serve_rooms(config, rooms, stop, listeners, bound, task_status, running,
                           grpc_server)
        operations.cancel_scope.cancel()


async def _serve_rooms(
    config: Config,
    rooms: Rooms,
    stop: trio.Event,
    listeners: dict[str, Sequence[trio.abc.Listener[trio.abc.Stream]]],
    bound: Bound,
    task_status: trio.TaskStatus[Bound],
    running: Running,
    grpc_server: GrpcServer | None = None,
) -> None:
    gate = running.gate
    ports = Ports(bound.tcp_port, bound.ws_port, bound.tls)
    admission = Admission(rooms, config, gate, ports)
    async with trio.open_nursery() as flushing:
        # The outboxes' fast path runs from before the first connection until after
        # the last (server/outbox.py).
        flushing.start_soon(rooms.flusher.run)
        # So do the WebSocket pings (transports/pinger.py), and the sessions' writer
        # tasks (Session.run).
        flushing.start_soon(admission.pinger.run)
        rooms.writers = flushing
        try:
            await _serve_listeners(config, rooms, stop, listeners, bound, task_status,
                                   running, admission, grpc_server)
        finally:
            rooms.writers = None
        flushing.cancel_scope.cancel()


async def _serve_listeners(
    config: Config,
    rooms: Rooms,
    stop: trio.Event,
    listeners: dict[str, Sequence[trio.abc.Listener[trio.abc.Stream]]],
    bound: Bound,
    task_status: trio.TaskStatus[Bound],
    running: Running,
    admission: Admission,
    grpc_server: GrpcServer | None = None,
) -> None:
    gate = running.gate
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            await accepting.start(rooms.run_notices)
            await accepting.start(rooms.run_expiry)
            await accepting.start(rooms.run_seats)
            await accepting.start(rooms.moderation.run)
            for name, group in listeners.items():
                await accepting.start(
                    partial(trio.serve_listeners, handler_nursery=connections),
                    partial(HANDLERS[name], admission),
                    list(group),
                )
            if grpc_server is not None:
                await accepting.start(grpc_server.serve, admission, connections, running)
            log.info("trio-chat listening: %s %s", bound.tcp_url, bound.ws_url)
            log.info("chat page: %s", bound.page_url)
            if bound.grpc_target is not None:
                log.info("grpc port: %s%s", bound.grpc_target, " (TLS)" if bound.tls else "")
            _log_file_limit(config)
            if host_policy(config.allowed_hosts, config.host).unprotected:
                log.warning(
                    "listening on %s with no --allowed-host: the page answers any Host "
                    "name; --allowed-host NAME protects it from DNS rebinding", config.host
                )
            running.accepting = True
            task_status.started(bound)
            await stop.wait()
            running.stopping = True
            accepting.cancel_scope.cancel()  # stop accepting: the listening sockets close
        log.info(
            "shutting down: %d connections, up to %gs to drain",
            gate.total,
            config.shutdown_grace,
        )
        shut_down(rooms, gate)
        # Leaving this block waits for every connection's handler, but no longer than
        # the grace period; then the rest are cancelled (closed at once).
        connections.cancel_scope.deadline = trio.current_time() + config.shutdown_grace
    if connections.cancel_scope.cancelled_caught:
        log.info("shutdown grace ran out; remaining connections closed")


def _log_file_limit(config: Config) -> None:
    """Say how many connections the open-file limit leaves room for (and warn when
    that is fewer than ``--max-clients``)."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        log.info("open-file limit: none")
        return
    room_for = max(0, limit - RESERVED_FDS)
    log.info("open-file limit %d: room for about %d connections", limit, room_for)
    if config.max_clients == 0 or config.max_clients > room_for:
        log.warning(
            "the open-file limit allows fewer connections than --max-clients (%s)",
            config.max_clients or "no cap",
        )


def shut_down(rooms: Rooms, gate: Gate[Session]) -> None:
    """Close the rooms and tell every live session to say goodbye and drain."""
    gate.closing = True
    notice = protocol.shutdown(rooms.count)  # one message for everyone
    rooms.close()
    for session in list(gate.live):
        session.shutdown(notice)


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


def run(config: Config) -> int:
    """Run the server in this process until a signal; returns the exit status: 0
    after a graceful stop, 1 when a second signal cut the drain short, or a startup
    error's code (port in use...)."""
    tune_gc()
    tune_malloc()
    raise_nofile_limit()  # logged once the server has started (a failed start says one line)
    try:
        graceful = trio.run(serve_until_signal, config)
    except (StartupError, BaseExceptionGroup) as error:
        startup = find_startup_error(error)
        if startup is None:
            raise
        log.error("%s", startup)
        return startup.exit_code
    return 0 if graceful else 1
