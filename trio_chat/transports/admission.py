"""What every transport does around a connection's session: admit it under the caps,
register it so a shutdown reaches it, release it, and log its life.

The transports differ only in how they get from a stream to a
:class:`~trio_chat.server.session.Transport` (a TLS handshake, an HTTP upgrade...)
and in how they say no; this module is the rest, written once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from ..config import Config
from ..protocol import ProtocolError
from ..server.limits import Gate
from ..server.room import Room
from ..server.session import Session, Transport
from .net import peer_host, peer_name, set_keepalive

log = logging.getLogger(__name__)


def log_connection(
    event: str, kind: str, peer: str, reason: str | None = None, detail: str | None = None
) -> None:
    """One lifecycle line: ``connect tcp 1.2.3.4:5``, ``disconnect ws ... (reason)``,
    ``refuse ...  (detail)``, with the structured fields of ``--log-format json``."""
    shown = detail or reason
    suffix = f" ({shown})" if shown else ""
    log.info(
        "%s %s %s%s", event, kind, peer, suffix,
        extra={"event": event, "transport": kind, "peer": peer, "reason": reason},
    )


@dataclass
class Arrival:
    """A new connection, counted by the gate (or refused: ``refusal`` says why)."""

    stream: trio.abc.Stream
    kind: str
    peer: str
    refusal: ProtocolError | None


class Admission:
    """The shared skeleton of the transports' connection handlers."""

    def __init__(self, room: Room, config: Config, gate: Gate[Session] | None = None) -> None:
        self.room = room
        self.config = config
        self.gate = gate

    @contextmanager
    def arrive(self, stream: trio.abc.Stream, kind: str) -> Iterator[Arrival]:
        """Name the peer, turn on keepalive, and count the connection under the caps
        for as long as the block runs. A connection over a cap is not counted; its
        ``refusal`` says why (the transport tells the peer in its own way)."""
        peer = peer_name(stream)
        host = peer_host(peer)
        set_keepalive(stream)
        metrics = self.room.metrics
        totals = metrics.transport(kind)
        totals.accepted += 1
        refusal: ProtocolError | None = None
        if self.gate is not None:
            try:
                self.gate.admit(host)
            except ProtocolError as error:
                refusal = error
                metrics.disconnects[error.code] += 1
        totals.open += 1
        try:
            yield Arrival(stream, kind, peer, refusal)
        finally:
            totals.open -= 1
            if self.gate is not None and refusal is None:
                self.gate.release(host)

    def session(self, transport: Transport, *, join_timeout: float | None = None) -> Session:
        """The session for an admitted connection (run it with :meth:`run`)."""
        return Session(self.room, self.config, transport, join_timeout=join_timeout)

    async def run(self, arrival: Arrival, session: Session) -> None:
        """Run ``session`` registered with the gate (so a shutdown reaches it; one that
        arrives while the server is stopping is told at once), then log why it ended."""
        gate = self.gate
        if gate is not None:
            gate.live.add(session)
            if gate.closing:
                session.shutdown()
        try:
            await session.run()
        finally:
            if gate is not None:
                gate.live.discard(session)
            self._count_end(session)
        log_connection("disconnect", arrival.kind, arrival.peer, session.reason)

    def _count_end(self, session: Session) -> None:
        """Fold a finished session's own counts into the server's metrics."""
        metrics, transport = self.room.metrics, session.transport
        metrics.disconnects[session.reason] += 1
        totals = metrics.transport(transport.kind)
        totals.messages_in += session.messages_in
        totals.messages_out += transport.messages_out
        totals.bytes_out += transport.bytes_out
