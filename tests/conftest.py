from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from tests.support.config import TEST_CONFIG
from tests.support.redis import RedisServer, redis_server_or_skip
from tests.support.tls import TlsFiles
from tests.support.tmux import Tmux
from trio_chat import Bound, Config, serve

#: The ``browser`` and ``page`` fixtures of the page tests.
pytest_plugins = ["tests.support.browser"]


@pytest.fixture
def config() -> Config:
    """The server's configuration for ``server`` (a module may override it)."""
    return TEST_CONFIG


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Bound:
    """A real server on ephemeral loopback ports, cancelled when the test ends."""
    bound: Bound = await nursery.start(serve, config)
    return bound


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    """A throwaway CA and a certificate for 127.0.0.1, as files in ``tmp_path``."""
    return TlsFiles(tmp_path)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real, empty redis-server on a free loopback port (no persistence), stopped and
    removed when the test ends. Its methods block: from a Trio test whose servers run in
    this event loop, call ``restart``/``kill``/``start`` via ``trio.to_thread.run_sync``."""
    with redis_server_or_skip() as redis:
        yield redis


@pytest.fixture
async def tmux(tmp_path: Path) -> AsyncIterator[Tmux]:
    """A tmux server of its own, for a terminal client to run in; killed after."""
    terminal = Tmux(tmp_path)
    try:
        yield terminal
    finally:
        await terminal.kill()
