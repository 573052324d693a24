"""The cluster's lean RESP connection (``trio_chat.cluster.resp``): what its hot loops
read and publish through, against a real redis-server, and replies cut anywhere by the
network (a memory stream, byte by byte)."""

from __future__ import annotations

import coredis.exceptions
import pytest
import trio
import trio.testing

from tests.support.redis import RedisServer, redis_server_or_skip
from trio_chat.cluster.resp import Endpoint, LeanConnection, open_lean


def endpoint(redis: RedisServer, **kwargs: object) -> Endpoint:
    return Endpoint(host="127.0.0.1", port=redis.port, **kwargs)  # type: ignore[arg-type]


async def test_commands_and_pipelined_scripts_answer_in_order(
    redis_server: RedisServer,
) -> None:
    connection = await open_lean(endpoint(redis_server))
    async with connection:
        assert await connection.call("SET", "k", "é\n\r€") == "OK"
        assert await connection.call("GET", "k") == "é\n\r€"  # binary-safe, UTF-8 once
        assert await connection.call("GET", "missing") is None
        assert await connection.call("INCR", "n") == 1
        sha = await connection.load("return ARGV[1]")
        for i in range(50):  # sent ahead of any reply: read back in the order sent
            await connection.send("EVALSHA", sha, 0, f"reply {i}")
        assert [await connection.reply() for _ in range(50)] == [f"reply {i}" for i in range(50)]
        await connection.call("XADD", "s", "1-0", "u", "ann", "x", "hi")
        await connection.call("XADD", "s", "2-0", "u", "bob", "x", "")
        assert await connection.call("XREAD", "COUNT", 10, "STREAMS", "s", "0-0") == [
            ["s", [["1-0", ["u", "ann", "x", "hi"]], ["2-0", ["u", "bob", "x", ""]]]]
        ]
        # Nothing new within the block: nil, not an error.
        assert await connection.call("XREAD", "BLOCK", 10, "STREAMS", "s", "$") is None


async def test_an_error_reply_raises_and_the_connection_goes_on(
    redis_server: RedisServer,
) -> None:
    connection = await open_lean(endpoint(redis_server))
    async with connection:
        with pytest.raises(coredis.exceptions.ResponseError, match="NOSCRIPT"):
            await connection.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(coredis.exceptions.ResponseError, match="unknown command"):
            await connection.call("NO-SUCH-COMMAND")
        assert await connection.call("PING") == "PONG"


async def test_a_connection_redis_drops_raises_connection_error(
    redis_server: RedisServer,
) -> None:
    connection = await open_lean(endpoint(redis_server))
    async with connection:
        await connection.call("CLIENT", "SETNAME", "lean")
        killer = await open_lean(endpoint(redis_server))
        async with killer:
            assert await killer.call("CLIENT", "KILL", "SKIPME", "yes") >= 1
        with pytest.raises(ConnectionError):
            await connection.call("PING")


async def test_authentication_and_database_are_those_of_the_endpoint(
    redis_server: RedisServer,
) -> None:
    admin = await open_lean(endpoint(redis_server))
    async with admin:
        await admin.call("ACL", "SETUSER", "chat", "on", ">s3cret", "~*", "+@all")
        connection = await open_lean(endpoint(redis_server, username="chat",
                                              password="s3cret", db=3))
        async with connection:
            await connection.call("SET", "where", "three")
        await admin.call("SELECT", 3)
        assert await admin.call("GET", "where") == "three"
    with pytest.raises(coredis.exceptions.ResponseError, match="WRONGPASS"):
        await open_lean(endpoint(redis_server, username="chat", password="wrong"))


def test_a_replica_is_refused() -> None:
    """A demoted primary (or any replica) must not be read or written by the link:
    the connection says so and the link starts over."""
    with redis_server_or_skip() as primary, redis_server_or_skip(replica_of=primary) as replica:

        async def main() -> None:
            with pytest.raises(ConnectionError, match="not a primary"):
                await open_lean(endpoint(replica))
            connection = await open_lean(endpoint(primary))
            await connection.aclose()

        trio.run(main)


async def test_replies_cut_anywhere_are_read_whole() -> None:
    """Whatever the network's cuts (here one byte per receive), a reply is read whole,
    and the next starts where it ended."""
    ours, theirs = trio.testing.memory_stream_pair()
    connection = LeanConnection(ours)
    replies = (b"*2\r\n*2\r\n$4\r\nh:\xc3\xa9\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nx\r\n"
               b"$0\r\n\r\n$-1\r\n:42\r\n+OK\r\n-ERR no\r\n*-1\r\n")
    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            for i in range(len(replies)):
                await theirs.send_all(replies[i:i + 1])

        nursery.start_soon(answer)
        assert await connection.reply() == [["h:é", [["1-0", ["x", ""]]]], None]
        assert await connection.reply() == 42
        assert await connection.reply() == "OK"
        with pytest.raises(coredis.exceptions.ResponseError, match="ERR no"):
            await connection.reply()
        assert await connection.reply() is None


async def test_a_reply_of_an_unknown_type_or_a_closed_stream_is_a_lost_connection() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    connection = LeanConnection(ours)
    await theirs.send_all(b"@7\r\nunknown\r\n")
    with pytest.raises(ConnectionError, match="unknown reply type"):
        await connection.reply()
    ours, theirs = trio.testing.memory_stream_pair()
    connection = LeanConnection(ours)
    await theirs.send_all(b"$10\r\nabc")
    await theirs.aclose()
    with pytest.raises(ConnectionError, match="closed the connection"):
        await connection.reply()


async def test_a_reply_longer_than_the_limit_is_a_lost_connection() -> None:
    """The parser keeps what it has parsed of a reply, not the bytes: the limit counts
    what arrived while waiting for one reply, so an endless array (here a million
    elements announced) is cut off, not held."""
    ours, theirs = trio.testing.memory_stream_pair()
    connection = LeanConnection(ours, max_reply=1000)
    await theirs.send_all(b"+OK\r\n")
    assert await connection.reply() == "OK"
    await theirs.send_all(b"*1000000\r\n" + b"$1\r\nx\r\n" * 200)  # 1,411 bytes
    with pytest.raises(ConnectionError, match="longer than the limit"):
        await connection.reply()
