"""A real redis-server for the cluster tests: ``trio_chat.bench.redis_server.RedisServer``
and ``RedisSentinel`` (shared with ``trio-chat bench --cluster``; the tests import them
from here only), what a test does without one, and :class:`Sentinels`: a primary, its
replicas and three sentinels for the failover tests."""

from __future__ import annotations

import os
import time
from typing import Any, NoReturn

import pytest

from trio_chat.bench.redis_server import (
    RedisError,
    RedisSentinel,
    RedisServer,
    RedisServerMissing,
    sentinel_url,
)

__all__ = [
    "RedisError",
    "RedisSentinel",
    "RedisServer",
    "RedisServerMissing",
    "Sentinels",
    "redis_server_or_skip",
]


def redis_server_or_skip(**kwargs: Any) -> RedisServer:
    """A RedisServer (not started yet), or skip the test when redis-server is missing;
    under CI (env CI set) fail instead, since .ci/run installs it."""
    try:
        return RedisServer(**kwargs)
    except RedisServerMissing as exc:
        skip_or_fail(exc)


def skip_or_fail(missing: RedisServerMissing) -> NoReturn:
    reason = f"{missing}; .ci/run installs it"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


class Sentinels:
    """A primary, its replicas and three sentinels watching it, all real processes on
    loopback ports (redis-server, redis-sentinel); ``url`` is the ``--redis`` for them.
    The sentinels fail over about 3 s after the primary stops answering."""

    def __init__(self, replicas: int = 1) -> None:
        self.primary = redis_server_or_skip()
        self.replicas: list[RedisServer] = []
        self.sentinels: list[RedisSentinel] = []
        self._replica_count = replicas

    def __enter__(self) -> Sentinels:
        try:
            self.primary.start()
            self.replicas = [RedisServer(replica_of=self.primary).start()
                             for _ in range(self._replica_count)]
            try:
                self.sentinels = [RedisSentinel(self.primary) for _ in range(3)]
            except RedisServerMissing as exc:
                skip_or_fail(exc)
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait_watching()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return sentinel_url(self.sentinels)

    def close(self) -> None:
        if os.environ.get("TRIO_CHAT_SENTINEL_LOGS"):  # pytest -s: what each one logged
            for process in [*self.sentinels, *self.replicas, self.primary]:
                print(f"==== {type(process).__name__} {process.port}\n{process.log_tail(60)}")
        for process in [*self.sentinels, *self.replicas, self.primary]:
            process.close()

    def _wait_watching(self, timeout: float = 30.0) -> None:
        """Until every replica is in sync and every sentinel knows the replicas and the
        other two sentinels (they find each other through the primary every 2 s):
        only then can they agree on a failover."""
        deadline = time.monotonic() + timeout
        while not self._watching():
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not find each other in time")
            time.sleep(0.1)

    def _watching(self) -> bool:
        for replica in self.replicas:
            if b"master_link_status:up" not in replica.command("INFO", "replication"):
                return False
        name = self.sentinels[0].service
        for sentinel in self.sentinels:
            replicas = sentinel.command("SENTINEL", "REPLICAS", name)
            others = sentinel.command("SENTINEL", "SENTINELS", name)
            if len(replicas) < len(self.replicas) or len(others) < len(self.sentinels) - 1:
                return False
        return True

    def in_sync(self, timeout: float = 30.0) -> None:
        """Until every replica has everything the primary has (their replication
        offsets caught up with the primary's)."""
        deadline = time.monotonic() + timeout
        target = _offset(self.primary.command("INFO", "replication"), b"master_repl_offset")
        while any(_offset(r.command("INFO", "replication"), b"slave_repl_offset") < target
                  for r in self.replicas):
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not catch up in time")
            time.sleep(0.02)

    def primary_port(self) -> int | None:
        """The primary's port as a majority of the sentinels name it now."""
        named = [s.primary_address() for s in self.sentinels]
        ports = [address[1] for address in named if address is not None]
        best = max(set(ports), key=ports.count, default=None)
        return best if best is not None and ports.count(best) >= 2 else None


def _offset(info: bytes, field: bytes) -> int:
    for line in info.splitlines():
        if line.startswith(field + b":"):
            return int(line.split(b":", 1)[1])
    return -1
