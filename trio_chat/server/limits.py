"""Per-connection and per-server limits, sans I/O (no trio import; the clock is injected).

:class:`TokenBucket` is the flood control (ergo's "fakelag"): it says how long to hold
a message back instead of dropping it, and when a client has been held back for too
long in a row. :class:`Gate` admits connections under ``--max-clients``,
``--max-per-ip`` and ``--connect-rate`` (:mod:`.addresses`) and knows every live
connection, so shutdown can reach them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ..protocol import RATE_LIMITED, SERVER_FULL, ProtocolError

if TYPE_CHECKING:
    from .addresses import ConnectThrottle, FloodMemory

T = TypeVar("T")

#: Why a connection refused for its address's ``--connect-rate`` is counted in the
#: disconnect metrics (the client is told ``rate_limited``; that reason is kept for
#: sessions flood control cut off).
CONNECT_RATE = "connect_rate"


class TokenBucket:
    """``rate`` messages per second on average, ``burst`` at once.

    The bucket may go into debt: :meth:`take` always takes a token and returns how
    many seconds the caller must wait before acting on the message, so a message over
    the limit is delayed, never dropped. ``ceiling`` is the hard limit: once more than
    ``ceiling`` messages *in a row* had to wait (the client kept sending faster than
    ``rate`` for that long), :meth:`take` raises ``rate_limited`` (fatal).

    "In a row" forgives only real pauses: a message that finds spare tokens takes that
    many off the count, and one that finds the bucket full clears it. A flooder whose
    reads come late (a busy server wakes up after the wait) finds a token or two now and
    then; a plain reset would let it flood for ever.
    ``rate <= 0`` turns the bucket off.
    """

    __slots__ = ("_clock", "_last", "_tokens", "burst", "ceiling", "held", "rate")

    def __init__(
        self,
        rate: float,
        burst: int,
        ceiling: int,
        clock: Callable[[], float],
        *,
        tokens: float | None = None,
        held: int = 0,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.ceiling = ceiling
        self._clock = clock
        self._tokens = float(self.burst) if tokens is None else min(float(self.burst), tokens)
        self._last = clock()
        #: Messages in a row that had to wait (less what pauses forgave).
        self.held = held

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def level(self) -> float:
        """Tokens now (negative: in debt), without spending any."""
        return min(self.burst, self._tokens + (self._clock() - self._last) * self.rate)

    def charge(self, tokens: float, held: int, floor: float) -> None:
        """Add another bucket's debt to this one (no lower than ``floor`` tokens) and
        its count of delayed messages, if larger."""
        now = self._clock()
        level = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._tokens, self._last = max(floor, level - tokens), now
        self.held = max(self.held, held)

    def take(self) -> float:
        """Spend one token; return the seconds to wait first (0.0 within the limit)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= self.burst:
            self.held = 0
        elif self._tokens >= 1:
            self.held = max(0, self.held - int(self._tokens - 1))
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        self.held += 1
        if self.held > self.ceiling:
            # Refused, not delivered: it costs nothing (a bucket that outlives the
            # connection, FloodMemory's, must not sink further with every refusal).
            self._tokens += 1
            self.held = self.ceiling + 1
            raise ProtocolError(
                RATE_LIMITED,
                f"too many messages: over {self.rate:g}/s for {self.ceiling} messages "
                "in a row; disconnecting",
                fatal=True,
            )
        return -self._tokens / self.rate


class Gate(Generic[T]):
    """Admission control and the registry of live connections.

    Every connection is counted from accept to close (the WebSocket handshake
    included), per client address and in total. ``T`` is whatever the server wants
    to reach at shutdown (a session); sessions are added once they exist.
    """

    def __init__(
        self,
        max_clients: int,
        max_per_ip: int,
        *,
        throttle: ConnectThrottle | None = None,
        floods: FloodMemory | None = None,
    ) -> None:
        self.max_clients = max_clients
        self.max_per_ip = max_per_ip
        self.per_ip: Counter[str] = Counter()
        self.total = 0
        self.live: set[T] = set()
        self.closing = False
        #: New connections per address (``--connect-rate``), if limited.
        self.throttle = throttle
        #: The flood state closed connections leave their address, if remembered.
        self.floods = floods

    def admit(self, ip: str) -> None:
        """Count a new connection from ``ip``, or raise ``server_full`` (fatal)."""
        if self.closing:
            raise ProtocolError(SERVER_FULL, "the server is shutting down", fatal=True)
        if self.max_clients and self.total >= self.max_clients:
            raise ProtocolError(
                SERVER_FULL, f"server full: {self.max_clients} connections", fatal=True
            )
        if self.max_per_ip and self.per_ip[ip] >= self.max_per_ip:
            raise ProtocolError(
                SERVER_FULL,
                f"too many connections from your address (limit {self.max_per_ip})",
                fatal=True,
            )
        throttle = self.throttle
        if throttle is not None and not throttle.admit(ip):
            raise ProtocolError(
                RATE_LIMITED,
                f"too many new connections from your address (at most {throttle.burst} at "
                f"once, then {throttle.rate:g} per second); try again later",
                fatal=True,
            )
        self.total += 1
        self.per_ip[ip] += 1

    def release(self, ip: str) -> None:
        """Uncount a connection that :meth:`admit` let in."""
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
