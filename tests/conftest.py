from __future__ import annotations

import pytest
import trio

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
