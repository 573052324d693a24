"""Per-address limits: how fast an address may open connections, and the flood state
its closed connections leave behind. Sans I/O (no trio import; the clock is injected).

Flood control is per connection, so people behind one NAT do not slow each other.
But then reconnecting was a way around it (issue 13: 20 sockets each connecting,
sending the 10-message burst and leaving made 981 broadcasts a second from one
address). Two limits close it, like ergo's connection throttling:

- :class:`ConnectThrottle`: at most ``--connect-burst`` new connections at once from
  one address, then ``--connect-rate`` per second; one more is refused.
- :class:`FloodMemory`: a connection that closes owing tokens leaves its address the
  debt (its bucket's level and count of delayed messages); new connections from that
  address share one bucket and add to the debt, not start from a fresh burst, until
  it is paid (at ``--rate-limit`` per second). Connections that come when their
  address owes nothing have buckets of their own.

Both remember at most :data:`ADDRESSES` addresses (least recently seen forgotten
first), each only as long as its state differs from a fresh one (for the throttle,
``--connect-burst / --connect-rate`` seconds; for a debt, until it is paid). IPv6
addresses count per /64 (one host's usual share), IPv4 ones each on its own. Each
server counts its own connections (with ``--redis`` too).
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from .limits import TokenBucket

#: Addresses each limit remembers at once, at most (a few hundred bytes each).
ADDRESSES: Final = 10_000

V = TypeVar("V")


def address_key(host: str) -> str:
    """What per-address limits count by: the IPv4 address, or the IPv6 /64 (an
    IPv4-mapped IPv6 address is its IPv4 address); anything else as it is."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Recent(Generic[V]):
    """An LRU of per-address records, each forgotten ``horizon`` seconds after it was
    last written (by then it is as good as none), and the oldest first past ``size``."""

    def __init__(self, horizon: float, size: int = ADDRESSES) -> None:
        self.horizon = horizon
        self.size = size
        self._records: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str, now: float) -> tuple[float, V] | None:
        """``key``'s record and when it was written, if it is still remembered."""
        entry = self._records.get(key)
        if entry is None:
            return None
        if now - entry[0] >= self.horizon:
            del self._records[key]
            return None
        return entry

    def put(self, key: str, value: V, now: float) -> None:
        records = self._records
        records[key] = (now, value)
        records.move_to_end(key)
        while records:
            oldest, (written, _) = next(iter(records.items()))
            if len(records) <= self.size and now - written < self.horizon:
                break
            del records[oldest]

    def forget(self, key: str) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)


class ConnectThrottle:
    """New connections per address: ``burst`` at once, then ``rate`` per second
    (a token bucket without debt: a refused attempt costs nothing). ``rate <= 0``
    turns it off."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float], size: int = ADDRESSES
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        # A record is (tokens, refusals in a row); full again after burst / rate.
        self._recent: Recent[tuple[float, int]] = Recent(
            self.burst / rate if rate > 0 else 0, size
        )

    def admit(self, host: str) -> bool:
        """Spend one connection from ``host``'s allowance; False if there is none left."""
        if self.rate <= 0:
            return True
        key = address_key(host)
        now = self._clock()
        tokens, refused = float(self.burst), 0
        entry = self._recent.get(key, now)
        if entry is not None:
            written, (level, refused) = entry
            tokens = min(tokens, level + (now - written) * self.rate)
        if tokens < 1:
            self._recent.put(key, (tokens, refused + 1), now)
            return False
        self._recent.put(key, (tokens - 1, 0), now)
        return True

    def refused(self, host: str) -> int:
        """Connections from ``host`` refused in a row so far (only the first is worth
        an INFO log line: a storm of refusals must not flood the log)."""
        entry = self._recent.get(address_key(host), self._clock())
        return 0 if entry is None else entry[1][1]

    def __len__(self) -> int:
        """Addresses remembered now."""
        return len(self._recent)


