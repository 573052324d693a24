from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.redis_server import RedisServer, redis_server_or_skip
from trio_chat import Bound, Config, serve

#: Flood control off: many tests send bursts to check order and delivery; the limit
#: itself is tested with its own settings (tests/test_flood.py).
TEST_CONFIG = Config(tcp_port=0, ws_port=0, rate_limit=0)


@pytest.fixture
def config() -> Config:
    return TEST_CONFIG


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Bound:
    """A real server on ephemeral loopback ports, cancelled when the test ends."""
    bound: Bound = await nursery.start(serve, config)
    return bound


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real, empty redis-server on a free loopback port (no persistence), stopped and
    removed when the test ends. Its methods block: from a Trio test whose servers run in
    this event loop, call ``restart``/``kill``/``start`` via ``trio.to_thread.run_sync``."""
    with redis_server_or_skip() as redis:
        yield redis
