"""Redis high availability: servers on ``redis+sentinel://`` follow a failover, against
real redis-server and redis-sentinel processes on loopback ports.

Redis replicates asynchronously: a primary that dies may take its newest writes with
it. The replica is paused (SIGSTOP) and cut off while messages go through, so the one
promoted surely lacks them; then the primary is killed. Without ``--redis-wait`` the servers
must notice (the history's last id went backwards) and restore what they hold; with
``--redis-wait 1`` those messages are never acknowledged before a replica has them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from tests.support.admin import get, scrape
from tests.support.cluster import chats, node, relinking, resume, ws
from tests.support.redis import RedisSentinel, RedisServer, RedisServerMissing, Sentinels
from tests.support.tcp import TcpClient
from trio_chat import Config
from trio_chat.cli import main
from trio_chat.config import SentinelURL, parse_sentinel_url, redacted_url

#: Seconds a failover may take to be followed: the sentinels' 1 s down-after, their
#: vote and promotion, then each server's reconnection backoff (at most 5 s).
FOLLOW = 40
TTL = 2.0


@pytest.fixture
def ha() -> Iterator[Sentinels]:
    with Sentinels(replicas=1) as group:
        yield group


def config_for(group: Sentinels, **changes: Any) -> Config:
    return replace(Config(tcp_port=0, ws_port=0, rate_limit=0, presence_ttl=TTL, admin_port=0,
                          redis=group.url), **changes)


async def in_sync(group: Sentinels) -> None:
    """Every replica has everything the primary has."""
    await trio.to_thread.run_sync(group.in_sync)


async def test_servers_follow_a_failover_that_lost_writes_and_restore_them(
    ha: Sentinels,
) -> None:
    config = config_for(ha)
    replica = ha.replicas[0]
    async with (
        node(config) as (ca, a),
        node(config) as (cb, b),
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as bob,
    ):
        await alice.join("alice")
        await bob.join("bob")
        await alice.recv_until(type="system", event="join", name="bob")
        await alice.send({"type": "chat", "text": "before"})
        (before,) = await chats(bob, 1)
        await in_sync(ha)

        # The replica falls behind: paused, and cut off by the primary (else the kernel
        # would still take what the primary sends, for the replica to read on waking),
        # so these two are acknowledged (delivered with ids) by the primary alone. Then
        # the primary dies and the sentinels promote the replica, which lacks "lost 1"
        # and "lost 2": the servers follow it (each link drops and comes back).
        async with relinking(ca, cb, wait=FOLLOW):
            os.kill(replica.pid, signal.SIGSTOP)
            try:
                await trio.to_thread.run_sync(ha.primary.command, "CLIENT", "KILL", "TYPE",
                                              "replica")
                await alice.send({"type": "chat", "text": "lost 1"})
                await alice.send({"type": "chat", "text": "lost 2"})
                acked = await chats(bob, 2)
                assert await chats(alice, 3) == [before, *acked]
                assert all("id" in m for m in acked)
                await trio.to_thread.run_sync(ha.primary.kill)
            finally:
                os.kill(replica.pid, signal.SIGCONT)

        # On the new primary they notice the last id went backwards, and restore them.
        assert ha.primary_port() == replica.port
        await bob.send({"type": "chat", "text": "after"})
        (after,) = await chats(alice, 1)  # not "lost 1" again
        assert after["text"] == "after" and after["id"] > acked[-1]["id"]
        assert await chats(bob, 1) == [after]

        # Names stay unique on the new primary.
        await bob.send({"type": "join", "user": "alice"})
        assert (await bob.recv_until(type="error"))["code"] == "name_taken"

        for port in (a.tcp_port, b.tcp_port):
            # (A name of its own per server: the last one's leave may still be on its way.)
            replayed, end = await resume(port, f"carol{port}", since=before["id"])
            assert [(m["id"], m["text"]) for m in replayed] == [
                (acked[0]["id"], "lost 1"), (acked[1]["id"], "lost 2"), (after["id"], "after")
            ]
            assert end.get("complete", True)
        causes = []
        for bound in (a, b):
            assert bound.admin_port is not None
            got = await scrape(bound.admin_port)
            assert got.value("trio_chat_redis_up") == 1
            causes.append(got.value("trio_chat_redis_resyncs", cause="lost_writes"))
            assert got.value("trio_chat_redis_resyncs", cause="failover") == 1
        # The first server back finds the last id behind and restores; the second
        # finds them restored (a new primary all the same).
        assert sorted(causes) in ([0, 1], [1, 1])


@pytest.fixture
def ha2() -> Iterator[Sentinels]:
    with Sentinels(replicas=2) as group:
        yield group


async def test_with_redis_wait_nothing_unreplicated_is_acknowledged(ha2: Sentinels) -> None:
    config = config_for(ha2, redis_wait=1)
    async with (
        node(config) as (ca, a),
        node(config) as (cb, b),
        await TcpClient.connect(a.tcp_port) as alice,
        ws(b.ws_port) as bob,
    ):
        await alice.join("alice")
        await bob.join("bob")
        await alice.recv_until(type="system", event="join", name="bob")
        await alice.send({"type": "chat", "text": "before"})
        (before,) = await chats(bob, 1)
        assert await chats(alice, 1) == [before]

        # The primary dies while no replica acknowledges: each link drops and comes
        # back on the replica the sentinels promote.
        async with relinking(ca, cb, wait=FOLLOW):
            for replica in ha2.replicas:
                os.kill(replica.pid, signal.SIGSTOP)
            try:
                await alice.send({"type": "chat", "text": "held"})
                # No replica acknowledges it: not delivered, and both servers say why.
                for bound in (a, b):
                    assert bound.admin_port is not None
                    with trio.fail_after(FOLLOW):
                        while (ready := await get(bound.admin_port, "/readyz"))[0] != 503:
                            pass
                    assert b"Redis replicas acknowledge" in ready[2]
                await bob.send({"type": "ping"})
                assert (await bob.recv())["type"] == "pong"  # nothing delivered before it
                await trio.to_thread.run_sync(ha2.primary.kill)
            finally:
                for replica in ha2.replicas:
                    os.kill(replica.pid, signal.SIGCONT)

            # A lost the primary with "held" unconfirmed: it delivers it to its own
            # members at once, without an id (never acknowledged), as in any outage.
            local = await alice.recv_until(type="chat")
            assert local["text"] == "held" and "id" not in local
        assert ha2.primary_port() in {r.port for r in ha2.replicas}
        # Published to the new primary once a replica acknowledges it: with an id.
        (held,) = await chats(bob, 1)
        assert held["text"] == "held" and held["id"] > before["id"]
        await bob.send({"type": "chat", "text": "after"})
        (after,) = await chats(alice, 1)  # "held" is not delivered twice on A
        assert after["text"] == "after"
        for port in (a.tcp_port, b.tcp_port):
            replayed, _ = await resume(port, f"carol{port}", since=0)
            assert [(m["id"], m["text"]) for m in replayed] == [
                (before["id"], "before"), (held["id"], "held"), (after["id"], "after")
            ]
        for bound in (a, b):
            assert bound.admin_port is not None
            assert (await get(bound.admin_port, "/readyz"))[0] == 200


async def test_a_sentinel_down_is_not_an_outage(ha: Sentinels) -> None:
    """Any sentinel that answers will do: the first one listed is dead."""
    ha.sentinels[0].kill()
    config = config_for(ha)
    async with node(config) as (_, a), await TcpClient.connect(a.tcp_port) as alice:
        await alice.join("alice")
        await alice.send({"type": "chat", "text": "hello"})
        (got,) = await chats(alice, 1)
        assert got["id"] > 0
        assert a.admin_port is not None
        assert (await scrape(a.admin_port)).value("trio_chat_redis_links") == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://127.0.0.1:26379/mymaster",
         SentinelURL((("127.0.0.1", 26379),), "mymaster")),
        ("redis+sentinel://a,b:26380,[::1]:26381,[::2]/chat/3",
         SentinelURL((("a", 26379), ("b", 26380), ("::1", 26381), ("::2", 26379)), "chat", 3)),
        ("redis+sentinel://:s%40cret@h/m", SentinelURL((("h", 26379),), "m", 0, None, "s@cret")),
        ("redis+sentinel://ann:pw@h/m", SentinelURL((("h", 26379),), "m", 0, "ann", "pw")),
    ],
)
def test_sentinel_urls(url: str, expected: SentinelURL) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+sentinel://h:26379", "no service name"),
        ("redis+sentinel://h:26379/", "no service name"),
        ("redis+sentinel://h:99999/m", "not a port number"),
        ("redis+sentinel://h,,k/m", "a sentinel address is empty"),
        ("redis+sentinel://h/m/x", "is not a number"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_sentinel_url(url)
    result = CliRunner().invoke(main, ["serve", "--redis", url])
    assert result.exit_code == 2 and error in result.output


def test_a_missing_sentinel_executable_says_which_package() -> None:
    with pytest.raises(RedisServerMissing, match="Debian package redis-sentinel"):
        RedisSentinel(RedisServer(), executable="no-such-redis-sentinel")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis+sentinel://ann:pw@a,b:1/m", "redis+sentinel://ann:***@a,b:1/m"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://ann@h/0", "redis://ann@h/0"),
    ],
)
def test_passwords_stay_out_of_logs(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