class Owed:
    """What an address's connections left unpaid: a bucket that the connections which
    come meanwhile share (its level never below ``-ceiling``, so none waits long for
    its first message), and when the whole debt will have been paid at the rate
    (every token they spent, uncapped: until then nobody from there starts afresh)."""

    def __init__(self, bucket: TokenBucket, clock: Callable[[], float]) -> None:
        self.bucket = bucket
        self.clock = clock
        self.until = clock()

    def owing(self) -> bool:
        return self.clock() < self.until or self.bucket.level() < self.bucket.burst

    def add(self, tokens: float) -> None:
        """``tokens`` more are owed: paid ``tokens / rate`` seconds later."""
        self.until = max(self.until, self.clock()) + tokens / self.bucket.rate


class Continuation(TokenBucket):
    """The bucket of a connection that came while its address owed: it takes from the
    address's shared bucket (with every other such connection), adding to the debt,
    until the debt is paid; then from a fresh bucket of its own."""

    def __init__(self, owed: Owed) -> None:
        shared = owed.bucket
        super().__init__(shared.rate, shared.burst, shared.ceiling, owed.clock)
        #: The address's debt, while it lasts; None once this one is on its own.
        self.owed: Owed | None = owed

    def take(self) -> float:
        owed = self.owed
        if owed is not None:
            if owed.owing():
                delay = owed.bucket.take()
                owed.add(1)
                return delay
            self.owed = None  # paid: from now on a bucket of its own, starting full
            self._tokens, self._last, self.held = float(self.burst), self._clock(), 0
        return super().take()

    def level(self) -> float:
        return self.owed.bucket.level() if self.owed is not None else super().level()


class FloodMemory:
    """The flood state an address's closed connections leave to its next ones.

    A connection that closes owing tokens (it sent faster than the limit) leaves its
    address the debt: its bucket's level and its count of delayed messages. Until the
    address has paid it (at the rate: an address that sent N messages too many owes
    N / rate seconds), every new connection from there takes from one bucket shared
    with the others that come meanwhile (a :class:`Continuation`), and what they send
    adds to the debt: so however an address reconnects, its connections that come and
    go get one connection's rate between them, on top of what their first, fresh,
    connections sent. Another connection that closes owing adds to the debt. A
    connection that comes when its address owes nothing has a bucket of its own, so
    people behind one NAT do not slow each other. The shared bucket never owes more
    than ``burst + ceiling`` tokens: a connection waits at most ``ceiling / rate``
    seconds for its first message. ``rate <= 0`` (flood control off) remembers nothing.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        ceiling: int,
        clock: Callable[[], float],
        size: int = ADDRESSES,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.ceiling = ceiling
        self._clock = clock
        self._floor = -float(ceiling)
        self._recent: Recent[Owed] = Recent(math.inf, size)

    def bucket(self, host: str) -> TokenBucket:
        """A new connection's token bucket: its own, or its address's while that owes."""
        owed = self._owing(address_key(host)) if self.rate > 0 else None
        if owed is None:
            return TokenBucket(self.rate, self.burst, self.ceiling, self._clock)
        return Continuation(owed)

    def left(self, host: str, bucket: TokenBucket) -> None:
        """A connection from ``host`` closed: if it owes, its address owes it."""
        if self.rate <= 0:
            return
        key, now = address_key(host), self._clock()
        if isinstance(bucket, Continuation) and bucket.owed is not None:
            self._recent.put(key, bucket.owed, now)  # its debt is already there
            return
        tokens = self.burst - bucket.level()
        if tokens <= 0:
            return
        owed = self._owing(key)
        if owed is None:
            owed = Owed(TokenBucket(self.rate, self.burst, self.ceiling, self._clock), self._clock)
        owed.bucket.charge(tokens, bucket.held, self._floor)
        owed.add(tokens)
        self._recent.put(key, owed, now)

    def _owing(self, key: str) -> Owed | None:
        """``key``'s debt, if it is not paid yet."""
        entry = self._recent.get(key, self._clock())
        if entry is None:
            return None
        if not entry[1].owing():
            self._recent.forget(key)
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._recent)
