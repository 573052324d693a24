"""What every transport does around a connection's session: admit it under the caps,
register it so a shutdown reaches it, release it, and log its life.

The transports differ only in how they get from a stream to a
:class:`~trio_chat.server.session.Transport` (a TLS handshake, an HTTP upgrade...)
and in how they say no; this module is the rest, written once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from importlib import metadata

import trio

from ..config import Config
from ..protocol import RATE_LIMITED, ProtocolError
from ..server.limits import CONNECT_RATE, Gate
from ..server.rooms import Rooms
from ..server.session import Session, Transport
from .net import Ports, peer_host, peer_name, set_keepalive
from .pinger import Pinger

log = logging.getLogger(__name__)


def log_connection(
    event: str,
    kind: str,
    peer: str,
    reason: str | None = None,
    detail: str | None = None,
    *,
    level: int = logging.INFO,
) -> None:
    """One lifecycle line: ``connect tcp 1.2.3.4:5``, ``disconnect ws ... (reason)``,
    ``refuse ...  (detail)``, with the structured fields of ``--log-format json``."""
    shown = detail or reason
    suffix = f" ({shown})" if shown else ""
    log.log(
        level, "%s %s %s%s", event, kind, peer, suffix,
        extra={"event": event, "transport": kind, "peer": peer, "reason": reason},
    )


@dataclass(slots=True)
class Arrival:
    """A new connection, counted by the gate (or refused: ``refusal`` says why)."""

    #: None for a gRPC call (:meth:`Admission.admit`).
    stream: trio.abc.Stream | None
    kind: str
    peer: str
    refusal: ProtocolError | None
    #: How to log the refusal: after the first of a storm of connections from one
    #: address refused for their rate, the rest go to the debug log only.
    log_level: int = logging.INFO


@cache
def server_version() -> str:
    """trio-chat's version, as installed (the TCP greeting says it)."""
    try:
        return metadata.version("trio-chat")
    except metadata.PackageNotFoundError:
        return "0"


class Admission:
    """The shared skeleton of the transports' connection handlers. ``ports``: where the
    server listens, as bound (a client at the wrong port is told the right one)."""

    def __init__(
        self,
        rooms: Rooms,
        config: Config,
        gate: Gate[Session] | None = None,
        ports: Ports | None = None,
    ) -> None:
        self.rooms = rooms
        self.config = config
        self.gate = gate
        self.ports = ports or Ports(config.tcp_port, config.ws_port, bool(config.tls_cert))
        self.version = server_version()
        #: The WebSocket connections' keepalive (:mod:`.pinger`): one task for the
        #: server, which runs it while it serves; without it each connection has its own.
        self.pinger = Pinger(config)

    def arrive(self, stream: trio.abc.Stream, kind: str) -> Admitted:
        """Name the peer, turn on keepalive, and count the connection under the caps
        for as long as the block (``with``) runs. A connection over a cap is not
        counted; its ``refusal`` says why (the transport tells the peer in its own
        way)."""
        set_keepalive(stream)
        return Admitted(self, kind, peer_name(stream), stream)

    def admit(self, kind: str, peer: str, stream: trio.abc.Stream | None = None) -> Admitted:
        """:meth:`arrive` for a connection that is not a stream of ours: a gRPC call
        (grpcio owns its sockets), counted from ``peer`` (``host:port``) alone."""
        return Admitted(self, kind, peer, stream)

    def session(
        self,
        transport: Transport,
        *,
        join_timeout: float | None = None,
        greeting: str | None = None,
        listen_after: float | None = None,
        variants: bool = True,
    ) -> Session:
        """The session for an admitted connection (run it inside :meth:`running`); its flood
        control starts where its address's last connections left off, if they did
        not stay within the limit (:class:`~trio_chat.server.addresses.FloodMemory`)."""
        floods = self.gate.floods if self.gate is not None else None
        host = peer_host(transport.peer)
        bucket = floods.bucket(host) if floods is not None else None
        return Session(
            self.rooms, self.config, transport, join_timeout=join_timeout, bucket=bucket,
            host=host, greeting=greeting, listen_after=listen_after, variants=variants,
        )

    def running(self, arrival: Arrival, session: Session) -> Running:
        """For the ``with`` block that runs ``session`` (``await session.run()``):
        registered with the gate (so a shutdown reaches it; one that arrives while the
        server is stopping is told at once), then counted, and why it ended logged."""
        return Running(self, arrival, session)

    def count_end(self, session: Session) -> None:
        """Fold a finished session's own counts into the server's metrics."""
        metrics, transport = self.rooms.metrics, session.transport
        # A reason's detail (``protocol_error: <what>``) is for the log: the metric's
        # labels stay a short, fixed set.
        metrics.disconnects[session.reason.partition(":")[0]] += 1
        totals = metrics.transport(transport.kind)
        totals.messages_in += session.messages_in
        totals.messages_out += transport.messages_out
        totals.bytes_out += transport.bytes_out


class Running:
    """See :meth:`Admission.running`. A class, not an ``async def`` around
    ``session.run()``: every connection waits inside it for its whole life, and a
    coroutine frame costs more than this (memory per idle connection, issue 20)."""

    __slots__ = ("_admission", "_arrival", "_session")

    def __init__(self, admission: Admission, arrival: Arrival, session: Session) -> None:
        self._admission, self._arrival, self._session = admission, arrival, session

    def __enter__(self) -> None:
        gate, session = self._admission.gate, self._session
        if gate is not None:
            gate.live.add(session)
            if gate.closing:
                session.shutdown()

    def __exit__(self, *exc_info: object) -> None:
        admission, arrival, session = self._admission, self._arrival, self._session
        gate = admission.gate
        if gate is not None:
            gate.live.discard(session)
            if gate.floods is not None:
                gate.floods.left(peer_host(arrival.peer), session.bucket)
        admission.count_end(session)
        log_connection("disconnect", arrival.kind, arrival.peer, session.reason)


class Admitted:
    """A connection counted under the caps while the ``with`` block runs (see
    :meth:`Admission.arrive`). A class, not a ``contextmanager`` generator: every
    connection holds one for its whole life (memory per connection, issue 20)."""

    __slots__ = ("_admission", "_arrival", "_gate", "_host", "_totals")

    def __init__(
        self, admission: Admission, kind: str, peer: str, stream: trio.abc.Stream | None
    ) -> None:
        self._admission = admission
        self._host = host = peer_host(peer)
        rooms = admission.rooms
        metrics = rooms.metrics
        self._totals = totals = metrics.transport(kind)
        totals.accepted += 1
        level = logging.INFO
        gate = admission.gate
        refusal = rooms.moderation.check_accept(host)  # a banned address
        if refusal is not None:
            metrics.disconnects[refusal.code] += 1
            gate = None  # not counted under the caps: nothing to release
        if gate is not None:
            try:
                gate.admit(host)
            except ProtocolError as error:
                refusal = error
                gate = None  # not counted either
                throttle = admission.gate.throttle if admission.gate is not None else None
                if error.code == RATE_LIMITED:
                    # Refused for its address's connection rate (not flood control).
                    metrics.disconnects[CONNECT_RATE] += 1
                    if throttle is not None and throttle.refused(host) > 1:
                        level = logging.DEBUG
                else:
                    metrics.disconnects[error.code] += 1
        self._gate = gate
        totals.open += 1
        self._arrival = Arrival(stream, kind, peer, refusal, level)

    def __enter__(self) -> Arrival:
        return self._arrival

    def __exit__(self, *exc_info: object) -> None:
        self._totals.open -= 1
        gate = self._gate
        if gate is not None:
            gate.release(self._host)
