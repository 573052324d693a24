"""``--grpc-port``: grpcio's server beside the other listeners, into the same room.

:func:`open_grpc` binds the port (grpcio's ``grpc.aio`` server on its own event loop,
in a thread: :mod:`.bridge`); :meth:`GrpcServer.serve` then answers calls until it is
cancelled. Each call hops to Trio and runs there as a task in the server's
connections nursery, admitted like any connection (:class:`Admission`): a ``Session``
stream is a session of the room (:class:`.calls.GrpcTransport`), ``Post`` one whose
client only posts, ``Who`` and ``History`` read the room and its history. The
standard ``grpc.health.v1.Health`` service says ``SERVING`` exactly when ``/readyz``
would, and server reflection lets ``grpcurl`` list the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import grpc
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ... import protocol
from ...config import Config
from ...errors import StartupError
from ...protocol import ProtocolError
from ...server.replays import CHUNK_BYTES, REPLAY_PAGE
from ...server.session import SHUTDOWN, PeerGone
from ...v1 import chat_pb2
from ..admission import Admission, log_connection
from ..net import url_host
from .bridge import Bridge
from .calls import Call, Ending, GrpcTransport, Hops, PostTransport, status_for
from .events import chat_message, history_request, who_reply, who_request

if TYPE_CHECKING:
    from ...history.base import Shown
    from ...server.app import Running

log = logging.getLogger(__name__)

#: The chat service's full name (proto/trio_chat/v1/chat.proto).
SERVICE: Final = chat_pb2.DESCRIPTOR.services_by_name["Chat"].full_name
#: Seconds between two looks at the server's readiness, for the health service.
HEALTH_INTERVAL: Final = 0.5
#: HTTP/2 streams one client connection may have open at once, when --max-per-ip
#: does not say (it is also the most one address may have).
MAX_STREAMS: Final = 1000

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(config: Config) -> list[tuple[str, int]]:
    """grpcio's settings: the same bounds the other listeners keep."""
    options = [
        # Two servers on one port must be an error, not a shared port (grpcio's default).
        ("grpc.so_reuseport", 0),
        # A ClientEvent is small: at most a line's worth, like --max-line.
        ("grpc.max_receive_message_length", config.max_line),
        ("grpc.max_concurrent_streams", config.max_per_ip or MAX_STREAMS),
        # A connection without calls is closed after the join deadline of a TCP client.
        ("grpc.max_connection_idle_ms", int(config.idle_timeout * 1000)),
        ("grpc.server_handshake_timeout_ms", int(config.handshake_timeout * 1000)),
    ]
    if config.ping_interval > 0:
        # Dead peers are found as on WebSocket: a ping every --ping-interval, a pong
        # within --ping-timeout, calls or not.
        options += [
            ("grpc.keepalive_time_ms", int(config.ping_interval * 1000)),
            ("grpc.keepalive_timeout_ms", int(config.ping_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    return options


def credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS with ``--tls-cert`` (and ``--tls-key``, or the key in the same file)."""
    if not config.tls_cert:
        return None
    try:
        chain = Path(config.tls_cert).read_bytes()
        key = Path(config.tls_key).read_bytes() if config.tls_key else chain
    except OSError as exc:
        raise StartupError(f"cannot load TLS certificate/key: {exc}") from None
    return grpc.ssl_server_credentials([(key, chain)])


class Handlers:
    """The loop's side of every call: hand it to Trio, wait for how it ends."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        #: Starts a call's task on Trio; set by :meth:`GrpcServer.serve`.
        self.start: Callable[[str, Hops, bytes | None], None] | None = None

    async def _call(
        self, kind: str, context: grpc.aio.ServicerContext[bytes, bytes], request: bytes | None
    ) -> bytes | None:
        hops = Hops(self.bridge, Call(context))
        start = self.start
        if start is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "shutdown: server not serving")
        assert start is not None
        self.bridge.to_trio(start, kind, hops, request)
        try:
            ending = await hops.call.ended
        except asyncio.CancelledError:
            self.bridge.to_trio(hops.lost)  # the client cancelled, or its connection broke
            raise
        if ending.code != grpc.StatusCode.OK:
            await context.abort(ending.code, ending.details)
        return ending.reply

    async def session(
        self, requests: object, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        await self._call("session", context, None)

    async def post(
        self, requests: object, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        reply = await self._call("post", context, None)
        assert reply is not None
        return reply

    async def who(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        reply = await self._call("who", context, request)
        assert reply is not None
        return reply

    async def history(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        await self._call("history", context, request)


async def _create(
    config: Config, handlers: Handlers, creds: grpc.ServerCredentials | None
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """On the loop: the server, its services, and its port (bound, not serving yet)."""
    # Calls at once, server-wide: the sessions --max-clients allows, and room for the
    # health and reflection calls the gate does not count.
    calls = config.max_clients + MAX_STREAMS if config.max_clients else None
    server = grpc.aio.server(options=server_options(config), maximum_concurrent_rpcs=calls)
    methods = {
        "Who": grpc.unary_unary_rpc_method_handler(handlers.who),
        "History": grpc.unary_stream_rpc_method_handler(handlers.history),
        "Post": grpc.stream_unary_rpc_method_handler(handlers.post),
        "Session": grpc.stream_stream_rpc_method_handler(handlers.session),
    }
    # No (de)serializers: bytes in and out, so a broadcast is encoded once for every
    # stream (events.event_bytes) and bad input is ours to answer (INVALID_ARGUMENT).
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, methods)])
    health = HealthServicer()
    for service in ("", SERVICE):
        await health.set(service, _NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    address = f"{url_host(config.host or '::')}:{config.grpc_port}"
    try:
        if creds is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, creds)
    except RuntimeError:
        port = 0
    if not port:
        raise StartupError(f"cannot listen on {address} (gRPC): address in use or not available")
    return server, port, health


class GrpcServer:
    """The gRPC listener: bound by :func:`open_grpc`, serving while :meth:`serve` runs."""

    def __init__(
        self, config: Config, bridge: Bridge, server: grpc.aio.Server, port: int,
        health: HealthServicer, handlers: Handlers,
    ) -> None:
        self.config = config
        self.port = port
        self._bridge = bridge
        self._server = server
        self._health = health
        self._handlers = handlers
        self._stopping: asyncio.Task[None] | None = None

    async def serve(
        self, admission: Admission, connections: trio.Nursery, running: Running,
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer calls (each a task in ``connections``) until cancelled; then refuse
        new ones while the calls in progress end (the sessions drain as the others)."""
        calls: dict[str, Callable[[Hops, bytes | None], Awaitable[None]]] = {
            "session": partial(run_session, admission),
            "post": partial(run_post, admission),
            "who": partial(run_who, admission),
            "history": partial(run_history, admission),
        }

        def start(kind: str, hops: Hops, request: bytes | None) -> None:
            try:
                connections.start_soon(calls[kind], hops, request)
            except RuntimeError:  # the nursery is closed: the server is stopping
                hops.end(Ending(*status_for(SHUTDOWN)))

        self._handlers.start = start
        await self._bridge.run(self._server.start())
        task_status.started()
        try:
            await self._watch_health(running)
        finally:
            self._bridge.to_loop(self._stop_accepting)

    async def _watch_health(self, running: Running) -> None:
        """Keep the health service's answer where ``/readyz``'s is."""
        from ...admin.health import readiness

        serving: bool | None = None
        while True:
            ready = not readiness(running)
            if ready != serving:
                serving = ready
                status = _SERVING if ready else _NOT_SERVING
                for service in ("", SERVICE):
                    await self._bridge.run(self._health.set(service, status))
            await trio.sleep(HEALTH_INTERVAL)

    def _stop_accepting(self) -> None:
        """On the loop: NOT_SERVING, no new calls; the ones in progress go on (their
        sessions are told to drain like every other) for --shutdown-grace at most."""
        self._handlers.start = None

        async def stop() -> None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(self.config.shutdown_grace)

        self._stopping = asyncio.get_running_loop().create_task(stop())

    async def _close(self) -> None:
        await self._server.stop(0)


@asynccontextmanager
async def open_grpc(config: Config) -> AsyncIterator[GrpcServer]:
    """Bind ``config.grpc_port`` (0: a free port); the server is stopped, and its
    thread ended, on the way out."""
    creds = credentials(config)
    bridge = Bridge()
    bridge.start()
    try:
        handlers = Handlers(bridge)
        server, port, health = await bridge.run(_create(config, handlers, creds))
        grpc_server = GrpcServer(config, bridge, server, port, health, handlers)
        try:
            yield grpc_server
        finally:
            with trio.CancelScope(shield=True):
                await bridge.run(grpc_server._close())
    finally:
        await bridge.aclose()


# ---------------------------------------------------------------- the calls, on Trio


#: What the ``Hello`` of a ``Session`` stream tells a person (the TCP greeting's text
#: names ``/nick``, which is no gRPC message).
HELLO_TEXT: Final = "send join (JoinRequest) to chat, listen (ListenRequest) to watch"


async def run_session(admission: Admission, hops: Hops, request: bytes | None) -> None:
    """A ``Session`` stream: one connection's session in the room."""
    config = admission.config
    with admission.admit("grpc", hops.peer) as arrival:
        if _refused(arrival.refusal, hops, arrival.log_level):
            return
        log_connection("connect", "grpc", hops.peer)
        try:
            # The greeting comes first, at once: a gRPC client knows its first event
            # is one (the TCP greeting waits for a quiet moment, for nc's sake). No
            # listening by itself as a quiet WebSocket does: a stream asks (`listen`).
            session = admission.session(
                GrpcTransport(hops, config), join_timeout=config.idle_timeout,
                greeting=protocol.hello(admission.version, HELLO_TEXT),
            )
            with admission.running(arrival, session):
                await session.run()
        except Exception:
            log.exception("grpc call from %s failed", hops.peer)
            hops.end(Ending(grpc.StatusCode.INTERNAL, "internal error"))


async def run_post(admission: Admission, hops: Hops, request: bytes | None) -> None:
    """A ``Post`` stream: a session that only posts (:class:`.calls.PostTransport`)."""
    config = admission.config
    with admission.admit("grpc", hops.peer) as arrival:
        if _refused(arrival.refusal, hops, arrival.log_level):
            return
        log_connection("connect", "grpc", hops.peer)
        try:
            # Its poster chooses its name: a name taken is ALREADY_EXISTS, never the
            # variant a seed-style client gets.
            session = admission.session(
                PostTransport(hops, config), join_timeout=config.idle_timeout,
                variants=False,
            )
            with admission.running(arrival, session):
                await session.run()
        except Exception:
            log.exception("grpc call from %s failed", hops.peer)
            hops.end(Ending(grpc.StatusCode.INTERNAL, "internal error"))


async def run_who(admission: Admission, hops: Hops, request: bytes | None) -> None:
    """``Who``: a room's answer to ``who``."""
    with admission.admit("grpc", hops.peer) as arrival:
        if _refused(arrival.refusal, hops, arrival.log_level):
            return
        try:
            room = who_request(request or b"")
        except ProtocolError as error:
            hops.end(Ending(*status_for(error.code, error.text)))
            return
        hops.end(Ending(reply=who_reply(admission.rooms.who(room))))


async def run_history(admission: Admission, hops: Hops, request: bytes | None) -> None:
    """``History``: what a join would replay, written a chunk at a time under the
    server's replay budget, each chunk within ``--send-timeout`` (a client that stops
    reading gets ``RESOURCE_EXHAUSTED``, like a slow consumer)."""
    rooms, config = admission.rooms, admission.config
    with admission.admit("grpc", hops.peer) as arrival:
        if _refused(arrival.refusal, hops, arrival.log_level):
            return
        try:
            since, limit, name = history_request(request or b"")
        except ProtocolError as error:
            hops.end(Ending(*status_for(error.code, error.text)))
            return
        history = rooms.history
        room = rooms.room(name)
        if history is None or room is None or room.log is None:
            hops.end(Ending())  # no store, or no such room: no messages
            return
        replay = history.replay(since, room.log)
        left = limit or -1  # messages still to send; -1: no limit
        if since is None and 0 < limit < replay.count:
            replay = replace(replay, count=limit)

        async def write(messages: Sequence[Shown]) -> bool:
            """False when the call is over (gone, or too slow)."""
            nonlocal left
            if left >= 0:
                messages = messages[:left]
                left -= len(messages)
            start = 0
            while start < len(messages):
                chunk: list[bytes] = []
                size = 0
                async with rooms.replays.slot():
                    while start < len(messages) and size < CHUNK_BYTES:
                        message = messages[start]
                        data = chat_message(
                            message.id, message.user, message.text, message.timestamp,
                            room.name,
                        )
                        chunk.append(data)
                        size += len(data)
                        start += 1
                    with trio.move_on_after(config.send_timeout):
                        try:
                            await hops.write(chunk)
                        except PeerGone:
                            return False
                        continue
                hops.end(Ending(*status_for(protocol.SLOW_CONSUMER)))
                return False
            return True

        while not replay.done and left:
            page, replay = await history.read_page(replay, REPLAY_PAGE)
            if not await write(page):
                return
        if left and not await write(replay.pending):
            return
        hops.end(Ending())


def _refused(refusal: ProtocolError | None, hops: Hops, level: int) -> bool:
    """End a call refused by the caps or the connection rate: RESOURCE_EXHAUSTED."""
    if refusal is None:
        return False
    log_connection("refuse", "grpc", hops.peer, refusal.code, refusal.text, level=level)
    hops.end(Ending(*status_for(refusal.code, refusal.text)))
    return True

