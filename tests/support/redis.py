"""A real redis-server for the cluster tests: ``trio_chat.bench.redis_server.RedisServer``
(shared with ``trio-chat bench --cluster``; the tests import it from here only), and
what a test does without one."""

from __future__ import annotations

import os
from typing import Any

import pytest

from trio_chat.bench.redis_server import RedisError, RedisServer, RedisServerMissing

__all__ = ["RedisError", "RedisServer", "RedisServerMissing", "redis_server_or_skip"]


def redis_server_or_skip(**kwargs: Any) -> RedisServer:
    """A RedisServer (not started yet), or skip the test when redis-server is missing;
    under CI (env CI set) fail instead, since .ci/run installs it."""
    try:
        return RedisServer(**kwargs)
    except RedisServerMissing as exc:
        reason = f"{exc}; .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
