"""The tests' and the bench's redis-server: it starts empty, restarts empty on the same
port (a crash without persistence), stops, and never mistakes another Redis for itself."""

from __future__ import annotations

import socket

import coredis
import pytest
import trio

from tests.support.redis import RedisError, RedisServer, redis_server_or_skip
from trio_chat.bench.redis_server import RedisServerMissing


async def test_a_real_client_talks_to_it(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    async with coredis.Redis.from_url(redis_server.url, decode_responses=True) as r:
        assert await r.set("greeting", "hello")
        assert await r.get("greeting") == "hello"
    assert redis_server.command("GET", "greeting") == b"hello"


def test_restart_comes_back_empty_on_the_same_port(redis_server: RedisServer) -> None:
    url, pid = redis_server.url, redis_server.pid
    redis_server.command("SET", "k", "v")
    redis_server.command("XADD", "room", "*", "text", "hi")
    redis_server.restart()
    assert (redis_server.url, redis_server.running) == (url, True)
    assert redis_server.pid != pid
    assert redis_server.command("DBSIZE") == 0
    assert redis_server.command("GET", "k") is None


def test_kill_then_start_is_an_outage_on_one_url(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert not redis_server.running and not redis_server.ping()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", redis_server.port), timeout=1).close()
    redis_server.start()
    assert redis_server.ping()


def test_stop_frees_the_port_and_close_removes_its_directory() -> None:
    redis = redis_server_or_skip()
    with redis:
        port, log = redis.port, redis.log_path
        assert log is not None and log.exists()
        with pytest.raises(RedisError, match="unknown command"):
            redis.command("NO-SUCH-COMMAND")
        redis.stop()
        assert not redis.running and not redis.ping()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not log.parent.exists()


def test_a_taken_port_is_an_error_not_another_servers_pong(redis_server: RedisServer) -> None:
    second = RedisServer(redis_server.port)
    with pytest.raises(RuntimeError, match="Address already in use"):
        second.start()
    second.close()
    assert not second.running


def test_a_missing_executable_says_which_package() -> None:
    with pytest.raises(RedisServerMissing, match="Debian package redis-server"):
        RedisServer(executable="no-such-redis-server")


async def test_blocking_calls_run_in_a_thread_beside_the_loop(redis_server: RedisServer) -> None:
    """What the fixture's docstring advises for tests with servers in the event loop."""
    redis_server.command("SET", "k", "v")
    await trio.to_thread.run_sync(redis_server.restart)
    assert redis_server.command("EXISTS", "k") == 0
