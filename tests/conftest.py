from __future__ import annotations

import pytest
import trio

from trio_chat import Bound, Config, serve

TEST_CONFIG = Config(tcp_port=0, ws_port=0)


@pytest.fixture
def config() -> Config:
    return TEST_CONFIG


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Bound:
    """A real server on ephemeral loopback ports, cancelled when the test ends."""
    bound: Bound = await nursery.start(serve, config)
    return bound
